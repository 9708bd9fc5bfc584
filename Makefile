# The two commands of README.md: `make demo` and `make test`. Both install what they need.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml setup.py | cksum | cut -d' ' -f1)
PKGS   := agent protocols firmware_bridge cloud dropline_cli

.PHONY: demo test lint build system-deps-demo system-deps-test clean

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

lint: $(STAMP)
	$(VENV)/bin/ruff check $(PKGS) tests bench
	$(VENV)/bin/ruff format --check $(PKGS) tests bench
	$(VENV)/bin/mypy $(PKGS)

clean:
	rm -rf build $(VENV) $(foreach p,$(PKGS),$(shell find $(p) -name '*.so' -o -name '*.c'))
