#!/bin/sh
# The server's memory and start-up time with 10,000 task-definition
# revisions (~2 KB each) and 10,000 stopped tasks; see benches/state_size.rs.
# Knobs: ORC_BENCH_REVISIONS, ORC_BENCH_TASKS.
set -e
cd "$(dirname "$0")/.."
exec cargo bench --bench state_size
