#!/usr/bin/env bash
# The cost of TLS on the control plane (issue 16): writes/s of a 3-server
# cluster at 16 clients with TLS and with --insecure, in alternating rounds
# of one run, and the idle agent's RSS with its certificate (needs Docker).
#
#   bench/tls.sh          # release build; the table goes to stdout
#
# Knobs: ORC_BENCH_ROUNDS, ORC_BENCH_CLIENTS, ORC_BENCH_WARMUP_SECS,
# ORC_BENCH_MEASURE_SECS (see benches/tls.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --bench tls
