#!/usr/bin/env bash
# The flow store's backends side by side in one run: SQLite (the embedded default) and
# ClickHouse (a throwaway server from Debian's clickhouse-server on a loopback port),
# the same generated estate written to both, then query latency under concurrent ingest.
# Sizes: BENCH_WORKLOADS (1000), BENCH_DAYS (30), BENCH_QUERIES (200).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup >/dev/null
cargo bench -q -p bulkhead-store --bench backends
