# The README's commands: `make demo` and `make test`. Both set up .venv on a fresh machine.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The oldest supported Blender LTS line that PyPI's bpy module covers with audio support.
LTS_BPY := 4.5.15
LTS_VENV := .venv-bpy45
LTS_STAMP := $(LTS_VENV)/.installed
# The newest Blender line on PyPI. Its bpy needs Python 3.13, for which there is no torch here, so
# this venv holds only what the add-on and its tests need: as in a real Blender, the backend runs
# in .venv as a subprocess (the tests point EMOTALK_PYTHON there, tests/backend_python.py).
PY313 ?= env PYENV_VERSION=3.13.0 python3.13
NEW_BPY := 5.3.0
NEW_VENV := .venv-bpy53
NEW_STAMP := $(NEW_VENV)/.installed
# The add-on's suites: each tests/test_addon_bpy*.py in its own pytest process (bpy loads once per
# process); a new file with that name runs on every Blender line without a Makefile change.
ADDON_BPY_TESTS = $(sort $(wildcard tests/test_addon_bpy*.py))

.PHONY: setup test test-fast test-bpy test-bpy-lts test-bpy-53 lint demo bench addon dist synth \
	real-speech default-model clean

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

# bpy pulls the numpy it supports (>=2.2 for 5.3); no torch and no emotalk_core here.
$(NEW_STAMP): Makefile
	test -x $(NEW_VENV)/bin/python || $(PY313) -m venv $(NEW_VENV)
	$(NEW_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(NEW_VENV)/bin/python -m pip install --quiet bpy==$(NEW_BPY) pytest soundfile
	touch $(NEW_STAMP)

# Every test, slow ones included (CI runs this). bpy loads once per process, so the Blender
# tests run in their own pytest processes: on bpy 5.0.1, on the LTS line and on the newest line.
test: $(STAMP) $(LTS_STAMP) $(NEW_STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -m "not bpy" -q
	$(MAKE) --no-print-directory test-bpy test-bpy-lts test-bpy-53

# run-each PYTHON FILES: one pytest process per file; fails if any file fails, after running all.
run-each = failed=""; for f in $(2); do echo "$(1) -m pytest -m bpy -q $$f"; \
	$(1) -m pytest -m bpy -q $$f || failed="$$failed $$f"; done; \
	if [ -n "$$failed" ]; then echo "bpy suites failed:$$failed"; exit 1; fi

test-bpy: $(STAMP)
	@$(call run-each,$(PY),$(ADDON_BPY_TESTS) tests/test_bake.py tests/test_headless_head.py \
		tests/test_demo.py)

test-bpy-lts: $(LTS_STAMP)
	@$(call run-each,$(LTS_VENV)/bin/python,$(ADDON_BPY_TESTS) tests/test_bake.py \
		tests/test_demo.py)

# Only the add-on as users install it: the headless bake and demo need emotalk_core and torch in
# bpy's own process, which Python 3.13 here cannot have (they run on the two lines above).
# .venv is the backend these tests start.
test-bpy-53: $(STAMP) $(NEW_STAMP)
	@$(call run-each,$(NEW_VENV)/bin/python,$(ADDON_BPY_TESTS))

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

# The wheel (our code, the default model, the headless bake) and the extension zip, in dist/;
# the zip carries the wheel for the preferences' Set up backend.
dist: $(STAMP)
	$(PY) -m pip wheel --no-deps --no-build-isolation -q -w dist .
	$(PY) build_addon.py --out dist --wheel dist

synth: $(STAMP)
	$(PY) -m training.synth --out data/synth --minutes 60 --seed 0

real-speech: $(STAMP)
	$(PY) -m training.real_speech --out data/real_speech --seed 0

# Rebuild emotalk_core/weights/default from scratch: data, training, evaluation, export (about
# 90 minutes on 2 CPU cores: two training stages; emotalk_core/weights/README.md).
default-model: $(STAMP)
	$(PY) -m training.default_model

clean:
	rm -rf $(VENV) $(LTS_VENV) $(NEW_VENV) dist build *.egg-info
