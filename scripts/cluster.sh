#!/usr/bin/env bash
# Starts a Herald fleet on loopback, as production runs one: three
# nats-server nodes in one cluster (routes, JetStream), one history stream
# replicated on all three (R3), three Herald instances each joined to a
# different node and serving that stream's history, HAProxy in front of
# them (health-checking /readyz, terminating TLS with a certificate this
# script makes), and a publisher. Usage:
#   scripts/cluster.sh start     # build, start everything, print the endpoints
#   scripts/cluster.sh status    # what is running
#   scripts/cluster.sh stop      # stop exactly what start started
# Then:
#   wss://127.0.0.1:8443/ws?channel=demo.prices.AAPL   (verify with $DIR/ca.pem)
#   ws://127.0.0.1:8100/ws?channel=demo.prices.AAPL    (the same fleet, plain)
#   http://127.0.0.1:8404/stats                        (HAProxy's view of the instances)
# Settings (environment):
#   DIR      where pids, logs, certificates and NATS data go (default /tmp/herald-cluster)
#   HERALD   a prebuilt herald binary (default: build this tree into DIR)
#   NATS_SERVER  a nats-server binary (default: `nats-server` on PATH, else built
#            from the nats-server module version in go.mod, offline)
#   HISTORY  comma-separated channel patterns kept in the R3 stream (default
#            'demo.>'; empty: no stream, no history)
#   HISTORY_STREAM  that stream's name (default HERALD)
#   HERALD_ARGS  extra flags for every herald serve (e.g. "--log-level debug")
#   PUBLISH  0: no publisher (default 1: herald demo publishing ticks)
# Ports: NATS clients 4301-4303, routes 6301-6303, NATS monitoring (/jsz)
# 8222-8224, Herald 8101-8103, HAProxy 8100 (plain), 8443 (TLS), 8404
# (stats). Needs haproxy (Debian's package) and openssl; not the nats CLI
# (the stream is made over the NATS protocol).
set -euo pipefail
cd "$(dirname "$0")/.."

dir=${DIR:-/tmp/herald-cluster}
. scripts/lib.sh
history=${HISTORY-demo.>}
stream=${HISTORY_STREAM:-HERALD}
nodes=(1 2 3)
nats_port() { echo $((4300 + $1)); }
route_port() { echo $((6300 + $1)); }
monitor_port() { echo $((8221 + $1)); }
herald_port() { echo $((8100 + $1)); }

certs() {
  [ -f "$dir/haproxy.pem" ] && return
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj "/CN=herald cluster test CA" -keyout "$dir/ca-key.pem" -out "$dir/ca.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
    -keyout "$dir/server-key.pem" -out "$dir/server.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >"$dir/server.ext"
  openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca-key.pem" -CAcreateserial \
    -days 30 -extfile "$dir/server.ext" -out "$dir/server.pem" 2>/dev/null
  cat "$dir/server.pem" "$dir/server-key.pem" >"$dir/haproxy.pem"
}

start_nats() {
  local i=$1 routes="" j
  for j in "${nodes[@]}"; do routes+="nats-route://127.0.0.1:$(route_port "$j"),"; done
  mkdir -p "$dir/nats$i"
  cat >"$dir/nats$i.conf" <<EOF
server_name: n$i
listen: 127.0.0.1:$(nats_port "$i")
# /varz, /jsz (which node leads JetStream's meta group), /routez...
http: 127.0.0.1:$(monitor_port "$i")
jetstream { store_dir: "$dir/nats$i" }
cluster {
  name: herald
  listen: 127.0.0.1:$(route_port "$i")
  routes: [ ${routes%,} ]
}
EOF
  "$nats_server" -c "$dir/nats$i.conf" >"$dir/nats$i.log" 2>&1 &
  started "nats$i" $!
}

# js_api PORT SUBJECT JSON: one JetStream API request to the node on PORT
# over the NATS protocol (bash's /dev/tcp; no nats CLI needed), printing
# the reply; fails when none comes within 5 s.
js_api() {
  local port=$1 subject=$2 body=$3 inbox="_INBOX.cluster_sh.$$" line fd LC_ALL=C
  exec {fd}<>"/dev/tcp/127.0.0.1/$port" || return 1
  read -r -t 5 line <&"$fd" || { exec {fd}>&-; return 1; } # the server's INFO
  # LC_ALL=C: ${#body} counts bytes, as PUB wants.
  printf 'CONNECT {"verbose":false,"pedantic":false,"protocol":1}\r\nSUB %s 1\r\nPUB %s %s %d\r\n%s\r\n' \
    "$inbox" "$subject" "$inbox" "${#body}" "$body" >&"$fd"
  while read -r -t 5 line <&"$fd"; do
    line=${line%$'\r'}
    case $line in
      PING) printf 'PONG\r\n' >&"$fd" ;;
      MSG\ *)
        # The API answers with one line of JSON.
        read -r -t 5 line <&"$fd" && echo "${line%$'\r'}"
        exec {fd}>&-
        return 0
        ;;
      -ERR*) echo "NATS refused the request: $line" >&2; break ;;
    esac
  done
  exec {fd}>&-
  return 1
}

# history_stream: create (or update) the R3 stream that keeps $history,
# with the RePublish Herald needs (README "History and resume"), before any
# Herald starts, so that the three do not race to set it up; then wait for
# its leader, since a Herald asks for the stream's state at startup.
history_stream() {
  local subjects="" s reply op=CREATE
  IFS=, read -ra pats <<<"$history"
  for s in "${pats[@]}"; do
    # Patterns go into JSON as they are: no quotes or spaces to escape.
    [[ $s =~ ^[A-Za-z0-9_.*\>-]+$ ]] || { echo "HISTORY: $s is not a channel pattern" >&2; exit 1; }
    subjects+="\"$s\","
  done
  # What herald serve --history sets up for its own stream (100 messages a
  # subject for 24 h, direct gets, every stored message republished to
  # _HERALD.<stream>.<subject>), on three replicas, with the publisher's
  # Nats-Msg-Id deduplicated for 2 minutes.
  local cfg='{"name":"'$stream'","subjects":['${subjects%,}'],"storage":"file","num_replicas":3,"retention":"limits","discard":"old","max_msgs_per_subject":100,"max_age":86400000000000,"duplicate_window":120000000000,"allow_direct":true,"republish":{"src":">","dest":"_HERALD.'$stream'.>"}}'
  for _ in $(seq 120); do
    reply=$(js_api "$(nats_port 1)" "\$JS.API.STREAM.$op.$stream" "$cfg") || reply=""
    case $reply in
      *'"err_code":10058'*) op=UPDATE; continue ;; # there from an earlier start in $dir, configured otherwise
      # No reply, no meta leader yet (503), or it does not know three
      # peers yet (10005): the cluster is still forming.
      "" | *'"code":503'* | *'"err_code":10005'*) sleep 0.25; continue ;;
      *'"error"'*) echo "could not $op stream $stream: $reply" >&2; exit 1 ;;
    esac
    break
  done
  for _ in $(seq 120); do
    reply=$(js_api "$(nats_port 1)" "\$JS.API.STREAM.INFO.$stream" "") || reply=""
    case $reply in
      *'"leader":"n'*) echo "stream $stream (R3, $history) led by $(sed 's/.*"leader":"\([^"]*\)".*/\1/' <<<"$reply")"; return ;;
    esac
    sleep 0.25
  done
  echo "stream $stream has no leader after 30 s: ${reply:-no reply} (logs in $dir)" >&2
  exit 1
}

start_herald() {
  local i=$1 hist=""
  [ -n "$history" ] && hist="--history-stream $stream"
  # Only its own node's URL: nats.go learns the others from the cluster
  # and fails over to them, but starts here, so each instance is on a
  # different node.
  # eval for the quoting in HERALD_ARGS; exec so that the pid is herald's.
  (eval "exec \"\$herald\" serve --listen 127.0.0.1:$(herald_port "$i") --nats nats://127.0.0.1:$(nats_port "$i") \
    --drain-timeout 3s --log-level info $hist ${HERALD_ARGS:-}") >"$dir/herald$i.log" 2>&1 &
  started "herald$i" $!
}

start_haproxy() {
  local i servers=""
  for i in "${nodes[@]}"; do
    servers+="  server herald$i 127.0.0.1:$(herald_port "$i") check inter 500ms fall 2 rise 2"$'\n'
  done
  cat >"$dir/haproxy.cfg" <<EOF
global
  log stdout format raw local0 warning
  # Each proxied connection is two open files.
  maxconn $(( ($(ulimit -n) - 100) / 2 ))
defaults
  mode http
  log global
  option httplog
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  # A WebSocket is a tunnel once upgraded: its idle timeout must be above
  # Herald's --ping-interval (25 s), or HAProxy cuts quiet sockets.
  timeout tunnel 1h
  timeout client-fin 5s
frontend plain
  bind 127.0.0.1:8100
  default_backend heralds
frontend tls
  # TLS ends here, in front of Herald, which serves plain WebSocket.
  bind 127.0.0.1:8443 ssl crt $dir/haproxy.pem
  default_backend heralds
backend heralds
  # No sticky sessions: any instance serves any client.
  balance leastconn
  option httpchk GET /readyz
  http-check expect status 200
$servers
listen stats
  bind 127.0.0.1:8404
  stats enable
  stats uri /stats
EOF
  haproxy -f "$dir/haproxy.cfg" -db >"$dir/haproxy.log" 2>&1 &
  started haproxy $!
}

start() {
  command -v haproxy >/dev/null || { echo "cluster.sh needs haproxy (apt-get install haproxy)" >&2; exit 1; }
  command -v openssl >/dev/null || { echo "cluster.sh needs openssl" >&2; exit 1; }
  if [ -s "$dir/pids" ]; then
    echo "a cluster is already running from $dir: scripts/cluster.sh stop first" >&2
    exit 1
  fi
  # wait_port below would take another fleet's listener for this one's.
  local port
  for port in $(for i in "${nodes[@]}"; do nats_port "$i"; route_port "$i"; monitor_port "$i"; herald_port "$i"; done) 8100 8443 8404; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "127.0.0.1:$port is already in use (another fleet running?): nothing started" >&2
      exit 1
    fi
  done
  mkdir -p "$dir"
  : >"$dir/pids"
  trap 'echo "start failed: stopping what it started" >&2; stop >&2' EXIT
  binaries
  certs
  for i in "${nodes[@]}"; do start_nats "$i"; done
  for i in "${nodes[@]}"; do wait_port "$(nats_port "$i")" "nats-server n$i"; done
  [ -n "$history" ] && history_stream
  for i in "${nodes[@]}"; do start_herald "$i"; done
  for i in "${nodes[@]}"; do wait_port "$(herald_port "$i")" "herald $i"; done
  start_haproxy
  wait_port 8443 haproxy
  if [ "${PUBLISH:-1}" != 0 ]; then
    "$herald" demo --nats "nats://127.0.0.1:$(nats_port 1),nats://127.0.0.1:$(nats_port 2)" >"$dir/publisher.log" 2>&1 &
    started publisher $!
  fi
  trap - EXIT
  echo "fleet up in $dir:"
  echo "  wss://127.0.0.1:8443/ws   (CA: $dir/ca.pem)"
  echo "  ws://127.0.0.1:8100/ws"
  echo "  NATS: nats://127.0.0.1:4301,nats://127.0.0.1:4302,nats://127.0.0.1:4303"
  echo "  NATS monitoring: http://127.0.0.1:8222/jsz (8223, 8224)"
  echo "  HAProxy stats: http://127.0.0.1:8404/stats"
}

status() {
  [ -s "$dir/pids" ] || { echo "no cluster running from $dir"; return; }
  list_started
}

stop() {
  [ -s "$dir/pids" ] || { echo "no cluster running from $dir"; return; }
  # Publisher and HAProxy first, then the Herald instances (SIGTERM: they
  # drain), then NATS: last started first.
  stop_names '.'
  echo "stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  -h | --help) sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//' ;;
  *) echo "usage: $0 start|status|stop" >&2; exit 2 ;;
esac
