# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
STUDY ?= results/heatmap_size

.PHONY: install test demo bench dashboard clean

install: $(STAMP)

# Rebuilt only when pyproject.toml changes; pip takes torch/torchvision from the local cache.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

test: install
	$(PY) -m pytest -q

demo: install
	$(PY) studies/heatmap_size.py

bench: install
	for b in tests/bench/*.py; do $(PY) $$b; done

dashboard: install
	$(VENV)/bin/optuna-dashboard --host 127.0.0.1 --port 8080 sqlite:///$(STUDY)/optuna.db

clean:
	rm -rf $(VENV) results .pytest_cache
