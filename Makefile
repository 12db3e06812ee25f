# Two commands do everything on a fresh machine (see README):
#   make run   — set up, then run every notebook with papermill (full profile) -> outputs/, figures/, outputs/RESULTS.md
#   make test  — set up, then run the test suite (unit tests + every notebook in the ci profile)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup lock run run-ci test golden lint bench serve clean-cache student slides slides-js records findings run-real records-real

setup: $(STAMP)

# constraints.txt pins every distribution requirements.txt pulls in, at the versions the tests passed with (make lock
# writes it); make setup CONSTRAINTS= resolves afresh instead (another Python or platform). The stamp names the
# constraints the venv was installed under: tests/test_lockfile.py checks the venv against them.
CONSTRAINTS ?= constraints.txt

$(STAMP): requirements.txt $(CONSTRAINTS) pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) \
	  || { echo "pip could not install requirements.txt$(if $(CONSTRAINTS), under $(CONSTRAINTS)): after a change to \
	requirements.txt, or on another Python or platform, run make setup CONSTRAINTS= (then make test, make lock)"; exit 1; }
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name fashion-clip-course --display-name "fashion-clip-course" >/dev/null
	echo "constraints: $(CONSTRAINTS)" > $(STAMP)

# make lock — pin what this venv has -> constraints.txt (after a requirements change: make setup CONSTRAINTS=, make
#             test, then make lock)
lock: setup
	$(PY) -m course_utils.lockfile write

# make run SEEDS=0,1,2 — the experiment notebooks under three seeds, records with mean and std (under 1 h on 2 cores;
#                        README › What the experiments show ends with the committed run's runtimes)
SEEDS ?= 0
run: setup
	$(PY) -m course_utils.run --profile full --seeds $(SEEDS)

# make run-ci — every notebook in the small ci profile -> outputs/ci/ (figures in outputs/ci/figures/: the committed
#               figures/ and the full run's records in outputs/ stay as they are)
run-ci: setup
	$(PY) -m course_utils.run --profile ci

# make golden — after a make test whose moved numbers are all meant: tests/golden/<profile>-metrics.json from its ci
#               and real-ci runs (outputs/<profile>/results; real-ci where ../shared/data let it run), which every
#               later run of the tests is compared with; commit them on their own, saying what moved and why
golden: setup
	$(PY) -m course_utils.golden write --profile ci
	[ ! -d outputs/real-ci/results ] || $(PY) -m course_utils.golden write --profile real-ci

# make test runs the suite in TEST_WORKERS processes (pytest-xdist; tests/conftest.py says how it splits them), each
# with its share of the cores for torch and the notebook kernels it starts: on 2 cores, one thread each
TEST_WORKERS ?= 2
TEST_THREADS ?= $(shell echo $$(( $$(nproc) / $(TEST_WORKERS) > 1 ? $$(nproc) / $(TEST_WORKERS) : 1 )))
test: setup slides-js
	OMP_NUM_THREADS=$(TEST_THREADS) $(PY) -m pytest -q -m "" -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder \
	  --durations=10; rc=$$?; [ $$rc -ne 5 ] || echo "pytest collected no tests: that is a failure here"; exit $$rc

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

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

# --- handouts: student copy, slides, site -------------------------------------------------------------
# make student — the notebooks without solution cells and without notebooks/solutions/ -> student/
# make slides  — reveal.js decks and a static HTML site of the executed notebooks in outputs/ (after make run)
#                -> outputs/slides/, outputs/site/index.html (EXECUTED=outputs/ci after make test or make run-ci)
EXECUTED  ?= outputs
SLIDES_JS := $(VENV)/slides-js
SLIDES_JS_PACKAGES := reveal.js@4.6.1 requirejs@2.3.6 jquery@3.7.1

student: setup
	$(PY) -m course_utils.handouts student --out student

# The decks' scripts, fetched once from the npm registry so the decks work offline. The stamp is written only when
# every package came: after a failed fetch (no npm, no network) the packages fetched so far are removed, the decks
# load their scripts from the CDN, and the next make slides (or make test) tries again; the failure never fails make.
# One try per package: on a machine without network npm's own retries held each make test 71 s; one try fails in 0.5 s.
slides-js: $(SLIDES_JS)/.fetched

SLIDES_JS_FOLDERS := $(foreach package,$(SLIDES_JS_PACKAGES),$(firstword $(subst @, ,$(package))))

$(SLIDES_JS)/.fetched:
	@mkdir -p $(SLIDES_JS)
	@cd $(SLIDES_JS) && for package in $(SLIDES_JS_PACKAGES); do name=$${package%@*}; rm -rf $$name; mkdir -p $$name; \
	  tarball=$$(npm pack --silent --fetch-retries=0 $$package) && tar xzf $$tarball -C $$name --strip-components=1 && rm -f $$tarball \
	  || { rm -rf $(SLIDES_JS_FOLDERS) ./*.tgz; \
	       echo "npm pack $$package failed: slides will load their scripts from the CDN"; exit 0; }; done; touch .fetched

slides: setup slides-js
	$(PY) -m course_utils.handouts slides --executed $(EXECUTED) --out $(EXECUTED)/slides \
	  $$(test -f $(SLIDES_JS)/.fetched && echo --js $(SLIDES_JS))
	$(PY) -m course_utils.handouts site --executed $(EXECUTED) --out $(EXECUTED)/site --slides $(EXECUTED)/slides

# make run-real DATA_ROOT=/path/to/fashion-product-small [SEEDS=0,1,2] — every notebook on real photos, the course
# CLIP pretrained on their train split -> outputs/real/ (~30 min per seed on 2 cores; README › Real photos); the
# committed records are SEEDS=0,1,2; make records-real keeps its records
DATA_ROOT ?=
run-real: setup
	$(PY) -m course_utils.run --profile real --set data_root=$(DATA_ROOT) --seeds $(SEEDS)

records-real: setup
	@ls outputs/real/results/[0-9][0-9]_*.json >/dev/null || { echo "no records in outputs/real/results: run make run-real"; exit 1; }
	@test -f outputs/real/timings-real.json || { echo "no outputs/real/timings-real.json: the last make run-real stopped before its end; run it again"; exit 1; }
	mkdir -p results/real && cp outputs/real/results/[0-9][0-9]_*.json results/real/
	$(PY) -m course_utils.results merge-timings outputs/real/timings-real.json results/real/timings-real.json

# make records  — copy the full run's records (outputs/results/*.json, after make run SEEDS=0,1,2) to results/full/ and
#                fold its timings (outputs/timings-full.json) into results/full/timings-full.json: a partial run's
#                (--only 08) replace only its notebooks' (the findings then end with the runs' runtimes)
# make findings — regenerate the README's findings sections from results/full/ and results/real/, each
#                results/other-hosts/<host>-<profile>/FINDINGS.md from the records beside it, and README ›
#                Reproducibility's table of those hosts (tests/test_findings.py checks them all)
records: setup
	@ls outputs/results/[0-9][0-9]_*.json >/dev/null || { echo "no records in outputs/results: run make run"; exit 1; }
	@test -f outputs/timings-full.json || { echo "no outputs/timings-full.json: the last make run stopped before its end; run it again"; exit 1; }
	mkdir -p results/full && cp outputs/results/[0-9][0-9]_*.json results/full/
	$(PY) -m course_utils.results merge-timings outputs/timings-full.json results/full/timings-full.json

findings: setup
	$(PY) -m course_utils.findings
	@if ls results/real/[0-9][0-9]_*.json >/dev/null 2>&1; then $(PY) -m course_utils.findings --profile real; fi
	@for folder in results/other-hosts/*-*/; do folder=$${folder%/}; \
	  $(PY) -m course_utils.findings --profile $${folder##*-} --records $$folder --readme $$folder/FINDINGS.md || exit 1; done
	$(PY) -m course_utils.findings --hosts
