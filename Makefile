# `make demo` and `make test` do all the set-up a fresh machine needs.
PY ?= python3
VENV ?= .venv
STAMP := $(VENV)/.installed

# setup.cfg's python_requires, as a check a Python runs on itself: tarfile's filter="data".
PY_FLOOR := import sys; v = sys.version_info[:3]; sys.exit(not (v >= (3, 11, 4) or (3, 10, 12) <= v < (3, 11)))
# A .venv whose Python is below it is made again, even where its stamp is newer than setup.cfg.
ifeq ($(shell test -x $(VENV)/bin/python && ! $(VENV)/bin/python -c '$(PY_FLOOR)' && echo old),old)
.PHONY: $(STAMP)
endif

$(STAMP): setup.cfg pyproject.toml
	@if [ -x $(VENV)/bin/python ] && ! $(VENV)/bin/python -c '$(PY_FLOOR)'; then \
	  echo "$(VENV) was made by Python $$($(VENV)/bin/python -V 2>&1 | cut -d' ' -f2), older than 3.10.12 (or a 3.11 before 3.11.4): making it again with $(PY)."; \
	  rm -rf $(VENV); fi
	@$(PY) -c '$(PY_FLOOR)' || { echo "$(PY) is Python $$($(PY) -V 2>&1 | cut -d' ' -f2); alexnet_jax needs 3.10.12+, 3.11.4+ or 3.12+ (tarfile's filter=\"data\"): make PY=python3.12, say."; exit 1; }
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/python -m alexnet_jax.main --config=configs/demo.py --workdir=workdirs/demo

# pytest-xdist's workers: XLA compiles on one thread, so two keep both of a 2-core machine's cores
# busy, an idle one taking tests from the other (tests/README.md has the times). make test
# WORKERS=0 runs the tests in this process.
WORKERS ?= 2

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest -q -n $(WORKERS) --dist worksteal tests

# The edit-test loop: everything but the tests marked slow (real processes, subprocess runs of
# the program, whole training runs, the switches off the default path); make test and CI run
# them all.
test-fast: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest -q -n $(WORKERS) --dist worksteal -m "not slow" tests

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/train_step.py

.PHONY: install demo test test-fast bench
