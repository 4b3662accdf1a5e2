#!/usr/bin/env bash
# End-to-end check of the container image on this machine (no image registry needed):
#   1. a Docker engine: dockerd (overlay2) is started when none answers, and stopped again at the end
#   2. the base images the Dockerfile names, as local stand-ins (scripts/standin-images.sh; kept when present)
#   3. the model mirror staged into the build context (models/mirror/, gitignored, never committed)
#   4. docker build (classic builder), then docker run: classify an image over HTTP and gRPC through the
#      container's published ports, check /metrics, record the image size and the server's RSS
#   5. docker compose up (core service) with that image: the same request must give the same answer
#   6. the linux/arm64 image: built with the classic builder, inspected, run under qemu and compared with the
#      amd64 one (scripts/docker-e2e-arm64.sh; E2E_ARM64=0 skips it)
# Ports are published on 127.0.0.1 only. Timings and measurements go to $E2E_OUT/e2e.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
# shellcheck source=lib/docker.sh
source scripts/lib/docker.sh

IMAGE="${E2E_IMAGE:-mobilenet-serve:e2e}"
HTTP_PORT="${E2E_HTTP_PORT:-18080}"
GRPC_PORT="${E2E_GRPC_PORT:-15051}"
E2E_OUT="${E2E_OUT:-$ROOT/target/docker-e2e}"
MODEL_MIRROR="${MODEL_MIRROR:-$ROOT/../shared/models}"
TEST_IMAGES="${TEST_IMAGES:-$ROOT/../shared/images}"
IMAGE_FILE="${E2E_IMAGE_FILE:-$TEST_IMAGES/grace_hopper.bmp}"
READY_TIMEOUT="${E2E_READY_TIMEOUT:-300}"
CONTAINER=mobilenet-serve-e2e
PROJECT=mobilenet-serve-e2e
export DOCKER_BUILDKIT=0   # the classic builder: this machine has no buildx
start_report "$E2E_OUT/e2e.txt"
find_compose

# --- 1. engine ---------------------------------------------------------------------------------------------------
cleanup() {
  set +e
  docker rm -f "$CONTAINER" >/dev/null 2>&1
  if ((${#COMPOSE[@]})); then
    HTTP_PORT=x GRPC_PORT=x "${COMPOSE[@]}" -p "$PROJECT" down --remove-orphans >/dev/null 2>&1
  fi
  stop_own_dockerd
}
trap cleanup EXIT

log "Docker engine"
ensure_docker "$E2E_OUT"
note "engine: $(docker version --format 'server {{.Server.Version}}, client {{.Client.Version}}'); compose: ${COMPOSE[*]}"

# --- 2. stand-in base images ---------------------------------------------------------------------------------------
log "stand-in base images"
s=$SECONDS
scripts/standin-images.sh
note "stand-in images: $((SECONDS - s)) s"

# --- 3. model mirror into the build context ------------------------------------------------------------------------
log "staging $MODEL_MIRROR and $TEST_IMAGES into models/mirror/"
[[ -d "$MODEL_MIRROR" ]] || die "no model mirror at $MODEL_MIRROR"
rm -rf models/mirror && mkdir -p models/mirror/images
cp -r "$MODEL_MIRROR"/. models/mirror/
[[ -d "$TEST_IMAGES" ]] && cp -r "$TEST_IMAGES"/. models/mirror/images/
chmod -R u+w models/mirror

# --- 4. build and run ----------------------------------------------------------------------------------------------
log "docker build -t $IMAGE"
s=$SECONDS
docker build -t "$IMAGE" \
  --build-arg REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
  --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  . >"$E2E_OUT/build.log" 2>&1 || { tail -40 "$E2E_OUT/build.log"; die "docker build"; }
note "docker build: $((SECONDS - s)) s ($(grep -c 'Using cache' "$E2E_OUT/build.log") cached steps)"
size_bytes="$(docker image inspect --format '{{.Size}}' "$IMAGE")"
note "image size: $((size_bytes / 1000000)) MB ($size_bytes bytes)"
# Untagged layers of earlier builds, once a day old. Not sooner: the builder stages' layers are untagged too, and
# they are the cache of the next build (a plain `docker image prune` would throw the compiled dependencies away).
docker image prune -f --filter until=24h >/dev/null

wait_healthy() {  # container name
  local status
  for _ in $(seq "$READY_TIMEOUT"); do
    status="$(docker inspect --format '{{.State.Health.Status}}' "$1" 2>/dev/null || echo gone)"
    case "$status" in
      healthy) return 0 ;;
      gone) die "container $1 exited" ;;
    esac
    if [[ "$(docker inspect --format '{{.State.Running}} {{.RestartCount}}' "$1")" != "true 0" ]]; then
      docker logs "$1" 2>&1 | tail -20; die "$1 stopped or restarted"
    fi
    sleep 1
  done
  docker logs "$1" 2>&1 | tail -20
  die "$1 not healthy after ${READY_TIMEOUT}s"
}

CLIENT="${CARGO_TARGET_DIR:-$ROOT/target}/release/mobilenet-client"
log "building the gRPC client (mobilenet-client)"
cargo build --release --quiet -p mobilenet-client
classify() {  # protocol port -> prints "index label score" of the top class
  "$CLIENT" --protocol "$1" --server "http://127.0.0.1:$2" --output json classify "$IMAGE_FILE" \
    | python3 -c '
import json, sys
doc = json.load(sys.stdin)
items = doc if isinstance(doc, list) else [doc]
top = items[0].get("classes") or items[0]["result"]["classes"]
best = top[0]
print(best["index"], best["label"].replace(" ", "_"), round(best["score"], 3))'
}
curl_classify() {  # port -> the same line from a plain curl multipart POST
  curl -fsS -F "image=@$IMAGE_FILE" "http://127.0.0.1:$1/v1/classify?top_k=3" \
    | python3 -c 'import json,sys; c=json.load(sys.stdin)["classes"][0]; print(c["index"], c["label"].replace(" ", "_"), round(c["score"], 3))'
}

log "docker run $IMAGE"
docker rm -f "$CONTAINER" >/dev/null 2>&1 || true
s=$SECONDS
docker run -d --name "$CONTAINER" --cpus 2 --read-only --tmpfs /tmp \
  -p "127.0.0.1:$HTTP_PORT:8080" -p "127.0.0.1:$GRPC_PORT:50051" "$IMAGE" >/dev/null
wait_healthy "$CONTAINER"
note "docker run: healthy (all models loaded and warmed) after $((SECONDS - s)) s"
rss_idle="$(docker exec "$CONTAINER" sed -n 's/^VmRSS:[[:space:]]*//p' /proc/1/status)"
models="$(curl -fsS "http://127.0.0.1:$HTTP_PORT/v1/models" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["models"]))')"

http_answer="$(curl_classify "$HTTP_PORT")"
cli_http_answer="$(classify http "$HTTP_PORT")"
grpc_answer="$(classify grpc "$GRPC_PORT")"
note "classify $(basename "$IMAGE_FILE"): curl HTTP: $http_answer | client HTTP: $cli_http_answer | client gRPC: $grpc_answer"
[[ "$http_answer" == "$grpc_answer" && "$http_answer" == "$cli_http_answer" ]] || die "HTTP and gRPC answers differ"

metrics="$(curl -fsS "http://127.0.0.1:$HTTP_PORT/metrics")"
for want in 'mobilenet_requests_total{.*protocol="http"' 'mobilenet_requests_total{.*protocol="grpc"' \
            mobilenet_request_duration_seconds_bucket mobilenet_batch_size_bucket mobilenet_queue_depth \
            mobilenet_model_info; do
  grep -Eq "^$want" <<<"$metrics" || die "/metrics has no $want"
done
note "/metrics: request counters for http and grpc, latency and batch histograms, queue depth, model info"
# A few more requests, so that RSS includes the arenas of a served request on every task's default model.
for task in classify detect segment; do
  curl -fsS -o /dev/null -F "image=@$IMAGE_FILE" "http://127.0.0.1:$HTTP_PORT/v1/$task" || die "/v1/$task"
done
rss_served="$(docker exec "$CONTAINER" sed -n 's/^VmRSS:[[:space:]]*//p' /proc/1/status)"
note "server RSS with the $models models of the image: $rss_idle after start-up, $rss_served after one request per task"
docker rm -f "$CONTAINER" >/dev/null

# --- 5. compose ----------------------------------------------------------------------------------------------------
log "${COMPOSE[*]} up server"
s=$SECONDS
export IMAGE HTTP_PORT="127.0.0.1:$HTTP_PORT" GRPC_PORT="127.0.0.1:$GRPC_PORT"
"${COMPOSE[@]}" -p "$PROJECT" up -d --no-build server >"$E2E_OUT/compose.log" 2>&1 \
  || { cat "$E2E_OUT/compose.log"; die "compose up"; }
cid="$("${COMPOSE[@]}" -p "$PROJECT" ps -q server)"
wait_healthy "$cid"
compose_answer="$(classify grpc "${GRPC_PORT#127.0.0.1:}")"
compose_http="$(curl_classify "${HTTP_PORT#127.0.0.1:}")"
note "compose: healthy after $((SECONDS - s)) s; classify: HTTP $compose_http | gRPC $compose_answer"
[[ "$compose_answer" == "$grpc_answer" && "$compose_http" == "$http_answer" ]] || die "compose answer differs"
"${COMPOSE[@]}" -p "$PROJECT" down >/dev/null 2>&1

# --- 6. arm64 ------------------------------------------------------------------------------------------------------
if [[ "${E2E_ARM64:-1}" != 0 ]]; then
  log "linux/arm64 image (scripts/docker-e2e-arm64.sh)"
  E2E_IMAGE="$IMAGE" E2E_OUT="$E2E_OUT" TEST_IMAGES="$TEST_IMAGES" scripts/docker-e2e-arm64.sh
  cat "$E2E_OUT/e2e-arm64.txt" >>"$REPORT"
fi

note "docker-e2e: passed in $((SECONDS - t0)) s"
