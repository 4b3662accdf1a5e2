#!/usr/bin/env bash
# Does model=auto pay? (docs/auto.md) Offers TASK's load at LEVELS times the flagship's measured capacity,
# once naming the flagship and once asking for model=auto, both judged against the same latency budget, and writes
# a markdown report under loadtest/results/<time>-auto/: goodput (answers within the budget per second), the
# shares answered late and refused, and the share each variant served; and, when it started the server, how the
# router's predictions held (auto_calibration.py, from the server's log).
#
# Environment (defaults): TASK (classify, detect or segment), BUDGET_MS (50 for classify, 100 for detect, 250 for
# segment), LEVELS ("0.5 1 2 3"), DURATION (15 s per level), PROTOCOL (http), SHAPE (ramp: one k6 run per model
# through every level, with RAMP s (5) of linear ramp between levels, reported apart; steps: a fresh k6 run per
# level and model),
# CAPACITY (req/s; measured first: k6's saturate scenario, 8 clients on the flagship), CHEAPEST_CAPACITY (the
# highest of the other ladder variants', measured the same way, 6 s each; CHEAPEST names it when it is given),
# FLAGSHIP (the task's default in /v1/models), and run.sh's HTTP_URL, GRPC_ADDR, TEST_IMAGES, K6, SERVER_ARGS.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# shellcheck source=common.sh
source "$ROOT/loadtest/common.sh"
TASK=${TASK:-classify}
case $TASK in
  classify) kind=classification default_budget=50 ;;
  detect) kind=detection default_budget=100 ;;
  segment) kind=segmentation default_budget=250 ;;
  *) echo "auto.sh: TASK must be classify, detect or segment, not $TASK" >&2; exit 2 ;;
esac
BUDGET_MS=${BUDGET_MS:-$default_budget}
LEVELS=${LEVELS:-0.5 1 2 3}
DURATION=${DURATION:-15}
PROTOCOL=${PROTOCOL:-http}
SHAPE=${SHAPE:-ramp}
RAMP=${RAMP:-5}

RESULTS=$ROOT/loadtest/results/$(date -u +%Y%m%dT%H%M%SZ)-auto-$TASK
mkdir -p "$RESULTS"
# A server started here logs every auto-routed answer's prediction and actual time, in JSON, for
# auto_calibration.py.
export LOG_FORMAT=${LOG_FORMAT:-json} RUST_LOG=${RUST_LOG:-info,ort=warn,mobilenet_serve::service=debug}
ensure_server "$RESULTS"

images=$(find "$TEST_IMAGES" -maxdepth 1 -iname '*.jpg' | sort | paste -sd, -)
[[ -n $images ]] || { echo "auto.sh: no JPEGs in $TEST_IMAGES" >&2; exit 2; }
models=$(curl -sf "$HTTP_URL/v1/models")
pick() { "$PY" -c "import json, sys; m = json.loads(sys.argv[1])['models']; print($1)" "$models"; }
variants=$(pick "','.join(x['name'] for x in m if x['task'] == '$kind')")
FLAGSHIP=${FLAGSHIP:-$(pick "next(x['name'] for x in m if x['task'] == '$kind' and x['is_default'])")}
# The goal on late answers holds while the load is within what the cheapest variant of the ladder can serve:
# the one that serves the most requests per second, measured below. Fewest multiply-adds is not that across heads
# (the SSD MobileNetV1 300 detector has more than the FPN-lite 256 one, and runs in about two thirds of its time).
others=$(pick "' '.join(x['name'] for x in m if x['task'] == '$kind' and x.get('auto_rank') not in (None, 0))")

# k6run NAME VAR=VALUE...: one k6 run, its summary in RESULTS/NAME.summary.json (`{level}` in NAME: one per
# level and ramp, and `run` for the whole run, with its log in RESULTS/levels-<model>.k6.log). Refusals and late answers are
# what is measured here, not failures, so the thresholds are out of the way.
k6run() {
  local name=$1
  shift
  env "$@" TASK="$TASK" PROTOCOL="$PROTOCOL" IMAGES="$images" HTTP_URL="$HTTP_URL" GRPC_ADDR="$GRPC_ADDR" \
    VARIANTS="$variants" BUDGET_MS="$BUDGET_MS" MAX_ERROR_RATE=1 P95_MS=1e9 P99_MS=1e9 \
    SUMMARY_FILE="$RESULTS/$name.summary.json" \
    "$K6" run --quiet --no-usage-report "$ROOT/loadtest/k6/inference.js" 2>"$RESULTS/${name/\{level\}/levels}.k6.log" ||
    echo "k6 exited $? for $name; see $RESULTS/${name/\{level\}/levels}.k6.log" >&2
}

# throughput NAME: the answers per second of the k6 run NAME.
throughput() {
  "$PY" -c "import json, sys; print(round(json.load(open(sys.argv[1]))['throughput_per_s'], 1))" \
    "$RESULTS/$1.summary.json"
}

if [[ -z ${CAPACITY:-} ]]; then
  k6run capacity SCENARIO=saturate MODEL="$FLAGSHIP" DURATION=10
  CAPACITY=$(throughput capacity)
fi
if [[ -z ${CHEAPEST_CAPACITY:-} ]]; then
  CHEAPEST=$FLAGSHIP CHEAPEST_CAPACITY=$CAPACITY
  for variant in $others; do
    k6run "capacity-$variant" SCENARIO=saturate MODEL="$variant" DURATION=6
    measured=$(throughput "capacity-$variant")
    if "$PY" -c "import sys; sys.exit(0 if $measured > $CHEAPEST_CAPACITY else 1)"; then
      CHEAPEST=$variant CHEAPEST_CAPACITY=$measured
    fi
  done
fi
CHEAPEST=${CHEAPEST:-given}
echo "flagship $FLAGSHIP, capacity $CAPACITY req/s; cheapest $CHEAPEST, $CHEAPEST_CAPACITY req/s; budget $BUDGET_MS ms"
rates=$(for level in $LEVELS; do "$PY" -c "print(max(1, round($level * $CAPACITY)))"; done | paste -sd' ' -)
case $SHAPE in
  ramp)
    # One k6 run per model through every level, each held DURATION s with a ramp of RAMP s to the next: the
    # server's learned state carries over from one level to the next, as under a load that rises.
    for model in "$FLAGSHIP" auto; do
      k6run "{level}-$model" SCENARIO=levels LEVEL_RATES="$rates" LEVEL_NAMES="$LEVELS" MODEL="$model" \
        DURATION="$DURATION" RAMP="$RAMP"
    done
    ;;
  steps)
    # A fresh k6 run per level and model: model=auto starts each level with no recent answers to learn from.
    set -- $rates
    for level in $LEVELS; do
      for model in "$FLAGSHIP" auto; do
        k6run "$level-$model" SCENARIO=constant RATE="$1" MODEL="$model" DURATION="$DURATION"
      done
      shift
    done
    ;;
  *) echo "auto.sh: SHAPE must be ramp or steps, not $SHAPE" >&2; exit 2 ;;
esac

{
  echo "# model=auto against the flagship: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)); k6 runs on the same CPUs."
  echo "Command: \`SCENARIO=auto TASK=$TASK BUDGET_MS=$BUDGET_MS LEVELS=\"$LEVELS\" DURATION=$DURATION SHAPE=$SHAPE RAMP=$RAMP PROTOCOL=$PROTOCOL make loadtest\`."
  echo "Flagship \`$FLAGSHIP\`, capacity $CAPACITY req/s; cheapest variant \`$CHEAPEST\`, capacity $CHEAPEST_CAPACITY req/s" \
    "(8 closed-loop clients each); budget $BUDGET_MS ms (client-side time)."
  echo
  "$PY" "$ROOT/loadtest/auto_report.py" "$RESULTS" "$FLAGSHIP" "$CHEAPEST_CAPACITY"
  if [[ -f $RESULTS/server.log ]]; then
    echo
    "$PY" "$ROOT/loadtest/auto_calibration.py" "$RESULTS/server.log"
  fi
} >"$RESULTS/report.md"
cat "$RESULTS/report.md"
echo
echo "report: $RESULTS/report.md"
