# wad: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# whatsapp-web.js for the conformance suite (tests/conformance), exactly as locked.
NPM_DIR   := tests/conformance
NPM_STAMP := $(NPM_DIR)/node_modules/.installed

.PHONY: setup system-deps test check lint typecheck pytest run demo clean

setup: system-deps $(STAMP) $(NPM_STAMP)

# Debian's chromium (whatsapp-web.js and the simulator's own tests), chromium-headless-shell (wad's
# sessions), postgresql and nodejs/npm: installed with apt-get when missing and we are root,
# otherwise we say exactly what to install and stop.
system-deps:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	test -x /usr/lib/chromium/chromium-headless-shell || missing="$$missing chromium-headless-shell"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v npm >/dev/null 2>&1 || missing="$$missing nodejs npm"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    echo "installing Debian packages:$$missing"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null || exit 1; \
	  else \
	    echo "wad needs these Debian packages:$$missing"; \
	    echo "install them with: sudo apt-get install$$missing"; \
	    exit 1; \
	  fi; \
	fi

$(STAMP): pyproject.toml plugins/pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev]' -e ./plugins
	touch $(STAMP)

# npm ci, never a browser download: puppeteer drives Debian's /usr/bin/chromium.
$(NPM_STAMP): $(NPM_DIR)/package.json $(NPM_DIR)/package-lock.json
	cd $(NPM_DIR) && PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund
	touch $(NPM_STAMP)

lint: setup
	$(BIN)/ruff check wad plugins tests bench

typecheck: setup
	$(BIN)/mypy wad plugins tests

pytest: setup
	$(BIN)/pytest -q

test: lint typecheck pytest

# The edit-test loop: ruff, mypy (tests included) and the unit tests, those that need neither
# PostgreSQL nor Chromium (tests/conftest.py marks the others `db` and `browser`).
check: setup
	$(BIN)/ruff check wad plugins tests bench
	$(BIN)/mypy wad plugins tests
	$(BIN)/pytest -q -m "not db and not browser"

run: setup
	$(BIN)/wad run

demo: setup
	$(BIN)/wad demo

clean:
	rm -rf $(VENV) build *.egg-info $(NPM_DIR)/node_modules
