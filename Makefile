# tadsr: every command a user or CI needs. `make demo` and `make test` work on a fresh clone.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.tadsr-installed
export TADSR_TIER ?= default
# OpenMP threads sleep instead of spinning while they wait: on 2 shared cores, spinning torch threads slowed a
# training run 10x when other jobs (tests, notebooks) ran beside it. Measured in the teacher notes (07_teacher).
OMP_WAIT_POLICY := $(or $(OMP_WAIT_POLICY),PASSIVE)
export OMP_WAIT_POLICY

.PHONY: install demo test check-clean check-export lint nbtest pytest browser lab docs bench clean

# pip, quietly: no version check, no prompts, no progress; errors and real warnings still show. The grep drops one
# line per package that this machine's pip configuration produces (an extra local index that lacks most packages);
# pipefail keeps pip's exit status.
PIP_QUIET := --disable-pip-version-check --no-input -q
PIP_FILTER := { grep -v "^WARNING: Location '.*' is ignored: it is neither a file nor a directory\.$$" || true; }

$(STAMP): setup.py settings.ini pyproject.toml
	@test -x $(BIN)/python || { echo "creating $(VENV)"; $(PY) -m venv $(VENV); }
	@echo "installing tadsr with the [dev] extra into $(VENV) (torch, the lessons' and the docs' tools; a few minutes the first time)"
	@set -o pipefail; $(BIN)/pip install $(PIP_QUIET) --upgrade pip 2>&1 | $(PIP_FILTER)
	@set -o pipefail; $(BIN)/pip install $(PIP_QUIET) -e ".[dev]" 2>&1 | $(PIP_FILTER)
	@touch $(STAMP)

install: $(STAMP)

## The main job: super-resolve the bundled sample photos with the shipped one-step model.
demo: $(STAMP)
	$(BIN)/tadsr demo -o outputs

## Every check CI runs, in CI's order; pytest last so its summary is the final line. `docs` builds the whole site at
## the default tier (every lesson executed as a learner runs it); tests/test_docs_browser.py then checks that site.
test: $(STAMP) check-clean check-export lint nbtest docs pytest

check-clean: $(STAMP)
	@before=$$(git status --porcelain -- nbs | md5sum); \
	$(BIN)/nbdev_clean >/dev/null; \
	after=$$(git status --porcelain -- nbs | md5sum); \
	if [ "$$before" != "$$after" ]; then echo "FAIL: notebooks were not clean (nbdev_clean changed them; commit the cleaned files)"; git status --short -- nbs; exit 1; fi; \
	echo "notebooks clean"

check-export: $(STAMP)
	@before=$$(git status --porcelain -- tadsr | md5sum); \
	$(BIN)/nbdev_export; \
	after=$$(git status --porcelain -- tadsr | md5sum); \
	if [ "$$before" != "$$after" ]; then echo "FAIL: tadsr/ is out of sync with the notebooks (nbdev_export changed it)"; git status --short -- tadsr; exit 1; fi; \
	echo "library in sync with notebooks"

lint: $(STAMP)
	$(BIN)/ruff check --select F,E9 tadsr nbs

nbtest: $(STAMP)
	TADSR_TIER=quick $(BIN)/nbdev_test --n_workers 2 --timing

pytest: $(STAMP) browser
	TADSR_TIER=quick $(BIN)/python -m pytest -q tests

## Debian's chromium and its chromedriver for the browser tests (tests/test_docs_browser.py, tests/test_lab_browser.py);
## these machines run as root.
browser:
	@{ command -v chromium && command -v chromedriver; } >/dev/null 2>&1 || { \
	  echo "installing chromium and chromium-driver (apt-get) for the browser tests"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } \
	  || echo "WARNING: could not install chromium / chromium-driver: the browser tests will skip their browser checks"; }

## The docs site, offline and without Quarto: notebooks executed at the default tier, two at a time (the figures and
## numbers the prose quotes; TADSR_DOCS_TIER=quick for a fast draft) -> nbdev processing -> mkdocs-material +
## mkdocs-jupyter -> docs/. Executed notebooks are cached in _proc/. Read: python -m http.server -d docs
docs: $(STAMP)
	@command -v npm >/dev/null 2>&1 || test -f .cache/docs/mathjax-2.7.9/MathJax.js || { \
	  echo "installing npm (apt-get): the docs build fetches MathJax 2.7.9 with npm pack, once"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null; }
	$(BIN)/python scripts/build_docs.py

## JupyterLab on the notebooks (widgets work out of the box with ipywidgets 8), on this machine only (127.0.0.1).
## --allow-root: JupyterLab refuses to start as root without it (these machines run as root); harmless otherwise.
## LAB_PORT=9999 make lab picks another port; the server stops instead of silently moving to a port the URL misses.
LAB_PORT ?= 8888
lab: $(STAMP)
	@token=$$($(BIN)/python -c "import secrets; print(secrets.token_hex(24))"); \
	echo ""; \
	echo "  JupyterLab (stop with Ctrl-C). Open this URL in your browser:"; \
	echo ""; \
	echo "      http://127.0.0.1:$(LAB_PORT)/lab?token=$$token"; \
	echo ""; \
	exec $(BIN)/jupyter lab nbs --ip=127.0.0.1 --port=$(LAB_PORT) --ServerApp.port_retries=0 --allow-root \
	  --IdentityProvider.token=$$token

## CPU benchmarks (scripts/bench.py; each prints ratios measured side by side in one run). Others: BENCH="unet teacher
## student distill census"; on a GPU: $(BIN)/python scripts/bench.py gpu --json nbs/gpu_results.json
BENCH ?= unet teacher
bench: $(STAMP)
	@set -e; for b in $(BENCH); do echo "== scripts/bench.py $$b"; $(BIN)/python scripts/bench.py $$b; done

clean:
	rm -rf _proc outputs .pytest_cache .cache
