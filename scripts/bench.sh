#!/usr/bin/env bash
# Reproduces the README's performance table on this machine: builds herald,
# and for each scenario starts a fresh server, runs herald bench against it
# with --server-pid, stops it, and at the end prints the table with the
# targets next to what was measured. Herald and the bench share the machine,
# as in the README's figures. The loopback write floor (herald bench floor,
# no server) runs in the same pass, so that the steady figures can be given
# as ratios to it. Usage:
#   scripts/bench.sh
#   CONNS=5000 STEADY=10s scripts/bench.sh
#   RUNS=3 scripts/bench.sh                   # every scenario three times: medians of 3, ranges in brackets
#   HERALD=/tmp/herald-base/herald scripts/bench.sh   # measure a prebuilt server
# Settings (environment):
#   CONNS   connections (default 19000: one bench process, under a 20,000-file limit)
#   STEADY  how long the steady fan-out and the floor publish (default 20s)
#   SWEEP   how long each rate of the overload sweep publishes (default 10s)
#   RATES   the overload sweep's rates, messages a second on one channel (default 10,50,200)
#   ROUNDS  personal fan-out: messages to each connection's own channel (default 3)
#   RUNS    how many times to run every scenario; figures are medians (default 1)
#   ONLY    a comma-separated list of the scenarios to run, e.g. steady,floor
#           (names as in the table: idle, idle-personal, idle-wide, burst,
#           steady, floor, personal, personal-wide, personal-steady, sweep,
#           storm); default all. RUNS=6 ONLY=steady,floor gives six
#           side-by-side pairs of the steady fan-out and the floor.
#   HERALD  a prebuilt herald binary to serve (default: build this tree)
#   BENCH   a prebuilt herald binary to run the bench from (default: build this tree)
#   ADDR    where the server listens (default 127.0.0.1:8080)
#   NATS    where its embedded NATS listens (default 127.0.0.1:4222)
#   WIDE    the --nats-wide patterns of the "wide" rows: they must cover the
#           bench's channel names, bench.RUN.K (default bench.*.*)
#   OUT     directory for each run's JSON and logs (default: a new temporary one)
#   REPORT  1: run nothing, print the table again from OUT's JSON (same RUNS)
# Needs go (unless HERALD and BENCH are given) and jq. One pass over the
# scenarios takes about three and a half minutes at 19,000 connections; each run is
# bounded by --timeout.
set -euo pipefail
cd "$(dirname "$0")/.."

conns=${CONNS:-19000}
steady=${STEADY:-20s}
sweep=${SWEEP:-10s}
rates=${RATES:-10,50,200}
rounds=${ROUNDS:-3}
runs=${RUNS:-1}
addr=${ADDR:-127.0.0.1:8080}
nats=${NATS:-127.0.0.1:4222}
wide=${WIDE:-bench.*.*}
out=${OUT:-$(mktemp -d -t herald-bench.XXXXXX)}
mkdir -p "$out"
command -v jq >/dev/null || { echo "bench.sh needs jq" >&2; exit 1; }
case "$runs" in '' | *[!0-9]* | 0) echo "RUNS must be a positive number" >&2; exit 1 ;; esac

# The server and the bench client: prebuilt, or built from this tree.
server=${HERALD:-}
client=${BENCH:-}
report_only=${REPORT:-}
if [ -n "$report_only" ]; then
  server=/bin/true client=/bin/true
fi
if [ -z "$server" ] || [ -z "$client" ]; then
  echo "== build"
  if ! go build -o "$out/herald" ./cmd/herald; then
    echo "this tree does not build: give prebuilt binaries with HERALD=/path (the server) and BENCH=/path (the bench client)" >&2
    exit 1
  fi
  server=${server:-$out/herald}
  client=${client:-$out/herald}
fi
for bin in "$server" "$client"; do
  [ -x "$bin" ] || { echo "not an executable: $bin" >&2; exit 1; }
done
[ -n "$report_only" ] || { echo "server: $server"; echo "bench:  $client"; }

server_pid=
stop_server() {
  if [ -n "$server_pid" ]; then
    kill -INT "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
  fi
}
trap stop_server EXIT

# serve_args: extra flags for the next servers (see run_wide).
serve_args=()

# start_server NAME: a fresh server, so that memory figures start from an
# empty process and no run inherits another's state.
start_server() {
  "$server" serve --listen "$addr" --nats-listen "$nats" --log-level warn --drain-timeout 1s "${serve_args[@]}" \
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

# run NAME SCENARIO FLAGS...: one bench run against a fresh server. A run
# that fails leaves its figures n/a and the script goes on.
run() {
  local name=$1; shift
  echo "== $name"
  start_server "$name"
  local cmd=("$client" bench "$@" --url "ws://$addr/ws" --conns "$conns" --server-pid "$server_pid" --json "$out/$name.json")
  echo "+ herald serve --listen $addr --nats-listen $nats ${serve_args[*]} (pid $server_pid)"
  echo "+ herald bench ${cmd[*]:2}"
  "${cmd[@]}" | tee "$out/$name.txt" || echo "!! $name failed (exit $?)"
  stop_server
}

# run_wide NAME SCENARIO FLAGS...: run against a server with --nats-wide
# covering the bench's channels: one NATS subscription for all of them.
run_wide() {
  serve_args=(--nats-wide "$wide")
  run "$@"
  serve_args=()
}

# run_floor NAME FLAGS...: the loopback write floor, with no server running.
run_floor() {
  local name=$1; shift
  echo "== $name"
  local cmd=("$client" bench floor "$@" --conns "$conns" --json "$out/$name.json")
  echo "+ herald bench ${cmd[*]:2}"
  "${cmd[@]}" | tee "$out/$name.txt" || echo "!! $name failed (exit $?)"
}

# 50,000 deliveries a second: with 19,000 sockets on one channel, 2.63 msg/s.
rate=$(awk -v n="$conns" 'BEGIN { printf "%.4g", 50000 / n }')
# The sweep's steps each take SWEEP, plus draining; give them room.
sweep_timeout=5m
if [[ $sweep =~ ^([0-9]+)s$ ]]; then
  sweep_timeout=$(awk -v r="$rates" -v d="${BASH_REMATCH[1]}" 'BEGIN { printf "%ds", 60 + split(r, x, ",") * (d + 15) }')
fi

only=${ONLY:-}
# want NAME: whether ONLY asks for scenario NAME.
want() { [ -z "$only" ] || [[ ",$only," == *",$1,"* ]]; }

for i in $(seq "$runs"); do
  [ -z "$report_only" ] || break
  [ "$runs" -gt 1 ] && echo "==== run $i of $runs"
  want idle && run "idle-$i" idle --duration 10s --timeout 2m
  want idle-personal && run "idle-personal-$i" idle --channels per-conn --duration 10s --timeout 2m
  want idle-wide && run_wide "idle-wide-$i" idle --channels per-conn --duration 10s --timeout 2m
  want burst && run "burst-$i" fanout --nats "nats://$nats" --channels 1 --messages 200 --size 64 --rate 0 --timeout 2m
  want steady && run "steady-$i" fanout --nats "nats://$nats" --channels 1 --messages 0 --size 64 --rate "$rate" --duration "$steady" --timeout 2m
  want floor && run_floor "floor-$i" --floor-writers "$(nproc)" --messages 0 --size 64 --rate "$rate" --duration "$steady" --timeout 2m
  # Every message to a different socket: ROUNDS rounds as fast as possible,
  # then paced at 50,000 a second, one socket after another.
  want personal && run "personal-$i" fanout --nats "nats://$nats" --channels per-conn --rounds "$rounds" --size 64 --rate 0 --timeout 2m
  want personal-wide && run_wide "personal-wide-$i" fanout --nats "nats://$nats" --channels per-conn --rounds "$rounds" --size 64 --rate 0 --timeout 2m
  want personal-steady && run "personal-steady-$i" fanout --nats "nats://$nats" --channels per-conn --rounds "$rounds" --size 64 --rate 50000 --duration "$steady" --timeout 2m
  want sweep && run "sweep-$i" fanout --nats "nats://$nats" --channels 1 --rates "$rates" --size 64 --duration "$sweep" --timeout "$sweep_timeout"
  want storm && run "storm-$i" storm --timeout 2m
done

# get RUN JQ: one figure from one run's JSON, or n/a.
get() { jq -r "($2) // \"n/a\"" "$out/$1.json" 2>/dev/null || echo n/a; }
# vals NAME JQ: the figure from every run of NAME, one a line, n/a left out.
vals() {
  local i
  for i in $(seq "$runs"); do get "$NAME-$i" "$JQ"; done | grep -Ev '^(n/a|null|)$' || true
}
# median: of the numbers on standard input; n/a without any.
median() {
  sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "n/a"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
# fmt FORMAT UNIT VALUE...: printf-formats each value, "count" meaning a
# whole number with thousands separators; the unit follows the first, and
# with two more values they are a range, in brackets.
fmt() {
  awk -v f="$1" -v u="$2" -v m="$3" -v lo="${4:-}" -v hi="${5:-}" '
    function one(v,   s, out, n) {
      if (f != "count") return sprintf(f, v)
      s = sprintf("%.0f", v); out = ""; n = length(s)
      while (n > 3 && substr(s, n - 3, 1) ~ /[0-9]/) { out = "," substr(s, n - 2, 3) out; s = substr(s, 1, n - 3); n -= 3 }
      return s out
    }
    BEGIN { r = one(m) u; if (lo != "") r = r " (" one(lo) "-" one(hi) ")"; print r }'
}
# fig NAME JQ FORMAT [UNIT]: the median over the runs, formatted, with the
# range when there is more than one run.
fig() {
  local NAME=$1 JQ=$2 list
  list=$(vals)
  [ -n "$list" ] || { echo n/a; return; }
  if [ "$runs" -gt 1 ]; then
    fmt "$3" "${4:-}" "$(median <<<"$list")" "$(sort -g <<<"$list" | head -1)" "$(sort -g <<<"$list" | tail -1)"
  else
    fmt "$3" "${4:-}" "$(median <<<"$list")"
  fi
}
# raw NAME JQ: the median itself, unformatted, for verdicts.
raw() { local NAME=$1 JQ=$2; vals | median; }
# ratio A JQA B JQB: A's figure over B's, run by run (A-i with B-i), as a list.
ratios() {
  local i a b
  for i in $(seq "$runs"); do
    a=$(get "$1-$i" "$2"); b=$(get "$3-$i" "$4")
    case "$a$b" in *n/a* | *null*) continue ;; esac
    awk -v a="$a" -v b="$b" 'BEGIN { if (b > 0) printf "%.4f\n", a / b }'
  done
}
# ratio_fig LIST: median of a ratio list, with its range for several runs.
ratio_fig() {
  local list=$1
  [ -n "$list" ] || { echo n/a; return; }
  if [ "$runs" -gt 1 ]; then
    fmt '%.2f' '' "$(median <<<"$list")" "$(sort -g <<<"$list" | head -1)" "$(sort -g <<<"$list" | tail -1)"
  else
    fmt '%.2f' '' "$(median <<<"$list")"
  fi
}
# verdict VALUE OP LIMIT: ok or MISS, for numbers; blank for n/a.
verdict() {
  case "$1" in n/a|null|"") echo "" ;; *) awk -v v="$1" -v l="$3" "BEGIN { print (v $2 l) ? \"ok\" : \"MISS\" }" ;; esac
}

rss=$(fig idle '.server.memory.rss_per_conn_bytes' '%.0f' ' B')
kernel=$(fig idle '.server.memory.kernel_slab_per_socket_bytes' '%.0f' ' B')
goroutines="$(fig idle '.server.goroutines.before' '%.0f') -> $(fig idle '.server.goroutines.after' '%.0f')"
prss=$(fig idle-personal '.server.memory.rss_per_conn_bytes' '%.0f' ' B')
pgoroutines="$(fig idle-personal '.server.goroutines.before' '%.0f') -> $(fig idle-personal '.server.goroutines.after' '%.0f')"
# Flat: fewer than 100 more goroutines with every connection on its own channel.
pg_growth=$(raw idle-personal '.server.goroutines | if . == null then null else .after - .before end')
wrss=$(fig idle-wide '.server.memory.rss_per_conn_bytes' '%.0f' ' B')
wgoroutines="$(fig idle-wide '.server.goroutines.before' '%.0f') -> $(fig idle-wide '.server.goroutines.after' '%.0f')"
wg_growth=$(raw idle-wide '.server.goroutines | if . == null then null else .after - .before end')
# Every run starts with a connect phase (the floor's connects to the bench):
# judge the median over all of them.
files=()
for f in "$out"/*.json; do [ -f "$f" ] && files+=("$f"); done
connect_list=$(jq -r 'select(.scenario != "floor") | .connect.seconds' "${files[@]}" 2>/dev/null | grep -Ev '^(null|)$' || true)
connect=n/a connects=n/a
if [ -n "$connect_list" ]; then
  connect=$(median <<<"$connect_list")
  connects="$(fmt '%.2f' ' s' "$connect" "$(sort -g <<<"$connect_list" | head -1)" "$(sort -g <<<"$connect_list" | tail -1)")"
fi
upgraded=$(raw idle '.connect.upgraded')
cpu_ratios=$(ratios steady '.server.cpu.us_per_unit' floor '.server.cpu.us_per_unit')
p99_ratios=$(ratios steady '.fanout.latency.p99_ms' floor '.floor.pass_median_ms')
ratio_raw() { if [ -n "$1" ]; then median <<<"$1"; else echo n/a; fi; }

echo
echo "== results: $conns connections, 64-byte messages, $(nproc) cores, server and bench on one machine"
if [ "$runs" -gt 1 ]; then echo "   medians of $runs runs, range in brackets"; fi
echo
row() { printf '| %-64s | %-12s | %-46s | %-4s |\n' "$1" "$2" "$3" "$4"; }
row "figure" "target" "measured" ""
row "---" "---" "---" "---"
row "idle: server RSS per upgraded connection" "<= 600 B" "$rss" "$(verdict "$(raw idle '.server.memory.rss_per_conn_bytes')" '<=' 600)"
row "idle: kernel slab per socket (host-wide, both ends)" "" "$kernel" ""
row "idle: server goroutines, before -> with the connections" "flat" "$goroutines" ""
row "idle, a channel per connection: server RSS per connection" "<= 1,000 B" "$prss" "$(verdict "$(raw idle-personal '.server.memory.rss_per_conn_bytes')" '<=' 1000)"
row "idle, a channel per connection: goroutines before -> with them" "flat" "$pgoroutines" "$(verdict "$pg_growth" '<' 100)"
row "idle, a channel per conn, --nats-wide: server RSS per connection" "<= 1,000 B" "$wrss" "$(verdict "$(raw idle-wide '.server.memory.rss_per_conn_bytes')" '<=' 1000)"
row "idle, a channel per conn, --nats-wide: goroutines before -> with" "flat" "$wgoroutines" "$(verdict "$wg_growth" '<' 100)"
row "connect: $upgraded upgraded (median of every run)" "< 2 s" "$connects" "$(verdict "$connect" '<' 2)"
row "fanout burst (200 messages): deliveries/s" ">= 500,000" "$(fig burst '.fanout.deliveries_per_second' count)" "$(verdict "$(raw burst '.fanout.deliveries_per_second')" '>=' 500000)"
row "fanout burst: delivered" "100%" "$(fig burst '.fanout.delivered_pct' '%.3g' '%')" "$(verdict "$(raw burst '.fanout.delivered_pct')" '>=' 100)"
row "fanout steady ($rate msg/s): deliveries/s" "50,000" "$(fig steady '.fanout.deliveries_per_second' count)" ""
row "fanout steady: delivered" "100%" "$(fig steady '.fanout.delivered_pct' '%.3g' '%')" "$(verdict "$(raw steady '.fanout.delivered_pct')" '>=' 100)"
row "fanout steady: p99 publish-to-receive latency" "< 80 ms" "$(fig steady '.fanout.latency.p99_ms' '%.1f' ' ms')" "$(verdict "$(raw steady '.fanout.latency.p99_ms')" '<' 80)"
row "fanout steady: server CPU per delivery" "< 6 us" "$(fig steady '.server.cpu.us_per_unit' '%.2f' ' us')" "$(verdict "$(raw steady '.server.cpu.us_per_unit')" '<' 6)"
row "floor ($rate msg/s, bare write loops, one per core, no server): CPU per write" "" "$(fig floor '.server.cpu.us_per_unit' '%.2f' ' us')" ""
row "floor: one pass over all sockets, median" "" "$(fig floor '.floor.pass_median_ms' '%.1f' ' ms')" ""
row "floor: one pass over all sockets, max" "" "$(fig floor '.floor.pass_max_ms' '%.1f' ' ms')" ""
row "floor: readers' p99 latency" "" "$(fig floor '.fanout.latency.p99_ms' '%.1f' ' ms')" ""
row "floor: delivered" "100%" "$(fig floor '.fanout.delivered_pct' '%.3g' '%')" "$(verdict "$(raw floor '.fanout.delivered_pct')" '>=' 100)"
row "steady CPU per delivery / floor CPU per write" "<= 1.05" "$(ratio_fig "$cpu_ratios")" "$(verdict "$(ratio_raw "$cpu_ratios")" '<=' 1.05)"
row "steady p99 / floor median pass time" "<= 1.1" "$(ratio_fig "$p99_ratios")" "$(verdict "$(ratio_raw "$p99_ratios")" '<=' 1.1)"
row "steady p99 / floor readers' p99" "" "$(ratio_fig "$(ratios steady '.fanout.latency.p99_ms' floor '.fanout.latency.p99_ms')")" ""
row "personal, $rounds rounds as fast as possible: deliveries/s" "" "$(fig personal '.fanout.deliveries_per_second' count)" ""
row "personal burst: server CPU per delivery" "" "$(fig personal '.server.cpu.us_per_unit' '%.2f' ' us')" ""
row "personal burst: messages per client read" "" "$(fig personal '.fanout.messages_per_read' '%.2f')" ""
row "personal burst: delivered" "100%" "$(fig personal '.fanout.delivered_pct' '%.3g' '%')" "$(verdict "$(raw personal '.fanout.delivered_pct')" '>=' 100)"
row "personal burst, --nats-wide: deliveries/s" "" "$(fig personal-wide '.fanout.deliveries_per_second' count)" ""
row "personal burst, --nats-wide: server CPU per delivery" "" "$(fig personal-wide '.server.cpu.us_per_unit' '%.2f' ' us')" ""
row "personal burst, --nats-wide: delivered" "100%" "$(fig personal-wide '.fanout.delivered_pct' '%.3g' '%')" "$(verdict "$(raw personal-wide '.fanout.delivered_pct')" '>=' 100)"
row "personal paced, 50,000 msg/s: deliveries/s" "" "$(fig personal-steady '.fanout.deliveries_per_second' count)" ""
row "personal paced: server CPU per delivery" "" "$(fig personal-steady '.server.cpu.us_per_unit' '%.2f' ' us')" ""
row "personal paced: CPU per delivery / floor CPU per write" "" "$(ratio_fig "$(ratios personal-steady '.server.cpu.us_per_unit' floor '.server.cpu.us_per_unit')")" ""
row "personal paced: messages per client read; p99" "" "$(fig personal-steady '.fanout.messages_per_read' '%.2f'); $(fig personal-steady '.fanout.latency.p99_ms' '%.1f' ' ms')" ""
row "personal paced: delivered" "100%" "$(fig personal-steady '.fanout.delivered_pct' '%.3g' '%')" "$(verdict "$(raw personal-steady '.fanout.delivered_pct')" '>=' 100)"
IFS=, read -ra rate_list <<<"$rates"
for r in "${rate_list[@]}"; do
  sel=".sweep[]? | select(.rate == $r)"
  row "sweep $r msg/s: delivered" "" "$(fig sweep "$sel | .delivered_pct" '%.3g' '%')" ""
  row "sweep $r msg/s: p50 / p99 latency" "" "$(fig sweep "$sel | .latency.p50_ms" '%.0f' ' ms') / $(fig sweep "$sel | .latency.p99_ms" '%.0f' ' ms')" ""
  row "sweep $r msg/s: server CPU per delivery" "" "$(fig sweep "$sel | .server_cpu.us_per_unit" '%.2f' ' us')" ""
  row "sweep $r msg/s: deliveries/s; messages per client read" "" "$(fig sweep "$sel | .deliveries_per_second" count); $(fig sweep "$sel | .messages_per_read" '%.1f')" ""
done
row "storm: all $conns back after dropping them at once" "" "$(fig storm 'if .storm.complete then .storm.seconds else null end' '%.2f' ' s')" ""
row "storm: refused reconnect attempts (last run)" "" "$(get "storm-$runs" '[.storm.refusals // {} | to_entries[] | "\(.key): \(.value)"] | join(", ") | if . == "" then "none" else . end')" ""
echo
echo "Tables and JSON of each run: $out"
