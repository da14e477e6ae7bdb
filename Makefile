# The two commands of the README: `make book` and `make test`. Both create .venv and install
# everything on first use (Python 3.10+ with venv; Graphviz's `dot` via apt-get when run as root).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# A CPU build of torch. GPU users: see README ("GPU") for installing a CUDA build first.
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed-stamp
OFFLINE := SDANATOMY_FORBID_NETWORK=1 HF_HUB_OFFLINE=1
NBVAL := --nbval --nbval-current-env --nbval-sanitize-with book/sanitize.cfg

.PHONY: book test install dot pytest nbval book-strict clean

book: install
	$(OFFLINE) $(BIN)/python -m sdanatomy.offline jupyter-book build .
	@echo
	@echo "The book is built: open file://$(CURDIR)/_build/html/index.html"

test: install pytest nbval book-strict
	@echo "make test: unit tests, notebooks (nbval) and the strict book build all passed."

install: $(STAMP) dot

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -c 'import torch' 2>/dev/null || $(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[book,test]"
	@touch $@

dot:
	@command -v dot >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Graphviz's dot is missing: installing Debian's graphviz package"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz >/dev/null; \
	  else \
	    echo "Graphviz's 'dot' program is missing and cannot be installed from here."; \
	    echo "Install it, then run make again:  Debian/Ubuntu: sudo apt-get install graphviz"; \
	    echo "  macOS: brew install graphviz    conda: conda install -c conda-forge graphviz"; \
	    exit 1; \
	  fi; }

pytest: install
	$(OFFLINE) $(BIN)/pytest tests

nbval: install
	$(OFFLINE) $(BIN)/pytest $(NBVAL) book -p no:cacheprovider

book-strict: install
	$(OFFLINE) $(BIN)/python -m sdanatomy.offline jupyter-book build . --all -W -n --keep-going

clean:
	rm -rf _build .pytest_cache
