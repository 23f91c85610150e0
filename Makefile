# The two set-up commands of the README. Everything is installed into .venv from the project's own files.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The dev/CI pin of torch (a CPU build); users installing vaekit bring their own torch.
PIP_INSTALL := $(BIN)/python -m pip install --disable-pip-version-check -q -c constraints-dev.txt

.PHONY: demo test fuzz bench install browser clean

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
	$(BIN)/vaekit demo --overwrite  # runs/demo is the demo's own folder, also when an older vaekit wrote it

# Two test processes (pytest-xdist), each test file whole in one of them, each process with its share of the cores.
test: $(VENV)/.installed browser
	$(BIN)/python -m pytest -n 2 --dist loadfile

# The explorer's browser tests drive the system's Chromium (with Playwright, from the test extra). Where it is missing
# and apt is usable (root), install it; elsewhere those tests skip and say why. Never fails the build.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "installing Chromium for the explorer's browser tests (apt-get)"; \
	    { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 || \
	      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }; } || \
	      echo "note: could not install Chromium; the browser tests will skip"; \
	  else echo "note: no Chromium and no apt-get as root; the explorer's browser tests will skip"; fi; }

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
