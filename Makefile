# videolang: the two contract commands are `make demo` and `make test`.
# Both create .venv when missing, install torch first (so pip never picks a CUDA build),
# then the package with its extras. A stamp file makes a second run add only seconds.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev
PY := $(VENV)/bin/python
STAMP := $(VENV)/.videolang-installed
DEMO_DIR ?= runs/demo

.PHONY: venv demo test lint bench clean chromium

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	@# PYTHONDONTWRITEBYTECODE is set on these machines: compile once so imports stay fast.
	@$(PY) -m compileall -q -j 0 $(VENV)/lib > /dev/null 2>&1 || true
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	@start=$$(date +%s); \
	$(VENV)/bin/videolang demo --out $(DEMO_DIR) && \
	echo "make demo: done in $$(( $$(date +%s) - start )) s"

# The browser test (tests/search/test_browser.py) drives Debian's chromium through Playwright:
# installed here when missing and run as root; otherwise that test fails saying what to install.
chromium:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get > /dev/null; then \
	    echo "installing chromium for the browser test"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium > /dev/null; } \
	      || echo "installing chromium failed: tests/search/test_browser.py will fail"; \
	  else echo "chromium is missing and this is not root: tests/search/test_browser.py will fail"; fi; }

# pytest exits 5 when no test ran; make passes that on, so CI fails then too.
test: $(STAMP) chromium
	@start=$$(date +%s); \
	$(VENV)/bin/ruff check src tests benchmarks && \
	$(PY) -m pytest -q -p no:cacheprovider tests; rc=$$?; \
	echo "make test: finished in $$(( $$(date +%s) - start )) s (exit $$rc)"; exit $$rc

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/bench_decode.py

clean:
	rm -rf $(VENV) runs/demo .pytest_cache
