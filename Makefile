# The two commands a user needs: `make demo` and `make test`. Both create .venv when missing
# and install the pinned stack (requirements.lock) plus this package, editable.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= $(shell nproc)
export HF_HUB_OFFLINE := 1
export PYTHONHASHSEED := 0

.PHONY: demo test test-fast lint format bench lock clean-results help audit dvc-commit restore

help:
	@echo "make demo   - set up .venv and run the pipeline on the synthetic cohort (CPU)"
	@echo "make test   - set up .venv and run the test suite"
	@echo "make test-fast - the unit tier: every test not marked slow (no workflow run)"
	@echo "make lint   - ruff, snakefmt --check, snakemake --lint"
	@echo "make bench  - run the benchmarks, results under results/benchmarks/"
	@echo "make audit ARTIFACT=results/report/table5.csv - trace an artifact back to the raw data"
	@echo "make dvc-commit - record the results' hashes in dvc.lock and push them to dvc.remote"
	@echo "make restore    - after rm -rf results or a fresh clone: DVC checkout/pull + snakemake --touch"
	@echo "(make demo ends with the tables in results/report/ and results/report/report.html)"

$(STAMP): requirements.lock requirements-nodeps.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock 2>&1 | grep -v 'is ignored: it is neither' || true
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -r requirements-nodeps.txt 2>&1 | grep -v 'is ignored: it is neither' || true
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e . 2>&1 | grep -v 'is ignored: it is neither' || true
	$(BIN)/python -c "import cmr_rd, torch, snakemake, pydicom, rapidocr_onnxruntime, philter_lite" 
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --workflow-profile profiles/local
	$(BIN)/snakemake --report results/report/report.html

# Two pytest-xdist workers; tests/conftest.py keeps a file's tests on one worker (but for
# test_workflow.py's) and builds the shared workflow run once for both.
TEST_WORKERS ?= 2
XDIST := -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=15 $(XDIST)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q --durations=10 -m "not slow" $(XDIST)

lint: $(STAMP)
	$(BIN)/ruff check src tests workflow benchmarks
	$(BIN)/ruff format --check src tests workflow benchmarks
	$(BIN)/snakefmt --check Snakefile rules
	$(BIN)/snakemake --lint --cores 1

bench: $(STAMP)
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/demo.py
	$(BIN)/python benchmarks/train_step.py
	$(BIN)/python benchmarks/machine_speed.py
	$(BIN)/python benchmarks/numerics.py
	$(BIN)/python benchmarks/quota_sim.py
	$(BIN)/python benchmarks/gppo_step.py
	$(BIN)/python benchmarks/eval_throughput.py
	$(BIN)/python benchmarks/input_variants.py
	$(BIN)/python benchmarks/phi_recall.py
	$(BIN)/python benchmarks/gpu_step.py
	$(BIN)/python benchmarks/predict.py
	$(BIN)/python benchmarks/token_readout.py

# ARTIFACT, not PATH: make would export a PATH override to every recipe's shell.
ARTIFACT ?= results/report/table5.csv
audit: $(STAMP)
	$(BIN)/python -m cmr_rd.audit $(ARTIFACT)

dvc-commit: $(STAMP)
	$(BIN)/snakemake --cores 1 --forcerun=dvc_commit dvc_commit

restore: $(STAMP)
	$(BIN)/python -m cmr_rd.dvcgen --restore

lock: $(STAMP)
	$(BIN)/pip freeze --exclude-editable | sed 's/^torch==\(.*\)+cpu$$/torch==\1/' \
		| grep -v -i -x -F -f <(grep -v '^#' requirements-nodeps.txt) \
		| sed '1i # Full resolved set (pip freeze of requirements.txt). Regenerate with `make lock`.' > requirements.lock
	$(BIN)/python -m cmr_rd.envfile  # envs/pipeline.yaml and its post-deploy script, from the lock

clean-results:
	rm -rf results/* .snakemake/metadata
