# The two front-door commands: `make book` and `make test`. Everything else is a step of them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMP  := $(VENV)/.installed
DATA   := data/ml-100k/MANIFEST.json
# the notebook kernel spec runs `python`: let that be the venv's interpreter
export PATH := $(abspath $(BIN)):$(PATH)
export PYDEVD_DISABLE_FILE_VALIDATION := 1

.PHONY: book test install data lab execute unit nbval build-book clean help

help:
	@echo "make book     set up, fetch MovieLens-100K, build the HTML book into _build/html"
	@echo "make test     set up, fetch data, run unit tests + nbval (strict) + a -W book build"
	@echo "make lab      open the chapters in JupyterLab with ctr_src importable"
	@echo "make execute  re-execute every chapter in place (refresh stored outputs)"

install: $(STAMP)
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

data: $(DATA)
$(DATA): | $(STAMP)
	$(PY) -m ctr_src.data fetch

book: install data build-book
	@echo ""
	@echo "The book is built. Open: _build/html/index.html"

build-book:
	$(BIN)/jupyter-book build . -W -n --keep-going

test: install data
	$(BIN)/pytest tests chapters --nbval --nbval-current-env \
	    --nbval-sanitize-with tests/sanitize.cfg -p no:cacheprovider

unit: install data
	$(BIN)/pytest tests -m "not slow"

nbval: install data
	$(BIN)/pytest chapters --nbval --nbval-current-env --nbval-sanitize-with tests/sanitize.cfg

execute: install data
	$(PY) tools/execute.py

lab: install data
	$(BIN)/jupyter lab chapters/

clean:
	rm -rf _build .pytest_cache
