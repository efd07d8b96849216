#!/usr/bin/env bash
# Reproduces the README's performance table on this machine: builds herald,
# and for each scenario starts a fresh server, runs herald bench against it
# with --server-pid, stops it, and at the end prints the table with the
# targets next to what was measured. Herald and the bench share the machine,
# as in the README's figures. Usage:
#   scripts/bench.sh
#   CONNS=5000 STEADY=10s scripts/bench.sh
# Settings (environment):
#   CONNS   connections (default 19000: one bench process, under a 20,000-file limit)
#   STEADY  how long the steady fan-out publishes (default 20s)
#   ADDR    where the server listens (default 127.0.0.1:8080)
#   NATS    where its embedded NATS listens (default 127.0.0.1:4222)
#   OUT     directory for each run's JSON and logs (default: a new temporary one)
# Needs go and jq. Runs take about a minute; each is bounded by --timeout.
set -euo pipefail
cd "$(dirname "$0")/.."

conns=${CONNS:-19000}
steady=${STEADY:-20s}
addr=${ADDR:-127.0.0.1:8080}
nats=${NATS:-127.0.0.1:4222}
out=${OUT:-$(mktemp -d -t herald-bench.XXXXXX)}
mkdir -p "$out"
command -v jq >/dev/null || { echo "bench.sh needs jq" >&2; exit 1; }

echo "== build"
go build -o "$out/herald" ./cmd/herald
herald=$out/herald

server_pid=
stop_server() {
  if [ -n "$server_pid" ]; then
    kill -INT "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
  fi
}
trap stop_server EXIT

# start_server NAME: a fresh server, so that memory figures start from an
# empty process and no run inherits another's state.
start_server() {
  "$herald" serve --listen "$addr" --nats-listen "$nats" --log-level warn --drain-timeout 1s \
    >"$out/server-$1.log" 2>&1 &
  server_pid=$!
  local host=${addr%:*} port=${addr##*:}
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then return; fi
    kill -0 "$server_pid" 2>/dev/null || { cat "$out/server-$1.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "server did not start listening on $addr" >&2
  exit 1
}

# run NAME SCENARIO FLAGS...: one bench run against a fresh server.
run() {
  local name=$1; shift
  echo "== $name"
  start_server "$name"
  local cmd=("$herald" bench "$@" --url "ws://$addr/ws" --conns "$conns" --server-pid "$server_pid" --json "$out/$name.json")
  echo "+ herald serve --listen $addr --nats-listen $nats (pid $server_pid)"
  echo "+ herald bench ${cmd[*]:2}"
  "${cmd[@]}" | tee "$out/$name.txt"
  stop_server
}

run idle idle --duration 10s --timeout 2m
run burst fanout --nats "nats://$nats" --channels 1 --messages 200 --size 64 --rate 0 --timeout 2m
# 50,000 deliveries a second: with 19,000 sockets on one channel, 2.63 msg/s.
rate=$(awk -v n="$conns" 'BEGIN { printf "%.4g", 50000 / n }')
run steady fanout --nats "nats://$nats" --channels 1 --messages 0 --size 64 --rate "$rate" --duration "$steady" --timeout 2m
run storm storm --timeout 2m

# get NAME JQ: one figure from a run's JSON, or n/a.
get() { jq -r "($2) // \"n/a\"" "$out/$1.json" 2>/dev/null || echo n/a; }
# verdict VALUE OP LIMIT: ok or MISS, for numbers; blank for n/a.
verdict() {
  case "$1" in n/a|null|"") echo "" ;; *) awk -v v="$1" -v l="$3" "BEGIN { print (v $2 l) ? \"ok\" : \"MISS\" }" ;; esac
}

rss=$(get idle '.server.memory.rss_per_conn_bytes | floor')
kernel=$(get idle '.server.memory.kernel_slab_per_socket_bytes | floor')
goroutines=$(get idle '.server.goroutines | if . == null then null else "\(.before) -> \(.after)" end')
# Every run starts with a connect phase: show them all, judge the median.
runs=()
for name in idle burst steady storm; do [ -f "$out/$name.json" ] && runs+=("$out/$name.json"); done
connects=$(jq -rs '[.[] | .connect.seconds * 100 | round / 100] | map(tostring) | join(" / ")' "${runs[@]}" 2>/dev/null || echo n/a)
connect=$(jq -rs '[.[] | .connect.seconds] | sort | if length == 0 then "n/a" else (.[(length - 1) / 2 | floor] + .[length / 2 | floor]) / 2 end' "${runs[@]}" 2>/dev/null || echo n/a)
upgraded=$(get idle '.connect.upgraded')
burst_rate=$(get burst '.fanout.deliveries_per_second | floor')
burst_pct=$(get burst '.fanout.delivered_pct')
steady_rate=$(get steady '.fanout.deliveries_per_second | floor')
steady_pct=$(get steady '.fanout.delivered_pct')
steady_p99=$(get steady '.fanout.latency.p99_ms * 10 | round / 10')
steady_cpu=$(get steady '.server.cpu.us_per_unit * 100 | round / 100')
storm_s=$(get storm 'if .storm.complete then (.storm.seconds * 100 | round / 100) else null end')
storm_refusals=$(get storm '[.storm.refusals // {} | to_entries[] | "\(.key): \(.value)"] | join(", ") | if . == "" then "none" else . end')

echo
echo "== results: $conns connections on one channel, 64-byte messages, $(nproc) cores, server and bench on one machine"
echo
printf '| %-55s | %-12s | %-25s | %-4s |\n' "figure" "target" "measured" ""
printf '| %-55s | %-12s | %-25s | %-4s |\n' "---" "---" "---" "---"
row() { printf '| %-55s | %-12s | %-25s | %-4s |\n' "$1" "$2" "$3" "$4"; }
row "idle: server RSS per upgraded connection" "<= 600 B" "$rss B" "$(verdict "$rss" '<=' 600)"
row "idle: kernel slab per socket (host-wide, both ends)" "" "$kernel B" ""
row "idle: server goroutines, before -> with the connections" "flat" "$goroutines" ""
row "connect: $upgraded upgraded (each run; median judged)" "< 2 s" "$connects s" "$(verdict "$connect" '<' 2)"
row "fanout burst (200 messages): deliveries/s" ">= 500,000" "$burst_rate" "$(verdict "$burst_rate" '>=' 500000)"
row "fanout burst: delivered" "100%" "$burst_pct%" "$(verdict "$burst_pct" '>=' 100)"
row "fanout steady ($rate msg/s): deliveries/s" "50,000" "$steady_rate" ""
row "fanout steady: delivered" "100%" "$steady_pct%" "$(verdict "$steady_pct" '>=' 100)"
row "fanout steady: p99 publish-to-receive latency" "< 80 ms" "$steady_p99 ms" "$(verdict "$steady_p99" '<' 80)"
row "fanout steady: server CPU per delivery" "< 6 us" "$steady_cpu us" "$(verdict "$steady_cpu" '<' 6)"
row "storm: all $conns back after dropping them at once" "" "$storm_s s" ""
row "storm: refused reconnect attempts" "" "$storm_refusals" ""
echo
echo "Tables and JSON of each run: $out"
