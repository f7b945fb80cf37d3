#!/usr/bin/env bash
# Smoke-tests the ARM binaries from scripts/build-release.sh under
# qemu-user-static: `orc --version`, then a one-server `orc server
# --bootstrap` (on qemu) that answers `orc cluster status` (the same ARM
# binary, on qemu, as the client).
#
# Usage: scripts/smoke-arm.sh [aarch64|armv7 ...]   (default: both)
set -euo pipefail
cd "$(dirname "$0")/.."
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(aarch64 armv7)

for t in "${targets[@]}"; do
  case "$t" in
    aarch64) qemu=qemu-aarch64-static ;;
    armv7) qemu=qemu-arm-static ;;
    *) echo "unknown target '$t': use aarch64 or armv7" >&2; exit 2 ;;
  esac
  bin="dist/orc-$t-linux"
  [ -x "$bin" ] || { echo "$bin is missing: run scripts/build-release.sh $t first" >&2; exit 1; }
  command -v "$qemu" >/dev/null || { echo "$qemu is missing: apt-get install qemu-user-static" >&2; exit 1; }

  echo "== $t: $($qemu "$bin" --version)"
  dir=$(mktemp -d)
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  # The server bootstraps with TLS (as it ships); the CLI uses the admin
  # credential it writes.
  export ORC_CREDENTIALS="$dir/server/tls/admin.json"
  "$qemu" "$bin" server --bootstrap --data-dir "$dir/server" --listen "127.0.0.1:$port" >"$dir/server.log" 2>&1 &
  pid=$!
  ok=0
  for _ in $(seq 120); do
    if "$qemu" "$bin" --endpoint "127.0.0.1:$port" --timeout 5 cluster status >"$dir/status.txt" 2>&1; then
      ok=1; break
    fi
    sleep 0.5
  done
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  if [ "$ok" = 1 ]; then
    cat "$dir/status.txt"
    echo "== $t: orc server under $qemu answers orc cluster status"
    rm -rf "$dir"
  else
    echo "== $t: the server under $qemu never answered; its log:" >&2
    cat "$dir/server.log" "$dir/status.txt" >&2
    rm -rf "$dir"
    exit 1
  fi
done
