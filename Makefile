# Two entry points for a fresh machine: `make demo` (set up, run the main job on the tiny
# built-in model) and `make test` (set up, run the tests). Both create ./.venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is installed first and explicitly: on a CPU machine this takes the CPU build that is
# available locally; on a GPU machine pip's default torch wheel is the CUDA build.
TORCH ?= torch==2.13.0

.PHONY: install demo test test-tools soak clean

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

test: install test-tools
	$(BIN)/python -m pytest -q

# tests/test_ray_up_ssh.py runs `ray up` over SSH: it needs sshd and rsync. Installed here where they are
# missing and this runs as root with apt-get (Debian, Ubuntu); anywhere else that test is skipped, saying why.
test-tools:
	@if ! { [ -x /usr/sbin/sshd ] && command -v rsync; } >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] \
	    && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing openssh-server and rsync (apt-get) for the ray up test"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    openssh-server rsync; } >/dev/null 2>&1 || echo "could not install them: the ray up test will be skipped"; \
	fi

# The long chaos and fuzzing runs (minutes), with the figures they print.
soak: install
	$(BIN)/python -m pytest -q -s -m soak

clean:
	rm -rf $(VENV) results
