# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
STUDY ?= results/heatmap_size
PORT ?= 8080
# Every process of a study (driver, Ray workers) caches the bytecode it compiles in .venv, even
# where the shell sets PYTHONDONTWRITEBYTECODE (as many container images do): without the cache,
# each Ray Train worker compiles torch, torchvision and Ray from source again, 22-25 s of CPU
# instead of 7-8 s per process.
unexport PYTHONDONTWRITEBYTECODE
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install chromium postgres lint test demo bench dashboard clean

install: $(STAMP)

# Rebuilt only when pyproject.toml changes; pip takes torch/torchvision from the local cache.
# --no-compile: Python compiles a module's bytecode when it is first imported, so only the modules
# in use are compiled (about a minute less than compiling every installed file up front).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --no-compile --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet --no-compile -e '.[test,mlflow]'
	touch $(STAMP)

# Headless Chromium for the browser tests (report and optuna-dashboard rendering).
chromium:
	@test -x /usr/bin/chromium || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium >/dev/null; }

# Debian's PostgreSQL server binaries for the tests that keep Optuna studies in PostgreSQL (each test
# starts its own server in a temporary folder, as user postgres, and stops it).
postgres:
	@ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq postgresql >/dev/null; }

# The lint gate (rules in pyproject.toml) runs before the tests.
lint: install
	$(VENV)/bin/ruff check .

# The netns cluster's fault tests mostly wait on the faults they inject (outages, restarts, a node's
# death), so a second pytest runs them beside the rest of the suite, with slow modules that start
# no session Ray head (a test session's head is stopped by its own pids, never `ray stop`), chosen
# so that the two end at about the same time; their report follows the rest's.
BESIDE_TESTS := tests/test_cluster.py tests/test_overlap_claim.py tests/test_job_submit.py \
	tests/test_s3_faults.py tests/test_overfit.py tests/test_engine.py tests/test_backbone.py \
	tests/test_import_contract.py tests/test_optuna_outage.py tests/test_complexity.py
BESIDE_LOG := test-artifacts/beside-tests.log

test: install chromium postgres lint
	@mkdir -p test-artifacts
	@$(PY) -m pytest -q -p no:cacheprovider --durations=10 --basetemp=/tmp/transcenter-beside-tests \
		$(BESIDE_TESTS) >$(BESIDE_LOG) 2>&1 & beside=$$!; \
	trap 'kill $$beside 2>/dev/null' INT TERM; \
	$(PY) -m pytest -q --durations=15 $(addprefix --ignore=,$(BESIDE_TESTS)); rest=$$?; \
	wait $$beside; besides=$$?; \
	echo "=== $(BESIDE_TESTS), run beside the rest ($(BESIDE_LOG)) ==="; cat $(BESIDE_LOG); \
	exit $$(( rest || besides ))

demo: install
	$(PY) studies/heatmap_size.py

bench: install
	for b in tests/bench/*.py; do $(PY) $$b || exit 1; done

# optuna-dashboard on a study's Optuna DB, bound to 127.0.0.1 (STUDY=results/<name>, or the
# study's --optuna-url).
dashboard: install
	$(PY) -m transcenter.dashboards.optuna_ui '$(STUDY)' --port $(PORT)

clean:
	rm -rf $(VENV) results test-artifacts .pytest_cache
