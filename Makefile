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
# for promtool and a real server scraping the daemon in a test; systemd for
# systemd-analyze (the unit is verified and scored), util-linux for setpriv,
# tmux to drive memguardctl top in a real terminal, dbus-daemon for a real
# session bus the notifications go to, man-db to read the man pages,
# strace to SIGKILL the daemon at each write point of its state files.
APT_RUN := python3 python3-venv python3-bpfcc bpfcc-tools linux-headers-amd64
APT_TEST := $(APT_RUN) gcc g++ make libc6-dev prometheus systemd util-linux tmux dbus-daemon man-db strace
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Tests on pytest; -ra lists every skip with its reason. CI (CI=true) turns
# a missing kernel facility into a failure instead of a skip (tests/kernel.py).
PYTEST_ARGS ?=

# `make install`: the daemon in a venv of its own under $(PREFIX)/lib/memguard
# (Debian's python3 with the system site-packages, for BCC), its commands in
# $(PREFIX)/bin, the shipped rules in $(PREFIX)/share/memguard/rules, the
# config in /etc/memguard (kept if there), the systemd units and the
# memguard group. DESTDIR stages it all elsewhere, as packagers do.
PREFIX ?= /usr/local
DESTDIR ?=
LIBDIR := $(PREFIX)/lib/memguard
SHAREDIR := $(PREFIX)/share/memguard
UNITDIR ?= /lib/systemd/system
SYSUSERSDIR ?= /usr/lib/sysusers.d
CONFDIR ?= /etc/memguard
XDGDIR ?= /etc/xdg/autostart

.PHONY: run test bench deps-run deps-test venv probe-setup install uninstall clean

run: deps-run venv probe-setup
	$(VENV)/bin/memguardd --config packaging/memguard.yaml $(if $(filter 0,$(shell id -u)),,--state-dir .state --socket .state/memguard.sock)

test: deps-test venv probe-setup
	$(PY) -m pytest $(PYTEST_ARGS)

# Every benchmark of issue 23 and the tick and rules ones (bench/README.md),
# under 20 minutes, as root: each rewrites its section of docs/benchmarks.md.
# earlyoom and nohang, which bench/rivals.py and bench/reaction.py run
# beside memguardd, are Debian's packages, downloaded and unpacked by the
# scripts (installing them would start them as services). The 30-minute
# soak (bench/soak.py) cannot fit and runs on its own.
bench: deps-test venv probe-setup
	$(PY) bench/rivals.py --others 45 --write
	$(PY) bench/reaction.py --write
	$(PY) bench/oom_latency.py --write
	$(PY) bench/tick.py --rounds 1 --write
	$(PY) bench/tick.py --cgroups 1000 --no-bare --ticks 100 --rounds 1 --process-runs 10 --write
	$(PY) bench/rules.py --write

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
	$(PY) -m pip install --quiet -e '.[test,plot,bench]'
	@# For examples/ and its test: the CPU build HOST.md says lies on disk
	@# (any other version downloads GBs). memguard itself never needs it.
	$(PY) -m pip install --quiet torch==2.13.0
	touch $@

install: deps-run
	rm -rf $(DESTDIR)$(LIBDIR)/venv
	$(SYSTEM_PYTHON) -m venv --system-site-packages $(DESTDIR)$(LIBDIR)/venv
	$(DESTDIR)$(LIBDIR)/venv/bin/pip install --quiet --disable-pip-version-check '.[man]'
	@# A staged venv names its DESTDIR in its scripts: make them name where it will live.
	$(if $(DESTDIR),grep -rlI -- '$(DESTDIR)' $(DESTDIR)$(LIBDIR)/venv/bin | xargs -r sed -i 's|$(DESTDIR)||g')
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(SHAREDIR)/rules $(DESTDIR)$(PREFIX)/share/doc/memguard \
		$(DESTDIR)$(CONFDIR)/rules.d $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR)
	ln -sf $(LIBDIR)/venv/bin/memguardd $(DESTDIR)$(PREFIX)/bin/memguardd
	ln -sf $(LIBDIR)/venv/bin/memguardctl $(DESTDIR)$(PREFIX)/bin/memguardctl
	install -m 0755 packaging/probe-setup $(DESTDIR)$(LIBDIR)/probe-setup
	install -m 0644 rules/*.yaml $(DESTDIR)$(SHAREDIR)/rules/
	install -d $(DESTDIR)$(SHAREDIR)/prometheus $(DESTDIR)$(SHAREDIR)/grafana
	install -m 0644 packaging/prometheus/memguard-alerts.yml packaging/prometheus/scrape.yml $(DESTDIR)$(SHAREDIR)/prometheus/
	install -m 0644 packaging/grafana/memguard.json $(DESTDIR)$(SHAREDIR)/grafana/
	install -m 0644 README.md $(DESTDIR)$(PREFIX)/share/doc/memguard/
	@# Man pages (memguardd(8), memguardctl(1)) and bash/zsh completion, from the argument parsers.
	$(DESTDIR)$(LIBDIR)/venv/bin/python -m memguard.cli.docgen $(DESTDIR)$(PREFIX)/share > /dev/null
	install -d $(DESTDIR)$(XDGDIR)
	install -m 0644 packaging/xdg/memguard-notify-agent.desktop $(DESTDIR)$(XDGDIR)/
	cp -r docs $(DESTDIR)$(PREFIX)/share/doc/memguard/
	@# The config is the operator's once installed: an upgrade keeps it.
	[ -e $(DESTDIR)$(CONFDIR)/memguard.yaml ] || sed 's|files: \["../rules/default.yaml"\]|files: ["$(SHAREDIR)/rules/default.yaml", "rules.d/*.yaml"]|' \
		packaging/memguard.yaml > $(DESTDIR)$(CONFDIR)/memguard.yaml
	sed 's|/usr/local|$(PREFIX)|g' packaging/systemd/memguard.service > $(DESTDIR)$(UNITDIR)/memguard.service
	install -m 0644 packaging/systemd/memguard.socket $(DESTDIR)$(UNITDIR)/memguard.socket
	install -m 0644 packaging/sysusers.d/memguard.conf $(DESTDIR)$(SYSUSERSDIR)/memguard.conf

# Removes what install put there, except the config and the state
# (/var/lib/memguard: incidents), which are the operator's.
uninstall:
	rm -rf $(DESTDIR)$(LIBDIR) $(DESTDIR)$(SHAREDIR) $(DESTDIR)$(PREFIX)/share/doc/memguard
	rm -f $(DESTDIR)$(PREFIX)/share/man/man8/memguardd.8 $(DESTDIR)$(PREFIX)/share/man/man1/memguardctl.1 \
		$(DESTDIR)$(PREFIX)/share/bash-completion/completions/memguardd \
		$(DESTDIR)$(PREFIX)/share/bash-completion/completions/memguardctl \
		$(DESTDIR)$(PREFIX)/share/zsh/site-functions/_memguardd $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_memguardctl \
		$(DESTDIR)$(XDGDIR)/memguard-notify-agent.desktop
	rm -f $(DESTDIR)$(PREFIX)/bin/memguardd $(DESTDIR)$(PREFIX)/bin/memguardctl \
		$(DESTDIR)$(UNITDIR)/memguard.service $(DESTDIR)$(UNITDIR)/memguard.socket \
		$(DESTDIR)$(SYSUSERSDIR)/memguard.conf

clean:
	rm -rf $(VENV) .state .pytest_cache .hypothesis
