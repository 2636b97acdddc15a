# bakery — `make help` lists the targets. Variables: SPEC (cluster spec), BUILD (build dir).
SHELL := /bin/bash
.DEFAULT_GOAL := help

SPEC  ?= examples/local.yaml
BUILD ?= build
VENV  ?= .venv
PY    := $(VENV)/bin/python
BAKERY := $(VENV)/bin/bakery

# Debian packages the tests and the local provider run for real (TESTING.md).
# systemd-container: systemd-nspawn, the local default runtime; util-linux: nsenter, mount.
DEBIAN_PACKAGES := packer etcd-server etcd-client monit haproxy cloud-init \
	qemu-system-x86 qemu-utils cloud-image-utils debootstrap e2fsprogs \
	openssh-client openssl iproute2 python3-venv ca-certificates curl \
	systemd systemd-container util-linux procps

.PHONY: help setup-system setup binaries test-binaries test test-fast lint render validate bake up down status nightly golden bench clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[1m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo; echo "  SPEC=$(SPEC)  BUILD=$(BUILD)"

# A prerequisite of bake, up and test: the first run installs, later runs cost one dpkg query.
setup-system: ## install the Debian packages the tests and the local provider use (root)
	@if ! dpkg -s $(DEBIAN_PACKAGES) >/dev/null 2>&1; then \
	  apt-get update -q && \
	  POLICY=/usr/sbin/policy-rc.d; \
	  if [ ! -e $$POLICY ]; then printf '#!/bin/sh\nexit 101\n' > $$POLICY; chmod +x $$POLICY; trap "rm -f $$POLICY" EXIT; fi; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(DEBIAN_PACKAGES); \
	fi

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev,aws,gcp]'
	@touch $@

setup: $(VENV)/.installed ## create .venv with bakery and its dev, aws and gcp extras

# The real etcd and Kubernetes programs of the default versions (the examples' versions):
# built once per machine from the Go modules (`go` on PATH), else the official downloads;
# later runs find them in ~/.cache/bakery and cost a checksum each.
binaries: setup ## obtain the real etcd and Kubernetes binaries of SPEC's versions into ~/.cache/bakery
	$(BAKERY) binaries -f $(SPEC)

# What the tests run besides: tests/test_control_plane.py runs every supported minor.
test-binaries: binaries ## obtain the binaries of every supported Kubernetes minor's default release too (the tests run them)
	$(BAKERY) binaries --supported

test: setup-system setup test-binaries ## run every test (real etcd, packer, monit, moto, fake GCE, containers and QEMU end-to-end)
	$(VENV)/bin/pytest

test-fast: setup ## the tests that boot no machine (no container, no QEMU)
	$(VENV)/bin/pytest -m 'not e2e and not containers'

lint: setup ## ruff
	$(VENV)/bin/ruff check bakery tests bench

render: setup ## render SPEC into BUILD/<cluster>/nodes
	$(BAKERY) render -f $(SPEC) -o $(BUILD)

validate: setup ## validate SPEC and everything it renders
	$(BAKERY) validate -f $(SPEC) -o $(BUILD)

bake: setup-system setup binaries ## build the golden image for SPEC's provider (skipped when an image of the same inputs exists)
	$(BAKERY) bake -f $(SPEC) -o $(BUILD) --if-changed

up: setup-system setup binaries ## create or converge SPEC's cluster
	$(BAKERY) up -f $(SPEC) -o $(BUILD)

status: setup ## show SPEC's cluster
	$(BAKERY) status -f $(SPEC) -o $(BUILD)

down: setup ## delete SPEC's cluster
	$(BAKERY) down -f $(SPEC) -o $(BUILD)

nightly: setup ## the nightly job: bake --if-changed, rollout only when the image changed, report in BUILD/<cluster>/nightly-*.json
	$(BAKERY) nightly -f $(SPEC) -o $(BUILD) --fail-on-drift

golden: setup ## regenerate tests/golden after an intended rendering change, then review the diff
	BAKERY_UPDATE_GOLDEN=1 $(VENV)/bin/pytest tests/test_golden.py -q

bench: setup ## print the benchmarks' figures
	for b in bench/*.py; do $(PY) $$b || exit 1; done

clean: ## remove build outputs (not PKI kept elsewhere)
	rm -rf dist .pytest_cache
