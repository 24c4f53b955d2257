# One entry point for set-up, tests, demo and benchmarks. Every pip call uses constraints.txt (torch CPU build).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
PIP     := $(BIN)/python -m pip
STAMP   := $(VENV)/.installed
MODEL   ?=

.PHONY: install test test-slow lint demo bench bench-peer model ablations clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check src tests $(wildcard bench)
	$(BIN)/ruff format --check src tests $(wildcard bench)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check src tests $(wildcard bench)
	$(BIN)/ruff format --check src tests $(wildcard bench)

# Ranks a few documents, then searches 500 SciFact abstracts (index cached under runs/search/);
# make demo DEMO_ARGS=--full-scifact indexes all 5,183 (see python -m gemma_embed.demo --help).
demo: $(STAMP)
	$(BIN)/python -m gemma_embed.demo $(if $(MODEL),--model $(MODEL),) $(DEMO_ARGS)

# Speed, memory and fidelity of every inference path on a random-weight embeddinggemma-300m checkpoint;
# rewrites its section of docs/benchmarks.md. Extra options: make bench BENCH_ARGS="--texts 512 --threads 8".
bench: $(STAMP)
	$(BIN)/python bench/speed.py $(BENCH_ARGS)

# gemma-embed against llama.cpp (f32 / q8_0 / q4_0 GGUF) on the same random-weight 300m checkpoint, 2 threads
# per engine; rewrites its section of docs/benchmarks.md and docs/results/peer-<machine>.json (options:
# PEER_ARGS="--texts 32 --latency-runs 50"). llama.cpp comes
# from the `llama` extra (compiles from source, about 11 CPU-minutes); without it only gemma-embed runs.
bench-peer: $(STAMP)
	$(BIN)/python bench/peer.py $(PEER_ARGS)

# The default model from scratch (resumable; see docs/default-model.md), then its ablations.
model: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/gemma-embed pipeline recipes/mini/pipeline.toml

ablations: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/gemma-embed ablate recipes/mini/ablations.toml
	HF_HUB_OFFLINE=1 $(BIN)/gemma-embed ablate recipes/mini/ablations-finetuning.toml

clean:
	rm -rf $(VENV) build dist .pytest_cache
