#!/usr/bin/env bash
# The offline benchmark as reported in benches/README.md: Quiver and the naive DataFusion
# plan in one process, then DuckDB's ASOF JOIN on the same files, one after the other.
#   bash benches/run_offline.sh [small|medium|large]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scale=${1:-large}
cargo bench -p quiver-cli --bench offline -- --scale "$scale"
if python3 -c 'import duckdb' 2>/dev/null || pip install --quiet duckdb; then
  python3 benches/duckdb_asof.py "target/bench-data/$scale" 3
fi
