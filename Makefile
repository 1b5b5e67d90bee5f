# xview_localizer: one-command setup and test on a bare Debian / Python 3.11 machine.
#   make setup   create .venv and install everything, plus Debian's chromium for the report's
#                browser test (stamp files make re-runs instant)
#   make test    setup, then run the test suite
#   make lint    ruff
# CUDA users: make setup TORCH_SPEC="torch==2.13.0" TORCH_PIP_ARGS="--index-url <pytorch CUDA index>"

PYTHON        ?= python3
VENV          ?= .venv
TORCH_SPEC    ?= torch==2.13.0
TORCH_PIP_ARGS ?=
PYTEST_ARGS   ?=
BIN           := $(VENV)/bin
STAMPS        := $(VENV)/.stamps

.PHONY: setup test lint clean-venv

setup: $(STAMPS)/tf2_msgs $(STAMPS)/chromium

$(STAMPS)/venv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/torch: $(STAMPS)/venv
	$(BIN)/pip install --quiet "$(TORCH_SPEC)" $(TORCH_PIP_ARGS)
	@touch $@

$(STAMPS)/deps: $(STAMPS)/torch requirements.txt requirements-dev.txt setup.py
	$(BIN)/pip install --quiet -r requirements.txt -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	@touch $@

$(STAMPS)/tf2_msgs: $(STAMPS)/deps scripts/build_tf2_msgs.sh
	@if $(BIN)/python -c "import tf2_msgs.msg" 2>/dev/null; then \
	  echo "tf2_msgs already importable"; \
	else \
	  VENV=$(VENV) bash scripts/build_tf2_msgs.sh; \
	fi
	@touch $@

# Headless Chromium for test/test_report_browser.py (the report page in a real browser): Debian's
# package, installed only when no chromium is on PATH and apt-get exists (as root, else via sudo).
$(STAMPS)/chromium:
	@mkdir -p $(STAMPS)
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then \
	  echo "chromium already installed"; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  SUDO=""; [ "$$(id -u)" -eq 0 ] || SUDO="sudo"; \
	  { $$SUDO apt-get update -qq || echo "apt-get update failed; trying the install with the lists there are"; } && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium; \
	else \
	  echo "no chromium and no apt-get: test_report_browser.py will fail (XVIEW_SKIP_BROWSER_TEST=1 skips it)"; \
	fi
	@touch $@

test: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS) test

lint: setup
	$(BIN)/ruff check xview_localizer test scripts

clean-venv:
	rm -rf $(VENV)

.PHONY: demo
demo: setup
	$(BIN)/python scripts/demo.py

.PHONY: demo-depth
demo-depth: setup
	$(BIN)/python scripts/demo.py --depth
