#!/usr/bin/env bash
# The data pack as a workbook: force-returns decoding and validating a ROWS-row XLSX pack
# (`validate --dataset data_pack`) beside python-calamine only reading the same sheet.
#
#   bash tests/bench/pack.sh            # 200,000 rows
#   bash tests/bench/pack.sh 50000
#
# Prints the wall time and peak memory (GNU time) of each of REPEAT runs (default 5) of each.
# Keep the machine otherwise idle.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROWS=${1:-200000}
REPEAT=${REPEAT:-5}
WORK=target/bench/pack
mkdir -p "$WORK"
if [ ! -x "$WORK/venv/bin/python" ]; then
  python3 -m venv "$WORK/venv"
  "$WORK/venv/bin/pip" install --quiet --disable-pip-version-check openpyxl==3.1.5 python-calamine==0.9.1
fi
XLSX="$WORK/pack_${ROWS}.xlsx"
[ -f "$XLSX" ] || "$WORK/venv/bin/python" tests/bench/pack.py generate "$ROWS" "$XLSX"
cargo build --release --locked --quiet
ls -l "$XLSX"
run() {
  local name=$1; shift
  for _ in $(seq "$REPEAT"); do
    /usr/bin/time -f "%e %M" -o "$WORK/time" "$@" >/dev/null 2>&1 || true
    read -r wall rss < "$WORK/time"
    echo "$name: ${wall}s, peak ${rss} KiB"
  done
}
run force-returns target/release/force-returns validate "$XLSX" --dataset data_pack --force kent --period FY2024-25 --format json
run python-calamine "$WORK/venv/bin/python" tests/bench/pack.py read "$XLSX"
