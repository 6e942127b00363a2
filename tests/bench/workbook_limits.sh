#!/usr/bin/env bash
# Workbooks past the limits: the wall time and peak memory (GNU time) of `validate --dataset
# data_pack` on a sheet of a million rows and one more, a sheet with one cell of 10 MB, and
# shared strings that would unpack past the 64 MiB a part read whole may have. Each is a
# finding; this shows what it costs to say so.
#
#   bash tests/bench/workbook_limits.sh
#
# The workbooks are written by tests/py/make_workbook.py (the Python standard library only).
# Keep the machine otherwise idle.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPEAT=${REPEAT:-3}
WORK=target/bench/workbooks
mkdir -p "$WORK"
cargo build --release --locked --quiet
for case in "rows 1000001" "big-cell 10000000" "shared-strings 70000000"; do
  read -r kind size <<<"$case"
  file="$WORK/$kind.xlsx"
  [ -f "$file" ] || python3 tests/py/make_workbook.py "$file" "$kind" "$size"
  ls -l "$file"
  for _ in $(seq "$REPEAT"); do
    /usr/bin/time -f "%e %M" -o "$WORK/time" target/release/force-returns validate "$file" \
      --dataset data_pack --force kent --period FY2024-25 --format json >/dev/null 2>&1 || true
    read -r wall rss < <(tail -n 1 "$WORK/time")
    echo "$kind: ${wall}s, peak ${rss} KiB"
  done
done
