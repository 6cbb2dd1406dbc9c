# Two entry points for a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.deps-installed
PYX    := $(shell find rmq_common rmq_store rmq_remoting rmq_client -name '*.pyx' -o -name '*.pxd')
BUILT  := $(VENV)/.ext-built

.PHONY: run test bench soak build clean venv peers

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

# The main job: an embedded NameServer + broker (child process) and rmq's Python client, produce -> consume -> e2e
# at 128 B and 1 KiB, with Redis Streams measured in the same run when redis-server is there (see `peers`).
run: build peers
	$(PY) -m rmq_cli bench client

# The client benchmark's peer: Debian's redis-server, installed only where it is missing and we are root with
# apt-get (CI is); any failure just leaves the Redis rows "not run" in the table.
peers:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing redis-server (Debian) for the benchmark's Redis peer"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    { apt-get install -y -qq --no-install-recommends redis-server >/dev/null 2>&1 || \
	      { apt-get update -qq >/dev/null 2>&1 && \
	        apt-get install -y -qq --no-install-recommends redis-server >/dev/null 2>&1; }; } || \
	    echo "redis-server could not be installed: the Redis peer will be skipped"; \
	  else \
	    echo "redis-server is not installed (needs root and apt-get): the Redis peer will be skipped"; \
	  fi; }

test: build
	$(PY) -m pytest -q -p no:cacheprovider

bench: build peers
	$(PY) -m rmq_cli bench store
	$(PY) -m rmq_cli bench remoting
	$(PY) -m rmq_cli bench client
	$(PY) -m pytest -q bench --benchmark-only -p no:cacheprovider -m 'slow or not slow'

soak: build
	$(PY) -m pytest -q -p no:cacheprovider -m slow

clean:
	rm -rf build $(BUILT) rmq_*/*.c rmq_*/*.so
