# Two entry points for a fresh machine: `make demo` (set up, run the main job on the tiny
# built-in model) and `make test` (set up, run the tests). Both create ./.venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is installed first and explicitly: on a CPU machine this takes the CPU build that is
# available locally; on a GPU machine pip's default torch wheel is the CUDA build.
TORCH ?= torch==2.13.0

.PHONY: install demo test soak clean

# PYTHONWARNINGS drops setuptools' notice that every editable install prints (not a problem).
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/pip install -q -e ".[test]"
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/hybench sweep

test: install
	$(BIN)/python -m pytest -q

# The long chaos and fuzzing runs (minutes), with the figures they print.
soak: install
	$(BIN)/python -m pytest -q -s -m soak

clean:
	rm -rf $(VENV) results
