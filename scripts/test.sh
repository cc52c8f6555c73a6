#!/usr/bin/env bash
# The whole test suite against PostgreSQL (DATABASE_URL overrides), with the real servers it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-system-deps.sh
bash scripts/bootstrap.sh
export DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/certmgr}
exec .venv/bin/pytest "$@"
