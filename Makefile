# `make train` and `make test` set everything up from nothing (a .venv) and then do their job.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: train test bench learning lint clean-venv

$(STAMP): pyproject.toml scripts/install.sh
	bash scripts/install.sh --dev --editable --venv $(VENV)
	touch $(STAMP)

train: $(STAMP)
	$(VENV)/bin/roadsense train --budget-minutes 5 $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(ARGS)

bench: $(STAMP)
	$(PY) -m benchmarks $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check roadsense scenario_factory rllib_configs benchmarks tests

clean-venv:
	rm -rf $(VENV)

learning: $(STAMP)
	$(PY) -m benchmarks learning $(ARGS)
