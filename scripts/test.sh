#!/usr/bin/env bash
# Runs every check CI runs: formatting, vet, and the whole test suite with the
# race detector, against real sockets and a real NATS server. Usage:
#   scripts/test.sh            # everything
#   scripts/test.sh ./engine/  # one package (extra args go to go test)
set -euo pipefail
cd "$(dirname "$0")/.."

# The demo page's browser test, herald sub's proxy tests, the systemd unit's
# check and the fleet and scale tests need Chromium, tinyproxy,
# systemd-analyze, HAProxy and nats-server (Debian packages): install them
# when missing and apt-get is ours to run. Without them those tests skip,
# or fail under CI=true (the scripts build a nats-server from the module
# when there is none, which takes a while).
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v tinyproxy >/dev/null || missing+=(tinyproxy)
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v haproxy >/dev/null || missing+=(haproxy)
command -v nats-server >/dev/null || missing+=(nats-server)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing ${missing[*]}"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; } ||
      echo "could not install ${missing[*]}: their tests will skip, or fail under CI=true"
  else
    echo "== ${missing[*]} not installed (apt-get install ${missing[*]}): their tests will skip, or fail under CI=true"
  fi
fi

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
