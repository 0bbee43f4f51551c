# The few targets people use. Everything installs into .venv next to this file.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: install demo test test-fast lint format clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# The CPU demo: bundled sample data, a tiny Qwen2 model built offline, 2 torchrun ranks, ZeRO-3.
demo: install
	PATH="$(CURDIR)/$(BIN):$$PATH" bash sft_train.sh yaml/demo_cpu.yaml

# Everything, the CPU integration runs through torchrun + DeepSpeed + LLaMA-Factory included, in
# WORKERS pytest-xdist workers (tests/conftest.py groups the tests that share a run).
WORKERS ?= 2
test: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -n $(WORKERS) --dist loadgroup --durations=15

# Unit tests only: seconds, offline.
test-fast: install
	$(BIN)/python -m pytest -m "not integration"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf checkpoints models .pytest_cache
