# trainwright: `make demo` and `make test` set everything up on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_PIN := torch==2.13.0
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: venv demo test bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PIN)
	$(BIN)/python -m pip install -q -e ".[dev,demo]" "$(TORCH_PIN)"
	touch $@

demo: venv
	$(BIN)/trainwright demo

test: venv
	$(BIN)/python -m pytest -q tests

bench: venv
	$(BIN)/python bench/bench_sst2.py

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
