# coffee-telemetry — two commands on a fresh machine:
#   make demo   embedded broker + simulated meters + the agent (nothing else needed)
#   make test   installs what the tests need (venv, mosquitto, influxdb) and runs them

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast check check-package bench bench-peer install system-deps clean

# constraints.txt: the versions the suite runs with (scripts/freeze-constraints).
# The demo extra is the embedded broker of `make demo`.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,demo]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/coffee-telemetry demo

system-deps:
	scripts/install-system-deps

test: $(STAMP) system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not integration and not slow" $(PYTEST_ARGS)

check: $(STAMP)
	PATH=$(BIN):$$PATH scripts/check

# What users install: wheel + sdist, a clean venv, init, check-config, demo, collisions.
check-package: $(STAMP)
	$(BIN)/python scripts/check-package --python $(BIN)/python

bench: $(STAMP) system-deps
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/buses.py
	$(BIN)/python bench/alerts.py
	PYTHONPATH=. $(BIN)/python bench/history.py
	PYTHONPATH=. $(BIN)/python bench/dashboard.py

# The agent and a Node-RED flow on the same serial loads, side by side (needs the
# comparison harness: PEERS=path/to/peers, whose node-red/setup.sh has run once).
PEERS ?= ../shared/peers
bench-peer: $(STAMP) system-deps
	$(BIN)/python bench/compare.py --peers $(PEERS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis artifacts
