# Two commands do all set-up on a fresh machine that has Python 3.10+ and pip:
#   make demo   install into .venv (once) and run the toolkit's main job
#   make test   install into .venv (once) and run the test suite
# Both reuse .venv on a second run; it is rebuilt only when pyproject.toml changes. Nothing here
# installs system packages or needs root: tests whose service is missing (see tests/helpers/
# services.py) are skipped with one line saying how to run them, e.g.
#   make test-slurm   the SLURM sweep test on a local one-node cluster; a failure, not a skip, when
#                     SLURM is missing (needs slurm-wlm and munge installed, and root for slurmd)

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.accvit-med-installed

.PHONY: demo test test-slurm install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/accvit-med demo

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# Usually run with sudo: no pytest cache is written, so none is left owned by root.
test-slurm: $(STAMP)
	ACCVIT_MED_REQUIRE=slurm $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_sweep_slurm.py $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
