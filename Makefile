# Two Quickstart commands: `make demo` (set up, run the fastMRI pipeline on the generated
# sample) and `make test` (set up, run the test suite). Each creates .venv if missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch (it lies on this machine's disk). On a GPU machine set e.g.
# TORCH='torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128'.
TORCH ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast test-faults test-multinode lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(PY) experiments/fastmri.py $(ARGS)

# the two-node test starts its second Ray node in a mount namespace of its own
# (unshare --mount, which needs root); where that is refused it is left out, and said so.
# Where it runs, the one-node job-submission test (single_node) is left out: the two-node
# test submits the same job to a head started the same way, then checks it on two nodes.
MULTINODE_OK := $(shell unshare --mount true 2>/dev/null && echo yes)
test: setup
ifneq ($(MULTINODE_OK),yes)
	@echo "note: 'unshare --mount' is refused here (not root): the two-node test is left out; as root: make test-multinode"
	$(PY) -m pytest -q -m "not multinode" $(PYTEST_ARGS)
else
	$(PY) -m pytest -q -m "not single_node" $(PYTEST_ARGS)
endif

test-faults: setup
	$(PY) -m pytest -q -m "faults" $(PYTEST_ARGS)

test-multinode: setup
	$(PY) -m pytest -q -m "multinode" $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -q -m "not slow and not faults and not multinode" $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check i2m2_ray experiments tests
	$(VENV)/bin/mypy

clean:
	rm -rf outputs .pytest_cache .mypy_cache .ruff_cache
