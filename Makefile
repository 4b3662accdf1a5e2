# mobilenet-serve: every set-up, build, test and benchmark step, from a fresh machine.
#   make run     prepare the models, build, and serve (HTTP :8080, gRPC :50051)
#   make test    prepare the models and run every test
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

.PHONY: help venv models models-report models-test build run test

help:
	@grep -E '^#   make' $(MAKEFILE_LIST) | sed 's/^#   //'

# The venv is rebuilt only when the pinned requirements change.
$(VENV)/.stamp: models/requirements.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet -r models/requirements.txt
	touch $@

venv: $(VENV)/.stamp

models: venv
	$(PY) models/prepare.py

models-report: models
	$(PY) models/prepare.py --report

models-test: models
	$(PY) -m pytest -q models/tests

build:
	cargo build --release --workspace

run: models build
	ORT_DYLIB_PATH=$(ORT_DYLIB) $(CARGO_TARGET_DIR)/release/mobilenet-serve --model-repository $(MODEL_REPOSITORY)

test: models-test
	ORT_DYLIB_PATH=$(ORT_DYLIB) cargo test --release --workspace
