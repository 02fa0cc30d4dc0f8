# Two commands do everything on a fresh clone (each creates .venv and installs into it first):
#   make translate   train the Spanish->English translator (python -m trainers.translate)
#   make test        run the test suite once per backend: tensorflow, jax, torch
# Variables: ARGS="--quick" (trainer flags), BACKEND=torch (of the trainers and apps), BACKENDS="jax"
# (of the tests), PYTEST_ARGS="-x -k lstm" or PYTEST_ARGS="-m e2e" (only the end-to-end CLI tests).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
BACKENDS ?= tensorflow jax torch
PYTEST_ARGS ?=
ARGS ?=
# Trainers and apps run on JAX, the fastest backend on a CPU, unless KERAS_BACKEND or BACKEND says
# otherwise (plain `python -m trainers.translate` gets Keras' default, TensorFlow).
BACKEND ?= $(or $(KERAS_BACKEND),jax)
RUN := KERAS_BACKEND=$(BACKEND) $(BIN)/python
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
	$(RUN) -m trainers.translate $(ARGS)

sentiment: setup
	$(RUN) -m trainers.sentiment $(ARGS)

generate: setup
	$(RUN) -m trainers.generate $(ARGS)

apps: setup
	$(RUN) -m apps $(ARGS)

gradients: setup
	$(RUN) -m trainers.gradients $(ARGS)

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
