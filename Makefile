# Two commands matter: `make run` (the portal on the embedded default) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SIM_PORT ?= 5010
PORT ?= 8000

.PHONY: run test test-fast test-cluster mutate lint typecheck format serve worker beat sim bench migrate seed clean messages lock

# The virtualenv from the lock file (exact versions: CI and the image install the same ones),
# then the project itself without resolving anything again.
$(STAMP): pyproject.toml requirements-dev.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

# Re-resolve pyproject.toml's ranges into the lock files: requirements.lock (what the image
# runs) and requirements-dev.lock (that plus the dev tools; what `make venv` and CI install).
LOCK_FLAGS := --quiet --python-version 3.11 --no-header --annotation-style line
lock:
	$(VENV)/bin/uv pip compile $(LOCK_FLAGS) pyproject.toml -o requirements.lock
	$(VENV)/bin/uv pip compile $(LOCK_FLAGS) --extra dev pyproject.toml -o requirements-dev.lock

# A development .env (from .env.example, with its own SECRET_KEY) when there is none; never
# overwritten. The settings read it, so `manage.py` in a second terminal sees what `make run` sees.
.env:
	@secret=$$($(PYTHON) -c "import secrets; print('dev-' + secrets.token_urlsafe(32))") && \
	  sed "s|^SECRET_KEY=.*|SECRET_KEY=$$secret|" .env.example > .env.tmp && mv .env.tmp .env
	@echo "wrote .env (development settings; edit it, make never overwrites it)"

# The embedded default: SQLite, local-memory cache, eager Celery, a router simulator beside it.
run: export ROUTER_SIM_URL ?= http://127.0.0.1:$(SIM_PORT)
run: export PORTAL_BASE_URL ?= http://127.0.0.1:$(PORT)
run: $(STAMP) .env
	$(PY) manage.py migrate --noinput
	$(PY) manage.py seed_demo --router-url $(ROUTER_SIM_URL)
	@$(PY) manage.py run_router_sim --port $(SIM_PORT) --latency-ms 150 --chunk-delay-ms 40 --chunks 24 & \
	  SIM=$$!; trap "kill $$SIM 2>/dev/null" EXIT INT TERM; \
	  $(PY) manage.py runserver 127.0.0.1:$(PORT)

# In parallel (pytest-xdist): TEST_WORKERS processes, each a run of its own (its database names,
# Redis key prefix and folders: portal/test_settings.py), each given whole modules, longest
# first (tests/durations.py). PYTEST_ARGS=-n0 runs serially; TEST_WORKERS=N sets the count.
TEST_WORKERS ?= 3
XDIST = -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder
test: $(STAMP)
	$(PY) -m pytest $(XDIST) $(PYTEST_ARGS)

# Everything but the tests that start real processes (gunicorn, Redis or PostgreSQL servers,
# worker pools): the quick loop while editing. `make test` still runs them all.
test-fast: $(STAMP)
	$(PY) -m pytest $(XDIST) -m "not slow and not browser" $(PYTEST_ARGS)

# The suites of what Redis Cluster changes, on a local 3-master cluster (ports 7101-7103,
# tests/rediscluster.py: reused if it runs, else started for the session). Celery's broker
# stays on the single Redis of REDIS_URL (docs/redis-cluster.md).
CLUSTER_TESTS ?= tests/test_redis_cluster_slots.py tests/test_limits_redis.py \
  tests/test_limits_processes.py tests/test_limits_served.py tests/test_limits_rebuild.py \
  tests/test_apikeys_cross_process.py tests/test_apikeys_cache_versions.py \
  tests/test_usage_writer.py tests/test_usage_lifecycle.py tests/test_metering_served.py \
  tests/test_usage_journal_orgs.py tests/test_usage_spool.py tests/test_cache_multi_key.py \
  tests/test_redis_prefixes.py tests/test_inference_inflight.py \
  tests/test_notifications_quota.py tests/test_notifications_exactly_once.py
test-cluster: $(STAMP)
	CELERY_BROKER_URL="$${CELERY_BROKER_URL:-$${REDIS_URL:-redis://127.0.0.1:6379/0}}" \
	  REDIS_URL=redis://127.0.0.1:7101/0 REDIS_CLUSTER=1 \
	  $(PY) -m pytest $(XDIST) $(CLUSTER_TESTS) $(PYTEST_ARGS)

# Mutation testing of metering/limits, metering/recording.py, the balancer and the upstream
# client with the fast tests ([tool.mutmut] in pyproject.toml). CPU heavy, not in CI; set
# DATABASE_URL and REDIS_URL to mutate against PostgreSQL and Redis. `mutmut results` and
# `mutmut show NAME` afterwards. One child by default: mutants share the run's test database
# and Redis prefix, so two at once disturb each other's tests (docs/mutation.md).
mutate: $(STAMP)
	$(VENV)/bin/mutmut run --max-children $${MUTATE_JOBS:-1}
	$(VENV)/bin/mutmut results

# ruff, then the layers contract (pyproject's [tool.importlinter]): a back-edge between apps
# fails here with the two modules named.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache

# mypy with Django's and DRF's stubs over core, apikeys, metering and inference (pyproject's
# [tool.mypy]); the request path's modules must type every signature.
typecheck: $(STAMP)
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# The portal's wording of allauth's English (locale/en/LC_MESSAGES/django.po); needs gettext.
messages:
	msgfmt --check-format -o locale/en/LC_MESSAGES/django.mo locale/en/LC_MESSAGES/django.po

migrate: $(STAMP)
	$(PY) manage.py migrate --noinput

# The production shape (needs DATABASE_URL, REDIS_URL, SECRET_KEY): see README "Operations".
serve: $(STAMP)
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput -v 0
	$(VENV)/bin/gunicorn -c gunicorn.conf.py portal.wsgi:application

worker: $(STAMP)
	$(VENV)/bin/celery -A portal --quiet worker --loglevel INFO --concurrency $${CELERY_CONCURRENCY:-2}

beat: $(STAMP)
	$(VENV)/bin/celery -A portal --quiet beat --loglevel INFO --schedule var/celerybeat-schedule

sim: $(STAMP)
	$(PY) manage.py run_router_sim --port $(SIM_PORT)

bench: $(STAMP)
	$(PY) bench/run.py --notes bench/NOTES.md

clean:
	rm -rf $(VENV) var staticfiles .pytest_cache
