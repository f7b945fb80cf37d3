#!/usr/bin/env bash
# CPU per request of orc's load balancer (one or more builds of
# benches/proxy.rs) and HAProxy, measured with `perf stat` while wrk loads
# each in turn: task-clock, context switches and syscalls of the proxy's
# process divided by the requests wrk completed. Unlike req/s, CPU per
# request barely moves when other work shares the machine, so builds can be
# compared in one sitting on a busy machine. The proxies are set up as in
# bench/proxy.sh (same backends, 2 threads each) and measured alternately,
# ORC_BENCH_ROUNDS times.
#
#   bench/proxy-cpu.sh BIN [BIN...]   # bench binaries (cargo bench --bench proxy --no-run)
#
# Needs nginx, haproxy, wrk and perf (linux-perf). Prints one line per
# proxy and round, then the median per proxy.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
DURATION="${ORC_BENCH_DURATION:-5}"
CONNECTIONS="${ORC_BENCH_CONNECTIONS:-64}"
THREADS="${ORC_BENCH_THREADS:-2}"
ROUNDS="${ORC_BENCH_ROUNDS:-3}"
[ $# -ge 1 ] || { echo "usage: bench/proxy-cpu.sh BENCH-BINARY [BENCH-BINARY...]" >&2; exit 2; }
for tool in nginx haproxy wrk perf; do
    command -v $tool >/dev/null || { echo "$tool is missing (apt-get install nginx-light haproxy wrk linux-perf)" >&2; exit 1; }
done

work="$CARGO_TARGET_DIR/proxy-cpu"
rm -rf "$work"
mkdir -p "$work/nginx-backends"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

B1=18181 B2=18182 B3=18183 HAPROXY=18192 FIRST_ORC=18194

. bench/proxy-peers.sh
write_backends_conf
write_haproxy_cfg

nginx -c "$work/nginx-backends/nginx.conf" -p "$work/nginx-backends" >"$work/nginx-backends/out.log" 2>&1 &
pids+=($!)
haproxy -f "$work/haproxy.cfg" -db >"$work/haproxy.log" 2>&1 &
haproxy_pid=$!
pids+=($haproxy_pid)
names=(haproxy) ports=($HAPROXY) procs=($haproxy_pid)
port=$FIRST_ORC
for bin in "$@"; do
    "$bin" --port $port --workers "$THREADS" --targets 127.0.0.1:$B1,127.0.0.1:$B2,127.0.0.1:$B3 >"$work/orc-$port.log" 2>&1 &
    pids+=($!)
    names+=("orc:$(basename "$bin")") ports+=($port) procs+=($!)
    port=$((port + 1))
done
for p in $B1 $B2 $B3 "${ports[@]}"; do wait_port "$p"; done
for p in "${ports[@]}"; do
    curl -fsS "http://127.0.0.1:$p/" >/dev/null || { echo "port $p does not proxy; see $work" >&2; exit 1; }
done

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
printf "%-32s %5s %9s %10s %9s %9s\n" proxy round "req/s" "CPU us/req" "cs/req" "sys/req"
results="$work/results.txt"
: >"$results"
for round in $(seq 1 "$ROUNDS"); do
    for i in "${!names[@]}"; do
        name=${names[$i]} port=${ports[$i]} pid=${procs[$i]}
        wrk -t"$THREADS" -c"$CONNECTIONS" -d2s "http://127.0.0.1:$port/" >/dev/null
        perf stat -x, -e task-clock,context-switches,raw_syscalls:sys_enter -p "$pid" -o "$work/perf.txt" &
        perf_pid=$!
        sleep 0.2
        wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" "http://127.0.0.1:$port/" >"$work/wrk.txt"
        kill -INT $perf_pid
        wait $perf_pid 2>/dev/null || true
        requests=$(awk '/requests in/ { print $1 }' "$work/wrk.txt")
        rps=$(awk '/^Requests\/sec/ { printf "%.0f", $2 }' "$work/wrk.txt")
        clock=$(awk -F, '$3 == "task-clock" { print $1 }' "$work/perf.txt")
        cs=$(awk -F, '$3 == "context-switches" { print $1 }' "$work/perf.txt")
        sys=$(awk -F, '$3 == "raw_syscalls:sys_enter" { print $1 }' "$work/perf.txt")
        line=$(awk -v r="$requests" -v c="$clock" -v s="$cs" -v y="$sys" 'BEGIN { printf "%10.2f %9.3f %9.2f", c * 1000 / r, s / r, y / r }')
        printf "%-32s %5s %9s %s\n" "$name" "$round" "$rps" "$line"
        echo "$name $line" >>"$results"
    done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "median CPU us/req (ratio to haproxy):"
haproxy_median=$(awk '$1 == "haproxy" { print $2 }' "$results" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
for name in "${names[@]}"; do
    median=$(awk -v n="$name" '$1 == n { print $2 }' "$results" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
    printf "%-32s %8s  %s\n" "$name" "$median" "$(awk -v a="$median" -v b="$haproxy_median" 'BEGIN { printf "%.2f", a / b }')"
done
