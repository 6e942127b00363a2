#!/usr/bin/env bash
# The state benchmark: a run over a bucket that holds many finished uploads and a few new
# ones, against the S3 test server (moto, started here on a free loopback port) or a local
# directory. Prints a table of the run's parts and the requests each run made (force-returns-dev
# tick-bench).
#
#   bash tests/bench/tick.sh                 # 10,000 finished uploads, 5 new, on moto
#   bash tests/bench/tick.sh 2000 5 local    # on a local bucket
#
# moto comes from .venv/ (tests/run installs it); the machine should be otherwise idle.
set -euo pipefail
cd "$(dirname "$0")/../.."
DONE=${1:-10000}
NEW=${2:-5}
BACKEND=${3:-s3}
cargo build --release --locked --quiet -p force-returns-dev
bench=target/release/force-returns-dev
work="$(mktemp -d -t force-returns-tick.XXXXXX)"
trap 'rm -rf "$work"' EXIT
if [ "$BACKEND" = local ]; then
  exec "$bench" tick-bench --bucket "$work/bucket" --done "$DONE" --new "$NEW"
fi

python=${FORCE_RETURNS_TEST_PYTHON:-.venv/bin/python}
moto="$(dirname "$python")/moto_server"
[ -x "$moto" ] || { echo "no $moto: run tests/run once to install moto[server] into .venv/" >&2; exit 2; }
port="$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$moto" -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
moto_pid=$!
trap 'kill "$moto_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 150); do
  curl -s -o /dev/null "http://127.0.0.1:$port/" && break
  sleep 0.2
done
# moto checks no signatures: an unsigned PUT makes the bucket.
curl -s -f -X PUT "http://127.0.0.1:$port/tick-bench" -o /dev/null
FORCE_RETURNS_S3_ENDPOINT="http://127.0.0.1:$port" FORCE_RETURNS_S3_PATH_STYLE=true \
  AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 \
  AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/nonexistent AWS_SHARED_CREDENTIALS_FILE=/nonexistent \
  "$bench" tick-bench --bucket s3://tick-bench --done "$DONE" --new "$NEW"
