# The two commands of the README: `make book` and `make test`. Both create .venv and install
# everything on first use (Python 3.10+ with venv; Graphviz's `dot` via apt-get when run as root).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# A CPU build of torch. GPU users: see README ("GPU") for installing a CUDA build first.
TORCH ?= torch==2.13.0
OPEN_CLIP := open_clip_torch==3.3.0
STAMP := $(VENV)/.installed-stamp
OFFLINE := SDANATOMY_FORBID_NETWORK=1 HF_HUB_OFFLINE=1
# Notebooks are executed (make execute) and compared (nbval) with the same number of torch
# threads: a float32 sum split over another number of threads may round differently. One
# thread each, because nbval runs two notebooks at a time (pytest-xdist, a notebook per
# worker): on two cores that is faster than one notebook on two threads, as the tensors of
# these notebooks are small.
NB_THREADS := OMP_NUM_THREADS=1
NBVAL := --nbval --nbval-current-env --nbval-sanitize-with book/sanitize.cfg

STATUS := _build/status

.PHONY: book test install dot node live chromium pytest nbval book-strict browser bench test-start clean \
  execute lab

book: install live
	$(OFFLINE) $(BIN)/python -m sdanatomy.offline jupyter-book build .
	@echo
	@echo "The book is built: open file://$(CURDIR)/_build/html/index.html"

# make test: the strict build, then one pytest run of the unit tests, the notebooks (nbval) and
# the browser tests on the site just built, on two workers of one torch thread each; each file
# stays on one worker (--dist loadfile), and the top-level conftest.py sends the longest first.
# (The status appendix of the site tested shows the previous make test's notebook times: this
# one's are written while it runs.) The targets pytest, nbval and browser run each part alone.
test: test-start install chromium book-strict
	$(OFFLINE) $(NB_THREADS) $(BIN)/pytest book tests $(NBVAL) --site=_build/html \
	  -p no:cacheprovider -n 2 --dist loadfile --no-loadscope-reorder
	@$(BIN)/python -m sdanatomy.pages.status finish-make-test
	@echo "make test: unit tests, notebooks (nbval), the strict book build and the browser test all passed."

# make test's start, for its total time (shown by the status appendix and bench/run.py).
test-start:
	@mkdir -p $(STATUS) && date +%s > $(STATUS)/make_test.started

install: $(STAMP) dot

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -c 'import torch' 2>/dev/null || $(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[book,test]"
	@# CLIP's BPE vocabulary (SD-1.5's tokenizer) ships in this wheel; only that file is read.
	@# --no-deps: its torchvision requirement would pull a build that does not match this torch.
	$(BIN)/pip install --quiet --no-deps "$(OPEN_CLIP)"
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

# The unit tests run in two processes of one torch thread each (pytest-xdist): on two cores
# that is faster than one process of two threads, because most tests are small.
pytest: install
	$(OFFLINE) OMP_NUM_THREADS=1 $(BIN)/pytest tests --ignore=tests/browser -n 2 --dist worksteal

nbval: install
	$(OFFLINE) $(NB_THREADS) $(BIN)/pytest $(NBVAL) book -p no:cacheprovider \
	  -n 2 --dist loadfile --no-loadscope-reorder

book-strict: install live
	$(OFFLINE) $(BIN)/python -m sdanatomy.offline jupyter-book build . --all -W -n --keep-going

# The live page (book/live.md) runs the miniature in the reader's browser: its ONNX models,
# data and onnxruntime-web's wasm build go to book/_static/live (not in git; the site serves
# them). npm ci installs onnxruntime-web from the committed lock file; the export runs again
# when the weights, the exporter or the installed package are newer than its output.
LIVE := book/_static/live
MINI_WEIGHTS := $(wildcard src/sdanatomy/miniature/weights/*/*)
live: install node $(LIVE)/miniature.json

web/node_modules/.package-lock.json: web/package-lock.json web/package.json
	@# --ignore-scripts: nothing of onnxruntime-web needs an install script
	npm ci --prefix web --no-audit --no-fund --loglevel=error --ignore-scripts

$(LIVE)/miniature.json: web/node_modules/.package-lock.json $(MINI_WEIGHTS) \
  src/sdanatomy/miniature/export_onnx.py src/sdanatomy/miniature/__init__.py
	$(OFFLINE) OMP_NUM_THREADS=1 $(BIN)/python -m sdanatomy.miniature.export_onnx --out $(LIVE)

node:
	@command -v npm >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "npm (for the live page's onnxruntime-web) is missing: installing Debian's nodejs, npm"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; \
	  else \
	    echo "The live page needs Node's npm: Debian/Ubuntu: sudo apt-get install nodejs npm"; \
	    exit 1; \
	  fi; }

# After book-strict: every page of the built site in headless Chromium (tests/browser), offline;
# one screenshot per chapter in _build/screenshots.
browser: install chromium
	$(OFFLINE) $(BIN)/pytest tests/browser --site=_build/html -p no:cacheprovider

# Re-execute notebooks in place, as nbval will run them (their stored outputs are what nbval
# compares): make execute NB="book/ch02_notation.ipynb book/ch08_functions.ipynb"
NB ?= $(wildcard book/*.ipynb)
execute: install
	@for nb in $(NB); do echo "executing $$nb"; \
	  $(OFFLINE) $(NB_THREADS) $(BIN)/jupyter execute --inplace --timeout=1800 "$$nb" \
	    || exit 1; \
	  $(BIN)/python -c "$$STRIP_TIMING" "$$nb"; done

# nbclient records each cell's execution times in its metadata: noise in the diff, not kept.
# It also stores the sliders' widget state; a page with widget state would load the widget
# manager from a CDN, and the site is offline (the static figure beside each slider stands in).
export STRIP_TIMING := import nbformat, sys; nb = nbformat.read(sys.argv[1], 4); \
  [c.metadata.pop("execution", None) for c in nb.cells]; nb.metadata.pop("widgets", None); \
  nbformat.write(nb, sys.argv[1])

# The chapters in JupyterLab, from the same environment, with working sliders (ipywidgets).
# LAB_ROOT, LAB_ARGS: another folder, more options (tests/browser/test_jupyterlab.py passes a scratch
# folder and a token).
# Offline: no news feed, no update check; as root (a container, CI) JupyterLab needs --allow-root.
LAB_PORT ?= 8888
LAB_ROOT ?= $(CURDIR)
LAB_ARGS ?=
lab: install
	$(OFFLINE) $(BIN)/jupyter lab --ServerApp.ip=127.0.0.1 --ServerApp.port=$(LAB_PORT) \
	  --ServerApp.root_dir=$(LAB_ROOT) --LabApp.default_url=/lab/tree/book \
	  --LabApp.news_url=None --LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate \
	  $$([ "$$(id -u)" = 0 ] && echo --allow-root) $(LAB_ARGS)

# Speed, reported, never asserted: bench/run.py writes _build/status/bench.json for the status appendix.
bench: install
	$(BIN)/python bench/run.py $(BENCH_ARGS)

chromium:
	@command -v chromium >/dev/null 2>&1 || test -x "$$SDANATOMY_CHROMIUM" || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Chromium (for the browser test) is missing: installing Debian's chromium package"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "The browser test needs Chromium: Debian/Ubuntu: sudo apt-get install chromium,"; \
	    echo "  or set SDANATOMY_CHROMIUM to a Chrome/Chromium binary"; \
	    exit 1; \
	  fi; }

clean:
	rm -rf _build .pytest_cache $(LIVE) web/node_modules
