# circuit-atlas: the two commands of the README, and their parts.
#   make demo   virtualenv + dependencies, local Redis and Neo4j, then a job API -> Redis -> worker -> Neo4j
#   make test   the same setup, then the whole test suite against the real services
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The install is redone only when pyproject.toml changes.
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: setup services browser demo lint test down clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "circuit-atlas needs Python >= 3.11 (found " + sys.version.split()[0] + ")")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@test -x $(BIN)/uv || { $(BIN)/python -m pip --version >/dev/null 2>&1 || $(BIN)/python -m ensurepip >/dev/null; \
	  $(BIN)/python -m pip install -q --disable-pip-version-check uv; }
	@# uv installs from its cache by hard links: seconds once the wheels are cached.
	@UV_NATIVE_TLS=1 UV_FIND_LINKS="$${UV_FIND_LINKS:-$$PIP_FIND_LINKS}" VIRTUAL_ENV=$(VENV) \
	  $(BIN)/uv pip install -q --compile-bytecode -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@
	@echo "dependencies installed in $(VENV)"

services: setup
	$(BIN)/circuits services up

# Headless chromium + chromedriver for the web page's browser test: apt-get only when chromedriver
# is missing and we are root; otherwise a hint (the test then skips, saying why).
browser:
	@command -v chromedriver >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium and chromium-driver with apt-get (browser test) ..."; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 \
	      || { apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; } \
	      || echo "warning: could not install chromium; the browser test will be skipped"; \
	  else echo "note: no chromedriver; apt-get install chromium chromium-driver to run the browser test"; fi; }

demo: services
	$(BIN)/circuits demo

lint: setup
	$(BIN)/ruff check .

test: services lint browser
	$(BIN)/python -m pytest

down:
	$(BIN)/circuits services down

clean: down
	rm -rf $(VENV) .local
