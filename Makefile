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

.PHONY: book test install data lab browser execute unit nbval nbval-portable spread leaderboard build-book clean help bench-peers bench-gpu \
        install-teach assignments grade book-student install-export

# nbval on the stored chapters. Exact outputs are compared digit by digit; cells tagged
# nbval-ignore-output check their trained numbers against chapters/reference_values/.
NBVAL    := $(BIN)/pytest chapters --nbval --nbval-current-env \
            --nbval-sanitize-with tests/sanitize.cfg -p no:cacheprovider
# another machine, simulated: no SIMD kernels and one thread (the combination that moves
# trained numbers furthest from the native run, see results/spread.json)
PORTABLE := ATEN_CPU_CAPABILITY=default OMP_NUM_THREADS=1

help:
	@echo "make book     set up, fetch MovieLens-100K, build the HTML book into _build/html"
	@echo "make test     set up, fetch data, run unit tests, a -W book build and nbval on every"
	@echo "              chapter, natively and at the same time on portable CPU kernels"
	@echo "make lab      open the chapters in JupyterLab (MyST rendered) with ctr_src importable"
	@echo "make browser  build the book and check it in headless Chromium, network off"
	@echo "make execute  re-execute every chapter in place, record its trained values"
	@echo "make spread   measure how seeds and CPU kernels move the trained values (~30 min)"
	@echo "make assignments  build every classroom assignment: dist/<name>/student/ (hand out)"
	@echo "              and dist/<name>/autograder/ (otter-grader, offline)"
	@echo "make grade SUBMISSIONS=folder  grade the notebooks in folder into folder/grades.csv"
	@echo "              (optional: ASSIGNMENT=name, CSV=file)"
	@echo "make book-student  the book without exercise solutions, into _build/student/html"
	@echo "make bench-peers  training speed against DeepCTR-Torch and torch-rechub, same data and"
	@echo "              settings, interleaved repeats; writes results/peers.json (~10 min)"
	@echo "make bench-gpu    DeepFM throughput on Criteo-shaped synthetic data (GPU if present)"
	@echo "make leaderboard  every model under one protocol: search, 5 seeds, paired intervals;"
	@echo "              writes results/leaderboard.json and .csv (~45 min on 2 cores)"

install: $(STAMP)
$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) tools/check_python.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

# The teaching tools (otter-grader) stay out of the book's own environment: `make book`
# does not install them; `make assignments`, `make grade` and `make test` do.
TEACH_STAMP := $(VENV)/.installed-teach
install-teach: $(TEACH_STAMP)
$(TEACH_STAMP): $(STAMP) requirements-teach.txt
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-teach.txt
	touch $(TEACH_STAMP)

# The export tools (onnx, onnxscript, onnxruntime) stay out of the book's own environment
# too: `make book` does not install them; `make install-export` and `make test` do.
EXPORT_STAMP := $(VENV)/.installed-export
install-export: $(EXPORT_STAMP)
$(EXPORT_STAMP): $(STAMP) requirements-export.txt
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-export.txt
	touch $(EXPORT_STAMP)

data: $(DATA)
$(DATA): | $(STAMP)
	$(PY) -m ctr_src.data fetch

book: install data build-book
	@echo ""
	@echo "The book is built. Open: _build/html/index.html"

build-book:
	$(BIN)/jupyter-book build . -W -n --keep-going

# Two passes at once, one thread each (2 cores): the unit tests and the chapters on this
# machine's kernels, and the chapters again on portable kernels; the second pass's output
# is printed when both have ended. Either failing fails `make test`.
PORTABLE_LOG := _build/nbval-portable.log
test: install install-teach install-export data
	@mkdir -p _build
	@echo "== nbval, as on another machine ($(PORTABLE)), runs in the background =="
	@$(PORTABLE) $(NBVAL) > $(PORTABLE_LOG) 2>&1 & portable=$$!; \
	echo "== unit tests, book build and nbval on this machine's kernels (1 thread) =="; \
	OMP_NUM_THREADS=1 $(NBVAL) tests; native=$$?; \
	wait $$portable; other=$$?; \
	echo "== nbval as on another machine: $(PORTABLE) =="; cat $(PORTABLE_LOG); \
	echo "== native pass: exit $$native; portable pass: exit $$other =="; \
	test $$native -eq 0 && test $$other -eq 0

unit: install data
	$(BIN)/pytest tests -m "not slow"

nbval: install data
	$(NBVAL)

nbval-portable: install data
	$(PORTABLE) $(NBVAL)

execute: install data
	$(PY) tools/execute.py

spread: install data
	$(PY) tools/measure_spread.py

# two jobs of one thread each; resumable (finished runs are cached in results/.cache/)
# Speed against the peer libraries (requirements-bench.txt, installed into .bench-lib/ and
# nowhere else); writes results/peers.json, which chapter 8 shows. ~10 min on 2 cores.
BENCH_LIB := .bench-lib
$(BENCH_LIB)/.installed: requirements-bench.txt | $(STAMP)
	$(PY) -m pip install --quiet --no-deps --upgrade --target $(BENCH_LIB) -r requirements-bench.txt
	touch $@
bench-peers: install data $(BENCH_LIB)/.installed
	$(PY) benchmarks/peers.py
bench-gpu: install $(BENCH_LIB)/.installed
	$(PY) benchmarks/gpu_throughput.py

leaderboard: install data
	OMP_NUM_THREADS=1 $(PY) tools/leaderboard.py --jobs 2

# JupyterLab with jupyterlab-myst (requirements.txt): equations, {eq} references, citations,
# exercises and their collapsed solutions render as on the website. JupyterLab refuses to
# run as root (containers, CI images) unless told: --allow-root is added for root only.
LAB_FLAGS := $(if $(filter 0,$(shell id -u)),--allow-root)
lab: install data
	$(BIN)/jupyter lab $(LAB_FLAGS) chapters/

# the real-browser checks of the website and of `make lab` (headless Chromium; they skip,
# saying how to enable them, where Chromium or Playwright is missing)
browser: install data
	$(BIN)/pytest tests/test_browser.py tests/test_book.py -p no:cacheprovider

clean:
	rm -rf _build .pytest_cache dist

# Classroom assignments (assignments/README.md): otter assign, offline, no Docker.
assignments: install-teach
	OMP_NUM_THREADS=1 $(PY) tools/assignments.py build

# make grade SUBMISSIONS=folder [ASSIGNMENT=name] [CSV=file]: every .ipynb under folder,
# graded by `otter run` (local, no Docker) with the autograder from `make assignments`
grade: install-teach
	@test -n "$(SUBMISSIONS)" || { echo "usage: make grade SUBMISSIONS=folder [ASSIGNMENT=name] [CSV=file]"; exit 2; }
	OMP_NUM_THREADS=1 $(PY) tools/assignments.py grade "$(SUBMISSIONS)" \
	  $(if $(ASSIGNMENT),--assignment $(ASSIGNMENT)) $(if $(CSV),--csv "$(CSV)")

# the website without exercise solutions (pages and downloadable notebooks alike)
book-student: install
	$(PY) tools/student_edition.py _build/student
