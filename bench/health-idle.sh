#!/usr/bin/env bash
# The control plane's idle cost with target health checks running: one
# `orc server` (release) with 10 load balancers, each with a listener and a
# target group of 3 healthy targets (python3 http.server backends), checked
# every 5 s (the default). Once every target is healthy, it measures over
# 60 s the server's CPU (utime + stime from /proc), its RSS, and how many
# entries it wrote to the raft log (the applied index; steady checks must
# write none).
#
#   bash bench/health-idle.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}

cargo build --release --bin orc -q
bin=$PWD/target/release/orc
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

api=$((17400 + RANDOM % 400))
export ORC_ENDPOINT=127.0.0.1:$api
export ORC_CREDENTIALS=none  # plain text (--insecure): TLS costs are bench/tls.sh's
"$bin" server --insecure --bootstrap --data-dir "$work/server" --listen "$ORC_ENDPOINT" \
    >"$work/server.log" 2>&1 &
server_pid=$!
pids+=($server_pid)
for _ in $(seq 1 100); do
    "$bin" cluster status >/dev/null 2>&1 && break
    sleep 0.1
done

backends=()
for i in 1 2 3; do
    port=$((18400 + RANDOM % 400 + i * 500))
    mkdir -p "$work/www$i"
    echo "backend $i" >"$work/www$i/index.html"
    python3 -m http.server "$port" --bind 127.0.0.1 --directory "$work/www$i" \
        >/dev/null 2>&1 &
    pids+=($!)
    backends+=("$port")
done

elbv2() { "$bin" --output json elbv2 "$@"; }
first_listener=$((19400 + RANDOM % 400))
groups=()
for g in $(seq 1 10); do
    lb=$(elbv2 create-load-balancer --name "idle-$g" | jq -r '.LoadBalancers[0].LoadBalancerArn')
    tg=$(elbv2 create-target-group --name "idle-tg-$g" --protocol HTTP --port 80 \
        --target-type ip --health-check-path / | jq -r '.TargetGroups[0].TargetGroupArn')
    elbv2 create-listener --load-balancer-arn "$lb" --protocol HTTP \
        --port $((first_listener + g)) \
        --default-actions "Type=forward,TargetGroupArn=$tg" >/dev/null
    elbv2 register-targets --target-group-arn "$tg" --targets \
        "Id=127.0.0.1,Port=${backends[0]}" "Id=127.0.0.1,Port=${backends[1]}" \
        "Id=127.0.0.1,Port=${backends[2]}" >/dev/null
    groups+=("$tg")
done

healthy=0
for _ in $(seq 1 120); do
    healthy=0
    for tg in "${groups[@]}"; do
        n=$(elbv2 describe-target-health --target-group-arn "$tg" |
            jq '[.TargetHealthDescriptions[] | select(.TargetHealth.State == "healthy")] | length')
        healthy=$((healthy + n))
    done
    [[ $healthy == 30 ]] && break
    sleep 1
done
[[ $healthy == 30 ]] || { echo "only $healthy of 30 targets turned healthy" >&2; exit 1; }
echo "30 targets in 10 target groups healthy; measuring ${seconds} s" >&2

applied() { "$bin" --output json cluster status | jq -r .appliedIndex; }
ticks() { awk '{ print $14 + $15 }' /proc/"$1"/stat; }
hz=$(getconf CLK_TCK)
index_before=$(applied)
ticks_before=$(ticks $server_pid)
sleep "$seconds"
ticks_after=$(ticks $server_pid)
index_after=$(applied)
cpu=$(awk -v t=$((ticks_after - ticks_before)) -v hz="$hz" -v s="$seconds" \
    'BEGIN { printf "%.2f", 100 * t / hz / s }')
rss=$(awk '/VmRSS/ { print $2 }' /proc/$server_pid/status)
checks=$((30 * seconds / 5))
echo "orc server, 10 target groups x 3 targets checked every 5 s (~$checks checks): ${cpu}% of one core over ${seconds} s, RSS $((rss / 1024)) MiB, raft entries written: $((index_after - index_before))"
