#!/usr/bin/env bash
# The AWS door's overhead against Orc.Call (issue 15's measure): boto3, the
# door's raw awsJson1_1 request, and Orc.Call through grpcio, 1,000
# DescribeServices and ListTasks each, against one `orc up --no-agent`, in
# one run. Prints req/s, p50, p99 and the door's p50 over Orc.Call's.
#
#   bench/aws-door.sh            # ORC_BENCH_CALLS=1000
#
# Installs boto3, grpcio and grpcio-tools from PyPI when missing. The door
# is measured unsigned on a loopback server started --insecure (where the
# server has no keys to check), so the figure is the door's own cost; boto3's
# row includes its signing and parsing, as a user sees it.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
CALLS="${ORC_BENCH_CALLS:-1000}"

python3 -c 'import boto3, grpc, grpc_tools' 2>/dev/null || pip install -q boto3 grpcio grpcio-tools >&2

echo "building orc (release)" >&2
cargo build --release --quiet
ORC_BIN="$CARGO_TARGET_DIR/release/orc"
PORT=17490
work="$(mktemp -d)"
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

insecure=""
"$ORC_BIN" up --help 2>/dev/null | grep -q -- '--insecure' && insecure="--insecure" && export ORC_CREDENTIALS=none
"$ORC_BIN" up --no-agent $insecure --listen "127.0.0.1:$PORT" --data-dir "$work/orc" >"$work/orc.log" 2>&1 &
pid=$!
export ORC_ENDPOINT="127.0.0.1:$PORT"
for _ in $(seq 100); do "$ORC_BIN" list-clusters >/dev/null 2>&1 && break; sleep 0.1; done
cat > "$work/td.json" <<JSON
{"family": "bench", "containerDefinitions": [{"name": "web", "image": "busybox", "memory": 16}]}
JSON
"$ORC_BIN" register-task-definition --cli-input-json "file://$work/td.json" >/dev/null
"$ORC_BIN" create-service --service-name bench --task-definition bench --desired-count 0 >/dev/null

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 bench/aws_door.py "127.0.0.1:$PORT" proto "$CALLS"
