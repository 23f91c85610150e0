# The two set-up commands of the README. Everything is installed into .venv from the project's own files.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The dev/CI pin of torch (a CPU build); users installing vaekit bring their own torch.
PIP_INSTALL := $(BIN)/python -m pip install --disable-pip-version-check -q -c constraints-dev.txt

.PHONY: demo test bench install clean

$(VENV)/.installed: pyproject.toml constraints-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/vaekit demo

test: $(VENV)/.installed
	$(BIN)/python -m pytest

$(VENV)/.installed-bench: $(VENV)/.installed
	$(PIP_INSTALL) -e '.[test,bench]'
	touch $@

bench: $(VENV)/.installed-bench
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) runs build src/*.egg-info
