#!/usr/bin/env bash
# TEST SCAFFOLDING, not part of the product. Builds local stand-ins for the base images the Dockerfile names,
# for machines that can reach no image registry (our CI). Real builds pull the official images instead.
#
#   debian:bookworm-slim        debootstrap --variant=minbase bookworm, imported with `docker import`
#   rust:<ver>-slim-bookworm    that base + gcc, libc6-dev and this machine's own rustup toolchain
#                               (copied with cp -rL into /usr/local/rustup, cargo/rustc/rustup on PATH as in the
#                               official image)
#
# Both also carry this machine's CA certificates and PIP_CERT, because TLS to the package registries is
# intercepted by the sandbox's egress proxy here; the official images need neither.
# An image whose tag already exists is kept (delete it to rebuild). The debootstrap tree is cached as a tarball
# under $STANDIN_CACHE so that a rebuilt image skips the download.
set -euo pipefail
cd "$(dirname "$0")/.."

STANDIN_CACHE="${STANDIN_CACHE:-$HOME/.cache/mobilenet-serve/standin}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

# The tags come from the Dockerfile's ARG defaults, so that the stand-ins always match what it names.
arg_default() { sed -n "s/^ARG $1=\(.*\)$/\1/p" Dockerfile | head -n1; }
RUST_VERSION="$(arg_default RUST_VERSION)"
DEBIAN_RELEASE="$(arg_default DEBIAN_RELEASE)"
DEBIAN_TAG="debian:${DEBIAN_RELEASE}-slim"
RUST_TAG="rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE}"

have_image() { docker image inspect "$1" >/dev/null 2>&1; }
log() { printf '== %s\n' "$*"; }

# Host CA material: the system bundle plus any locally added CAs (the egress proxy's).
ca_into() {
  local root="$1"
  mkdir -p "$root/etc/ssl/certs" "$root/usr/local/share/ca-certificates"
  cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
    cp -L /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
  fi
}

build_debian() {
  if have_image "$DEBIAN_TAG"; then log "$DEBIAN_TAG exists, kept"; return; fi
  command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap >/dev/null
  mkdir -p "$STANDIN_CACHE"
  local tarball="$STANDIN_CACHE/${DEBIAN_RELEASE}-minbase.tar"
  if [[ ! -s "$tarball" ]]; then
    local root
    root="$(mktemp -d "$STANDIN_CACHE/rootfs.XXXXXX")"
    log "debootstrap $DEBIAN_RELEASE (minbase) into $root"
    debootstrap --variant=minbase "$DEBIAN_RELEASE" "$root" "$DEBIAN_MIRROR" >"$STANDIN_CACHE/debootstrap.log" 2>&1 \
      || { tail -20 "$STANDIN_CACHE/debootstrap.log"; exit 1; }
    # As in the official slim image: the same suites, no downloaded package files or lists.
    rm -f "$root/etc/apt/sources.list"
    cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: ${DEBIAN_MIRROR}
Suites: ${DEBIAN_RELEASE} ${DEBIAN_RELEASE}-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${DEBIAN_MIRROR}-security
Suites: ${DEBIAN_RELEASE}-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb "$root"/var/log/*.log
    ca_into "$root"
    tar -C "$root" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
    rm -rf "$root"
  fi
  log "docker import $tarball as $DEBIAN_TAG"
  docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    -c 'CMD ["bash"]' \
    -m "stand-in for $DEBIAN_TAG (mobilenet-serve test scaffolding)" \
    "$tarball" "$DEBIAN_TAG" >/dev/null
}

build_rust() {
  if have_image "$RUST_TAG"; then log "$RUST_TAG exists, kept"; return; fi
  local host_version
  host_version="$(rustc --version | awk '{print $2}')"
  if [[ "$host_version" != "$RUST_VERSION" && "$host_version" != "$RUST_VERSION".* ]]; then
    echo "warning: host rustc $host_version stands in for $RUST_TAG" >&2
  fi
  local sysroot arch ctx
  sysroot="$(rustc --print sysroot)"
  arch="$(uname -m)-unknown-linux-gnu"
  ctx="$(mktemp -d)"
  trap 'rm -rf "$ctx"' RETURN
  log "copying the host toolchain $sysroot (without docs)"
  mkdir -p "$ctx/rustup/toolchains" "$ctx/cargo/bin"
  cp -rL "$sysroot" "$ctx/rustup/toolchains/${host_version}-${arch}"
  rm -rf "$ctx/rustup/toolchains/${host_version}-${arch}/share/doc"
  printf 'version = "12"\ndefault_toolchain = "%s-%s"\nprofile = "minimal"\nauto_self_update = "disable"\n' \
    "$host_version" "$arch" >"$ctx/rustup/settings.toml"
  cp -L "$(command -v rustup)" "$ctx/cargo/bin/rustup"
  for tool in cargo rustc rustdoc cargo-clippy clippy-driver rustfmt cargo-fmt; do
    ln -s rustup "$ctx/cargo/bin/$tool"
  done
  cat >"$ctx/Dockerfile" <<EOF
FROM $DEBIAN_TAG
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates gcc libc6-dev \\
 && rm -rf /var/lib/apt/lists/*
COPY rustup /usr/local/rustup
COPY cargo /usr/local/cargo
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:\$PATH \\
    RUST_VERSION=$host_version
RUN cargo --version && rustc --version
EOF
  log "docker build $RUST_TAG"
  DOCKER_BUILDKIT=0 docker build -q -t "$RUST_TAG" "$ctx" >/dev/null
}

build_debian
build_rust
docker image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E "^(debian|rust):" || true
