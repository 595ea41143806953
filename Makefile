# flyte-connect: build, run and test.
#
#   make run     build the server and the example connectors, serve on :8000 (metrics :9090)
#   make test    everything a change must pass (installs what it needs on a fresh machine)
#   make bench   benchmarks
#   make image   the container image (docker or podman)

CARGO       ?= cargo
PYTHON      ?= python3
WASM_TARGET := wasm32-wasip2
TARGET_DIR  := $(shell $(CARGO) metadata --format-version 1 --no-deps 2>/dev/null | $(PYTHON) -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])' 2>/dev/null || echo target)

# Example connectors (example-connectors/*: Rust crates, and Python modules
# NAME/*_connector.py) and test-only components (tests/components/*).
CONNECTORS      := $(patsubst example-connectors/%/Cargo.toml,%,$(wildcard example-connectors/*/Cargo.toml))
PY_CONNECTORS   := $(patsubst example-connectors/%/,%,$(dir $(wildcard example-connectors/*/*_connector.py)))
TEST_COMPONENTS := $(patsubst tests/components/%/Cargo.toml,%,$(wildcard tests/components/*/Cargo.toml))
PY_TEST_COMPONENTS := $(patsubst tests/components/%/,%,$(dir $(wildcard tests/components/*/*_connector.py)))
# What a Python component is built from besides its own folder: the SDK and its WIT.
PY_SDK_FILES    := $(wildcard guest-sdk/python/src/flyte_connector/*.py guest-sdk/python/src/flyte_connector/wit/*.wit) wit/connector.wit

CONNECTOR_DIR      := connectors
TEST_COMPONENT_DIR := $(TARGET_DIR)/test-components
SERVER_BIN         := $(TARGET_DIR)/release/flyte-connect
VENV               := .venv

.PHONY: all build test-build connectors rust-connectors python-connectors test-components run image test test-rust test-python lint fmt bench wasm-target clean system-tools contract-fixtures

all: build connectors

wasm-target:
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)

build:
	$(CARGO) build --release -p flyte-connect

# Each example connector becomes connectors/NAME.wasm, with its manifest
# example-connectors/NAME/NAME.toml beside it when it has one.
connectors: rust-connectors python-connectors
	@ls -l $(CONNECTOR_DIR)

rust-connectors: wasm-target
	$(CARGO) build --profile wasm --target $(WASM_TARGET) $(addprefix -p ,$(CONNECTORS))
	@mkdir -p $(CONNECTOR_DIR)
	@for c in $(CONNECTORS); do \
		cp $(TARGET_DIR)/$(WASM_TARGET)/wasm/$$c.wasm $(CONNECTOR_DIR)/$$c.wasm; \
		if [ -f example-connectors/$$c/$$c.toml ]; then cp example-connectors/$$c/$$c.toml $(CONNECTOR_DIR)/$$c.toml; fi; \
	done

# Python connectors are built by the SDK's own command (componentize-py),
# again only when their module or the SDK changed.
python-connectors: $(PY_CONNECTORS:%=$(CONNECTOR_DIR)/%.wasm)

.SECONDEXPANSION:
$(PY_CONNECTORS:%=$(CONNECTOR_DIR)/%.wasm): $(CONNECTOR_DIR)/%.wasm: $$(wildcard example-connectors/$$*/*) $(PY_SDK_FILES) $(VENV)/.sdk-installed
	@mkdir -p $(CONNECTOR_DIR)
	$(VENV)/bin/flyte-connector build $(wildcard example-connectors/$*/*_connector.py) -o $@ --quiet
	@if [ -f example-connectors/$*/$*.toml ]; then cp example-connectors/$*/$*.toml $(CONNECTOR_DIR)/$*.toml; fi

$(PY_TEST_COMPONENTS:%=$(TEST_COMPONENT_DIR)/%.wasm): $(TEST_COMPONENT_DIR)/%.wasm: $$(wildcard tests/components/$$*/*) $(PY_SDK_FILES) $(VENV)/.sdk-installed
	@mkdir -p $(TEST_COMPONENT_DIR)
	$(VENV)/bin/flyte-connector build $(wildcard tests/components/$*/*_connector.py) -o $@ --quiet

# Python components built for the sync world too (the SDK builds the async
# one by default): the reuse and concurrency tests run the faulty one in
# both, and the bench measures the examples in both.
SYNC_WORLD_COMPONENTS := faulty-py-sync echo-py-sync databricks-py-sync
$(TEST_COMPONENT_DIR)/faulty-py-sync.wasm: $(wildcard tests/components/faulty-py/*) $(PY_SDK_FILES) $(VENV)/.sdk-installed
	@mkdir -p $(TEST_COMPONENT_DIR)
	$(VENV)/bin/flyte-connector build tests/components/faulty-py/faulty_py_connector.py -o $@ --sync --quiet
$(TEST_COMPONENT_DIR)/%-py-sync.wasm: $$(wildcard example-connectors/$$*-py/*) $(PY_SDK_FILES) $(VENV)/.sdk-installed
	@mkdir -p $(TEST_COMPONENT_DIR)
	$(VENV)/bin/flyte-connector build $(wildcard example-connectors/$*-py/*_connector.py) -o $@ --sync --quiet

# Every component the tests load: the examples plus the misbehaving test components.
test-components: connectors $(PY_TEST_COMPONENTS:%=$(TEST_COMPONENT_DIR)/%.wasm) $(SYNC_WORLD_COMPONENTS:%=$(TEST_COMPONENT_DIR)/%.wasm)
	$(CARGO) build --profile wasm --target $(WASM_TARGET) $(addprefix -p ,$(TEST_COMPONENTS))
	@mkdir -p $(TEST_COMPONENT_DIR)
	@for c in $(TEST_COMPONENTS); do cp $(TARGET_DIR)/$(WASM_TARGET)/wasm/$$c.wasm $(TEST_COMPONENT_DIR)/$$c.wasm; done
	@cp $(CONNECTOR_DIR)/*.wasm $(TEST_COMPONENT_DIR)/

# The components of tests/fixtures/contract-VERSION: built once from the SDKs
# against flyte:connector@VERSION (the version wit/connector.wit has) and
# committed, one folder per minor version. Every later build must load and
# serve them through the conformance tests (tests/python). Made by hand when
# a version is released, never by a test, and never remade:
# `make contract-fixtures` refuses a folder that exists.
CONTRACT_VERSION  := $(shell sed -n 's/^package flyte:connector@\(.*\);/\1/p' wit/connector.wit)
CONTRACT_FIXTURES := tests/fixtures/contract-$(CONTRACT_VERSION)
contract-fixtures: test-components
	@if [ -e $(CONTRACT_FIXTURES)/echo.wasm ]; then \
		echo "$(CONTRACT_FIXTURES) exists: fixtures are never rebuilt"; exit 1; fi
	mkdir -p $(CONTRACT_FIXTURES)
	cp $(TEST_COMPONENT_DIR)/echo.wasm $(TEST_COMPONENT_DIR)/faulty.wasm $(CONTRACT_FIXTURES)/
	xz -9 --keep --stdout $(TEST_COMPONENT_DIR)/echo-py.wasm > $(CONTRACT_FIXTURES)/echo-py.wasm.xz

run: build connectors
	$(SERVER_BIN) c0 --port 8000 --prometheus_port 9090 --plugin-dir $(CONNECTOR_DIR)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# The Python SDK (editable) and componentize-py, which builds Python connectors.
$(VENV)/.sdk-installed: guest-sdk/python/pyproject.toml | $(VENV)/bin/python
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e guest-sdk/python
	@touch $@

$(VENV)/.installed: tests/python/requirements.txt | $(VENV)/bin/python
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
	@touch $@

# What the Python tutorial's `pip install` needs (the SDK's build backend
# and componentize-py), fetched here so the tests themselves never reach
# the network.
WHEELHOUSE := $(TARGET_DIR)/wheels
$(WHEELHOUSE)/.downloaded: guest-sdk/python/pyproject.toml | $(VENV)/bin/python
	$(VENV)/bin/pip download --quiet --disable-pip-version-check -d $(WHEELHOUSE) componentize-py==0.25.1 setuptools==84.2.1
	@touch $@

export FLYTE_CONNECT_WHEELS     := $(abspath $(WHEELHOUSE))
export FLYTE_CONNECT_BIN        := $(abspath $(SERVER_BIN))
export FLYTE_CONNECT_COMPONENTS := $(abspath $(TEST_COMPONENT_DIR))
export FLYTE_CONNECT_FAKE_SERVICES := $(abspath $(TARGET_DIR)/release/fake-services)

test: lint test-rust test-python

# What the end-to-end tests need of Debian: `unshare` (util-linux) and `ip`
# (iproute2) put the server in a network namespace of its own; curl signs the
# reads of what the storage tests wrote to moto (an S3-compatible server); sshd
# (openssh-server), slurmctld and slurmd (slurm-wlm) and munged (munge) are
# the real SSH server and Slurm cluster on loopback (tests/cluster); promtool
# (prometheus) checks and unit-tests the alerting rules under deploy/.
SYSTEM_TOOLS := unshare:util-linux ip:iproute2 curl:curl ssh-keygen:openssh-client \
	/usr/sbin/sshd:openssh-server /usr/sbin/slurmctld:slurm-wlm /usr/sbin/munged:munge \
	promtool:prometheus
system-tools:
	@missing=$$(for tool in $(SYSTEM_TOOLS); do \
		command -v $${tool%%:*} >/dev/null || echo $${tool#*:}; done); \
	if [ -n "$$missing" ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

# What the tests run of Rust, in one release build: the server, the
# harness's fake services and every test binary (connector crates build for
# the host too, so their unit tests run natively). One cargo invocation gives
# every crate the features cargo unifies for all of them; a narrower one
# (`make build`'s `-p flyte-connect`) turns fewer features of shared crates on
# (serde_json, digest, ...) and so compiles wasmtime and all above it a second
# time, eight minutes on two cores. The tests serve this build's server; it
# differs from `make build`'s only in those crates' extra features.
RUST_TEST_ARGS := --release --workspace --all-features
test-build:
	$(CARGO) build $(RUST_TEST_ARGS) --lib --bins --tests

test-rust: test-build test-components $(WHEELHOUSE)/.downloaded $(VENV)/.installed system-tools
	$(CARGO) test $(RUST_TEST_ARGS)

test-python: test-build test-components $(VENV)/.installed system-tools
	$(VENV)/bin/python -m pytest -q tests/python
	$(VENV)/bin/python -m pytest -q guest-sdk/python

# Formatting, clippy, and wire compatibility with the published flyteidl2 schema
# (the checker lives in the shared tools beside this repository).
PROTO_COMPAT := ../shared/tools/proto-compat
lint: wasm-target
	$(CARGO) fmt --all --check
	$(CARGO) clippy --release -p flyte-connect -p flyte-connect-e2e -p flyte-connector-sdk --all-targets --all-features -- -D warnings
	$(CARGO) clippy --profile wasm --target $(WASM_TARGET) $(addprefix -p ,$(CONNECTORS) $(TEST_COMPONENTS)) -- -D warnings
	@if [ -x $(PROTO_COMPAT) ]; then $(PROTO_COMPAT) proto; else echo "proto-compat: $(PROTO_COMPAT) not found, skipped"; fi

fmt:
	$(CARGO) fmt --all

# The Python connector server the benchmark compares against (flyte's `connector` extra).
$(VENV)/.bench-installed: $(VENV)/.installed tests/benches/python/requirements.txt
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/benches/python/requirements.txt
	@touch $@

bench: build test-components $(VENV)/.bench-installed
	$(CARGO) bench -p flyte-connect-e2e --bench service

# The container image (Dockerfile): the server and the example connectors.
CONTAINER_ENGINE ?= $(shell command -v docker 2>/dev/null || command -v podman 2>/dev/null)
IMAGE            ?= flyte-connect:dev
image:
	@if [ -z "$(CONTAINER_ENGINE)" ]; then echo "make image: needs docker or podman" >&2; exit 1; fi
	$(CONTAINER_ENGINE) build -t $(IMAGE) .

clean:
	rm -rf $(CONNECTOR_DIR) $(VENV)
	$(CARGO) clean
