# One command per habit, the same ones CI runs (.ci/run is `make test`).
# Works on a fresh Debian 12 machine as root with only python3 (3.11) and make: whatever is
# missing (PostgreSQL, Redis, python3-venv, the venv itself) is installed on first use.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Touched after a successful `pip install -e '.[dev]'`: the venv is rebuilt only when
# pyproject.toml is newer (dependencies changed) or the venv is gone.
VENV_STAMP := $(VENV)/.sdc-installed

# Host programs the tests and the demo need, as CHECK:PACKAGE pairs for scripts/ensure-apt.sh.
# CHECK is a command on PATH or an absolute path/glob (Debian keeps PostgreSQL's server
# binaries off PATH). A package is installed only when its CHECK finds nothing.
APT_PACKAGES := \
	redis-server:redis-server \
	/usr/lib/postgresql/*/bin/initdb:postgresql \
	mkfs.btrfs:btrfs-progs \
	runc:runc \
	nft:nftables \
	/bin/busybox:busybox-static \
	mmdebstrap:mmdebstrap \
	ssh:openssh-client \
	/usr/sbin/sshd:openssh-server
# What scripts/ensure-triton.sh needs to install Triton's CLI (npm). Debian 12 packages npm
# apart from nodejs; a nodejs that brings its own npm (NodeSource's) is left as it is.
TRITON_APT_PACKAGES := \
	node:nodejs \
	npm:npm
# `make demo`'s data (SQLite database, logs, sim nodes): kept across runs, removed by clean.
DEMO_DATA := .sdc-data

PYTEST_ARGS ?=
# The suite runs on this many pytest-xdist workers, each test file on one worker (its
# module-scoped cloud is started once); most of a test's time is processes starting and
# waiting, so two workers on two cores take about half the time of one
TEST_WORKERS ?= 2
LINT_TYPED := headnode workflows agents schemas sdccommon

.PHONY: help deps venv triton browser test lint demo bench clean distclean

help: ## Show this list
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-10s %s\n", $$1, $$2}'

deps: ## Install missing host packages (PostgreSQL, Redis, btrfs-progs, runc, nftables, busybox, OpenSSH) with apt
	@scripts/ensure-apt.sh $(foreach pair,$(APT_PACKAGES),'$(pair)')

venv: $(VENV_STAMP) ## Create .venv and install the project with its dev tools

$(VENV_STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "make venv: $(PYTHON) must be Python 3.11 or newer" >&2; exit 1; }
	@# Debian splits ensurepip out of python3: without python3-venv, `-m venv` fails.
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || \
		scripts/ensure-apt.sh '/usr/lib/python3*/ensurepip/__init__.py:python3-venv'
	@if [ ! -x $(BIN)/python ]; then \
		echo "creating $(VENV)"; $(PYTHON) -m venv $(VENV); fi
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

triton: ## Install node and npm (apt) if missing, then Triton's CLI (npm triton@7) into .cache/triton
	@scripts/ensure-apt.sh $(foreach pair,$(TRITON_APT_PACKAGES),'$(pair)')
	@scripts/ensure-triton.sh >/dev/null

browser: ## Install Debian's Chromium (apt) if missing, then axe-core (npm) into .cache/axe: the console's browser tests
	@scripts/ensure-browser.sh >/dev/null

test: deps venv triton browser lint ## Install what is missing, lint, run the whole suite on real PostgreSQL and Redis
	@scripts/run-pytest.sh $(BIN)/pytest -q --durations=20 -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: venv ## ruff, mypy and the import-layering contracts
	$(BIN)/ruff check .
	$(BIN)/mypy $(LINT_TYPED)
	$(BIN)/lint-imports

demo: deps venv ## Bring up a small cloud (API, worker, beat, 3 simulated nodes) in .sdc-data; Ctrl-C stops it
	$(BIN)/sdc up --servers 3 --demo --data-dir $(DEMO_DATA)

bench: deps venv browser ## Print every benchmark's figures and run the slow (scale) tests
	$(BIN)/python bench/provision_throughput.py
	$(BIN)/python bench/placement.py
	$(BIN)/python bench/linux_provision.py
	$(BIN)/python bench/linux_ssh.py
	$(BIN)/python bench/auth_and_ips.py
	$(BIN)/python bench/api_create.py
	$(BIN)/python bench/worker_turns.py
	$(BIN)/python bench/doctor.py
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/mutation.py
	$(BIN)/python bench/migration.py
	$(BIN)/python bench/console.py
	@scripts/run-pytest.sh $(BIN)/pytest -q -m slow $(PYTEST_ARGS)

clean: ## Remove caches, build output, test artifacts and make demo's data (.sdc-data); keeps .venv and .cache (the triton CLI)
	find . -path ./$(VENV) -prune -o -path ./.cache -prune -o -type d -name __pycache__ \
		-exec rm -rf {} +
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis .import_linter_cache \
		build dist *.egg-info $(DEMO_DATA) test-artifacts

distclean: clean ## Also remove .venv
	rm -rf $(VENV)
