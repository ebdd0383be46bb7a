# make demo: set up .venv and run the quickstart on the embedded data; make test: set up and run the test suite;
# make test-floors / test-hosted: the dependency ranges proven in fresh venvs (see tools/venvcheck.py).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-floors test-hosted lint bench clean-runs

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --quiet --no-compile -r requirements.txt
	$(PY) -m pip install --quiet --quiet --no-compile --no-deps --no-build-isolation -e .
	# Bytecode for every installed module, compiled once on all cores: where PYTHONDONTWRITEBYTECODE is set (as on the
	# development machines here) Python never caches it, so each fresh process, test kernel and subprocess would compile
	# torch, fastai and timm again (benchmarks/bench_import.py). torch ships one test file in Python 3.12 syntax.
	$(PY) -m compileall -q -j 0 -x 'torch/testing/_internal/py312_intrinsics' $(VENV)/lib tresnet_nb
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m tresnet_nb run notebooks/00_quickstart.ipynb --out runs

# Worker processes (pytest-xdist), each test file whole in one of them so that its module fixtures are built once:
# one more than the usable cores (at most 4), because a worker often waits on a kernel, a browser or a server it
# started; tests/conftest.py gives each worker its share of the cores as torch threads (at least one), so that the
# workers do not spin against each other.
test: $(STAMP)
	$(PY) -m pytest -q -n $$(( $$(nproc) + 1 )) --maxprocesses 4 --dist loadfile

# Not in CI (each builds a fresh venv with PyPI's CUDA torch, about 6 GB, from the package registry): every
# dependency at its floor, then the smoke runs; Colab's GPU image, then the notebooks' install cell and a smoke run.
test-floors: $(STAMP)
	$(PY) tools/venvcheck.py floors

test-hosted: $(STAMP)
	$(PY) tools/venvcheck.py hosted --image colab-gpu

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
	$(PY) benchmarks/bench_vs_fastai.py

clean-runs:
	rm -rf runs
