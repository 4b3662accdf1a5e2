#!/usr/bin/env bash
# TEST SCAFFOLDING, not part of the product. Builds local stand-ins for the base images the Dockerfile names,
# for machines that can reach no image registry (our CI). Real builds pull the official images instead.
#
#   scripts/standin-images.sh          the amd64 images of a native build:
#     debian:bookworm-slim             debootstrap --variant=minbase bookworm, imported with `docker import`
#     rust:<ver>-slim-bookworm         that base + gcc, libc6-dev and this machine's own rustup toolchain
#                                      (copied with cp -rL into /usr/local/rustup, cargo/rustc/rustup on PATH as
#                                      in the official image)
#   scripts/standin-images.sh arm64    the runtime base of an arm64 image built by the classic builder:
#     arm64v8/debian:bookworm-slim     debootstrap --arch=arm64 (minbase), imported as linux/arm64. The tag is
#                                      Docker Hub's per-architecture repository of the official image, i.e. what
#                                      such a build passes as RUNTIME_BASE where a registry is reachable (the
#                                      image store holds one image per tag, so it cannot share the amd64 tag).
#                                      Also registers qemu-aarch64 in binfmt_misc (register_qemu below): the
#                                      debootstrap second stage and the Dockerfile's runtime RUN execute arm64 code.
#
# All of them carry this machine's CA certificates and PIP_CERT, because TLS to the package registries is
# intercepted by the sandbox's egress proxy here; the official images need neither.
# An image whose tag already exists is kept (delete it to rebuild). The debootstrap trees are cached as tarballs
# under $STANDIN_CACHE so that a rebuilt image skips the download (and for arm64 the emulated second stage).
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
ARM64_DEBIAN_TAG="arm64v8/debian:${DEBIAN_RELEASE}-slim"

have_image() { docker image inspect "$1" >/dev/null 2>&1; }
log() { printf '== %s\n' "$*" >&2; }

# Host CA material: the system bundle plus any locally added CAs (the egress proxy's).
ca_into() {
  local root="$1"
  mkdir -p "$root/etc/ssl/certs" "$root/usr/local/share/ca-certificates"
  cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
    cp -L /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
  fi
}

# The minbase tree of $DEBIAN_RELEASE for one architecture, as a cached tarball; prints the tarball's path.
debootstrap_tarball() {  # arch
  local arch="$1" tarball root logf
  tarball="$STANDIN_CACHE/${DEBIAN_RELEASE}-minbase.tar"
  [[ "$arch" == amd64 ]] || tarball="$STANDIN_CACHE/${DEBIAN_RELEASE}-minbase-$arch.tar"
  logf="$STANDIN_CACHE/debootstrap-$arch.log"
  if [[ ! -s "$tarball" ]]; then
    command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap >/dev/null
    mkdir -p "$STANDIN_CACHE"
    root="$(mktemp -d "$STANDIN_CACHE/rootfs.XXXXXX")"
    if [[ "$arch" == "$(dpkg --print-architecture)" ]]; then
      log "debootstrap $DEBIAN_RELEASE (minbase) into $root"
      debootstrap --variant=minbase "$DEBIAN_RELEASE" "$root" "$DEBIAN_MIRROR" >"$logf" 2>&1 \
        || { tail -20 "$logf" >&2; exit 1; }
    else
      # The first stage downloads and unpacks natively; the second runs the packages' maintainer scripts, i.e.
      # foreign binaries, which binfmt_misc hands to the static qemu (F flag: usable inside the chroot as is).
      log "debootstrap --arch=$arch $DEBIAN_RELEASE (minbase, foreign + second stage) into $root"
      { debootstrap --arch="$arch" --foreign --variant=minbase "$DEBIAN_RELEASE" "$root" "$DEBIAN_MIRROR" \
          && chroot "$root" /debootstrap/debootstrap --second-stage; } >"$logf" 2>&1 \
        || { tail -20 "$logf" >&2; exit 1; }
    fi
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
  printf '%s\n' "$tarball"
}

import_debian() {  # tarball tag os/arch
  log "docker import $1 as $2 ($3)"
  docker import --platform "$3" \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    -c 'CMD ["bash"]' \
    -m "stand-in for $2 (mobilenet-serve test scaffolding)" \
    "$1" "$2" >/dev/null
  local got
  got="$(docker image inspect --format '{{.Os}}/{{.Architecture}}' "$2")"
  if [[ "$got" != "$3" ]]; then
    set_platform "$2" "$3"
    got="$(docker image inspect --format '{{.Os}}/{{.Architecture}}' "$2")"
    [[ "$got" == "$3" ]] || { echo "$2 is $got, not $3" >&2; exit 1; }
  fi
}

# Docker 20.10 honours `docker import --platform` only with an experimental daemon and otherwise records the host's
# architecture. The platform is a field of the image config, so it is rewritten in a `docker save` archive (new
# config digest, same layer) and the archive loaded back under the same tag.
set_platform() {  # tag os/arch
  log "setting the platform of $1 to $2 (docker save, edit the config, docker load)"
  local old
  old="$(docker image inspect --format '{{.Id}}' "$1")"
  docker save "$1" | python3 -c '
import hashlib, io, json, sys, tarfile
os_name, arch = sys.argv[1].split("/")
src = tarfile.open(fileobj=sys.stdin.buffer, mode="r|")
out = tarfile.open(fileobj=sys.stdout.buffer, mode="w|")
members = {}
for m in src:
    members[m.name] = (m, src.extractfile(m).read() if m.isfile() else None)
manifest = json.loads(members.pop("manifest.json")[1])
old_name = manifest[0]["Config"]
config = json.loads(members.pop(old_name)[1])
config["os"], config["architecture"] = os_name, arch
if arch == "arm64":
    config["variant"] = "v8"
data = json.dumps(config, separators=(",", ":")).encode()
new_name = hashlib.sha256(data).hexdigest() + ".json"
manifest[0]["Config"] = new_name
def add(name, payload):
    info = tarfile.TarInfo(name); info.size = len(payload); info.mode = 0o644
    out.addfile(info, io.BytesIO(payload))
add(new_name, data)
add("manifest.json", json.dumps(manifest).encode())
for name, (m, payload) in members.items():
    out.addfile(m, io.BytesIO(payload) if payload is not None else None)
out.close()
' "$2" | docker load -q >/dev/null
  [[ "$(docker image inspect --format '{{.Id}}' "$1")" == "$old" ]] || docker image rm "$old" >/dev/null 2>&1 || true
}

build_debian() {
  if have_image "$DEBIAN_TAG"; then log "$DEBIAN_TAG exists, kept"; return; fi
  import_debian "$(debootstrap_tarball amd64)" "$DEBIAN_TAG" linux/amd64
}

# qemu-aarch64 in binfmt_misc, so that the kernel runs arm64 ELF files through it, in chroots and containers too.
# Debian's qemu-user-binfmt registers the dynamically linked qemu without the F flag: the kernel then resolves the
# interpreter's path inside the container at exec time, where it does not exist. Here the static qemu is registered
# with F (the kernel opens it once, now, on the host), replacing any other aarch64 entry. Registration is
# system-wide and lasts until reboot; nothing here undoes it.
register_qemu() {
  local qemu=/usr/bin/qemu-aarch64-static binfmt=/proc/sys/fs/binfmt_misc entry conf magic mask
  if [[ ! -x "$qemu" ]]; then
    log "installing qemu-user-static (it replaces qemu-user-binfmt; qemu-user stays)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static >/dev/null
  fi
  [[ -e "$binfmt/register" ]] || mount -t binfmt_misc binfmt_misc "$binfmt"
  for entry in "$binfmt"/qemu-aarch64 "$binfmt"/qemu-aarch64-static; do
    [[ -e "$entry" ]] || continue
    if grep -qx enabled "$entry" && grep -qx "interpreter $qemu" "$entry" && grep -q '^flags: .*F' "$entry"; then
      log "binfmt_misc: $(basename "$entry") -> $qemu (flag F) already registered"
      return
    fi
    echo -1 >"$entry"
  done
  # The magic and mask of an aarch64 ELF executable, from qemu's own binfmt description.
  conf="$(grep -l ':qemu-aarch64:' /usr/lib/binfmt.d/qemu-aarch64*.conf 2>/dev/null | head -n1 || true)"
  [[ -n "$conf" ]] || { echo "no binfmt description of qemu-aarch64 in /usr/lib/binfmt.d" >&2; exit 1; }
  IFS=: read -r _ _ _ _ magic mask _ <"$conf"
  printf ':qemu-aarch64:M::%s:%s:%s:F\n' "$magic" "$mask" "$qemu" >"$binfmt/register"
  log "binfmt_misc: qemu-aarch64 -> $qemu (flag F) registered"
}

build_debian_arm64() {
  register_qemu
  if have_image "$ARM64_DEBIAN_TAG"; then log "$ARM64_DEBIAN_TAG exists, kept"; return; fi
  import_debian "$(debootstrap_tarball arm64)" "$ARM64_DEBIAN_TAG" linux/arm64
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

case "${1:-amd64}" in
  amd64) build_debian; build_rust ;;
  arm64) build_debian_arm64 ;;
  *) echo "usage: $0 [amd64|arm64]" >&2; exit 2 ;;
esac
docker image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E "^(arm64v8/debian|debian|rust):" || true
