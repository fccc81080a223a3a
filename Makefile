# Two commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_VERSION ?= 2.13.0
JOBS ?= 2

.PHONY: venv demo test test-slow lint format bench clean

# Install torch first (pinned where none is present) so pip never resolves a multi-GB CUDA build.
$(VENV)/.torch:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "torch==$(TORCH_VERSION)"
	touch $@

$(VENV)/.examples: $(VENV)/.torch pyproject.toml
	$(PIP) install -q -e ".[examples]"
	touch $@

$(VENV)/.test: $(VENV)/.torch pyproject.toml
	$(PIP) install -q -e ".[test,examples,parity,multiagent,mujoco,offline]"
	touch $@

$(VENV)/.bench: $(VENV)/.test
	$(PIP) install -q -e ".[bench]"
	touch $@

venv: $(VENV)/.test

demo: $(VENV)/.examples
	$(PY) examples/sac.py --env Pendulum-v1 --total-steps 15000 --out runs/demo --overwrite

# In `make test` a skipped test whose reference package is missing is a failure (conftest.py).
test: $(VENV)/.test
	FUNCRL_REQUIRE_REFERENCES=1 $(PY) -m pytest -q -n $(JOBS) tests

test-slow: $(VENV)/.test
	$(PY) -m pytest -q -m slow tests

lint: $(VENV)/.test
	$(VENV)/bin/ruff check funcrl tests examples bench
	$(VENV)/bin/ruff format --check funcrl tests examples bench

format: $(VENV)/.test
	$(VENV)/bin/ruff format funcrl tests examples bench
	$(VENV)/bin/ruff check --fix funcrl tests examples bench

bench: $(VENV)/.bench
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache runs
