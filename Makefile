# The two commands of the README:
#   make run    install everything, run the daily flow over 8 days of the embedded data,
#               print the GAUC table and the deployed model
#   make test   install everything (Chromium too), audit the lock and run the whole test suite (what CI runs)
# and for development:
#   make test-fast   the unit tests only (ml_core, no Dagster process), under 2 minutes
#   make lock        re-resolve the dependencies into requirements/lock.txt, hashed (see scripts/lock.sh)
#   make audit       check the lock for known vulnerabilities (scripts/audit_lock.sh; make test runs it)
#   make dev         the Dagster UI over $(DAGSTER_HOME) (`dg dev`; docs/dagster.md)
#   make docs        serve the documentation site (MkDocs) on http://127.0.0.1:8001, rebuilt on every edit
VENV ?= .venv
PY := $(VENV)/bin/python
export DAGSTER_HOME ?= $(CURDIR)/data/dagster_home
START ?= 2026-01-01
DAYS ?= 8

.PHONY: install install-test lock audit run test test-fast dev docs backfill bench-graph bench-graph-engine bench-moge clean

install:
	./scripts/install.sh

install-test:
	./scripts/install.sh --browser

lock:
	./scripts/lock.sh

audit: install
	./scripts/audit_lock.sh

run: install
	$(PY) -m orchestration.run_flow --start $(START) --days $(DAYS)

test: install-test
	./scripts/audit_lock.sh
	$(PY) -m pytest tests -q

test-fast: install
	$(PY) -m pytest tests -q -m unit

dev: install
	$(PY) -m orchestration.instance_setup
	$(VENV)/bin/dg dev

docs: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve -a 127.0.0.1:8001

bench-graph: install
	$(PY) benchmarks/bench_graph.py

bench-graph-engine: install
	$(PY) benchmarks/graph_engine.py

bench-moge: install
	$(PY) benchmarks/bench_moge.py

clean:
	rm -rf data/lake data/registry data/dagster_home
