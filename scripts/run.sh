#!/usr/bin/env bash
# Quickstart: virtualenv, SQLite migrations, a demo organization and admin (password printed once),
# then the web server and a django-q2 worker (ORM broker). Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh

export DEBUG=${DEBUG:-1}
export CERTMGR_OUTBOUND_ALLOWED_NETWORKS=${CERTMGR_OUTBOUND_ALLOWED_NETWORKS:-}
HOST=${CERTMGR_HOST:-127.0.0.1}
PORT=${CERTMGR_PORT:-8000}
export CERTMGR_BASE_URL=${CERTMGR_BASE_URL:-http://$HOST:$PORT}

.venv/bin/python manage.py migrate --no-input -v 0
.venv/bin/python manage.py bootstrap_demo

.venv/bin/python manage.py qcluster &
worker=$!
stop_worker() {
  kill -TERM "$worker" 2>/dev/null || return 0
  for _ in $(seq 1 10); do kill -0 "$worker" 2>/dev/null || return 0; sleep 1; done
  kill -KILL "$worker" 2>/dev/null || true
}
trap stop_worker EXIT INT TERM
echo "certmgr: admin at http://$HOST:$PORT/admin/  API docs at http://$HOST:$PORT/api/docs/"
.venv/bin/python manage.py runserver --noreload "$HOST:$PORT"
