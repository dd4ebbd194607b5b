# The README's commands: `make demo` and `make test`. Both set up .venv on a fresh machine.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test test-fast lint demo bench clean

setup: $(STAMP)

# torch is pinned to the local CPU wheel; an unpinned torch would pull CUDA packages.
# torchaudio is never installed: it cannot load with the CPU torch and breaks transformers.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	@if $(PY) -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('torchaudio') is None)"; then \
		echo "torchaudio is installed in $(VENV); remove it (it breaks transformers)"; exit 1; fi
	touch $(STAMP)

# Every test, slow ones included (CI runs this).
test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -m "slow or not slow" -q

# The quick default selection.
test-fast: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check .

demo: $(STAMP)
	$(VENV)/bin/emotalk demo

bench: $(STAMP)
	$(PY) benchmarks/bench_inference.py

clean:
	rm -rf $(VENV) dist build *.egg-info
