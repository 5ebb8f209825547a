.PHONY: demo test up down status start stop lint chaos bench observe images compose-up compose-smoke compose-down test-containers

demo:            ## bring everything up and play a subscription's whole life on a test clock
	scripts/bootstrap
	.venv/bin/python scripts/devstack.py demo

test:            ## install everything, lint, type-check and run every test
	scripts/test

up:              ## start Kafka, PostgreSQL and the mail catcher (no Docker)
	deploy/local/stack up

down:            ## stop the services and the local stack
	-.venv/bin/python scripts/devstack.py stop
	deploy/local/stack down

status:
	-deploy/local/stack status
	-.venv/bin/python scripts/devstack.py status

start:           ## start the four services and the portal (:8005) in the background, test clocks on
	.venv/bin/python scripts/devstack.py start

stop:
	.venv/bin/python scripts/devstack.py stop

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy .

chaos:           ## the fault-injection suite, long form: 300 orders through crashes and restarts
	scripts/bootstrap
	eval "$$(deploy/local/stack env)"; export KAFKA_BOOTSTRAP_SERVERS POSTGRES_DSN SMTP_URL MAIL_API_URL; \
	CHAOS_ORDERS=$${CHAOS_ORDERS:-300} CHAOS_CONCURRENCY=$${CHAOS_CONCURRENCY:-8} \
	.venv/bin/pytest -s -p no:cacheprovider tests/chaos

bench:           ## end-to-end benchmark on the running stack: BENCH_ORDERS=300 BENCH_ARGS='--rate 50'
	eval "$$(deploy/local/stack env)"; export KAFKA_BOOTSTRAP_SERVERS POSTGRES_DSN SMTP_URL MAIL_API_URL; \
	.venv/bin/python -m bench.e2e --orders $${BENCH_ORDERS:-300} $(BENCH_ARGS)

observe:         ## a local Prometheus scraping the services (make start), alert rules loaded: :9090
	scripts/observe

images:          ## as root: podman + Docker API + compose plugin, then the local images (cached)
	deploy/images/setup-engine
	deploy/images/build

compose-up:      ## as root: the whole platform in containers here (engine, images, compose), all healthy
	deploy/images/compose up

compose-smoke:   ## as root: compose up on ports 180xx, a purchase through it (tests/compose), down
	deploy/images/compose smoke

compose-down:
	deploy/images/compose down

test-containers: ## as root: images, compose smoke, integration + e2e purchase on testcontainers (part of make test)
	scripts/test-containers
