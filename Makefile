# The two commands of the README: `make run` and `make test`.
# Every install step lives here, so a fresh machine needs nothing by hand.

# Debian's python3: BCC's Python module (python3-bpfcc) is only importable
# from it, so the venv is made from it with the system site-packages.
SYSTEM_PYTHON := /usr/bin/python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Debian packages: python3-venv for the venv, gcc to build the test hog,
# prometheus for promtool and a real server scraping the daemon in a test.
APT_RUN := python3 python3-venv
APT_TEST := $(APT_RUN) gcc libc6-dev prometheus
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Tests on pytest; -ra lists every skip with its reason. CI (CI=true) turns
# a missing kernel facility into a failure instead of a skip (tests/kernel.py).
PYTEST_ARGS ?=

.PHONY: run test deps-run deps-test venv clean

run: deps-run venv
	$(VENV)/bin/memguardd --config packaging/memguard.yaml $(if $(filter 0,$(shell id -u)),,--state-dir .state --socket .state/memguard.sock)

test: deps-test venv
	$(PY) -m pytest $(PYTEST_ARGS)

deps-run:
	@./packaging/apt-ensure $(APT_RUN)

deps-test:
	@./packaging/apt-ensure $(APT_TEST)

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(SYSTEM_PYTHON) -m venv --system-site-packages $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) .state .pytest_cache .hypothesis
