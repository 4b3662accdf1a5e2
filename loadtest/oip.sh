#!/usr/bin/env bash
# The Open Inference Protocol against our own API (docs/oip.md): the classification default saturated by k6's
# closed-loop clients through each form in turn (native HTTP, OIP HTTP binary, OIP HTTP JSON, native gRPC, OIP
# gRPC), ROUNDS times, and a markdown report under loadtest/results/<time>-oip/ with each form's throughput and
# its ratio to the native API over the same protocol. The goal (issue 17): the binary and gRPC forms within 10%.
#
# Environment (defaults): ROUNDS (2), DURATION (10 s per run), VUS (8), MODEL (the classification default in
# /v1/models), and common.sh's HTTP_URL, GRPC_ADDR, TEST_IMAGES, K6, SERVER_ARGS.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# shellcheck source=common.sh
source "$ROOT/loadtest/common.sh"
ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-10}
VUS=${VUS:-8}

RESULTS=$ROOT/loadtest/results/$(date -u +%Y%m%dT%H%M%SZ)-oip
mkdir -p "$RESULTS"
ensure_server "$RESULTS"

images=$(find "$TEST_IMAGES" -maxdepth 1 -iname '*.jpg' | sort | paste -sd, -)
[[ -n $images ]] || { echo "oip.sh: no JPEGs in $TEST_IMAGES" >&2; exit 2; }
MODEL=${MODEL:-$(curl -sf "$HTTP_URL/v1/models" | "$PY" -c \
  "import json, sys; print(next(m['name'] for m in json.load(sys.stdin)['models'] if m['task'] == 'classification' and m['is_default']))")}

# form: name, then the k6 variables that make it.
forms=(
  "native-http PROTOCOL=http API=native"
  "oip-binary-http PROTOCOL=http API=oip OIP_FORM=binary"
  "oip-json-http PROTOCOL=http API=oip OIP_FORM=json"
  "native-grpc PROTOCOL=grpc API=native"
  "oip-grpc PROTOCOL=grpc API=oip"
)
echo "model $MODEL, $ROUNDS rounds of ${DURATION} s per form, $VUS clients"
for round in $(seq "$ROUNDS"); do
  for form in "${forms[@]}"; do
    read -r name vars <<<"$form"
    # shellcheck disable=SC2086 # vars is a list of assignments
    env $vars TASK=classify SCENARIO=saturate VUS="$VUS" MODEL="$MODEL" DURATION="$DURATION" IMAGES="$images" \
      HTTP_URL="$HTTP_URL" GRPC_ADDR="$GRPC_ADDR" MAX_ERROR_RATE=1 P95_MS=1e9 P99_MS=1e9 \
      SUMMARY_FILE="$RESULTS/$name.$round.summary.json" \
      "$K6" run --quiet --no-usage-report "$ROOT/loadtest/k6/inference.js" 2>"$RESULTS/$name.$round.k6.log" ||
      echo "k6 exited $? for $name round $round; see $RESULTS/$name.$round.k6.log" >&2
  done
done

{
  echo "# Open Inference Protocol against the native API: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)); k6 runs on the same CPUs."
  echo "Command: \`SCENARIO=oip ROUNDS=$ROUNDS DURATION=$DURATION VUS=$VUS make loadtest\`; model \`$MODEL\`, the JPEGs of \`$TEST_IMAGES\` in turn."
  echo
  "$PY" "$ROOT/loadtest/oip_report.py" "$RESULTS"
} >"$RESULTS/report.md"
cat "$RESULTS/report.md"
echo
echo "report: $RESULTS/report.md"
