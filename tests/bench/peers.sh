#!/usr/bin/env bash
# Side-by-side benchmark: force-returns beside the peer validators of ../shared/bench/peers, on
# the same generated stop-and-search file, in one run. Results go to target/bench/results/.
#
#   bash tests/bench/peers.sh                 # 1M rows: peers (pyarrow, polars, duckdb) + force-returns, best of 3
#   bash tests/bench/peers.sh 5000000 1       # 5M rows, one repetition (the memory comparison)
#   TOOLS=pyarrow,polars,duckdb,pandera bash tests/bench/peers.sh
#
# Keep the machine otherwise idle: runs wait for the 1-minute load average to fall below
# MAX_LOAD (default 0.8, up to 5 minutes) and record how much CPU other processes used.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROWS=${1:-1000000}
REPEAT=${2:-3}
WORK=target/bench
PEERS_SRC=../shared/bench/peers
[ -d "$PEERS_SRC" ] || { echo "no $PEERS_SRC beside the checkout" >&2; exit 2; }

mkdir -p "$WORK/data" "$WORK/results"
# The peers' scripts expect their venv beside them, and shared/ is read-only: work on a copy.
mkdir -p "$WORK/peers"
(cd "$PEERS_SRC" && tar cf - --exclude=venv --exclude=data --exclude=results .) | (cd "$WORK/peers" && tar xf -)
if [ ! -x "$WORK/peers/venv/bin/python" ]; then
  python3 -m venv "$WORK/peers/venv"
  "$WORK/peers/venv/bin/pip" install --quiet --disable-pip-version-check \
    numpy pandas pyarrow polars duckdb psutil
fi
CSV="$WORK/data/ss_${ROWS}.csv"
if [ ! -f "$CSV.truth.json" ]; then
  "$WORK/peers/venv/bin/python" "$WORK/peers/gen_stop_search.py" --rows "$ROWS" --out "$CSV"
fi
cargo build --release --locked --quiet
exec "$WORK/peers/venv/bin/python" tests/bench/compare.py --csv "$CSV" --repeat "$REPEAT" \
  --peers "$WORK/peers" --tools "${TOOLS:-pyarrow,polars,duckdb}" --max-load "${MAX_LOAD:-0.8}" \
  --binary target/release/force-returns --work "$WORK"
