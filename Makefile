# `make demo` and `make test` do all the set-up a fresh machine needs.
PY ?= python3
VENV ?= .venv
STAMP := $(VENV)/.installed

$(STAMP): setup.cfg pyproject.toml
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/python -m alexnet_jax.main --config=configs/demo.py --workdir=workdirs/demo

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest -q tests

# The edit-test loop: everything but the tests marked slow (real processes, subprocess runs of
# the program, whole training runs, the switches off the default path); make test and CI run
# them all.
test-fast: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest -q -m "not slow" tests

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/train_step.py

.PHONY: install demo test test-fast bench
