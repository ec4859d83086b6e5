# trainwright: `make demo` and `make test` set everything up on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_PIN := torch==2.13.0
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: venv demo lint test test-fast bench browser report-screenshots clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PIN)
	$(BIN)/python -m pip install -q -e ".[dev,demo]" "$(TORCH_PIN)"
	touch $@

demo: venv
	$(BIN)/trainwright demo

lint: venv
	$(BIN)/ruff check src tests bench examples

# everything, lint first (a lint failure fails the target), in TEST_WORKERS pytest workers of one intra-op thread
# each; a test module stays on one worker (--dist loadscope), so its module fixtures run once. About 8 minutes on
# 2 CPU cores (14 in one process: most of the slow tests wait on subprocesses, sleeps and timeouts)
TEST_WORKERS ?= 2
test: lint
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadscope tests

# the quick subset: no torchrun, no pretrained model, no torch.compile, no slow test, in two pytest workers of one
# intra-op thread each (the tiny test models run fastest on one thread; about 80 s on 2 CPU cores)
test-fast: lint
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadscope tests -m "not slow and not torchrun and not pretrained and not compile"

bench: venv
	$(BIN)/python bench/bench_sst2.py

# headless Chromium (Debian's package) for tests/test_report_browser.py and the report screenshots
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  command -v apt-get >/dev/null 2>&1 || { echo "make browser: install Chromium with your package manager"; exit 1; }; \
	  $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends chromium; }
	@chromium --version 2>/dev/null || chromium-browser --version

# docs/images/report-*.png from three tiny training runs on local data
report-screenshots: venv browser
	$(BIN)/python docs/make_report_screenshots.py

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
