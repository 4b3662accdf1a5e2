#!/usr/bin/env bash
# ARM64 check without ARM hardware: cross-compile the server for aarch64-unknown-linux-gnu, run it under
# qemu-aarch64 (user-mode emulation) with ONNX Runtime from the aarch64 onnxruntime wheel, classify an image over
# HTTP and gRPC, and compare the answers with the same server built for x86_64.
#
# What it takes (Debian packages and a rustup target, installed when missing):
#   rust target aarch64-unknown-linux-gnu   `rustup target add` (needs the Rust distribution server)
#   gcc-aarch64-linux-gnu                   the linker (CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER), and the C
#                                           compiler of libjpeg-turbo's NEON code (CC_aarch64_unknown_linux_gnu)
#   cmake, nasm                             libjpeg-turbo's build (scripts/build-tools.sh)
#   libc6/libstdc++6/libgcc-s1-arm64-cross  the aarch64 runtime libraries, in /usr/aarch64-linux-gnu/lib
#   qemu-user                               qemu-aarch64
#   onnxruntime==<pinned> manylinux aarch64 `pip download --platform manylinux_2_28_aarch64`
# A sysroot for `qemu-aarch64 -L` maps /lib to the cross libraries and holds an ARM /proc/cpuinfo: qemu 7.2 passes
# the host's x86 /proc/cpuinfo through, which ONNX Runtime's cpuinfo cannot parse as an ARM one (docs/ci.md).
# Only a small model set is served (ARM64_MODELS), since emulation is some 10-50x slower than native.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
# shellcheck source=lib/docker.sh
source scripts/lib/docker.sh

TRIPLE=aarch64-unknown-linux-gnu
MODELS="${ARM64_MODELS:-mobilenet_v2_1.0_224,mobilenet_v2_1.0_224_int8,mobilenet_v2_1.0_224_int8_per_channel}"
MODEL_REPOSITORY="${MODEL_REPOSITORY:-$ROOT/models/repository}"
TEST_IMAGES="${TEST_IMAGES:-$ROOT/../shared/images}"
# A JPEG, so that the aarch64 build of libjpeg-turbo (NEON) is compared too.
IMAGE_FILE="${ARM64_IMAGE_FILE:-$TEST_IMAGES/parrot.jpg}"
TARGET_DIR="${ARM64_TARGET_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}}"
CACHE="${ARM64_CACHE:-$HOME/.cache/mobilenet-serve/arm64}"
READY_TIMEOUT="${ARM64_READY_TIMEOUT:-600}"
X86_HTTP=127.0.0.1:${ARM64_X86_HTTP_PORT:-18180} X86_GRPC=127.0.0.1:${ARM64_X86_GRPC_PORT:-15151}
ARM_HTTP=127.0.0.1:${ARM64_HTTP_PORT:-18280} ARM_GRPC=127.0.0.1:${ARM64_GRPC_PORT:-15251}
OUT="$TARGET_DIR/arm64-check"
mkdir -p "$OUT" "$CACHE"

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; }
trap cleanup EXIT

# --- tools -------------------------------------------------------------------------------------------------------
log "tools"
scripts/build-tools.sh
need=()
command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
[[ -e /usr/aarch64-linux-gnu/lib/libstdc++.so.6 ]] || need+=(libstdc++6-arm64-cross)
if ((${#need[@]})); then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
rustup target list --installed | grep -qx "$TRIPLE" || rustup target add "$TRIPLE"
qemu-aarch64 --version | head -n1

# --- builds ------------------------------------------------------------------------------------------------------
log "cargo build: x86_64 server and client, $TRIPLE server"
s=$SECONDS
cargo build --release --locked --quiet -p mobilenet-serve -p mobilenet-client
X86_SERVER="${CARGO_TARGET_DIR:-$ROOT/target}/release/mobilenet-serve"
CLIENT="${CARGO_TARGET_DIR:-$ROOT/target}/release/mobilenet-client"
CARGO_TARGET_DIR="$TARGET_DIR" CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
  CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc cargo build --release --locked --quiet -p mobilenet-serve --target "$TRIPLE"
ARM_SERVER="$TARGET_DIR/$TRIPLE/release/mobilenet-serve"
file -b "$ARM_SERVER" 2>/dev/null | cut -d, -f1-2 || true
log "builds: $((SECONDS - s)) s"

# --- ONNX Runtime for both architectures -------------------------------------------------------------------------
ORT_VERSION="$(sed -n 's/^onnxruntime==//p' models/requirements.txt)"
X86_ORT="$("$ROOT/.venv/bin/python" models/ort_dylib.py)"
ARM_ORT="$CACHE/ort-$ORT_VERSION/libonnxruntime.so"
if [[ ! -e "$ARM_ORT" ]]; then
  log "onnxruntime $ORT_VERSION aarch64 wheel"
  "$ROOT/.venv/bin/python" -m pip download --quiet --no-deps --only-binary=:all: \
    --platform manylinux_2_28_aarch64 "onnxruntime==$ORT_VERSION" -d "$CACHE/wheels"
  "$ROOT/.venv/bin/python" deploy/docker/extract_ort.py \
    "$(ls "$CACHE"/wheels/onnxruntime-"$ORT_VERSION"-*aarch64*.whl | head -n1)" "$CACHE/ort-$ORT_VERSION"
fi

# --- sysroot for qemu -L -----------------------------------------------------------------------------------------
# qemu-user looks every absolute path up under the -L prefix first: /lib/ld-linux-aarch64.so.1 and the libraries
# resolve to the cross packages, and /proc/cpuinfo to an ARM one (two Neoverse-N1 cores).
SYSROOT="$CACHE/sysroot"
mkdir -p "$SYSROOT/proc"
ln -sfn /usr/aarch64-linux-gnu/lib "$SYSROOT/lib"
ln -sfn /usr/aarch64-linux-gnu/lib "$SYSROOT/lib64"
write_arm_cpuinfo "$SYSROOT/proc/cpuinfo"

# --- run both ----------------------------------------------------------------------------------------------------
start() {  # name http grpc command...
  local name="$1" http="$2" grpc="$3"; shift 3
  MODELS="$MODELS" MODEL_REPOSITORY="$MODEL_REPOSITORY" HTTP_ADDR="$http" GRPC_ADDR="$grpc" LOG_FORMAT=text \
    "$@" >"$OUT/$name.log" 2>&1 &
  PIDS+=($!)
}
wait_ready() {  # name http pid
  for _ in $(seq "$READY_TIMEOUT"); do
    curl -fsS -o /dev/null "http://$2/readyz" 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || { tail -20 "$OUT/$1.log"; die "$1 server exited"; }
    sleep 1
  done
  tail -20 "$OUT/$1.log"; die "$1 server not ready after ${READY_TIMEOUT}s"
}
log "starting the x86_64 server and the aarch64 server under qemu-aarch64 (models: $MODELS)"
start x86_64 "$X86_HTTP" "$X86_GRPC" env ORT_DYLIB_PATH="$X86_ORT" "$X86_SERVER"
x86_pid=${PIDS[-1]}
s=$SECONDS
start aarch64 "$ARM_HTTP" "$ARM_GRPC" env ORT_DYLIB_PATH="$ARM_ORT" qemu-aarch64 -L "$SYSROOT" "$ARM_SERVER"
arm_pid=${PIDS[-1]}
wait_ready x86_64 "$X86_HTTP" "$x86_pid"
wait_ready aarch64 "$ARM_HTTP" "$arm_pid"
log "aarch64 server ready under emulation after $((SECONDS - s)) s"

# --- compare -----------------------------------------------------------------------------------------------------
answers=()
for model in ${MODELS//,/ }; do
  for target in "x86_64 $X86_HTTP $X86_GRPC" "aarch64 $ARM_HTTP $ARM_GRPC"; do
    read -r name http grpc <<<"$target"
    curl -fsS -F "image=@$IMAGE_FILE" "http://$http/v1/classify?model=$model&top_k=5" >"$OUT/$model.$name.http.json"
    "$CLIENT" --protocol grpc --server "http://$grpc" --output json classify --model "$model" --top-k 5 \
      "$IMAGE_FILE" >"$OUT/$model.$name.grpc.json"
    answers+=("$OUT/$model.$name.http.json" "$OUT/$model.$name.grpc.json")
  done
done
"$ROOT/.venv/bin/python" - "${answers[@]}" <<'EOF'
import json, sys
# Per architecture, HTTP and gRPC must agree exactly. Across architectures the top-1 class must be the same and the
# scores of the classes both top-5 lists hold may differ by at most TOLERANCE: the float32 kernels agreed exactly
# here, but int8 outputs come in steps of 1/256 and the x86_64 and aarch64 int8 kernels round differently by a step
# (which also reorders the many tied classes below the top-1).
TOLERANCE = 1.5 / 256
def classes(path):
    doc = json.load(open(path))
    if isinstance(doc, list):
        doc = doc[0]["result"]
    return doc["model"], [(c["index"], c["label"], c["score"]) for c in doc["classes"]]
bad = 0
paths = sys.argv[1:]
for i in range(0, len(paths), 4):
    (m0, x_http), (m1, x_grpc), (m2, a_http), (m3, a_grpc) = [classes(p) for p in paths[i:i + 4]]
    x_same, a_same = x_http == x_grpc, a_http == a_grpc
    ref, got = dict((c[0], c[2]) for c in x_http), dict((c[0], c[2]) for c in a_http)
    diff = max(abs(ref[k] - got[k]) for k in ref.keys() & got.keys())
    ok = m0 == m1 == m2 == m3 and x_same and a_same and x_http[0][0] == a_http[0][0] and diff <= TOLERANCE
    bad |= not ok
    print(f"  {m0}: top-1 x86_64 {x_http[0][0]} {x_http[0][1]!r} {x_http[0][2]:.4f}, aarch64 {a_http[0][0]} "
          f"{a_http[0][1]!r} {a_http[0][2]:.4f}; HTTP == gRPC on x86_64: {x_same}, on aarch64: {a_same}; "
          f"max |score diff| {diff:.4f}: {'ok' if ok else 'MISMATCH'}")
sys.exit(bad)
EOF
log "arm64-check: passed (aarch64 answers match x86_64 over HTTP and gRPC)"
