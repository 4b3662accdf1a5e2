#!/usr/bin/env bash
# The linux/arm64 container image, built and run on this amd64 machine with the classic builder (no buildx):
#   1. the arm64 runtime base as a local stand-in, and qemu-aarch64 in binfmt_misc (scripts/standin-images.sh arm64)
#   2. docker build --build-arg TARGETARCH=arm64 --build-arg RUNTIME_BASE=arm64v8/debian:<release>-slim: the
#      toolchain and models stages run natively (cross-compiled server, aarch64 libonnxruntime from the wheel);
#      only the runtime stage's RUN is emulated
#   3. the image's platform must be linux/arm64, and the server and libonnxruntime in it aarch64 ELF files
#   4. docker run under emulation (binfmt_misc, static qemu) until /readyz, then classify one image over HTTP and
#      compare with the amd64 image (mobilenet-serve:e2e by default) serving the same variants
# Run by scripts/docker-e2e.sh after the amd64 checks (a Docker engine running, models/mirror/ staged); alone it
# needs the same. Results go to $E2E_OUT/e2e-arm64.txt.
#
# qemu 7.2 shows the host's x86 /proc/cpuinfo to the guest and ONNX Runtime's cpuinfo then crashes while loading a
# model (docs/ci.md). runc lets a file be bind-mounted over /proc/cpuinfo (it allows that path for lxcfs), so
# the container gets an ARM one (two Neoverse-N1 cores, as in scripts/arm64-check.sh).
# Emulation is some 10-50x slower than native, so only a few classification variants are served (ARM64_MODELS).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
# shellcheck source=lib/docker.sh
source scripts/lib/docker.sh

arg_default() { sed -n "s/^ARG $1=\(.*\)$/\1/p" Dockerfile | head -n1; }
RUNTIME_BASE="arm64v8/debian:$(arg_default DEBIAN_RELEASE)-slim"   # the tag standin-images.sh arm64 makes
IMAGE="${E2E_ARM64_IMAGE:-mobilenet-serve:e2e-arm64}"
REFERENCE_IMAGE="${E2E_IMAGE:-mobilenet-serve:e2e}"
MODELS="${ARM64_MODELS:-mobilenet_v2_1.0_224,mobilenet_v2_1.0_224_int8}"
TEST_IMAGES="${TEST_IMAGES:-$ROOT/../shared/images}"
IMAGE_FILE="${E2E_ARM64_IMAGE_FILE:-$TEST_IMAGES/burger.jpg}"
ARM_PORT="${E2E_ARM64_HTTP_PORT:-18380}"
REF_PORT="${E2E_ARM64_REF_HTTP_PORT:-18480}"
READY_TIMEOUT="${E2E_ARM64_READY_TIMEOUT:-600}"
E2E_OUT="${E2E_OUT:-$ROOT/target/docker-e2e}"
ARM_CONTAINER=mobilenet-serve-e2e-arm64
REF_CONTAINER=mobilenet-serve-e2e-arm64-ref
export DOCKER_BUILDKIT=0
start_report "$E2E_OUT/e2e-arm64.txt"
LOG_PREFIX="arm64: "
cleanup() { docker rm -f "$ARM_CONTAINER" "$REF_CONTAINER" >/dev/null 2>&1 || true; }
trap cleanup EXIT

docker info >/dev/null 2>&1 || die "no Docker engine answers (make docker-e2e starts one)"
[[ -d models/mirror ]] || die "models/mirror/ is not staged (make docker-e2e or make docker-build does it)"
docker image inspect "$REFERENCE_IMAGE" >/dev/null 2>&1 || die "no amd64 reference image $REFERENCE_IMAGE"

# --- 1. base image and binfmt_misc -------------------------------------------------------------------------------
log "stand-in $RUNTIME_BASE, qemu-aarch64 in binfmt_misc"
s=$SECONDS
scripts/standin-images.sh arm64 >/dev/null
note "arm64 stand-in base and binfmt_misc: $((SECONDS - s)) s"

# --- 2. build ----------------------------------------------------------------------------------------------------
log "docker build -t $IMAGE (TARGETARCH=arm64, RUNTIME_BASE=$RUNTIME_BASE)"
s=$SECONDS
docker build -t "$IMAGE" \
  --build-arg TARGETARCH=arm64 --build-arg RUNTIME_BASE="$RUNTIME_BASE" \
  --build-arg REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
  --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  . >"$E2E_OUT/build-arm64.log" 2>&1 || { tail -40 "$E2E_OUT/build-arm64.log"; die "docker build (arm64)"; }
note "arm64 docker build: $((SECONDS - s)) s ($(grep -c 'Using cache' "$E2E_OUT/build-arm64.log") cached steps)"

# --- 3. what was built -------------------------------------------------------------------------------------------
platform="$(docker image inspect --format '{{.Os}}/{{.Architecture}}' "$IMAGE")"
[[ "$platform" == linux/arm64 ]] || die "$IMAGE is $platform, not linux/arm64"
size_bytes="$(docker image inspect --format '{{.Size}}' "$IMAGE")"
note "arm64 image: $platform, $((size_bytes / 1000000)) MB ($size_bytes bytes)"
# The ELF header says which machine a file is for (e_machine, 183 = AArch64); read on the host, without relying
# on `file` in the image or on this machine.
extract="$(mktemp -d)"
cid="$(docker create --platform linux/arm64 "$IMAGE")"
docker cp "$cid:/usr/local/bin/mobilenet-serve" "$extract/mobilenet-serve"
docker cp -L "$cid:/opt/onnxruntime/libonnxruntime.so" "$extract/libonnxruntime.so"
docker rm "$cid" >/dev/null
elf="$(python3 - "$extract"/mobilenet-serve "$extract"/libonnxruntime.so <<'EOF'
import os, struct, sys
MACHINES = {62: "x86-64", 183: "AArch64"}
bad = False
for path in sys.argv[1:]:
    with open(path, "rb") as f:
        head = f.read(20)
    assert head[:4] == b"\x7fELF", path
    machine = MACHINES.get(struct.unpack_from("<H", head, 18)[0], "other")
    bad |= machine != "AArch64"
    print(f"{os.path.basename(path)} ELF {machine}", end="; ")
sys.exit(bad)
EOF
)" || die "not aarch64: $elf"
rm -rf "$extract"
note "arm64 image contents: ${elf%; }"

# --- 4. run under emulation --------------------------------------------------------------------------------------
cpuinfo="$E2E_OUT/arm64-cpuinfo"
write_arm_cpuinfo "$cpuinfo"

# A guest that dies of a signal under qemu can leave the process hanging rather than exiting (seen here without
# the ARM cpuinfo: "qemu: uncaught target signal 11", then the container stays up), so the log is watched too.
wait_ready() {  # container port
  local deadline=$((SECONDS + READY_TIMEOUT))
  while ((SECONDS < deadline)); do
    curl -fsS -m 5 -o /dev/null "http://127.0.0.1:$2/readyz" 2>/dev/null && return 0
    if [[ "$(docker inspect --format '{{.State.Running}}' "$1" 2>/dev/null)" != true ]]; then
      docker logs "$1" 2>&1 | tail -20; die "$1 exited"
    fi
    if docker logs --tail 20 "$1" 2>&1 | grep -q '^qemu: uncaught target signal'; then
      docker logs "$1" 2>&1 | tail -20; die "$1 crashed under emulation"
    fi
    sleep 1
  done
  docker logs "$1" 2>&1 | tail -20; die "$1 not ready after ${READY_TIMEOUT}s"
}

log "docker run $IMAGE under qemu-aarch64 (models: $MODELS) and $REFERENCE_IMAGE (amd64)"
docker rm -f "$ARM_CONTAINER" "$REF_CONTAINER" >/dev/null 2>&1 || true
s=$SECONDS
docker run -d --name "$ARM_CONTAINER" --platform linux/arm64 --cpus 2 --read-only --tmpfs /tmp \
  -v "$cpuinfo:/proc/cpuinfo:ro" -e MODELS="$MODELS" -p "127.0.0.1:$ARM_PORT:8080" "$IMAGE" >/dev/null
docker run -d --name "$REF_CONTAINER" --cpus 2 --read-only --tmpfs /tmp \
  -e MODELS="$MODELS" -p "127.0.0.1:$REF_PORT:8080" "$REFERENCE_IMAGE" >/dev/null
wait_ready "$REF_CONTAINER" "$REF_PORT"
wait_ready "$ARM_CONTAINER" "$ARM_PORT"
note "arm64 container: ready (/readyz, $MODELS loaded and warmed under emulation) after $((SECONDS - s)) s"
arch_inside="$(docker exec "$ARM_CONTAINER" uname -m)"

answers=()
for model in ${MODELS//,/ }; do
  for target in "amd64 $REF_PORT" "arm64 $ARM_PORT"; do
    read -r name port <<<"$target"
    s=$SECONDS
    curl -fsS -m 600 -F "image=@$IMAGE_FILE" "http://127.0.0.1:$port/v1/classify?model=$model&top_k=5" \
      >"$E2E_OUT/arm64-$model.$name.json" || die "/v1/classify on the $name container ($model)"
    [[ "$name" == amd64 ]] || log "$model: one classification under emulation took $((SECONDS - s)) s"
    answers+=("$E2E_OUT/arm64-$model.$name.json")
  done
done
# Same top-1 class; the scores of the classes both top-5 lists hold within 1.5/256: int8 outputs come in steps of
# 1/256 and the two architectures' int8 kernels round differently by a step (scripts/arm64-check.sh).
image_name="$(basename "$IMAGE_FILE")"
python3 - "$image_name" "$arch_inside" "${answers[@]}" <<'EOF' | tee -a "$REPORT" || die "arm64 and amd64 differ"
import json, sys
TOLERANCE = 1.5 / 256
image, arch, paths = sys.argv[1], sys.argv[2], sys.argv[3:]
bad = False
for ref_path, arm_path in zip(paths[::2], paths[1::2]):
    ref, arm = json.load(open(ref_path)), json.load(open(arm_path))
    r, a = ref["classes"][0], arm["classes"][0]
    ref_scores = {c["index"]: c["score"] for c in ref["classes"]}
    diff = max(abs(ref_scores[c["index"]] - c["score"]) for c in arm["classes"] if c["index"] in ref_scores)
    ok = ref["model"] == arm["model"] and r["index"] == a["index"] and diff <= TOLERANCE
    bad |= not ok
    print(f"arm64 classify {image} ({arm['model']}, uname -m {arch}): top-1 {a['index']} {a['label']!r} "
          f"{a['score']:.4f}; amd64 {r['index']} {r['label']!r} {r['score']:.4f}; max |score diff| {diff:.4f}: "
          f"{'ok' if ok else 'MISMATCH'}")
sys.exit(bad)
EOF
note "docker-e2e-arm64: passed in $((SECONDS - t0)) s"
