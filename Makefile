# The README's commands: `make demo` and `make test`. Both set up .venv on a fresh machine.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The oldest supported Blender LTS line that PyPI's bpy module covers with audio support.
LTS_BPY := 4.5.15
LTS_VENV := .venv-bpy45
LTS_STAMP := $(LTS_VENV)/.installed

.PHONY: setup test test-fast test-bpy test-bpy-lts lint demo bench addon synth real-speech \
	default-model clean

setup: $(STAMP)

# torch is pinned to the local CPU wheel; an unpinned torch would pull CUDA packages.
# torchaudio is never installed: it cannot load with the CPU torch and breaks transformers.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev,train,blender]"
	@if $(PY) -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('torchaudio') is None)"; then \
		echo "torchaudio is installed in $(VENV); remove it (it breaks transformers)"; exit 1; fi
	touch $(STAMP)

$(LTS_STAMP): pyproject.toml
	test -x $(LTS_VENV)/bin/python || $(PYTHON) -m venv $(LTS_VENV)
	$(LTS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LTS_VENV)/bin/python -m pip install --quiet torch==2.13.0 bpy==$(LTS_BPY) pytest matplotlib
	$(LTS_VENV)/bin/python -m pip install --quiet -e .
	touch $(LTS_STAMP)

# Every test, slow ones included (CI runs this). bpy loads once per process, so the Blender
# tests run in their own pytest processes: on bpy 5.0.1 and on the LTS line.
test: $(STAMP) $(LTS_STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -m "not bpy" -q
	$(MAKE) --no-print-directory test-bpy test-bpy-lts

test-bpy: $(STAMP)
	$(PY) -m pytest -m bpy -q tests/test_addon_bpy.py
	$(PY) -m pytest -m bpy -q tests/test_bake.py
	$(PY) -m pytest -m bpy -q tests/test_headless_head.py
	$(PY) -m pytest -m bpy -q tests/test_demo.py

test-bpy-lts: $(LTS_STAMP)
	$(LTS_VENV)/bin/python -m pytest -m bpy -q tests/test_addon_bpy.py
	$(LTS_VENV)/bin/python -m pytest -m bpy -q tests/test_bake.py
	$(LTS_VENV)/bin/python -m pytest -m bpy -q tests/test_demo.py

# The quick default selection (no slow or bpy tests).
test-fast: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check .

# `make demo MODEL=runs/x/model` runs it with another model folder.
demo: $(STAMP)
	$(VENV)/bin/emotalk demo $(if $(MODEL),--model $(MODEL))

bench: $(STAMP)
	$(PY) benchmarks/bench_inference.py

addon: $(STAMP)
	$(PY) build_addon.py

synth: $(STAMP)
	$(PY) -m training.synth --out data/synth --minutes 60 --seed 0

real-speech: $(STAMP)
	$(PY) -m training.real_speech --out data/real_speech --seed 0

# Rebuild emotalk_core/weights/default from scratch: data, training, evaluation, export (about
# 90 minutes on 2 CPU cores: two training stages; emotalk_core/weights/README.md).
default-model: $(STAMP)
	$(PY) -m training.default_model

clean:
	rm -rf $(VENV) $(LTS_VENV) dist build *.egg-info
