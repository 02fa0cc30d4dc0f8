# Two commands do everything on a fresh clone (each creates .venv and installs into it first):
#   make translate   train the Spanish->English translator (python -m trainers.translate)
#   make test        run the test suite once per backend: tensorflow, jax, torch
# Variables: ARGS="--quick" (trainer flags), BACKENDS="jax" (subset), PYTEST_ARGS="-x -k lstm".

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
BACKENDS ?= tensorflow jax torch
PYTEST_ARGS ?=
ARGS ?=
# Two pytest workers: one per core of the reference 2-core machine.
WORKERS ?= 2

.PHONY: setup translate sentiment generate apps gradients test benchmark clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install -c constraints.txt -e ".[all]"
	touch $@

translate: setup
	$(BIN)/python -m trainers.translate $(ARGS)

sentiment: setup
	$(BIN)/python -m trainers.sentiment $(ARGS)

generate: setup
	$(BIN)/python -m trainers.generate $(ARGS)

apps: setup
	$(BIN)/python -m apps $(ARGS)

gradients: setup
	$(BIN)/python -m trainers.gradients $(ARGS)

# Each backend in its own process (the backend is fixed when Keras is imported); fails if any fails.
test: setup
	@failed=""; \
	for backend in $(BACKENDS); do \
		echo "=== KERAS_BACKEND=$$backend"; \
		KERAS_BACKEND=$$backend $(BIN)/python -m pytest -n $(WORKERS) $(PYTEST_ARGS) || failed="$$failed $$backend"; \
	done; \
	if [ -n "$$failed" ]; then echo "tests failed on:$$failed"; exit 1; fi; \
	echo "tests passed on: $(BACKENDS)"

benchmark: setup
	$(BIN)/python -m benchmarks.rnn_speed

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
