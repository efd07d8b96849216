#!/usr/bin/env bash
# Prints the host settings a million WebSocket connections need, with the
# current value of each and why it matters; with --apply, sets them for the
# running system (root needed; nothing is written to /etc). Usage:
#   scripts/tune-host.sh            # show what would change
#   scripts/tune-host.sh --apply    # change it now (lost at reboot)
#
# Sizes assume the server and, for benchmarks, its load client on one box:
# every connection is then two sockets and two open files. CONNS (default
# 1000000) scales the targets.
set -euo pipefail

apply=false
case "${1:-}" in
  --apply) apply=true ;;
  ""|--dry-run) ;;
  -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "usage: $0 [--apply]" >&2; exit 2 ;;
esac

conns=${CONNS:-1000000}
mem_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
page_kb=$(( $(getconf PAGESIZE) / 1024 ))
changed=0

# show NAME WANT WHY...: prints one sysctl, and sets it with --apply when it
# differs. WANT may hold several numbers separated by spaces.
show() {
  local name=$1 want=$2; shift 2
  local path=/proc/sys/${name//.//}
  local have
  have=$({ tr -s ' \t' ' ' < "$path"; } 2>/dev/null || echo "?")
  printf '\n'; printf '# %s\n' "$@"
  if [ "$have" = "$want" ]; then
    printf '%-32s = %-28s (ok)\n' "$name" "$want"
    return
  fi
  printf '%-32s = %-28s (now: %s)\n' "$name" "$want" "$have"
  changed=$((changed + 1))
  if $apply; then
    sysctl -q -w "$name=$want" && echo "  -> set" || echo "  -> could not set $name" >&2
  fi
}

# at_least NAME MIN: the current value if it is already higher, else MIN.
at_least() {
  local have
  have=$(cat "/proc/sys/${1//.//}" 2>/dev/null || echo 0)
  if [ "$have" -gt "$2" ] 2>/dev/null; then echo "$have"; else echo "$2"; fi
}

echo "Host settings for $conns connections (CONNS=$conns), $((mem_kb / 1024 / 1024)) GiB of memory."
$apply || echo "Showing only; run with --apply (as root) to set them."

files=$((conns * 2 + 100000))
show fs.file-max "$(at_least fs.file-max "$files")" \
  "Open files for the whole system. Each connection is one file in the server" \
  "and, when the bench runs on the same box, one in the client."

nr_open=$(at_least fs.nr_open $((conns + 65536)))
show fs.nr_open "$nr_open" \
  "Ceiling on any process's open-file limit (RLIMIT_NOFILE): the server holds" \
  "every connection in one process, so its limit, and this ceiling, must exceed" \
  "the connection count. The default, 1048576, is just short of a million plus" \
  "listeners, NATS and logs."

show net.ipv4.ip_local_port_range "1024 65535" \
  "Ephemeral ports per source address. Only clients use them (the bench, or a" \
  "proxy in front of Herald), but each (source address, destination) pair can" \
  "hold at most this many connections, and connect() slows down once half are" \
  "taken. herald bench also spreads over 127.0.0.2, 127.0.0.3, ... Reserve" \
  "listening ports inside the range (net.ipv4.ip_local_reserved_ports, e.g." \
  "4222,8080) so that no client socket takes them first."

# tcp_mem is in pages: socket buffer memory for all of TCP. Past "pressure"
# the kernel shrinks buffers; past "max" it drops data and sockets stall.
low=$((mem_kb / page_kb / 8)); pressure=$((mem_kb / page_kb / 6)); high=$((mem_kb / page_kb / 4))
show net.ipv4.tcp_mem "$low $pressure $high" \
  "Memory for socket buffers, in pages (min, pressure, max): 1/8, 1/6 and 1/4 of" \
  "RAM. An idle socket holds no buffer, but a broadcast puts a frame in every" \
  "receiver's queue at once, a million of them; under the default (about 9% of" \
  "RAM) the kernel would prune and stall queues in the middle of a fan-out."

show net.core.somaxconn "$(at_least net.core.somaxconn 65535)" \
  "Longest accept queue a listener may ask for: gnet asks for this value when" \
  "herald serve starts, so restart it after raising this. A" \
  "reconnect storm of a million clients arrives faster than loops accept;" \
  "a short queue turns the excess into dropped SYNs and retries seconds later."

show net.ipv4.tcp_max_syn_backlog "$(at_least net.ipv4.tcp_max_syn_backlog 65535)" \
  "Half-open connections waiting for their handshake, for the same storms."

printf '\n'; printf '# %s\n' \
  "Open-file limit (nofile) of the process that runs herald serve, and of" \
  "herald bench: at least the connection count plus a few hundred. Set it where" \
  "the process starts: LimitNOFILE=$nr_open in a systemd unit, 'ulimit -n $nr_open'" \
  "in the shell (the hard limit must allow it: /etc/security/limits.d/), or" \
  "--ulimit nofile=$nr_open:$nr_open for a container."
printf '%-32s = %-28s (now, this shell: soft %s, hard %s)\n' nofile "$nr_open" "$(ulimit -Sn)" "$(ulimit -Hn)"
if $apply; then
  if prlimit --pid "$PPID" --nofile="$nr_open:$nr_open" 2>/dev/null; then
    echo "  -> raised for the calling shell (pid $PPID); processes it starts inherit it"
  else
    echo "  -> could not raise it here (no permission, or a container cap); set it where herald starts" >&2
  fi
fi

echo
if [ "$changed" -eq 0 ]; then
  echo "All sysctls are set."
elif $apply; then
  echo "Done. To keep them across reboots, put the lines above in /etc/sysctl.d/90-herald.conf."
else
  echo "$changed sysctl(s) differ. Apply with: sudo $0 --apply"
fi
