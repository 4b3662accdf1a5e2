#!/usr/bin/env bash
# The capacity search (docs/auto.md): for every task x protocol, offers constant arrival rates in steps of STEP
# (per task: classify 20, detect 10, segment 2 req/s), STEP_SECONDS each, until a run crosses the thresholds of
# k6/inference.js (its p95 / p99 limits per task, or more than 1% of requests failing; P95_MS, P99_MS and
# MAX_ERROR_RATE override them). The knee is the highest rate that held. Writes report.md and capacity.png
# (p99 and throughput against the offered rate) under loadtest/results/<time>-capacity/.
#
# Environment (defaults): TASKS ("classify detect segment"), PROTOCOLS ("http grpc"), STEP_SECONDS (8),
# MAX_STEPS (30), MODEL, and run.sh's HTTP_URL, GRPC_ADDR, TEST_IMAGES, K6, SERVER_ARGS.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# shellcheck source=common.sh
source "$ROOT/loadtest/common.sh"
TASKS=${TASKS:-classify detect segment}
PROTOCOLS=${PROTOCOLS:-http grpc}
STEP_SECONDS=${STEP_SECONDS:-8}
MAX_STEPS=${MAX_STEPS:-30}
declare -A STEPS=([classify]=20 [detect]=10 [segment]=2)

RESULTS=$ROOT/loadtest/results/$(date -u +%Y%m%dT%H%M%SZ)-capacity
mkdir -p "$RESULTS"
ensure_server "$RESULTS"
images=$(find "$TEST_IMAGES" -maxdepth 1 -iname '*.jpg' | sort | paste -sd, -)
[[ -n $images ]] || { echo "capacity.sh: no JPEGs in $TEST_IMAGES" >&2; exit 2; }

for task in $TASKS; do
  step=${STEP:-${STEPS[$task]}}
  for protocol in $PROTOCOLS; do
    for ((k = 1; k <= MAX_STEPS; k++)); do
      rate=$((k * step))
      status=0
      TASK=$task PROTOCOL=$protocol SCENARIO=constant RATE=$rate DURATION=$STEP_SECONDS IMAGES=$images \
        HTTP_URL=$HTTP_URL GRPC_ADDR=$GRPC_ADDR SUMMARY_FILE="$RESULTS/$task-$protocol-$rate.summary.json" \
        "$K6" run --quiet --no-usage-report "$ROOT/loadtest/k6/inference.js" \
        2>"$RESULTS/$task-$protocol-$rate.k6.log" || status=$?
      # k6 exits 99 when a threshold is crossed: past the knee.
      [[ $status -eq 0 ]] || break
    done
  done
done

{
  echo "# Capacity search: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)); k6 runs on the same CPUs."
  echo "Command: \`SCENARIO=capacity TASKS=\"$TASKS\" PROTOCOLS=\"$PROTOCOLS\" STEP_SECONDS=$STEP_SECONDS make loadtest\`."
  echo
  "$PY" "$ROOT/loadtest/capacity_report.py" "$RESULTS"
} >"$RESULTS/report.md"
cat "$RESULTS/report.md"
echo
echo "report: $RESULTS/report.md"
