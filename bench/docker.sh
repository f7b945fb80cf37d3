#!/usr/bin/env bash
# Reproduces bench/RESULTS-docker.md: orc against the real Docker Engine of
# this machine (see benches/docker.rs for what is measured and how).
#
#   bench/docker.sh            # builds in release, runs, prints the table
#
# Needs: a running Docker Engine the user may talk to, and Debian's static
# busybox (apt-get install busybox-static): the image is made locally with
# `docker import`; nothing is pulled. The table goes to stdout and to
# $CARGO_TARGET_DIR/docker-bench.txt; progress goes to stderr; the logs of
# every orc process and the server's final /metrics go to
# $CARGO_TARGET_DIR/docker-bench/. Knobs: ORC_BENCH_START_TRIALS,
# ORC_BENCH_HEAL_TRIALS, ORC_BENCH_LOSS_TRIALS, ORC_BENCH_SKIP.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

docker version --format 'Docker Engine {{.Server.Version}}' >&2 || {
    echo "the Docker Engine does not answer: start it (and check your access to its socket)" >&2
    exit 1
}
if [ ! -x /bin/busybox ]; then
    echo "/bin/busybox is missing: apt-get install busybox-static" >&2
    exit 1
fi

# `cargo bench` builds the orc binary in the bench (release) profile and hands
# its path to the bench as CARGO_BIN_EXE_orc.
cargo bench --bench docker | tee "$CARGO_TARGET_DIR/docker-bench.txt"
