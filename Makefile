# make demo: set up .venv and run the quickstart on the embedded data; make test: set up and run the test suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean-runs

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --quiet -r requirements.txt
	$(PY) -m pip install --quiet --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m tresnet_nb run notebooks/00_quickstart.ipynb --out runs

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

bench: $(STAMP)
	$(PY) benchmarks/bench_precision.py
	$(PY) benchmarks/bench_highres.py
	$(PY) benchmarks/bench_loop_overhead.py
	$(PY) benchmarks/bench_grad_checkpointing.py
	$(PY) benchmarks/bench_iabn.py
	$(PY) benchmarks/bench_probe.py
	$(PY) benchmarks/bench_optimizer.py

clean-runs:
	rm -rf runs
