# The two commands of the README: `make run` and `make test`.
# Every install step lives here, so a fresh machine needs nothing by hand.

# Debian's python3: BCC's Python module (python3-bpfcc) is only importable
# from it, so the venv is made from it with the system site-packages.
SYSTEM_PYTHON := /usr/bin/python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Debian packages: python3-venv for the venv; BCC and the kernel headers it
# compiles against for the eBPF probe; gcc to build the test hog; prometheus
# for promtool and a real server scraping the daemon in a test.
APT_RUN := python3 python3-venv python3-bpfcc bpfcc-tools linux-headers-amd64
APT_TEST := $(APT_RUN) gcc g++ make libc6-dev prometheus
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Tests on pytest; -ra lists every skip with its reason. CI (CI=true) turns
# a missing kernel facility into a failure instead of a skip (tests/kernel.py).
PYTEST_ARGS ?=

.PHONY: run test deps-run deps-test venv probe-setup clean

run: deps-run venv probe-setup
	$(VENV)/bin/memguardd --config packaging/memguard.yaml $(if $(filter 0,$(shell id -u)),,--state-dir .state --socket .state/memguard.sock)

test: deps-test venv probe-setup
	$(PY) -m pytest $(PYTEST_ARGS)

# As root: mount tracefs and link the kernel headers BCC needs where they are
# missing (HOST.md). The daemon itself never creates those links.
probe-setup:
	@if [ "$$(id -u)" = 0 ]; then ./packaging/probe-setup; \
	else echo "not root: skipping packaging/probe-setup (the eBPF and tracefs probes need root)"; fi

deps-run:
	@./packaging/apt-ensure $(APT_RUN)

deps-test:
	@./packaging/apt-ensure $(APT_TEST)

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(SYSTEM_PYTHON) -m venv --system-site-packages $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,plot]'
	touch $@

clean:
	rm -rf $(VENV) .state .pytest_cache .hypothesis
