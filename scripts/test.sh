#!/usr/bin/env bash
# Runs every check CI runs: formatting, vet, and the whole test suite with the
# race detector, against real sockets and a real NATS server. Usage:
#   scripts/test.sh            # everything
#   scripts/test.sh ./engine/  # one package (extra args go to go test)
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change:"; echo "$unformatted"; exit 1
fi

echo "== go vet"
go vet ./...

echo "== go test -race"
if [ $# -eq 0 ]; then set -- ./...; fi
go test -race -count=1 -timeout 20m "$@"
