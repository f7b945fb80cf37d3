#!/usr/bin/env bash
# orc's load balancer data path (src/proxy) against nginx and HAProxy, all
# three configured alike: round-robin over the same three backends (nginx
# server blocks on loopback returning a small static body), keep-alive on
# both sides. One run prints req/s, p50, p99 and the ratios, orc's RSS
# under load and its idle CPU with 10 target groups' routes loaded.
#
#   bench/proxy.sh            # ORC_BENCH_DURATION=10s ORC_BENCH_CONNECTIONS=64
#   ORC_BENCH_BIN=target/release/deps/proxy-HASH bench/proxy.sh   # a binary built before
#
# orc serves on ORC_BENCH_THREADS worker threads (ProxyOptions::workers),
# as HAProxy's nbthread and nginx's worker_processes.
#
# Needs nginx, haproxy and wrk (Debian's packages; installed when missing
# and apt-get is there). Logs and configs go to $CARGO_TARGET_DIR/proxy-bench/.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
DURATION="${ORC_BENCH_DURATION:-10s}"
CONNECTIONS="${ORC_BENCH_CONNECTIONS:-64}"
THREADS="${ORC_BENCH_THREADS:-2}"

missing=""
command -v nginx >/dev/null || missing="$missing nginx-light"
command -v haproxy >/dev/null || missing="$missing haproxy"
command -v wrk >/dev/null || missing="$missing wrk"
if [ -n "$missing" ]; then
    echo "installing$missing" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -o DPkg::Lock::Timeout=600 $missing >&2
fi

work="$CARGO_TARGET_DIR/proxy-bench"
rm -rf "$work"
mkdir -p "$work/nginx-backends" "$work/nginx-proxy"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

B1=18081 B2=18082 B3=18083 ORC=18090 NGINX=18091 HAPROXY=18092 IDLE=18093

if [ -n "${ORC_BENCH_BIN:-}" ]; then
    # A bench binary built before (cargo bench --bench proxy --no-run).
    bin=$ORC_BENCH_BIN
else
    echo "building the bench binary (release)" >&2
    bin=$(cargo bench --bench proxy --no-run 2>&1 | tee "$work/build.log" | sed -n 's/.*Executable benches\/proxy.rs (\(.*\))/\1/p' | tail -1)
fi
[ -x "$bin" ] || { echo "cannot find the proxy bench binary; see $work/build.log" >&2; exit 1; }

common_nginx="error_log $work/%s/error.log warn; pid $work/%s/nginx.pid; daemon off; worker_rlimit_nofile 65536;
events { worker_connections 4096; }"
. bench/proxy-peers.sh
write_backends_conf
# nginx as the proxy: round-robin upstream with keep-alive connections.
cat > "$work/nginx-proxy/nginx.conf" <<CONF
$(printf "$common_nginx" nginx-proxy nginx-proxy)
worker_processes $THREADS;
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $work/nginx-proxy; proxy_temp_path $work/nginx-proxy;
    fastcgi_temp_path $work/nginx-proxy; uwsgi_temp_path $work/nginx-proxy; scgi_temp_path $work/nginx-proxy;
    upstream backends {
        server 127.0.0.1:$B1; server 127.0.0.1:$B2; server 127.0.0.1:$B3;
        keepalive 128;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGINX;
        location / {
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
        }
    }
}
CONF
write_haproxy_cfg


nginx -c "$work/nginx-backends/nginx.conf" -p "$work/nginx-backends" >"$work/nginx-backends/out.log" 2>&1 &
pids+=($!)
nginx -c "$work/nginx-proxy/nginx.conf" -p "$work/nginx-proxy" >"$work/nginx-proxy/out.log" 2>&1 &
pids+=($!)
haproxy -f "$work/haproxy.cfg" -db >"$work/haproxy.log" 2>&1 &
pids+=($!)
"$bin" --port $ORC --workers "$THREADS" --targets 127.0.0.1:$B1,127.0.0.1:$B2,127.0.0.1:$B3 >"$work/orc.log" 2>&1 &
orc_pid=$!
pids+=($orc_pid)
for port in $B1 $B2 $B3 $NGINX $HAPROXY $ORC; do wait_port $port; done
for port in $ORC $NGINX $HAPROXY; do
    curl -fsS "http://127.0.0.1:$port/" >/dev/null || { echo "port $port does not proxy; see $work" >&2; exit 1; }
done

# wrk's latency figures in ms.
to_ms() {
    awk '{ v=$1; if (v ~ /us$/) { sub(/us$/,"",v); v=v/1000 } else if (v ~ /ms$/) { sub(/ms$/,"",v) } else if (v ~ /s$/) { sub(/s$/,"",v); v=v*1000 }; printf "%.2f", v }'
}
declare -A RPS P50 P99 ERRORS
run() {
    local name=$1 port=$2
    # A short warm-up fills the connection pools.
    wrk -t"$THREADS" -c"$CONNECTIONS" -d2s "http://127.0.0.1:$port/" >/dev/null
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "http://127.0.0.1:$port/" >"$work/wrk-$name.txt"
    RPS[$name]=$(awk '/^Requests\/sec/ { printf "%.0f", $2 }' "$work/wrk-$name.txt")
    P50[$name]=$(awk '$1 == "50%" { print $2 }' "$work/wrk-$name.txt" | to_ms)
    P99[$name]=$(awk '$1 == "99%" { print $2 }' "$work/wrk-$name.txt" | to_ms)
    ERRORS[$name]=$(awk '/Non-2xx|Socket errors/ { printf "%s ", $0 }' "$work/wrk-$name.txt")
}

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores" >&2
echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION against orc" >&2
rss_samples="$work/orc-rss.txt"
( while kill -0 $orc_pid 2>/dev/null; do awk '/VmRSS/ { print $2 }' /proc/$orc_pid/status; sleep 0.5; done ) >"$rss_samples" 2>/dev/null &
sampler=$!
run orc $ORC
kill $sampler 2>/dev/null || true
rss_kib=$(sort -n "$rss_samples" | tail -1)
echo "wrk against nginx" >&2
run nginx $NGINX
echo "wrk against haproxy" >&2
run haproxy $HAPROXY
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# Idle CPU with 10 target groups' routes loaded (no traffic; health checks
# are the control plane's, not the proxy's, so none run here).
"$bin" --port $IDLE --groups 10 --targets 127.0.0.1:$B1,127.0.0.1:$B2,127.0.0.1:$B3 >"$work/orc-idle.log" 2>&1 &
idle_pid=$!
pids+=($idle_pid)
wait_port $IDLE
curl -fsS "http://127.0.0.1:$IDLE/g7/x" >/dev/null
sleep 1
ticks() { awk '{ print $14 + $15 }' /proc/"$1"/stat; }
before=$(ticks $idle_pid)
sleep 10
after=$(ticks $idle_pid)
hz=$(getconf CLK_TCK)
idle_cpu=$(awk -v t=$((after - before)) -v hz="$hz" 'BEGIN { printf "%.2f", 100 * t / hz / 10 }')
idle_rss=$(awk '/VmRSS/ { print $2 }' /proc/$idle_pid/status)

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
echo
echo "orc's load balancer vs nginx and HAProxy: wrk -t$THREADS -c$CONNECTIONS -d$DURATION, 3 backends, keep-alive both sides"
echo "load average before/after: $(cut -d' ' -f1-3 <<<"${load_after}") (after), on $(nproc) cores"
printf "%-10s %10s %9s %9s  %s\n" proxy "req/s" "p50 ms" "p99 ms" "errors"
for name in orc nginx haproxy; do
    printf "%-10s %10s %9s %9s  %s\n" "$name" "${RPS[$name]}" "${P50[$name]}" "${P99[$name]}" "${ERRORS[$name]:-none}"
done
echo "throughput orc/nginx: $(ratio "${RPS[orc]}" "${RPS[nginx]}")   orc/haproxy: $(ratio "${RPS[orc]}" "${RPS[haproxy]}")"
echo "p99 orc/nginx: $(ratio "${P99[orc]}" "${P99[nginx]}")   orc/haproxy: $(ratio "${P99[orc]}" "${P99[haproxy]}")   (below 1 is better)"
echo "orc RSS under load (peak of 0.5 s samples): $((rss_kib / 1024)) MiB"
echo "orc idle CPU with 10 target groups' routes loaded (no health checks; they are the control plane's): ${idle_cpu}% of one core over 10 s, RSS $((idle_rss / 1024)) MiB"
