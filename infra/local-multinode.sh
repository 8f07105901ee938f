#!/usr/bin/env bash
# Start a two-node Ray cluster on ONE machine (for trying multi-node runs locally).
# Each node gets its own small object store and memory budget; stop it by the printed
# process ids, never with a bare `ray stop` (that ends every Ray process on the machine).
set -euo pipefail
TMP=${AUTT_RAY_TMP:-/tmp/autt-ray-$$}
PORT=${AUTT_RAY_PORT:-6390}
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled}
ray start --head --port="$PORT" --num-cpus=1 --temp-dir="$TMP" \
  --object-store-memory=200000000 --memory=2000000000 --include-dashboard=false --disable-usage-stats
ray start --address="127.0.0.1:$PORT" --num-cpus=1 \
  --object-store-memory=200000000 --memory=2000000000 --disable-usage-stats
echo "cluster at 127.0.0.1:$PORT; run: autt run ... --ray-address 127.0.0.1:$PORT"
