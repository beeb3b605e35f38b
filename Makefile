# Triage developer commands: make up | test | bench | lint
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Defaults point at the local servers scripts/services.sh starts; give any of them to use others.
DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/triage_dev
REDIS_URL ?= redis://127.0.0.1:6379/0
TEST_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/triage_test
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15
# Benchmarks truncate their database and flush their Redis db: never the dev ones (see bench/common.py).
BENCH_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/triage_bench
BENCH_REDIS_URL ?= redis://127.0.0.1:6379/9
PORT ?= 8000
# A fresh session-signing key per `make up` unless one is given (dev only: logins reset on restart).
ifndef TRIAGE_SECRET_KEY
TRIAGE_SECRET_KEY := $(shell $(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(48))')
endif
# Secrets at rest (webhook signing secrets) need a key that survives restarts: generated once per
# checkout into var/ (never committed) unless one is given.
ifndef TRIAGE_ENCRYPTION_KEYS
TRIAGE_ENCRYPTION_KEYS = $(shell mkdir -p var && { test -s var/encryption.key || $(PYTHON) -c 'import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())' > var/encryption.key; } && cat var/encryption.key)
endif
PYTEST_ARGS ?=

# $(call services,DB_VAR,REDIS_VAR,DATABASE): services.sh waits for the URLs the user gave
# (environment or command line); where a default applies it uses, and if need be starts, the
# local server, creating DATABASE there.
given = $(if $(filter-out file,$(origin $(1))),$(2)='$($(1))')
services = env -u DATABASE_URL -u REDIS_URL $(call given,$(1),DATABASE_URL) $(call given,$(2),REDIS_URL) \
	scripts/services.sh --database $(3)
DEV_ENV = DATABASE_URL='$(DATABASE_URL)' REDIS_URL='$(REDIS_URL)' TRIAGE_SECRET_KEY='$(TRIAGE_SECRET_KEY)' \
	TRIAGE_ENCRYPTION_KEYS='$(TRIAGE_ENCRYPTION_KEYS)'

.PHONY: venv install up test bench lint

venv install: $(STAMP)

# Reinstall only when the package metadata changed (or the venv is new).
$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -e ".[test]"
	touch $@

up: install
	$(call services,DATABASE_URL,REDIS_URL,triage_dev)
	$(DEV_ENV) $(BIN)/triage db upgrade
	@echo "Triage API: http://127.0.0.1:$(PORT)  docs: /v1/docs  health: /health/ready  dashboard: /admin/rq"
	@echo "An operator key: DATABASE_URL='$(DATABASE_URL)' REDIS_URL='$(REDIS_URL)' $(BIN)/triage clients create --org operators --scopes admin"
	rm -rf var/metrics && mkdir -p var/metrics   # prometheus multiprocess files: emptied only at a full start
	export $(DEV_ENV) PROMETHEUS_MULTIPROC_DIR="$(CURDIR)/var/metrics" PATH="$(CURDIR)/$(BIN):$$PATH"; \
		exec honcho start -f Procfile -p $(PORT)

test: install
	$(call services,TEST_DATABASE_URL,TEST_REDIS_URL,triage_test)
	scripts/browser.sh
	TEST_DATABASE_URL='$(TEST_DATABASE_URL)' TEST_REDIS_URL='$(TEST_REDIS_URL)' $(BIN)/pytest $(PYTEST_ARGS)

bench: install
	$(call services,BENCH_DATABASE_URL,BENCH_REDIS_URL,triage_bench)
	DATABASE_URL='$(BENCH_DATABASE_URL)' REDIS_URL='$(BENCH_REDIS_URL)' $(BIN)/triage db upgrade
	BENCH_DATABASE_URL='$(BENCH_DATABASE_URL)' BENCH_REDIS_URL='$(BENCH_REDIS_URL)' $(BIN)/python bench/run_all.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy jobs workers app/services schedules
