#!/usr/bin/env bash
# Load-tests a local mobilenet-serve with k6 and writes a markdown report under loadtest/results/<time>/.
#
# Starts the server (release binary, from MODEL_REPOSITORY) if nothing answers at HTTP_URL, and stops it
# afterwards. For every task x protocol it scrapes /metrics, runs k6/inference.js, scrapes again, so that the
# report can give the mean batch size the batcher formed under that load.
#
# Environment (defaults): TASKS ("classify detect segment"), PROTOCOLS ("http grpc"), SCENARIO (constant;
# or ramping, spike), DURATION (12 s per run; the default sweep takes about 1.5 minutes), RATE and MODEL (per
# task defaults in k6/inference.js), HTTP_URL (http://127.0.0.1:8080), GRPC_ADDR (127.0.0.1:50051),
# TEST_IMAGES (../shared/images), K6 (.venv/bin/k6). Exits 1 if any run crossed a threshold.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
TASKS=${TASKS:-classify detect segment}
PROTOCOLS=${PROTOCOLS:-http grpc}
SCENARIO=${SCENARIO:-constant}
DURATION=${DURATION:-12}
HTTP_URL=${HTTP_URL:-http://127.0.0.1:8080}
GRPC_ADDR=${GRPC_ADDR:-127.0.0.1:50051}
TEST_IMAGES=${TEST_IMAGES:-$ROOT/../shared/images}
MODEL_REPOSITORY=${MODEL_REPOSITORY:-$ROOT/models/repository}
K6=${K6:-$ROOT/.venv/bin/k6}
PY=${PY:-$ROOT/.venv/bin/python}

# Load goes to this machine only.
loopback='^(http://)?(127\.[0-9]+\.[0-9]+\.[0-9]+|localhost|\[::1\]):[0-9]+/?$'
if ! [[ $HTTP_URL =~ $loopback && $GRPC_ADDR =~ $loopback ]]; then
  echo "run.sh: only loopback targets are allowed (HTTP_URL=$HTTP_URL GRPC_ADDR=$GRPC_ADDR)" >&2
  exit 2
fi
[[ -x $K6 ]] || { echo "run.sh: no k6 at $K6; run \`make loadtest\` (installs loadtest/requirements.txt)" >&2; exit 2; }

RESULTS=$ROOT/loadtest/results/$(date -u +%Y%m%dT%H%M%SZ)-$SCENARIO
mkdir -p "$RESULTS"

server_pid=""
stop_server() {
  if [[ -n $server_pid ]]; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
}
trap stop_server EXIT

if ! curl -sf -o /dev/null "$HTTP_URL/healthz"; then
  bin=${CARGO_TARGET_DIR:-$ROOT/target}/release/mobilenet-serve
  [[ -x $bin ]] || { echo "run.sh: no server running and no $bin; run \`make build\`" >&2; exit 2; }
  [[ -f $MODEL_REPOSITORY/index.json ]] || { echo "run.sh: no model repository at $MODEL_REPOSITORY; run \`make models\`" >&2; exit 2; }
  ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$("$PY" models/ort_dylib.py)}
  export ORT_DYLIB_PATH
  http_addr=${HTTP_URL#http://}
  http_addr=${http_addr%/}
  echo "starting mobilenet-serve on $http_addr / $GRPC_ADDR (log: $RESULTS/server.log)"
  "$bin" --http-addr "$http_addr" --grpc-addr "$GRPC_ADDR" --model-repository "$MODEL_REPOSITORY" \
    >"$RESULTS/server.log" 2>&1 &
  server_pid=$!
fi
for _ in $(seq 300); do
  curl -sf -o /dev/null "$HTTP_URL/readyz" && break
  if [[ -n $server_pid ]] && ! kill -0 "$server_pid" 2>/dev/null; then
    echo "run.sh: the server exited during start-up; see $RESULTS/server.log" >&2
    exit 1
  fi
  sleep 1
done
curl -sf -o /dev/null "$HTTP_URL/readyz" || { echo "run.sh: server not ready after 300 s" >&2; exit 1; }

images=$(find "$TEST_IMAGES" -maxdepth 1 -iname '*.jpg' | sort | paste -sd, -)
[[ -n $images ]] || { echo "run.sh: no JPEGs in $TEST_IMAGES" >&2; exit 2; }

failed=0
for task in $TASKS; do
  for protocol in $PROTOCOLS; do
    run=$task-$protocol
    curl -sf "$HTTP_URL/metrics" >"$RESULTS/$run.metrics-before.txt" || true
    # k6 exits 99 when a threshold is crossed: note it and go on to the next run.
    status=0
    TASK=$task PROTOCOL=$protocol SCENARIO=$SCENARIO DURATION=$DURATION IMAGES=$images HTTP_URL=$HTTP_URL \
      GRPC_ADDR=$GRPC_ADDR SUMMARY_FILE="$RESULTS/$run.summary.json" \
      "$K6" run --quiet --no-usage-report "$ROOT/loadtest/k6/inference.js" 2>"$RESULTS/$run.k6.log" || status=$?
    curl -sf "$HTTP_URL/metrics" >"$RESULTS/$run.metrics-after.txt" || true
    if [[ $status -ne 0 ]]; then
      failed=1
      [[ $status -eq 99 ]] || { echo "k6 failed ($status) for $run; see $RESULTS/$run.k6.log" >&2; tail -3 "$RESULTS/$run.k6.log" >&2; }
    fi
  done
done

{
  echo "# Load test: scenario $SCENARIO, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem:/{print $2}') GiB."
  echo "Command: \`TASKS=\"$TASKS\" PROTOCOLS=\"$PROTOCOLS\" SCENARIO=$SCENARIO DURATION=$DURATION make loadtest\`."
  echo "Images: every JPEG of $(basename "$TEST_IMAGES")/, in turn. Latency is k6's request duration."
  echo
  "$PY" "$ROOT/loadtest/report.py" "$RESULTS"
} >"$RESULTS/report.md"
cat "$RESULTS/report.md"
echo
echo "report: $RESULTS/report.md"
exit $failed
