#!/usr/bin/env bash
# One month of one force's stop and search (1M rows by default), through the real stop-and-search
# profile: `validate` and a whole `run --once` on a fresh local bucket, timed with /usr/bin/time.
# The file is the peer benchmark's generated file rewritten in the data.police.uk format
# (tests/bench/stop_search_month.py); peers.sh makes the peer file and its venv.
#
#   bash tests/bench/stop_search.sh                 # 1M rows, this checkout's release build
#   BINARY=/path/to/force-returns bash tests/bench/stop_search.sh 5000000
#   BINARY=old/target/release/force-returns PROFILE_FROM=old bash tests/bench/stop_search.sh
#                                                   # another version, with its own schemas/ and pipelines/
#
# The profile is pipelines/stop_search.toml with `max_error_row_share = 0.1` (the peer file's
# planted defects, lower-case and abbreviated codes among them, put 5.2% of rows in error: they
# are left out and the rest accepted and written, as for a real month) and limits that admit
# the file.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROWS=${1:-1000000}
WORK=target/bench
PEER_CSV="$WORK/data/ss_${ROWS}.csv"
CSV="$WORK/data/sm_${ROWS}.csv"
[ -f "$PEER_CSV" ] || { echo "no $PEER_CSV: run bash tests/bench/peers.sh $ROWS 1 first" >&2; exit 2; }
[ -f "$CSV" ] || python3 tests/bench/stop_search_month.py "$PEER_CSV" "$CSV"
if [ -z "${BINARY:-}" ]; then
  cargo build --release --locked --quiet -p force-returns
  BINARY=target/release/force-returns
fi
PROJECT="$WORK/stop_search_project"
rm -rf "$PROJECT" && mkdir -p "$PROJECT/pipelines"
FROM=${PROFILE_FROM:-.}
cp -r "$FROM/schemas" "$PROJECT/"
sed -e 's/^max_error_row_share = 0.0/max_error_row_share = 0.1/' \
    -e 's/^max_rows = 5_000_000/max_rows = 100_000_000/' \
    -e 's/^max_file_bytes = 536_870_912/max_file_bytes = 8_589_934_592/' \
    -e 's|^file = "\.\./shared/|file = "'"$(cd .. && pwd)"'/shared/|' \
    "$FROM/pipelines/stop_search.toml" > "$PROJECT/pipelines/stop_search.toml"
BUCKET="$WORK/stop_search_bucket"
echo "== validate ($ROWS rows)"
/usr/bin/time -f "wall %e s, user %U s, peak RSS %M KiB" \
  "$BINARY" --project "$PROJECT" validate "$CSV" --dataset stop_search --force durham --period 2023-05 --format json \
  | python3 -c 'import json,sys; v=json.load(sys.stdin); print(v["decision"], v["rows_read"], "rows,", v["flagged_rows"], "flagged")'
echo "== run --once ($ROWS rows, fresh bucket)"
rm -rf "$BUCKET" && mkdir -p "$BUCKET/incoming/durham/stop_search/2023-05"
ln "$CSV" "$BUCKET/incoming/durham/stop_search/2023-05/month.csv"
/usr/bin/time -o "$WORK/stop_search_time.txt" -f "wall %e s, user %U s, peak RSS %M KiB" \
  "$BINARY" --project "$PROJECT" --log-format json run --once --bucket "$BUCKET" > "$WORK/stop_search_run.log" 2>&1
cat "$WORK/stop_search_time.txt"
grep -o '"decision":"[a-z_]*","rows":[0-9]*' "$WORK/stop_search_run.log"
