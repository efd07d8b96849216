#!/usr/bin/env bash
# Past one process's open-file limit on one box: one external nats-server,
# PROCS Herald processes sharing one port (--reuseport, the kernel spreads
# connections among them), each with its own admin listener (readiness,
# per-process metrics), and herald bench driving CONNS connections at them
# from child processes and several loopback source addresses. It measures,
# each scenario against freshly started Herald processes:
#   idle    aggregate server RSS per connection (the processes' RSS summed,
#           after minus before, over the connections) and connect time;
#   burst   MESSAGES messages on one channel as fast as possible:
#           deliveries/s, delivered %, missing, duplicated;
#   steady  STEADY_RATE deliveries/s on one channel for STEADY: p50/p99 and
#           the server CPU per delivery summed over the processes;
# then prints a table and stops what it started. Usage:
#   scripts/scale.sh            # run: start, measure, print, stop
#   scripts/scale.sh start      # start NATS and the Herald processes, print the endpoints
#   scripts/scale.sh status     # what is running
#   scripts/scale.sh stop       # stop exactly what start (or run) started
# Settings (environment):
#   CONNS       connections (default 95000)
#   PROCS       Herald processes on the port (default 5)
#   MAX_CONNS   each process's --max-conns (default 19900, under a 20,000-file limit)
#   MESSAGES    burst messages (default 200)
#   STEADY      how long the steady case publishes (default 20s)
#   STEADY_RATE steady deliveries per second over all sockets (default 50000)
#   PORT        the shared Herald port on 127.0.0.1 (default 8200)
#   NATS_PORT   nats-server's client port (default 4400)
#   ADMIN_BASE  process i's admin listener is 127.0.0.1:ADMIN_BASE+i (default 9200)
#   TIMEOUT     bound of each bench run (default 4m)
#   DIR         pids, logs, JSON (default /tmp/herald-scale)
#   HERALD      a prebuilt herald binary (default: build this tree into DIR)
#   NATS_SERVER a nats-server binary (default: `nats-server` on PATH, else
#               built from the nats-server module version in go.mod, offline)
# Needs jq and curl. scripts/tune-host.sh shows the host settings; the bench
# spreads its connections over source addresses 127.0.0.2 onwards, so the
# default ephemeral port range suffices. At 95,000 connections a run takes
# about three minutes and about 2 GB of kernel memory for the sockets.
set -euo pipefail
cd "$(dirname "$0")/.."

conns=${CONNS:-95000}
procs=${PROCS:-5}
max_conns=${MAX_CONNS:-19900}
messages=${MESSAGES:-200}
steady=${STEADY:-20s}
steady_rate=${STEADY_RATE:-50000}
port=${PORT:-8200}
nats_port=${NATS_PORT:-4400}
admin_base=${ADMIN_BASE:-9200}
timeout=${TIMEOUT:-4m}
dir=${DIR:-/tmp/herald-scale}
. scripts/lib.sh
nats_url=nats://127.0.0.1:$nats_port
for v in conns procs max_conns messages nats_port port admin_base; do
  case "${!v}" in '' | *[!0-9]*) echo "${v^^} must be a whole number" >&2; exit 2 ;; esac
done

admin() { echo "127.0.0.1:$((admin_base + $1))"; }

# wait_ready I: until Herald process I's own /readyz (on its admin
# listener: the shared port reaches whichever process the kernel picks)
# answers 200.
wait_ready() {
  for _ in $(seq 150); do
    if curl -fsS -m 1 -o /dev/null "http://$(admin "$1")/readyz" 2>/dev/null; then return; fi
    sleep 0.1
  done
  echo "herald $1 not ready on http://$(admin "$1")/readyz (log: $dir/herald$1.log)" >&2
  exit 1
}

start_nats() {
  cat >"$dir/nats.conf" <<EOF
listen: 127.0.0.1:$nats_port
# Herald's subscriptions carry every message to every process: do not cut
# a process that falls behind in a burst.
max_pending: 256MB
write_deadline: "10s"
EOF
  "$nats_server" -c "$dir/nats.conf" >"$dir/nats.log" 2>&1 &
  started nats $!
  wait_port "$nats_port" nats-server
}

start_heralds() {
  local i
  for i in $(seq "$procs"); do
    "$herald" serve --listen "127.0.0.1:$port" --reuseport --nats "$nats_url" --max-conns "$max_conns" \
      --admin-listen "$(admin "$i")" --metrics=false --drain-timeout 2s --log-level warn \
      >"$dir/herald$i.log" 2>&1 &
    started "herald$i" $!
  done
  for i in $(seq "$procs"); do wait_ready "$i"; done
}

# herald_pids: the running Herald processes' pids, comma-separated.
herald_pids() { awk '$1 ~ /^herald/ { print $2 }' "$dir/pids" | paste -sd, -; }

start() {
  command -v jq >/dev/null || { echo "scale.sh needs jq" >&2; exit 1; }
  command -v curl >/dev/null || { echo "scale.sh needs curl" >&2; exit 1; }
  if [ -s "$dir/pids" ]; then
    echo "processes from an earlier start are running from $dir: scripts/scale.sh stop first" >&2
    exit 1
  fi
  mkdir -p "$dir"
  : >"$dir/pids"
  trap 'echo "start failed: stopping what it started" >&2; stop >&2' EXIT
  binaries
  start_nats
  start_heralds
  trap - EXIT
}

status() {
  [ -s "$dir/pids" ] || { echo "nothing running from $dir"; return; }
  list_started
}

stop() {
  [ -s "$dir/pids" ] || { echo "nothing running from $dir"; return; }
  stop_names '^herald'
  stop_names '.'
  echo "stopped"
}

# watch_procs NAME: while a bench runs, sample each Herald process's
# connections (its admin /metrics) and RSS once a second, keeping the peak
# of each, into $dir/NAME.procs; bounded by the bench's own timeout.
watch_procs() {
  local name=$1 i n rss pid
  local -a peak_conns peak_rss
  for i in $(seq "$procs"); do peak_conns[i]=0 peak_rss[i]=0; done
  for _ in $(seq 600); do
    for i in $(seq "$procs"); do
      n=$(curl -fsS -m 1 "http://$(admin "$i")/metrics" 2>/dev/null | awk '$1 == "herald_connections" { print $2 }' || true)
      pid=$(awk -v n="herald$i" '$1 == n { print $2 }' "$dir/pids")
      rss=$(awk '/^VmRSS:/ { print $2 * 1024 }' "/proc/$pid/status" 2>/dev/null || echo 0)
      [ -n "$n" ] && awk -v a="$n" -v b="${peak_conns[i]}" 'BEGIN { exit !(a > b) }' && peak_conns[i]=$n
      [ -n "$rss" ] && [ "$rss" -gt "${peak_rss[i]}" ] && peak_rss[i]=$rss
    done
    for i in $(seq "$procs"); do echo "herald$i ${peak_conns[i]%.*} ${peak_rss[i]}"; done >"$dir/$name.procs"
    sleep 1
  done
}

# scenario NAME BENCH-ARGS...: fresh Herald processes, one bench run against
# the shared port with every process's pid, the peaks per process.
scenario() {
  local name=$1; shift
  echo "== $name"
  stop_names '^herald'
  start_heralds
  local cmd=("$herald" bench "$@" --url "ws://127.0.0.1:$port/ws" --conns "$conns" --server-pid "$(herald_pids)"
    --timeout "$timeout" --json "$dir/$name.json")
  echo "+ ${procs} x herald serve --listen 127.0.0.1:$port --reuseport --nats $nats_url --max-conns $max_conns --admin-listen 127.0.0.1:$((admin_base + 1))... --metrics=false"
  echo "+ herald bench ${cmd[*]:2}"
  watch_procs "$name" &
  local watcher=$!
  "${cmd[@]}" | tee "$dir/$name.txt" || echo "!! $name failed (exit $?)"
  kill "$watcher" 2>/dev/null || true
  wait "$watcher" 2>/dev/null || true
}

# get NAME JQ: one figure from a run's JSON, or n/a.
get() { jq -r "($2) // \"n/a\"" "$dir/$1.json" 2>/dev/null || echo n/a; }
# num FORMAT VALUE: printf-formatted, n/a kept.
num() { case "$2" in n/a | null | "") echo n/a ;; *) awk -v f="$1" -v v="$2" 'BEGIN { printf f, v }' ;; esac; }
# count VALUE: a whole number with thousands separators.
count() {
  case "$1" in n/a | null | "") echo n/a; return ;; esac
  awk -v v="$1" 'BEGIN { s = sprintf("%.0f", v); out = ""; n = length(s)
    while (n > 3) { out = "," substr(s, n - 2, 3) out; s = substr(s, 1, n - 3); n -= 3 }
    print s out }'
}
# spread NAME: the peak connections and RSS of each process during a run.
spread() {
  [ -f "$dir/$1.procs" ] || { echo n/a; return; }
  awk '{ c = c sep $2; r = r sep sprintf("%.0f", $3 / 1048576); sep = " / " } END { print c " connections; " r " MB RSS" }' "$dir/$1.procs"
}

run() {
  start
  # From here on every exit, a failed step's or Ctrl-C's, stops it all.
  trap 'stop >&2' EXIT
  local rate
  rate=$(awk -v r="$steady_rate" -v n="$conns" 'BEGIN { printf "%.4g", r / n }')
  scenario idle idle --duration 10s
  scenario burst fanout --nats "$nats_url" --channels 1 --messages "$messages" --size 64 --rate 0
  scenario steady fanout --nats "$nats_url" --channels 1 --messages 0 --size 64 --rate "$rate" --duration "$steady"

  echo
  echo "== results: $conns connections over $procs Herald processes on one port (--reuseport), one nats-server,"
  echo "   64-byte messages, $(nproc) cores shared with the bench ($(get idle '.procs') processes, from $(get idle 'if (.source_ips // []) == [] then "the kernel'"'"'s source address" else (.source_ips | join(",")) end'))"
  echo
  row() { printf '| %-58s | %-60s |\n' "$1" "$2"; }
  row "figure" "measured"
  row "---" "---"
  row "idle: connections upgraded" "$(count "$(get idle '.connect.upgraded')") of $(count "$conns")"
  row "idle: aggregate server RSS per connection" "$(num '%.0f B' "$(get idle '.server.memory.rss_per_conn_bytes')") ($(num '%.0f' "$(get idle '.server.memory.rss_before_bytes / 1048576')") -> $(num '%.0f MB' "$(get idle '.server.memory.rss_after_bytes / 1048576')") over $procs processes)"
  row "idle: per process, peak" "$(spread idle)"
  row "idle: kernel slab per socket (host-wide, both ends)" "$(num '%.0f B' "$(get idle '.server.memory.kernel_slab_per_socket_bytes')")"
  row "connect: all upgraded, first dial to last upgrade" "$(num '%.2f s' "$(get idle '.connect.seconds')") ($(count "$(get idle '.connect.per_second')")/s)"
  row "burst ($messages messages, one channel): deliveries/s" "$(count "$(get burst '.fanout.deliveries_per_second')")"
  row "burst: delivered; missing, duplicated, out of order" "$(num '%.4g%%' "$(get burst '.fanout.delivered_pct')"); $(get burst '.fanout.missing'), $(get burst '.fanout.duplicated'), $(get burst '.fanout.out_of_order')"
  row "burst: server CPU per delivery, summed over processes" "$(num '%.2f us' "$(get burst '.server.cpu.us_per_unit')")"
  row "steady ($rate msg/s, $steady): deliveries/s" "$(count "$(get steady '.fanout.deliveries_per_second')")"
  row "steady: delivered; missing, duplicated" "$(num '%.4g%%' "$(get steady '.fanout.delivered_pct')"); $(get steady '.fanout.missing'), $(get steady '.fanout.duplicated')"
  row "steady: p50 / p99 publish-to-receive latency" "$(num '%.1f ms' "$(get steady '.fanout.latency.p50_ms')") / $(num '%.1f ms' "$(get steady '.fanout.latency.p99_ms')")"
  row "steady: server CPU per delivery, summed over processes" "$(num '%.2f us' "$(get steady '.server.cpu.us_per_unit')")"
  echo
  echo "Tables, JSON and logs of each run: $dir"
}

case "${1:-run}" in
  run) run ;;
  start)
    start
    echo "up in $dir: ws://127.0.0.1:$port/ws over $procs processes, NATS $nats_url,"
    echo "  admin listeners http://127.0.0.1:$((admin_base + 1))/ .. http://127.0.0.1:$((admin_base + procs))/"
    ;;
  stop) stop ;;
  status) status ;;
  -h | --help) sed -n '2,37p' "$0" | sed 's/^# \{0,1\}//' ;;
  *) echo "usage: $0 [run|start|status|stop]" >&2; exit 2 ;;
esac
