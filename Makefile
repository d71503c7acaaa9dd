# frozenseg: `make report` builds the HTML study on the embedded default; `make test` runs the tests.
SHELL := /bin/bash
PROFILE ?= cpu
SEEDS ?= 0
NOTEBOOKS ?=
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.frozenseg-setup

.DEFAULT_GOAL := help
.PHONY: help setup report smoke test annotate rehearsal bench gpu-check compare readme data data-status plan lab clean clean-cache

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  variables: PROFILE=$(PROFILE) (smoke|cpu|sample|full)  SEEDS=\"$(SEEDS)\"  NOTEBOOKS=\"01_frozen_oracle ...\"  FROZENSEG_DATA=/path"

setup: $(STAMP) ## Create .venv with the pinned dependencies and register the 'frozenseg' kernel (no-op when up to date)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -m ipykernel install --prefix $(VENV) --name frozenseg --display-name "frozenseg" >/dev/null
	@touch $@
	@echo "environment ready: $(VENV)"

report: setup ## Run the notebooks and build report/build/$(PROFILE)/index.html (PROFILE, SEEDS, NOTEBOOKS)
	$(PY) -m frozenseg.runner --profile $(PROFILE) --seeds $(SEEDS) $(if $(NOTEBOOKS),--notebooks $(NOTEBOOKS))

smoke: setup ## Build the report in the seconds-to-minutes smoke profile
	$(MAKE) report PROFILE=smoke

test: setup ## Run the test suite (library tests, notebooks in smoke mode, the report in headless Chromium)
	$(PY) -m pytest -q

annotate: setup ## Segment every unlabelled image of FOLDER from its few masks; queue the uncertain ones (FOLDER=path [OUT=dir] [BATCH=5])
	@test -n "$(FOLDER)" || { echo "usage: make annotate FOLDER=/path/to/collection [OUT=dir] [BATCH=5]"; exit 2; }
	$(PY) -m frozenseg annotate "$(FOLDER)" $(if $(OUT),--out "$(OUT)") $(if $(BATCH),--batch $(BATCH))

rehearsal: setup ## Rehearse the full profile on a fake data root with random weights -> rehearsal/rehearsal.json (DEVICE=cpu|cuda)
	$(PY) -m frozenseg.rehearsal $(if $(DEVICE),--device $(DEVICE))

bench: setup ## Encoder torch vs OpenVINO vs matmul, cold vs warm build, pipeline, concept, decoder tuning -> bench/bench.json (BENCH="encode report")
	$(PY) -m frozenseg.bench --profile $(PROFILE) $(if $(BENCH),--parts $(BENCH))

gpu-check: setup ## On a GPU machine: the rehearsal on the GPU, LiteMedSAM's encoder GPU vs CPU -> bench/gpu_check.json (refuses without a GPU)
	$(PY) -m frozenseg.bench.gpu_check

compare: setup ## Compare two builds' tables cell by cell, timing columns left out (BEFORE=dir AFTER=dir: report/build/<profile>/tables)
	$(PY) -m frozenseg.compare $(BEFORE) $(AFTER)

readme: setup ## Rewrite the README's generated tables (sample-profile numbers, encoder speed) from results/ and bench/bench.json
	$(PY) -m frozenseg.readme

data: setup ## Fetch and verify the real datasets and weights declared in data_manifest.yaml (needs a network)
	$(PY) -m frozenseg.manifest fetch

data-status: setup ## Show which real datasets and weights are present under FROZENSEG_DATA, and what each missing one skips or degrades
	$(PY) -m frozenseg.plan status

plan: setup ## Print what a run would do (data found, sizes, training runs and caps, estimated length) without running it (PROFILE=full)
	$(PY) -m frozenseg.plan run --profile $(PROFILE) --seeds $(SEEDS)

lab: setup ## Open the notebooks in JupyterLab
	$(VENV)/bin/jupyter lab notebooks/

clean: ## Remove built reports, results and the rehearsal's folder (keeps the embedding cache)
	rm -rf report/build results bench rehearsal

clean-cache: ## Remove the caches (embeddings, decoded images, exported encoders, genomes, phantoms): the next build redoes them
	rm -rf .cache/frozenseg
