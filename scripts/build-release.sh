#!/usr/bin/env bash
# Builds the distribution binaries of orc for the three targets a Raspberry Pi
# cluster needs, with the `dist` profile (LTO, one codegen unit, stripped):
#
#   dist/orc-x86_64-linux     x86_64-unknown-linux-gnu    (the rustup toolchain)
#   dist/orc-aarch64-linux    aarch64-unknown-linux-gnu   (Pi 3/4/5, 64-bit OS)
#   dist/orc-armv7-linux      armv7-unknown-linux-gnueabihf (32-bit Raspberry Pi OS)
#
# rustup cannot fetch other targets on these machines, so the ARM builds use
# Debian's `rustc-web` compiler with the matching `libstd-rust-web-dev:arm64`
# and `:armhf` standard libraries (all pinned to one version), the
# gcc-aarch64-linux-gnu / gcc-arm-linux-gnueabihf linkers, and qemu-user-static
# to smoke-test the results (scripts/smoke-arm.sh). The script installs them
# with apt-get when they are missing (it needs root for that).
#
# Usage: scripts/build-release.sh [x86_64|aarch64|armv7 ...]   (default: all)
# Builds run under `nice`: they take minutes and both cores.
set -euo pipefail
cd "$(dirname "$0")/.."

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(x86_64 aarch64 armv7)

# The Debian compiler version. bookworm's own rustc-web 1.85 is too old:
# tonic 0.14.9 (and tonic-prost, time 0.3.55, serde_with 3.24) in Cargo.lock
# declare rust-version 1.88. bookworm-security carries 1.96.
RUST_WEB_VERSION="${RUST_WEB_VERSION:-1.96.0+dfsg1-1~deb12u2}"

for t in "${targets[@]}"; do
  case "$t" in
    x86_64|aarch64|armv7) ;;
    *) echo "unknown target '$t': use x86_64, aarch64 or armv7" >&2; exit 2 ;;
  esac
done

# rustc-web installs /usr/bin/rustc (rustup's ~/.cargo/bin/rustc stays first on PATH).
RUSTC_WEB=/usr/bin/rustc
apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=600 "$@"
}
# Adds only the Debian architecture a build needs: apt rejects a whole
# suite's indexes for a new architecture when one of them fails to download
# (seen here: a mirror serving a stale bookworm-security armhf index kept the
# arm64 one out too), so an armv7 problem must not block aarch64.
apt_update() {
  local debarch="$1"
  for other in arm64 armhf; do
    if [ "$other" != "$debarch" ] && ! dpkg -l "*:$other" 2>/dev/null | grep -q '^ii'; then
      dpkg --remove-architecture "$other" 2>/dev/null || true
    fi
  done
  dpkg --add-architecture "$debarch"
  # A mirror caught mid-sync fails one index; a retry usually gets it. A
  # failure that stays is reported by the install below, which names the
  # package it could not find.
  for attempt in 1 2 3; do
    if apt-get update -q -o DPkg::Lock::Timeout=600 2>&1 | tee /dev/stderr | grep -q '^E:'; then
      [ "$attempt" = 3 ] || sleep 20
    else
      break
    fi
  done
}
# Installs Debian's compiler and the standard library of one Debian
# architecture (arm64 or armhf), its linker and qemu, when missing.
need_cross() {
  local debarch="$1" triple="$2" gcc="$3" libc="$4" qemu="$5"
  if [ -x "$RUSTC_WEB" ] && [ -d "/usr/lib/rustlib/$triple/lib" ] \
     && command -v "$gcc" >/dev/null && command -v "$qemu" >/dev/null; then
    return 0
  fi
  echo "installing Debian's rustc-web $RUST_WEB_VERSION with libstd-rust-web-dev:$debarch, $gcc and qemu-user-static" >&2
  apt_update "$debarch"
  if ! apt_install "rustc-web=$RUST_WEB_VERSION" "libstd-rust-web-dev=$RUST_WEB_VERSION" \
      "libstd-rust-web-dev:$debarch=$RUST_WEB_VERSION" "gcc-${gcc%-gcc}" "$libc" qemu-user-static; then
    echo "cannot install libstd-rust-web-dev:$debarch $RUST_WEB_VERSION (see apt's message above): the $triple build needs it" >&2
    return 1
  fi
}

mkdir -p dist
failed=()
for t in "${targets[@]}"; do
  case "$t" in
    x86_64)
      echo "building x86_64-unknown-linux-gnu (rustup toolchain)" >&2
      nice cargo build --locked --profile dist
      cp target/dist/orc dist/orc-x86_64-linux
      ;;
    aarch64)
      need_cross arm64 aarch64-unknown-linux-gnu aarch64-linux-gnu-gcc libc6-dev-arm64-cross qemu-aarch64-static || { failed+=("$t"); continue; }
      echo "building aarch64-unknown-linux-gnu (Debian rustc-web)" >&2
      RUSTC="$RUSTC_WEB" \
      CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
      CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
      CARGO_TARGET_DIR=target/cross \
        nice cargo build --locked --profile dist --target aarch64-unknown-linux-gnu
      cp target/cross/aarch64-unknown-linux-gnu/dist/orc dist/orc-aarch64-linux
      ;;
    armv7)
      need_cross armhf armv7-unknown-linux-gnueabihf arm-linux-gnueabihf-gcc libc6-dev-armhf-cross qemu-arm-static || { failed+=("$t"); continue; }
      echo "building armv7-unknown-linux-gnueabihf (Debian rustc-web)" >&2
      RUSTC="$RUSTC_WEB" \
      CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_LINKER=arm-linux-gnueabihf-gcc \
      CC_armv7_unknown_linux_gnueabihf=arm-linux-gnueabihf-gcc \
      CARGO_TARGET_DIR=target/cross \
        nice cargo build --locked --profile dist --target armv7-unknown-linux-gnueabihf
      cp target/cross/armv7-unknown-linux-gnueabihf/dist/orc dist/orc-armv7-linux
      ;;
  esac
done

echo "binaries:" >&2
for t in "${targets[@]}"; do
  [[ " ${failed[*]} " == *" $t "* ]] && { echo "  dist/orc-$t-linux: not built" >&2; continue; }
  f="dist/orc-$t-linux"
  printf '  %-24s %8d bytes (%s)\n' "$f" "$(stat -c %s "$f")" "$(file -b "$f" | cut -d, -f1-2)" >&2
done
[ ${#failed[@]} -eq 0 ] || { echo "not built: ${failed[*]}" >&2; exit 1; }
