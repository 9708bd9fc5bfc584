# The two commands of README.md: `make demo` and `make test`. Both install what they need.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml setup.py | cksum | cut -d' ' -f1)
PKGS   := agent protocols firmware_bridge cloud dropline_cli

.PHONY: demo test test-collector-only lint build system-deps-demo system-deps-test clean

system-deps-demo:
	@bash scripts/install-system-deps.sh demo

system-deps-test:
	@bash scripts/install-system-deps.sh test

$(STAMP):
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-*; touch $(STAMP)

# Cython extensions, compiled next to their .py sources.
build: $(STAMP)
	$(PY) setup.py -q build_ext --inplace

demo: system-deps-demo build
	$(PY) -m dropline_cli demo

test: system-deps-test build
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The collector's tests in a second environment holding only the collector extra: proves a
# collector host installs and runs without pyserial, python-can, cantools, pynmea2 or biip.
COLLECTOR_VENV := .venv-collector
test-collector-only: build
	@test -x $(COLLECTOR_VENV)/bin/python || python3 -m venv $(COLLECTOR_VENV)
	$(COLLECTOR_VENV)/bin/python -m pip install -q --upgrade pip
	$(COLLECTOR_VENV)/bin/python -m pip install -q -e '.[collector,test]'
	DROPLINE_ROLE=collector $(COLLECTOR_VENV)/bin/python -m pytest -q -p no:cacheprovider \
		tests/test_install_roles.py tests/test_store_contract.py $(wildcard tests/test_collector_*.py)

lint: $(STAMP)
	$(VENV)/bin/ruff check $(PKGS) tests bench
	$(VENV)/bin/ruff format --check $(PKGS) tests bench
	$(VENV)/bin/mypy $(PKGS)

clean:
	rm -rf build $(VENV) $(COLLECTOR_VENV) $(foreach p,$(PKGS),$(shell find $(p) -name '*.so' -o -name '*.c'))
