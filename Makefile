# Two commands for users: `make demo` (set up, run the main job on the local stack) and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
STACK := $(PY) -m scripts.stack

.PHONY: setup system-packages demo test check stack up down stop stack-stop status bench mutation package

$(STAMP): requirements.txt requirements-dev.txt constraints.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q -r requirements-dev.txt -c constraints.txt
	@touch $(STAMP)

# System packages: Compose v1 validates docker-compose.yaml offline; PostgreSQL serves the
# production-like metadata database; Redis is the CeleryExecutor's broker; Chromium is the browser the UI
# test drives (through Playwright's executable_path: `playwright install` would download a browser of its
# own). All come from Debian.
system-packages:
	@if ! command -v docker-compose >/dev/null || ! command -v chromium >/dev/null \
	    || ! command -v redis-server >/dev/null || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing docker-compose, postgresql, redis-server and chromium from Debian"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      docker-compose postgresql redis-server chromium) >/dev/null; \
	  else echo "missing: run once as root: apt-get install --no-install-recommends docker-compose postgresql redis-server chromium"; fi; \
	fi

# Google's Pub/Sub emulator (the local stack's --pubsub, the Google Cloud CLI's own) comes from Google's apt
# repository, not Debian's: said, not installed.
setup: $(STAMP) system-packages
	@test -x /usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator || echo "missing: Google's \
	Pub/Sub emulator: apt-get install google-cloud-cli-pubsub-emulator (Google's apt repository) or gcloud components \
	install pubsub-emulator; or set PUBSUB_EMULATOR_BIN"

demo: setup
	$(PY) -m scripts.demo

# Static checks first (configured in pyproject.toml): a finding fails `make test` before any test runs.
check: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: check
	$(PY) -m pytest

stack: setup
	$(STACK) stack

up: setup
	$(STACK) up

down stop:
	$(STACK) down

stack-stop:
	$(STACK) stack-stop

status:
	$(STACK) status

# The wheel a platform team installs (Cloud Composer's PyPI packages, the Helm chart's image): dist/*.whl
package: setup
	rm -rf dist
	$(PY) -m pip wheel -q --no-deps --no-build-isolation -w dist .

# Printed figures, never asserted (about 40 minutes on 2 cores); the README's performance section quotes them.
bench: setup
	$(PY) bench/dag_parse_cost.py
	$(PY) bench/emulator_throughput.py --instances 2000 --size-kb 512
	$(PY) bench/polling.py
	$(PY) bench/triggerer_scale.py --operations 10000
	$(PY) bench/filtered_export_cost.py
	$(PY) bench/end_to_end_scale.py
	$(PY) bench/backfill_executors.py
	$(PY) bench/arrival_latency.py

# Mutation testing of the failure contract's decisions (mutmut, pinned); prints the score. Outside `make test`.
mutation: setup
	$(PY) -m scripts.mutation
