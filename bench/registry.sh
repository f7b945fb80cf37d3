#!/usr/bin/env bash
# orc's image registry against Debian's docker-registry (CNCF distribution
# 2.8) on the same machine, in one run: `docker push` and `docker pull` of a
# ~200 MiB image of 4 layers, and `skopeo copy` of it out of each registry.
# Prints seconds and MiB/s per direction, the ratios, and the idle RSS of
# each registry.
#
#   bench/registry.sh          # ORC_BENCH_LAYER_MIB=50 (4 layers)
#   ORC_BIN=dist/orc-x86_64-linux bench/registry.sh   # a given binary
#   TLS=1 bench/registry.sh    # both registries over TLS (orc as it ships,
#                              # distribution with a certificate made here)
#
# Needs docker-registry and skopeo (Debian's packages; installed when
# missing). The image is built here FROM scratch out of random files (no
# image is pulled); every tag, container and process it makes is removed
# on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
LAYER_MIB="${ORC_BENCH_LAYER_MIB:-50}"

missing=""
command -v docker-registry >/dev/null || missing="$missing docker-registry"
command -v skopeo >/dev/null || missing="$missing skopeo"
if [ -n "$missing" ]; then
    echo "installing$missing" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -o DPkg::Lock::Timeout=600 $missing >&2
fi

if [ -z "${ORC_BIN:-}" ]; then
    echo "building orc (release)" >&2
    cargo build --release --quiet
    ORC_BIN="$CARGO_TARGET_DIR/release/orc"
fi

work="$(mktemp -d)"
ORC_PORT=17480 DIST_PORT=17481
IMAGE=orc-bench-registry:1
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    docker rmi -f "$IMAGE" "127.0.0.1:$ORC_PORT/bench/img:1" "127.0.0.1:$DIST_PORT/bench/img:1" >/dev/null 2>&1 || true
    docker logout "127.0.0.1:$ORC_PORT" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

rss_mib() { awk '/^VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", b-a}'; }

# The image: 4 layers of random bytes (incompressible, like real binaries).
mkdir -p "$work/ctx"
printf 'FROM scratch\n' > "$work/ctx/Dockerfile"
for i in 1 2 3 4; do
    head -c "$((LAYER_MIB * 1024 * 1024))" /dev/urandom > "$work/ctx/layer$i"
    printf 'COPY layer%s /layer%s\n' "$i" "$i" >> "$work/ctx/Dockerfile"
done
echo "building a $((4 * LAYER_MIB)) MiB image of 4 layers" >&2
DOCKER_BUILDKIT=0 docker build -q -t "$IMAGE" "$work/ctx" >/dev/null 2>&1
SIZE_MIB=$(docker image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.1f", $1/1048576}')

# orc: a one-server control plane (no agent), registry on its API port.
# Plain text by default, as distribution serves here; with TLS=1 both serve
# TLS (Docker and skopeo skip verification for 127.0.0.0/8 registries).
TLS="${TLS:-0}"
dist_tls=""
if [ "$TLS" = 1 ]; then
    export ORC_CREDENTIALS="$work/orc/server/tls/admin.json"
    orc_access=()
    scheme=https
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=127.0.0.1 \
        -addext subjectAltName=IP:127.0.0.1 -keyout "$work/dist.key" -out "$work/dist.crt" >/dev/null 2>&1
    dist_tls=", tls: {certificate: $work/dist.crt, key: $work/dist.key}"
else
    export ORC_CREDENTIALS=none
    orc_access=(--insecure)
    scheme=http
fi
"$ORC_BIN" up --no-agent "${orc_access[@]}" --listen "127.0.0.1:$ORC_PORT" --data-dir "$work/orc" >"$work/orc.log" 2>&1 &
pids+=($!); ORC_PID=$!
# distribution 2.8 with a filesystem store.
cat > "$work/dist.yml" <<EOF
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $work/dist}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$DIST_PORT$dist_tls}
EOF
docker-registry serve "$work/dist.yml" >"$work/dist.log" 2>&1 &
pids+=($!); DIST_PID=$!

for port in $ORC_PORT $DIST_PORT; do
    for _ in $(seq 100); do
        curl -sk -o /dev/null "$scheme://127.0.0.1:$port/v2/" && break
        sleep 0.1
    done
done
# Idle RSS, after both have settled.
sleep 2
ORC_IDLE=$(rss_mib $ORC_PID) DIST_IDLE=$(rss_mib $DIST_PID)

"$ORC_BIN" --endpoint "127.0.0.1:$ORC_PORT" ecr get-login-password \
    | docker login --username AWS --password-stdin "127.0.0.1:$ORC_PORT" >/dev/null 2>&1

declare -A PUSH PULL SKOPEO
for name in orc dist; do
    port=$ORC_PORT; [ "$name" = dist ] && port=$DIST_PORT
    docker tag "$IMAGE" "127.0.0.1:$port/bench/img:1"
    start=$(now); docker push -q "127.0.0.1:$port/bench/img:1" >/dev/null; PUSH[$name]=$(secs "$start" "$(now)")
done
for name in orc dist; do
    port=$ORC_PORT; [ "$name" = dist ] && port=$DIST_PORT
    # Remove every local copy so the pull fetches every layer.
    docker rmi -f "$IMAGE" "127.0.0.1:$ORC_PORT/bench/img:1" "127.0.0.1:$DIST_PORT/bench/img:1" >/dev/null 2>&1 || true
    start=$(now); docker pull -q "127.0.0.1:$port/bench/img:1" >/dev/null; PULL[$name]=$(secs "$start" "$(now)")
    rm -rf "$work/oci-$name"
    start=$(now)
    skopeo copy -q --src-tls-verify=false "docker://127.0.0.1:$port/bench/img:1" "oci:$work/oci-$name:img" >/dev/null
    SKOPEO[$name]=$(secs "$start" "$(now)")
done
ORC_AFTER=$(rss_mib $ORC_PID) DIST_AFTER=$(rss_mib $DIST_PID)

mibs() { awk -v m="$SIZE_MIB" -v s="$1" 'BEGIN {printf "%.0f", m/s}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", b/a}'; }
echo
echo "image: $SIZE_MIB MiB in 4 layers; $([ "$TLS" = 1 ] && echo "both over TLS" || echo "plain HTTP"); load average: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-22s %10s %10s %12s\n' "" "orc" "distribution" "orc speed-up"
printf '%-22s %7ss %3s %8ss %3s %9sx\n' "docker push" "${PUSH[orc]}" "" "${PUSH[dist]}" "" "$(ratio "${PUSH[orc]}" "${PUSH[dist]}")"
printf '%-22s %7s MiB/s %5s MiB/s\n' "" "$(mibs "${PUSH[orc]}")" "$(mibs "${PUSH[dist]}")"
printf '%-22s %7ss %3s %8ss %3s %9sx\n' "docker pull" "${PULL[orc]}" "" "${PULL[dist]}" "" "$(ratio "${PULL[orc]}" "${PULL[dist]}")"
printf '%-22s %7s MiB/s %5s MiB/s\n' "" "$(mibs "${PULL[orc]}")" "$(mibs "${PULL[dist]}")"
printf '%-22s %7ss %3s %8ss %3s %9sx\n' "skopeo copy (out)" "${SKOPEO[orc]}" "" "${SKOPEO[dist]}" "" "$(ratio "${SKOPEO[orc]}" "${SKOPEO[dist]}")"
printf '%-22s %7s MiB %6s MiB\n' "idle RSS" "$ORC_IDLE" "$DIST_IDLE"
printf '%-22s %7s MiB %6s MiB\n' "RSS after the runs" "$ORC_AFTER" "$DIST_AFTER"
echo "(orc's RSS is the whole server: control plane and registry in one process)"
