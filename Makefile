# kinkd: the README's two commands are `make demo` and `make test`.
# Both install what is missing (apt packages with sudo when not root, a .venv
# with the Python dependencies) and work on a fresh Debian/Ubuntu machine.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
PYTEST_ARGS ?=

# Every program, charon plugin and Python module the tests and the demo use must come from
# here or pyproject.toml: tests/test_install_guard.py fails the suite otherwise.
APT_PACKAGES := krb5-kdc krb5-admin-server krb5-user libkrb5-dev gcc python3-dev python3-venv \
	podman runc debootstrap tshark wireshark-common tcpdump nftables iproute2 procps \
	strongswan-charon strongswan-swanctl strongswan-libcharon libstrongswan \
	libcharon-extra-plugins libstrongswan-standard-plugins \
	groff-base man-db systemd strace

.PHONY: demo test test-kernel deps apt venv lint bench clean fresh-test

demo: deps
	$(PY) scripts/demo.py

test: deps
	$(PY) -m pytest $(PYTEST_ARGS)

# Real-kernel tests (tests/kernel, see README "Kernel test bed"): boots Debian's kernel
# (ESP/XFRM as modules) once under QEMU and runs the suite inside; the host's own boot is
# not touched. The guest's output streams here; console.log, the pcaps and figures.jsonl
# stay in build/test-kernel/.
KERNEL_APT_PACKAGES := qemu-system-x86 linux-image-amd64 busybox-static
KERNEL_TIMEOUT ?= 1500
test-kernel: deps
	@$(MAKE) --no-print-directory apt APT_PACKAGES="$(KERNEL_APT_PACKAGES)"
	rm -rf build/test-kernel && mkdir -p build/test-kernel
	$(PY) -m tests.kernel.vm --timeout $(KERNEL_TIMEOUT) --xfer build/test-kernel --env PYTHONPATH -- \
	  $(PY) -m pytest -p no:cacheprovider tests/kernel $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .

deps: apt venv

# Install the Debian packages that are missing (nothing to do when all are there).
apt:
	@missing=$$(for p in $(APT_PACKAGES); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed$$' || echo $$p; \
	  done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  echo "wireshark-common wireshark-common/install-setuid boolean false" | $(SUDO) debconf-set-selections; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# `make test` on a fresh Debian 12 machine (not part of `make test`; needs root, podman,
# debootstrap): a cached debootstrap rootfs, a privileged podman container from it, a
# fresh clone of this repository (committed HEAD) with ../shared beside it; see the script.
fresh-test:
	scripts/fresh-machine-test.sh

# Benchmarks (not part of the test suite): KINK and IKEv1 vs strongSwan, see README "Benchmarks".
# `make bench` (about 11 minutes) or `make bench QUICK=1` (about 3.5 minutes) write
# bench/results/latest.json and bench/results/latency.png.
QUICK ?=
bench: deps
	@$(PY) -c 'import matplotlib' 2>/dev/null || $(PY) -m pip install -q -e '.[dev,bench]'
	$(SUDO) $(PY) bench/run.py $(if $(QUICK),--quick)

# Fuzzing (not part of the test suite; see README "Fuzzing"): `make fuzz FUZZ_RUNS=1000000`.
# Uses atheris when it installs (extra "fuzz"), else the harness's builtin mutation engine.
FUZZ_RUNS ?= 1000000
.PHONY: fuzz
fuzz: venv
	@$(PY) -c 'import atheris' 2>/dev/null || $(PY) -m pip install -q -e '.[fuzz]' || true
	$(PY) tests/fuzz/fuzz_kink.py --runs $(FUZZ_RUNS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .hypothesis
