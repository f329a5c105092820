# Two entry points for people (README Quick start) and CI: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= data

.PHONY: setup demo test lint bench clean

setup: $(VENV)/.installed

# torch first, pinned, so nothing pulls a CUDA build; then everything else from the lock file.
$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c requirements.lock -e '.[dev]'
	touch $@

demo: setup
	$(BIN)/python -m bot.demo --data-dir $(DATA)

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) $(DATA)
