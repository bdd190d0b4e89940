# One entry for set-up: every target creates .venv and installs on first use; later runs are no-ops.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SPEC ?= examples/quickstart.yaml
PYTEST_ARGS ?=

.PHONY: install demo test test-unit system-deps image test-image lint clean

# PyPI's `trainer` (and coqpit, which it imports) for the test that installs mlkube's wheel beside it.
NEIGHBOURS := trainer==0.0.36 coqpit==0.0.17

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	$(BIN)/python -m pip download --quiet --no-deps --dest $(VENV)/neighbours $(NEIGHBOURS)
	@# Bytecode now: where PYTHONDONTWRITEBYTECODE is set, every start (each torchrun worker) compiled mlkube again.
	$(BIN)/python -m compileall -q mlkube trainer serving
	@touch $@

install: $(STAMP)

## The main job, end to end on the embedded default (local Ray, torchrun, TorchServe).
demo: $(STAMP)
	$(BIN)/mlkube run $(SPEC) --serve

## System services the integration tests start for real (Prometheus, etcd, Chromium, a JDK for the TorchServe agent).
system-deps:
	@bash deploy/system-deps.sh

## The image (deploy/docker/build.sh): brings up a Docker engine when none answers (root: Debian's docker.io),
## makes the debootstrap base when absent, builds with this machine's CA bundle and local torch wheel.
IMAGE ?= mlkube:dev
image:
	IMAGE=$(IMAGE) bash deploy/docker/build.sh

## The image the container tests run; where no engine can be had they skip, saying why.
test-image:
	@if bash deploy/docker/engine.sh; then IMAGE=$(IMAGE) bash deploy/docker/build.sh; \
	else echo "test-image: no Docker engine; the container tests will skip"; fi

## The whole test suite, after the lint (CI runs exactly this).
test: $(STAMP) system-deps lint test-image
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: $(STAMP)
	$(BIN)/python -m pytest -m unit $(PYTEST_ARGS)

## Style, types, dependency rules and declared dependencies; CI runs it before the tests.
LINTED := mlkube trainer serving tests benchmarks helm/mlkube/scripts
VIEW := build/lint-view
lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	@# mypy and import-linter read the installed layout: mlkube/ with trainer/ and serving/ linked in as the wheel has them.
	@rm -rf $(VIEW) && mkdir -p $(VIEW)/mlkube
	@for entry in mlkube/*; do ln -s "$(CURDIR)/$$entry" $(VIEW)/mlkube/; done
	@ln -s "$(CURDIR)/trainer" $(VIEW)/mlkube/trainer && ln -s "$(CURDIR)/serving" $(VIEW)/mlkube/serving
	cd $(VIEW) && $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml --cache-dir $(CURDIR)/.mypy_cache -p mlkube
	cd $(VIEW) && PYTHONPATH=$(CURDIR)/$(VIEW) $(CURDIR)/$(BIN)/lint-imports --no-cache $(CURDIR)/pyproject.toml
	$(BIN)/deptry .

clean:
	rm -rf $(VENV) build *.egg-info
