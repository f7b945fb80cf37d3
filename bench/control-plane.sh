#!/usr/bin/env bash
# Reproduces bench/RESULTS-control-plane.md: a 3-server orc cluster against a
# 3-member etcd cluster on loopback (see benches/control_plane.rs for what is
# measured and how).
#
#   bench/control-plane.sh            # builds in release, runs, prints the table
#
# Needs: etcd on PATH (Debian: apt-get install -y etcd-server etcd-client;
# this script installs it when apt-get is there and etcd is not), and
# `protoc` for the etcd-client crate's build script (enabled by the
# bench-etcd feature, which the bench target requires): Debian's
# protobuf-compiler, installed when missing (the vendored protoc that orc's
# own build uses is only a fallback where apt-get is not available).
# The table goes to stdout and to target/control-plane-bench.txt; progress
# goes to stderr. Knobs: ORC_BENCH_WARMUP_SECS, ORC_BENCH_MEASURE_SECS,
# ORC_BENCH_FAILOVER_TRIALS, ORC_BENCH_SYSTEMS (see the bench's header).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

if ! command -v etcd >/dev/null 2>&1 && [ -z "${ETCD_BIN:-}" ]; then
    if command -v apt-get >/dev/null 2>&1; then
        echo "installing etcd-server (Debian package)" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server etcd-client >&2
    else
        echo "etcd is not installed: install etcd 3.4 or set ETCD_BIN" >&2
        exit 1
    fi
fi

if [ -z "${PROTOC:-}" ] && ! command -v protoc >/dev/null 2>&1; then
    # A system protoc first: with the vendored one (the fallback) the
    # raft-proto build script fails.
    if command -v apt-get >/dev/null 2>&1; then
        echo "installing protobuf-compiler (Debian package)" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler >&2
    else
        cargo fetch --quiet
        arch="$(uname -m)"; case "$arch" in aarch64) arch=aarch_64 ;; esac
        vendored="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/protoc-bin-vendored-linux-"$arch"-*/bin/protoc 2>/dev/null | sort -V | tail -n1 || true)"
        [ -n "$vendored" ] && export PROTOC="$vendored"
    fi
fi

# `cargo bench` builds the orc binary in the bench (release) profile and hands
# its path to the bench as CARGO_BIN_EXE_orc.
cargo bench --features bench-etcd --bench control_plane | tee "$CARGO_TARGET_DIR/control-plane-bench.txt"
