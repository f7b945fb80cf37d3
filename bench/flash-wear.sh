#!/usr/bin/env bash
# Flash wear: the bytes that reach the disk (an SD card on a Pi), per hour.
#
# Each side's data dirs live on their own ext4 file system (noatime, as
# Raspberry Pi OS mounts its root) on a loop device, so the figure is what the
# block device received, journal and metadata included, read from
# /sys/block/loopN/stat after a `sync -f` at both ends of the window:
#
#   1. an idle orc control plane of 3 servers with 3 agents heartbeating,
#      beside etcd (Debian's etcd-server) in the same 3-member shape with 3
#      clients renewing a node lease every 10 s, as each Kubernetes kubelet
#      does (a ~350-byte Lease object put through the gRPC gateway); both
#      measured over the same window, at the same time;
#   2. the same orc cluster running 20 tasks: a service of 19 that sleep, and
#      a service of 1 whose task exits after a minute and is replaced.
#
# Usage: bench/flash-wear.sh [BINARY]   (default: dist/orc-x86_64-linux, else
#        target/release/orc)   WINDOW=300 (seconds per measurement)
# Needs root (loop mounts), Docker, etcd (apt-get install etcd-server) and
# busybox (apt-get install busybox-static). Docker's own writes (image
# layers, container logs) are not counted: they go to Docker's disk.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-}
if [ -z "$bin" ]; then
  if [ -x dist/orc-x86_64-linux ]; then bin=dist/orc-x86_64-linux; else bin=target/release/orc; fi
fi
[ -x "$bin" ] || { echo "$bin is missing: run scripts/build-release.sh x86_64 or cargo build --release, or pass a binary" >&2; exit 1; }
command -v etcd >/dev/null || { echo "etcd is missing: apt-get install etcd-server" >&2; exit 1; }
[ -x /bin/busybox ] || { echo "/bin/busybox is missing: apt-get install busybox-static" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "the loop-mounted file systems need root: run this as root" >&2; exit 1; }
window=${WINDOW:-300}
bin=$(readlink -f "$bin")
dir=$(mktemp -d /var/tmp/orc-flash.XXXXXX)
image=orc-flash-bench/busybox:1
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  docker ps -aq --filter "ancestor=$image" | xargs -r docker rm -f >/dev/null 2>&1 || true
  for m in "$dir"/orc "$dir"/etcd; do mountpoint -q "$m" && umount "$m"; done
  rm -rf "$dir"
}
trap cleanup EXIT
say() { [ -t 2 ] && printf '\r\033[K%s' "$*" >&2 || true; }

# One ext4 file system on a loop device per side. Inode tables and the
# journal are initialised now, not lazily in the window.
mkdisk() {
  truncate -s 2G "$dir/$1.img"
  mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$dir/$1.img"
  mkdir -p "$dir/$1"
  mount -o loop,noatime "$dir/$1.img" "$dir/$1"
}
written() {  # bytes written to the block device under mount point $1
  sync -f "$1"
  local dev; dev=$(basename "$(findmnt -n -o SOURCE "$1")")
  awk '{print $7 * 512}' "/sys/block/$dev/stat"
}
mkdisk orc; mkdisk etcd

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# orc: 3 servers, 3 agents (plain text on loopback, as bench/footprint.sh).
export ORC_CREDENTIALS=none
p1=$(port); p2=$(port); p3=$(port)
orc() { "$bin" --endpoint "127.0.0.1:$p1" --timeout 10 "$@"; }
"$bin" server --insecure --bootstrap --data-dir "$dir/orc/s1" --listen "127.0.0.1:$p1" 2>"$dir/s1.log" & pids+=($!)
for _ in $(seq 100); do orc cluster status >/dev/null 2>&1 && break; sleep 0.2; done
"$bin" server --insecure --join "127.0.0.1:$p1" --data-dir "$dir/orc/s2" --listen "127.0.0.1:$p2" 2>"$dir/s2.log" & pids+=($!)
"$bin" server --insecure --join "127.0.0.1:$p1" --data-dir "$dir/orc/s3" --listen "127.0.0.1:$p3" 2>"$dir/s3.log" & pids+=($!)
for i in 1 2 3; do
  "$bin" agent --insecure --server "127.0.0.1:$p1,127.0.0.1:$p2,127.0.0.1:$p3" --data-dir "$dir/orc/a$i" 2>"$dir/a$i.log" & pids+=($!)
done
connected() {
  orc --output json describe-container-instances 2>/dev/null \
    | python3 -c 'import json,sys; print(sum(1 for i in json.load(sys.stdin)["containerInstances"] if i["agentConnected"]))' 2>/dev/null || echo 0
}
for _ in $(seq 300); do [ "$(connected)" = 3 ] && break; say "waiting for 3 agents"; sleep 0.2; done
[ "$(connected)" = 3 ] || { echo "the 3 agents did not connect; logs in $dir" >&2; cat "$dir"/a1.log >&2; exit 1; }

# etcd: 3 members, and 3 "kubelets" renewing their node leases every 10 s.
e=(); ep=(); for i in 1 2 3; do e+=("$(port)"); ep+=("$(port)"); done
cluster="e1=http://127.0.0.1:${ep[0]},e2=http://127.0.0.1:${ep[1]},e3=http://127.0.0.1:${ep[2]}"
for i in 0 1 2; do
  n=$((i + 1))
  etcd --name "e$n" --data-dir "$dir/etcd/e$n" \
    --listen-client-urls "http://127.0.0.1:${e[$i]}" --advertise-client-urls "http://127.0.0.1:${e[$i]}" \
    --listen-peer-urls "http://127.0.0.1:${ep[$i]}" --initial-advertise-peer-urls "http://127.0.0.1:${ep[$i]}" \
    --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token orc-flash \
    2>"$dir/etcd$n.log" & pids+=($!)
done
python3 - "${e[@]}" <<'PY' &
import base64, json, sys, time, urllib.request
ports = sys.argv[1:]
def put(port, node):
    # A coordination.k8s.io/v1 Lease as the API server stores it (JSON here).
    lease = {"kind": "Lease", "apiVersion": "coordination.k8s.io/v1",
             "metadata": {"name": node, "namespace": "kube-node-lease", "resourceVersion": str(time.time_ns())},
             "spec": {"holderIdentity": node, "leaseDurationSeconds": 40,
                      "renewTime": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())}}
    body = json.dumps({"key": base64.b64encode(f"/registry/leases/kube-node-lease/{node}".encode()).decode(),
                       "value": base64.b64encode(json.dumps(lease).encode()).decode()}).encode()
    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/v3/kv/put", body), timeout=5).read()
while True:
    for i, port in enumerate(ports):
        try:
            put(port, f"pi-agent-{i + 1}")
        except Exception:
            pass  # the members are still starting
    time.sleep(10)
PY
pids+=($!)
for _ in $(seq 150); do
  curl -sf "http://127.0.0.1:${e[0]}/health" 2>/dev/null | grep -q '"true"' && break; sleep 0.2
done

echo "orc ($bin) and etcd $(etcd --version | awk 'NR==1{print $3}') up; settling 20 s, then measuring ${window} s" >&2
sleep 20
o0=$(written "$dir/orc"); e0=$(written "$dir/etcd")
for s in $(seq "$window" -1 1); do say "idle: ${s} s left"; sleep 1; done; say ""
o1=$(written "$dir/orc"); e1=$(written "$dir/etcd")

# 20 tasks, one replaced every minute.
(cd / && tar -c bin/busybox) | docker import -c 'ENTRYPOINT ["/bin/busybox"]' - "$image" >/dev/null
orc register-task-definition --family flash-steady \
  --container-definitions "[{\"name\":\"c\",\"image\":\"$image\",\"memory\":16,\"command\":[\"sleep\",\"86400\"]}]" >/dev/null
orc register-task-definition --family flash-minutely \
  --container-definitions "[{\"name\":\"c\",\"image\":\"$image\",\"memory\":16,\"command\":[\"sleep\",\"60\"]}]" >/dev/null
orc create-service --service-name steady --task-definition flash-steady --desired-count 19 >/dev/null
orc create-service --service-name minutely --task-definition flash-minutely --desired-count 1 >/dev/null
running() { orc --output json list-tasks --desired-status RUNNING 2>/dev/null | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["taskArns"]))' 2>/dev/null || echo 0; }
for _ in $(seq 600); do [ "$(running)" -ge 20 ] && break; say "starting 20 tasks: $(running) running"; sleep 0.5; done; say ""
[ "$(running)" -ge 20 ] || { echo "20 tasks did not start; logs in $dir" >&2; exit 1; }
sleep 20
t0=$(written "$dir/orc")
for s in $(seq "$window" -1 1); do say "20 tasks: ${s} s left"; sleep 1; done; say ""
t1=$(written "$dir/orc")
stopped=$(orc --output json list-tasks --desired-status STOPPED --service-name minutely 2>/dev/null \
  | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["taskArns"]))' 2>/dev/null || echo "?")
orc update-service --service steady --desired-count 0 >/dev/null
orc update-service --service minutely --desired-count 0 >/dev/null
for _ in $(seq 300); do [ "$(running)" = 0 ] && break; say "stopping the tasks"; sleep 0.5; done; say ""

python3 - "$window" "$((o1 - o0))" "$((e1 - e0))" "$((t1 - t0))" "$stopped" <<'PY'
import sys
window, orc, etcd, tasks = map(int, sys.argv[1:5])
stopped = sys.argv[5]
hour = 3600 / window
mib = 1024 * 1024
print(f"bytes to the block device, {window} s windows extrapolated x{hour:.0f} to an hour (ext4 on loop, journal included):")
print(f"  idle, 3 members + 3 agents/kubelets: orc {orc*hour/mib:8.2f} MiB/h   etcd {etcd*hour/mib:8.2f} MiB/h   orc/etcd {orc/etcd if etcd else float('nan'):.2f}")
print(f"  orc with 20 tasks, one replaced each minute: {tasks*hour/mib:8.2f} MiB/h  (minutely tasks stopped so far: {stopped})")
# A typical 32 GB consumer microSD card: ~1,000 program/erase cycles per
# cell with wear levelling, so ~32 TB, divided by a write amplification of 4.
endurance = 32e9 * 1000 / 4
for name, b in (("orc idle", orc), ("orc with 20 tasks", tasks), ("etcd idle", etcd)):
    # The 3 members' data dirs (and orc's 3 agents') share a disk: a third is one board's.
    per_board_day = b / 3 * hour * 24
    if per_board_day == 0:
        print(f"  one board, {name}: nothing reached the disk in {window} s")
        continue
    years = endurance / per_board_day / 365
    print(f"  one board, {name}: {per_board_day/mib:.1f} MiB/day;"
          f" a 32 GB card (~1,000 P/E cycles, write amplification 4) lasts ~{years:,.0f} years")
PY
