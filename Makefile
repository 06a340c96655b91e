# Tessera — one entry point for setup, code generation, checks, tests, benchmarks and the demo.
# Everything runs inside .venv, created here; `make test` works on a fresh machine.

SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROTO_SRC := $(wildcard protos/tessera/v1/*.proto)
PROTO_OUT := protos/gen
PROTO_STAMP := $(PROTO_OUT)/.stamp
PYTEST_ARGS ?=

.PHONY: install lock protos vectors redis-acl lint typecheck test test-cluster bench demo image clean

install: $(STAMP) $(PROTO_STAMP)

# The virtualenv holds exactly locks/dev.txt (third-party packages only); our source
# roots are put on its path by a .pth file, so the checkout is importable as
# `tessera` without building it. install.sh rebuilds a venv that is not a finished
# install of the current lock.
$(STAMP): locks/dev.txt scripts/install.sh scripts/lockcheck.py
	@PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/install.sh
	@touch $@

# Regenerate locks/ from pyproject.toml on purpose (docs/DEPENDENCIES.md):
#   make lock                     keep locked versions, add/remove what pyproject changed
#   make lock UPGRADE=1           every package to its newest allowed release
#   make lock UPGRADE_PACKAGE=x   only package x (several: "x y")
lock: $(STAMP)
	@UV=$(VENV)/bin/uv UPGRADE=$(UPGRADE) UPGRADE_PACKAGE="$(UPGRADE_PACKAGE)" bash scripts/lock.sh
	@$(MAKE) --no-print-directory install

protos: $(PROTO_STAMP)

$(PROTO_STAMP): $(PROTO_SRC) scripts/gen_protos.sh $(STAMP)
	@bash scripts/gen_protos.sh $(PY) protos $(PROTO_OUT)
	@touch $@

# The protocol conformance vectors, regenerated from the reference implementation
# (docs/protocol/vectors/README.md); tests/wire/test_vectors.py fails when they drift.
vectors: install
	$(PY) scripts/gen_vectors.py

# The chart's copy of the Redis ACL users (tessera.common.acl).
redis-acl: install
	$(PY) -c "from tessera.common import acl; print(acl.chart_users(), end='')" > charts/tessera/files/redis-users.json

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache

typecheck: install
	@echo "mypy (strict): wire services operator sdk tests bench scripts"
	@$(VENV)/bin/mypy $(shell find wire services operator sdk tests bench scripts -name "*.py" -not -path "*/gen/*" 2>/dev/null)

test: lint typecheck
	$(PY) -m pytest $(PYTEST_ARGS)

# Only what runs on a real local Redis Cluster: the cluster runs of the
# redis_cluster modules plus the slower cluster tests (a master failover under
# load) that `make test` leaves out (docs/CONTRIBUTING.md#checks).
test-cluster: install
	$(PY) -m pytest --redis-cluster $(PYTEST_ARGS)

bench: install
	@mkdir -p bench/results
	@set -e; for b in bench/*.py; do \
	  n=$$(basename $$b .py); echo "== $$n"; \
	  $(PY) $$b --json bench/results/$$n.json; \
	done

demo: install
	$(PY) -m tessera.demo

image:
	docker build -t tessera:dev .

clean:
	rm -rf $(VENV) $(PROTO_OUT) .mypy_cache .ruff_cache .pytest_cache bench/results
