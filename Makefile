# The two set-up commands of the README. Everything is installed into .venv from the project's own files.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The dev/CI pin of torch (a CPU build); users installing vaekit bring their own torch.
PIP_INSTALL := $(BIN)/python -m pip install --disable-pip-version-check -q -c constraints-dev.txt

.PHONY: demo test fuzz bench install clean

# The face sets (smiles, olivetti, frey) are never in the repository: where the shared copies sit beside the
# checkout, vaekit and its tests find them through VAEKIT_DATA (a value already set wins).
FACES := $(abspath ../shared/data/faces)
ifneq ($(wildcard $(FACES)),)
export VAEKIT_DATA ?= $(FACES)
endif

$(VENV)/.installed: pyproject.toml constraints-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/vaekit demo

test: $(VENV)/.installed
	$(BIN)/python -m pytest

# The readers fuzzed with many more examples than make test's (tests/test_fuzz.py): minutes, not seconds.
fuzz: $(VENV)/.installed
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest tests/test_fuzz.py

$(VENV)/.installed-bench: $(VENV)/.installed
	$(PIP_INSTALL) -e '.[test,bench]'
	touch $@

bench: $(VENV)/.installed-bench
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) runs build src/*.egg-info
