# Two commands on a fresh machine: `make demo` (the main job) and `make test`.
# Both create .venv in the repo root and install everything the project needs into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch==2.13.0 is the CPU build where pip's configuration offers it (the project's machines: a
# local wheel folder); elsewhere on Linux, PyPI's default torch is a CUDA build of several GB. The
# README ("Which torch `make` installs") gives the CPU-only and CUDA recipes, e.g. `make demo TORCH=torch`.
TORCH ?= torch==2.13.0

.PHONY: venv demo test lint clean bench chromium

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check "$(TORCH)"
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m clap_helpers.devtools.demo

lint: $(STAMP)
	$(VENV)/bin/ruff check clap_helpers tests benchmarks
	$(VENV)/bin/ruff format --check clap_helpers tests benchmarks

# The browser test of the web app drives Debian's chromium (needs root or sudo to install; the
# test skips with a clear reason where chromium cannot be had).
chromium:
	@command -v chromium >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends chromium \
	  || echo "chromium could not be installed: the browser test will be skipped"; }

# The second pytest run repeats the embedding tests with bf16 audio forced (tests/conftest.py reads
# CLAP_TEST_PRECISION), so bf16 is tested whatever this CPU's flags make precision="auto" pick.
test: lint chromium
	$(PY) -m pytest
	CLAP_TEST_PRECISION=bf16 $(PY) -m pytest -q tests/unit/embedding/test_encoder.py tests/peer

bench: $(STAMP)
	$(PY) benchmarks/bench_embedding.py

clean:
	rm -rf build .pytest_cache
