# Two entry points for a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.deps-installed
PYX    := $(shell find rmq_common rmq_store rmq_remoting rmq_client -name '*.pyx' -o -name '*.pxd')
BUILT  := $(VENV)/.ext-built

.PHONY: run test bench soak build clean venv

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q "cython>=3.0" "numpy>=1.26" "setuptools>=70" wheel
	$(PY) -m pip install -q --no-build-isolation -e '.[dev]'
	touch $@

$(BUILT): $(STAMP) $(PYX) setup.py
	$(PY) setup.py -q build_ext --inplace
	touch $@

venv: $(STAMP)
build: $(BUILT)

# The main job: until the broker exists, the store benchmark with its peers.
run: build
	$(PY) -m rmq_cli bench store

test: build
	$(PY) -m pytest -q -p no:cacheprovider

bench: build
	$(PY) -m rmq_cli bench store
	$(PY) -m pytest -q bench --benchmark-only -p no:cacheprovider -m 'slow or not slow'

soak: build
	$(PY) -m pytest -q -p no:cacheprovider -m slow

clean:
	rm -rf build $(BUILT) rmq_*/*.c rmq_*/*.so
