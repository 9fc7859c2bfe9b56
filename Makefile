# The two commands of the README: `make run` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test run lint bench bench-peer bench-history install

install: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed: set PYTHON=python3.11")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(VENV)/bin/hadolint --failure-threshold warning Dockerfile

test: $(STAMP) lint chromium container-tools
	$(PY) -m pytest

# The browser tests drive the system Chromium (Debian package `chromium`): installed here
# when missing and we are root, otherwise we stop and say how to install it.
.PHONY: chromium
chromium:
	@if [ -x /usr/bin/chromium ] || command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "Installing Chromium for the browser tests (apt-get install chromium)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else \
		echo "The browser tests need Chromium. Install it, then run make test again:" >&2; \
		echo "    sudo apt-get install -y chromium" >&2; \
		exit 1; \
	fi

# The container test (tests/container) builds the production image and runs it with podman,
# runc as its runtime (crun, which apt would pick, refuses this kernel's hybrid cgroups), on
# a stand-in base image made with mmdebstrap. Running as root needs nothing else (uidmap,
# slirp4netns and fuse-overlayfs are for rootless podman). Installed here when missing and
# we are root, otherwise we stop and say how to install them.
CONTAINER_TOOLS := podman runc mmdebstrap
.PHONY: container-tools
container-tools:
	@if command -v podman >/dev/null 2>&1 && command -v mmdebstrap >/dev/null 2>&1 && \
		{ command -v runc >/dev/null 2>&1 || [ -x /usr/sbin/runc ]; }; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "Installing $(CONTAINER_TOOLS) for the container test (apt-get install)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends $(CONTAINER_TOOLS); \
	else \
		echo "The container test needs $(CONTAINER_TOOLS). Install them, then run make test again:" >&2; \
		echo "    sudo apt-get install -y --no-install-recommends $(CONTAINER_TOOLS)" >&2; \
		exit 1; \
	fi

# The whole product on this machine: `enqueuer dev` (emulator, workers, API, dashboard).
run: $(STAMP)
	$(VENV)/bin/enqueuer dev

bench: $(STAMP)
	$(PY) bench/emulator.py

# Ours beside PyPI's gcloud-tasks-emulator 0.6.2 (its own venv, made once in ~/.cache/enqueuer).
bench-peer: $(STAMP)
	$(PY) bench/peer.py

# History from Cloud Logging at 1,000,000 entries (seeding them takes a few minutes).
bench-history: $(STAMP)
	$(PY) bench/history.py
