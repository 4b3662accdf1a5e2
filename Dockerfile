# mobilenet-serve container image: the server, ONNX Runtime from the onnxruntime wheel and the prepared model
# repository, on a slim Debian runtime, as a non-root user.
#
#   docker buildx build --platform linux/amd64,linux/arm64 -t mobilenet-serve .   (BuildKit, multi-arch)
#   DOCKER_BUILDKIT=0 docker build -t mobilenet-serve .                            (classic builder, this machine)
#   DOCKER_BUILDKIT=0 docker build --build-arg TARGETARCH=arm64 \
#     --build-arg RUNTIME_BASE=arm64v8/debian:bookworm-slim -t mobilenet-serve:arm64 .   (classic builder, arm64)
#
# Stages:
#   toolchain  Rust builder on the build machine's platform, with a cross linker when the target differs
#   planner    the workspace's dependency recipe (manifests + stubs), so dependencies build in a cached layer
#   builder    cargo build --release of the server for TARGETARCH
#   models     the project's model preparation (models/prepare.py) and libonnxruntime for TARGETARCH; models are
#              architecture-independent, so this stage also runs on the build machine's platform
#   runtime    debian slim + the binary + libonnxruntime + the model repository
#
# Model artifacts: prepare.py reads them from models/mirror/ when present (the CI stages ../shared/models and
# ../shared/images there, see scripts/docker-e2e.sh; never committed), else from their upstream URLs.
#
# BuildKit sets BUILDPLATFORM and TARGETARCH. The classic builder sets neither: the stages then run on
# linux/amd64 (pass --build-arg BUILDPLATFORM=linux/arm64 on an arm64 host) and TARGETARCH defaults to the
# architecture of the build stage (`dpkg --print-architecture`), i.e. a native build.
# RUNTIME_BASE is the runtime stage's base. BuildKit picks the TARGETARCH variant of the multi-arch default by
# itself; the classic builder takes whatever the tag names, so a cross build there names a single-architecture
# image of the target (Docker Hub's arm64v8/debian for arm64). Its RUN then executes under emulation: the build
# machine needs qemu-aarch64 in binfmt_misc.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm
ARG RUNTIME_BASE=debian:${DEBIAN_RELEASE}-slim
ARG BUILDPLATFORM

# ---------------------------------------------------------------------------------------------------------------
# hadolint ignore=DL3029
FROM --platform=${BUILDPLATFORM:-linux/amd64} rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS toolchain
ARG TARGETARCH
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
    CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER=x86_64-linux-gnu-gcc \
    CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
    CC_x86_64_unknown_linux_gnu=x86_64-linux-gnu-gcc \
    CARGO_TERM_COLOR=never
# The Rust target triple goes to /rust-target; cmake, make and nasm for the vendored libjpeg-turbo (the turbojpeg
# crate); a cross gcc and the target's std only when cross-compiling.
# ($cross is a package list, split on purpose; Debian's packages are pinned by the release, not by version.)
# hadolint ignore=DL3008,SC2086
RUN build_arch="$(dpkg --print-architecture)"; target_arch="${TARGETARCH:-$build_arch}"; \
    case "$target_arch" in \
      amd64) triple=x86_64-unknown-linux-gnu; cross="gcc-x86-64-linux-gnu libc6-dev-amd64-cross" ;; \
      arm64) triple=aarch64-unknown-linux-gnu; cross="gcc-aarch64-linux-gnu libc6-dev-arm64-cross" ;; \
      *) echo "unsupported TARGETARCH $target_arch" >&2; exit 1 ;; \
    esac; \
    [ "$target_arch" != "$build_arch" ] || cross=""; \
    apt-get update && apt-get install -y --no-install-recommends cmake make nasm $cross && rm -rf /var/lib/apt/lists/*; \
    if [ "$target_arch" != "$build_arch" ]; then rustup target add "$triple"; fi; \
    echo "$triple" > /rust-target

# ---------------------------------------------------------------------------------------------------------------
FROM toolchain AS planner
WORKDIR /src
COPY . .
RUN deploy/docker/cargo-recipe.sh /src /recipe /sources

# ---------------------------------------------------------------------------------------------------------------
FROM toolchain AS builder
WORKDIR /src
# Dependencies only: this layer is reused until Cargo.toml/Cargo.lock (or a build script) changes.
COPY --from=planner /recipe ./
RUN cargo build --release --locked -p mobilenet-serve --target "$(cat /rust-target)"
COPY --from=planner /sources ./
# COPY keeps the context's modification times, which can be older than the stubs: make cargo see the real code.
# The line tables of the release profile are stripped from the image's copy (symbols stay, for backtraces).
# Dropping target/ keeps this layer small: the cache worth keeping is the dependency layer above.
RUN find . -path ./target -prune -o -name '*.rs' -exec touch {} + \
    && cargo build --release --locked -p mobilenet-serve --target "$(cat /rust-target)" \
    && install -D "target/$(cat /rust-target)/release/mobilenet-serve" /out/mobilenet-serve \
    && "$(sed 's/-unknown-/-/' /rust-target)-strip" --strip-debug /out/mobilenet-serve \
    && rm -rf target

# ---------------------------------------------------------------------------------------------------------------
# hadolint ignore=DL3029
FROM --platform=${BUILDPLATFORM:-linux/amd64} debian:${DEBIAN_RELEASE}-slim AS models
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*
ENV PATH=/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# The pinned toolchain first, so that editing the preparation code does not reinstall TensorFlow.
COPY models/requirements.txt models/requirements.txt
RUN python3 -m venv /venv && pip install --quiet -r models/requirements.txt
COPY models models
COPY deploy/docker/extract_ort.py /usr/local/bin/extract_ort.py
RUN MODEL_MIRROR=/src/models/mirror TEST_IMAGES=/src/models/mirror/images MODEL_CACHE=/tmp/model-cache \
    MODEL_REPOSITORY=/models python models/prepare.py \
    && rm -rf /tmp/model-cache
# libonnxruntime for the target architecture, from the same onnxruntime wheel version the project pins.
ARG TARGETARCH
RUN target_arch="${TARGETARCH:-$(dpkg --print-architecture)}"; \
    case "$target_arch" in amd64) plat=x86_64 ;; arm64) plat=aarch64 ;; \
      *) echo "unsupported TARGETARCH $target_arch" >&2; exit 1 ;; esac; \
    version="$(sed -n 's/^onnxruntime==//p' models/requirements.txt)"; \
    pip download --quiet --no-deps --only-binary=:all: --platform "manylinux_2_28_${plat}" \
      "onnxruntime==${version}" -d /tmp/wheel \
    && python /usr/local/bin/extract_ort.py /tmp/wheel/onnxruntime-*.whl /opt/onnxruntime \
    && rm -rf /tmp/wheel

# ---------------------------------------------------------------------------------------------------------------
FROM ${RUNTIME_BASE} AS runtime
RUN groupadd --system --gid 10001 serve \
    && useradd --system --uid 10001 --gid serve --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin serve
COPY --from=models /opt/onnxruntime /opt/onnxruntime
COPY --from=models /models /models
COPY --from=builder /out/mobilenet-serve /usr/local/bin/mobilenet-serve
COPY deploy/docker/healthcheck.sh /usr/local/bin/healthcheck
# Thread pools size themselves from the container's CPU quota (cgroup), so `--cpus` / limits.cpu is the knob.
ENV MODEL_REPOSITORY=/models \
    ORT_DYLIB_PATH=/opt/onnxruntime/libonnxruntime.so \
    HTTP_ADDR=0.0.0.0:8080 \
    GRPC_ADDR=0.0.0.0:50051 \
    LOG_FORMAT=json
USER 10001:10001
EXPOSE 8080 50051
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 CMD ["/usr/local/bin/healthcheck"]
# Labels last: CREATED and REVISION change on every build and would otherwise invalidate the layers above.
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="mobilenet-serve" \
      org.opencontainers.image.description="HTTP and gRPC serving of the MobileNetV2 family (classification, detection, segmentation) on ONNX Runtime, CPU" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.base.name="docker.io/library/debian:${DEBIAN_RELEASE}-slim"
ENTRYPOINT ["/usr/local/bin/mobilenet-serve"]
