# Context Lake: `make run` starts it on ./lake-data with the sample loaded; `make test` tests it.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# The CPU build of torch goes in first: an unpinned torch pulls several GB of CUDA packages.
# Elsewhere, point pip at a CPU wheel index with TORCH_PIP_ARGS="--index-url <cpu index>".
TORCH   ?= torch==2.13.0
TORCH_PIP_ARGS ?=
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 LANCE_LOG=error

.PHONY: help install run proto test lint bench clean

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

install: $(STAMP)  ## create .venv with CPU torch and the package (idempotent)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PIP_ARGS) "$(TORCH)"
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

run: install  ## set up, load the sample into ./lake-data on first start, serve gRPC on :50051
	$(BIN)/lake serve --sample --metrics-port 9464

proto: install  ## regenerate the gRPC stubs from proto/**/*.proto (a test checks they match)
	$(BIN)/python -m proto.generate

test: install  ## set up and run the test suite
	$(BIN)/python -m pytest -q

lint: install  ## ruff
	$(BIN)/ruff check lake ingest server cli tests benchmarks

bench: install  ## run the benchmarks (writes benchmarks/RESULTS.md sections)
	$(BIN)/python -m pytest -q -m benchmark benchmarks

clean:  ## remove the venv and the local lake
	rm -rf $(VENV) lake-data
