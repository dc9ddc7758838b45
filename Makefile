# Just in Case: the two commands a newcomer needs are `make run` and `make test`.
# Both set up everything they need (virtualenv, dependencies, a local RabbitMQ).

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt constraints.txt pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run test test-fast test-browser lint format venv broker browser deploy-tools wrk dead-letters clean bench css asyncapi

run: venv broker ## Start every service, the gateway on :8000 and the dev SMTP sink
	$(PY) -m deploy.local.supervisor

test: venv broker browser deploy-tools lint ## Lint, then the whole test suite (unit, service, end-to-end, fault, browser)
	$(PY) -m pytest
	JICM_TESTS_BROWSER=1 $(PY) -m pytest tests/browser

test-fast: venv ## Only the tests that need no broker and start no process
	$(PY) -m pytest -m "not service and not e2e and not fault"

test-browser: venv broker browser ## Only the browser tests (screenshots land in var/screenshots/)
	JICM_TESTS_BROWSER=1 $(PY) -m pytest tests/browser

lint: venv ## ruff, and the import contracts (dependencies point gateway -> services -> shared)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

format: venv
	$(VENV)/bin/ruff check --fix .

dead-letters: venv ## List dead-letter queues and their depth (jicm dead-letters list)
	$(VENV)/bin/jicm dead-letters list

bench: venv broker wrk ## Measure; figures land in bench/results/*.json
	$(PY) -m bench

wrk: ## The HTTP load generator the checkin and footprint benchmarks use
	@deploy/local/ensure_wrk.sh

venv: $(STAMP)

$(STAMP):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' || \
		{ echo "Python 3.11 is required (nameko 2.14's eventlet does not run on 3.12)."; \
		  echo "Install it (Debian: apt-get install python3.11 python3.11-venv) or run"; \
		  echo "make PYTHON=/path/to/python3.11 ..."; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade "pip<27"
	$(VENV)/bin/pip install --quiet -r requirements-dev.txt -c constraints.txt
	$(VENV)/bin/pip install --quiet --no-deps --no-build-isolation -e .
	@rm -f $(VENV)/.installed-*
	@touch $@

browser: node_modules/.installed ## Chromium (Debian's) and the npm packages the browser tests use
	@deploy/local/ensure_chromium.sh

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

css: node_modules/.installed ## Refresh the vendored Pico CSS from the npm package
	cp node_modules/@picocss/pico/css/pico.jade.min.css node_modules/@picocss/pico/LICENSE.md \
		gateway/site/static/vendor/pico/

deploy-tools: ## kubectl and promtool, which the deployment tests use
	@deploy/local/ensure_deploy_tools.sh

asyncapi: venv ## Regenerate docs/asyncapi.yaml from the event schemas
	$(PY) -m shared.events.asyncapi

broker: ## Make sure a RabbitMQ answers on 127.0.0.1:5672 (starting or installing one)
	@deploy/local/ensure_rabbitmq.sh

clean:
	rm -rf $(VENV) var node_modules .pytest_cache .ruff_cache .hypothesis
