# The two commands a newcomer needs: `make lab` and `make test`.
# Everything installs into .venv from pyproject.toml; nothing is installed globally.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: lab test lint demo bench bench-quick install clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "eventlab needs Python 3.11 or newer; run e.g. make PYTHON=python3.11 ...")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall whenever the declared dependencies change.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[notebooks,dev]'
	@touch $(STAMP)

install: $(STAMP)

# JupyterLab refuses to run as root (containers, some classroom VMs) unless told to.
lab: install
	$(BIN)/jupyter lab notebooks/ $$([ "$$(id -u)" = 0 ] && echo --allow-root)

lint: install
	$(BIN)/ruff check eventlab tests benchmarks notebooks
	$(BIN)/ruff format --check eventlab tests benchmarks notebooks

test: lint
	$(BIN)/python -m pytest --nbmake --doctest-modules tests notebooks eventlab

demo: install
	$(BIN)/eventlab demo

bench: install
	$(BIN)/python -m benchmarks.run

bench-quick: install
	$(BIN)/python -m benchmarks.run --quick

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis *.egg-info
