.PHONY: run test lint format

run:  ## set up (virtualenv, SQLite, demo admin) and run the web server + a worker
	bash scripts/run.sh

test:  ## set up (Debian packages, virtualenv) and run every test against PostgreSQL
	bash scripts/test.sh

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/lint-imports
	DEBUG=1 .venv/bin/mypy

format:
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .
