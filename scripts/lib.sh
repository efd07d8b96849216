# Shared by scripts/cluster.sh and scripts/scale.sh, which source it after
# setting $dir: the file of the processes a script started ($dir/pids, one
# "NAME PID" a line), and waiting for them, building them and stopping
# exactly them.

# started NAME PID: remember a process this script started, for stop.
started() { echo "$1 $2" >>"$dir/pids"; }

alive() { kill -0 "$1" 2>/dev/null; }

# wait_port PORT WHAT: until something accepts on 127.0.0.1:PORT.
wait_port() {
  for _ in $(seq 150); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return; fi
    sleep 0.1
  done
  echo "$2 did not start listening on 127.0.0.1:$1 (logs in $dir)" >&2
  exit 1
}

# binaries: $herald and $nats_server, prebuilt (HERALD, NATS_SERVER, or
# nats-server on PATH) or built into $dir from this tree and the module's
# nats-server version, offline.
binaries() {
  herald=${HERALD:-}
  if [ -z "$herald" ]; then
    herald=$dir/herald
    go build -o "$herald" ./cmd/herald
  fi
  nats_server=${NATS_SERVER:-$(command -v nats-server || true)}
  if [ -z "$nats_server" ]; then
    nats_server=$dir/nats-server
    [ -x "$nats_server" ] || go build -o "$nats_server" github.com/nats-io/nats-server/v2
  fi
}

# stop_names PATTERN: stop the started processes whose name matches, last
# started first, SIGTERM then SIGKILL, and forget them.
stop_names() {
  [ -s "$dir/pids" ] || return 0
  local name pid pids=()
  while read -r name pid; do
    [[ $name =~ $1 ]] && pids+=("$pid")
  done < <(tac "$dir/pids")
  # CONT first: a stopped process (SIGSTOP, a suspended job) would not act
  # on the TERM.
  for pid in "${pids[@]}"; do alive "$pid" && kill -CONT "$pid" 2>/dev/null && kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 100); do alive "$pid" || break; sleep 0.1; done
    alive "$pid" && kill -KILL "$pid" 2>/dev/null || true
  done
  awk -v re="$1" '$1 !~ re' "$dir/pids" >"$dir/pids.left"
  mv "$dir/pids.left" "$dir/pids"
}

# list_started: each started process, running or gone.
list_started() {
  local name pid
  while read -r name pid; do
    if alive "$pid"; then echo "$name $pid running"; else echo "$name $pid gone"; fi
  done <"$dir/pids"
}
