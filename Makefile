# The two commands of the README's quickstart: `make toy` and `make test`.
# Both create the virtual environment on first use (Python 3.11 or 3.12; CPU torch 2.13.0).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RUN_DIR ?= runs/toy
PARAMS ?=

.PHONY: toy test setup benchmarks lab jupyter clean-runs

toy: $(VENV)/.installed
	$(PY) -m mdrl_lib run --run-dir $(RUN_DIR) -p scale toy $(PARAMS)

test: $(VENV)/.installed
	$(PY) -m pytest

setup: $(VENV)/.installed

benchmarks: $(VENV)/.installed
	for script in benchmarks/*.py; do $(PY) $$script || exit 1; done

# Student copies of the notebooks in lab/: each "Build it yourself" solution replaced by a stub with its hint.
lab: $(VENV)/.installed
	$(PY) scripts/make_lab.py

# JupyterLab on the notebooks, reading and writing the run directory `make toy` filled (not a fresh one under
# notebooks/, which would train everything again).
jupyter: $(VENV)/.installed
	MDRL_RUN_DIR=$(abspath $(RUN_DIR)) $(VENV)/bin/jupyter lab notebooks/

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt torch==2.13.0
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
	touch $@

clean-runs:
	rm -rf runs
