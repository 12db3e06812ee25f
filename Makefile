# Two commands do everything on a fresh machine (see README):
#   make run   — set up, then run every notebook with papermill (full profile) -> outputs/, figures/, outputs/RESULTS.md
#   make test  — set up, then run the test suite (unit tests + every notebook in the ci profile)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup run run-ci test lint bench serve clean-cache

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name fashion-clip-course --display-name "fashion-clip-course" >/dev/null
	touch $(STAMP)

run: setup
	$(PY) -m course_utils.run --profile full

run-ci: setup
	$(PY) -m course_utils.run --profile ci

test: setup
	$(PY) -m pytest -q -m ""; rc=$$?; [ $$rc -ne 5 ] || echo "pytest collected no tests: that is a failure here"; exit $$rc

lint: setup
	$(VENV)/bin/ruff check course_utils tests benchmarks

bench: setup
	$(PY) benchmarks/bench_exact_search.py
	$(PY) benchmarks/bench_faiss.py
	$(PY) benchmarks/bench_embedding.py

# make serve: the classroom server (one process, many viewers); make serve SERVE_ARGS=--voila for Voilà
SERVE_ARGS ?=
serve: setup
	$(PY) -m course_utils.serve $(SERVE_ARGS)

clean-cache:
	rm -rf data/cache
