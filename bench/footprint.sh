#!/usr/bin/env bash
# orc's footprint on a Pi: idle RSS of a server and an agent, and bytes an
# idle 3-server control plane with 3 agents heartbeating writes, measured
# over a short window (WINDOW seconds, default 300) from /proc/PID/io and
# extrapolated to an hour (said so in the output), with the SD-card
# lifetime that implies.
#
# Usage: bench/footprint.sh [BINARY]   (default: dist/orc-x86_64-linux from
#        scripts/build-release.sh; the stripped dist build is what ships)
#        WINDOW=120 bench/footprint.sh    INSECURE=1 for plain text (--insecure)
# Needs Docker (the agents connect to it; they run no task here).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-dist/orc-x86_64-linux}
[ -x "$bin" ] || { echo "$bin is missing: run scripts/build-release.sh x86_64, or pass a binary" >&2; exit 1; }
window=${WINDOW:-300}
dir=$(mktemp -d /var/tmp/orc-footprint.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
p1=$(port); p2=$(port); p3=$(port)
# As orc ships: TLS, servers and agents joining with tokens. INSECURE=1
# measures plain text (--insecure), as the figures before TLS were taken.
if [ "${INSECURE:-0}" = 1 ]; then
  export ORC_CREDENTIALS=none
  access=(--insecure); join_server=(--insecure); join_agent=(--insecure)
else
  export ORC_CREDENTIALS="$dir/s1/tls/admin.json"
  access=(); join_server=(); join_agent=()
fi
"$bin" server "${access[@]}" --bootstrap --data-dir "$dir/s1" --listen "127.0.0.1:$p1" 2>"$dir/s1.log" & pids+=($!)
for _ in $(seq 100); do "$bin" --endpoint "127.0.0.1:$p1" --timeout 2 cluster status >/dev/null 2>&1 && break; sleep 0.2; done
token() {
  "$bin" --endpoint "127.0.0.1:$p1" --timeout 5 --output json token create --role "$1" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])'
}
if [ "${INSECURE:-0}" != 1 ]; then
  join_server=(--token "$(token server)"); join_agent=(--token "$(token agent)")
fi
"$bin" server "${join_server[@]}" --join "127.0.0.1:$p1" --data-dir "$dir/s2" --listen "127.0.0.1:$p2" 2>"$dir/s2.log" & pids+=($!)
"$bin" server "${join_server[@]}" --join "127.0.0.1:$p1" --data-dir "$dir/s3" --listen "127.0.0.1:$p3" 2>"$dir/s3.log" & pids+=($!)
servers=("${pids[@]}")
for i in 1 2 3; do
  "$bin" agent "${join_agent[@]}" --server "127.0.0.1:$p1,127.0.0.1:$p2,127.0.0.1:$p3" --data-dir "$dir/a$i" 2>"$dir/a$i.log" & pids+=($!)
done
agents=("${pids[@]:3}")
for _ in $(seq 150); do
  n=$("$bin" --endpoint "127.0.0.1:$p1" --timeout 2 --output json describe-container-instances 2>/dev/null \
      | python3 -c 'import json,sys; print(sum(1 for i in json.load(sys.stdin)["containerInstances"] if i["agentConnected"]))' 2>/dev/null || echo 0)
  [ "$n" = 3 ] && break; sleep 0.2
done
echo "3 servers and 3 agents up ($([ "${INSECURE:-0}" = 1 ] && echo plain text || echo TLS), $bin, $(stat -c %s "$bin") bytes); settling 20 s" >&2
sleep 20

io() { awk -v k="$2" '$1==k":"{print $2}' "/proc/$1/io"; }
rss() { awk '$1=="VmRSS:"{print $2}' "/proc/$1/status"; }
declare -A w0 c0
for p in "${pids[@]}"; do w0[$p]=$(io "$p" write_bytes); c0[$p]=$(io "$p" wchar); done
echo "measuring for $window s" >&2
sleep "$window"
sum_w() { local s=0; for p in "$@"; do s=$(( s + $(io "$p" write_bytes) - ${w0[$p]} )); done; echo $s; }
sum_c() { local s=0; for p in "$@"; do s=$(( s + $(io "$p" wchar) - ${c0[$p]} )); done; echo $s; }
sw=$(sum_w "${servers[@]}"); aw=$(sum_w "${agents[@]}"); sc=$(sum_c "${servers[@]}"); ac=$(sum_c "${agents[@]}")
max_rss() { local m=0 r; for p in "$@"; do r=$(rss "$p"); [ "$r" -gt "$m" ] && m=$r; done; echo $m; }
srss=$(max_rss "${servers[@]}"); arss=$(max_rss "${agents[@]}")
# What a member's RSS is made of: its heap and stacks (anonymous) against
# pages of the binary and libraries mapped from the page cache (file).
for p in "${pids[@]}"; do
  awk '$1=="RssAnon:"{a=$2} $1=="RssFile:"{f=$2} END{printf "%d: anonymous %.1f MiB, file-backed %.1f MiB\n", '"$p"', a/1024, f/1024}' "/proc/$p/status" >&2
done
python3 - "$window" "$sw" "$aw" "$sc" "$ac" "$srss" "$arss" "$(du -sb "$dir"/s1 | cut -f1)" <<'PY'
import sys
window, sw, aw, sc, ac, srss, arss, data = map(int, sys.argv[1:])
hour = 3600 / window
mib = 1024 * 1024
print(f"idle RSS (largest of 3): server {srss/1024:.1f} MiB (target < 20), agent {arss/1024:.1f} MiB (target < 15)")
print(f"measured over {window} s, extrapolated x{hour:.0f} to one hour:")
print(f"  3 servers: {sw*hour/mib:.2f} MiB/h to the block layer (write_bytes), {sc*hour/mib:.2f} MiB/h written by syscalls (wchar)")
print(f"  3 agents:  {aw*hour/mib:.2f} MiB/h to the block layer, {ac*hour/mib:.2f} MiB/h by syscalls")
per_server_day = max(sw, sc) / 3 * hour * 24
# A typical 32 GB consumer microSD card: ~1,000 program/erase cycles per cell
# with wear levelling: ~32 TB written, before write amplification; assume x4.
endurance = 32e9 * 1000 / 4
years = endurance / per_server_day / 365 if per_server_day else float("inf")
print(f"  one server writes {per_server_day/mib:.1f} MiB/day (the larger of the two counts):"
      f" a 32 GB card with ~1,000 P/E cycles and write amplification 4 lasts ~{years:,.0f} years at this rate")
print(f"  server data dir after the run: {data/1024:.0f} KiB")
PY
