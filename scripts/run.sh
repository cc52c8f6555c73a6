#!/usr/bin/env bash
# Quickstart: virtualenv, SQLite migrations, a demo organization and admin (password printed once),
# then the web server, a django-q2 worker (ORM broker) and certmgr's DNS server (delegated _acme-challenge
# names, on CERTMGR_DNS_LISTEN). Ctrl-C or SIGTERM stops them all (each gets SIGTERM, then SIGKILL after 8 s)
# and the script exits 0; if one stops on its own, the others are stopped too and the script exits with its
# status.
set -euo pipefail
cd "$(dirname "$0")/.."
# On a terminal, as a foreground job of its own: GNU make would otherwise get Ctrl-C's SIGINT too and exit 130
# whatever this script exits with (scripts/foreground.py says how).
if [ -z "${CERTMGR_RUN_JOB:-}" ]; then
  CERTMGR_RUN_JOB=1 exec python3 scripts/foreground.py bash "$0" "$@"
fi
bash scripts/bootstrap.sh
source scripts/dev-env.sh

.venv/bin/python manage.py migrate --no-input -v 0
.venv/bin/python manage.py bootstrap_demo

# Started in the background, all three ignore the terminal's SIGINT (a non-interactive shell's rule): this script
# alone decides how they stop.
.venv/bin/python manage.py qcluster &
worker=$!
.venv/bin/python manage.py runserver --noreload "$HOST:$PORT" &
web=$!
.venv/bin/python manage.py dns_server &
dnsd=$!

stop_all() {
  kill -TERM "$web" "$dnsd" 2>/dev/null || true
  if [ "${1:-}" = INT ]; then
    # Ctrl-C reached the whole process group: django-q's worker handles SIGINT itself and is stopping
    # already; a second signal while it shuts down ends in a traceback. Give it 5 s before asking again.
    for _ in $(seq 1 10); do
      kill -0 "$worker" 2>/dev/null || break
      sleep 0.5
    done
  fi
  kill -TERM "$worker" 2>/dev/null || true
  for _ in $(seq 1 16); do
    kill -0 "$web" 2>/dev/null || kill -0 "$worker" 2>/dev/null || kill -0 "$dnsd" 2>/dev/null || return 0
    sleep 0.5
  done
  kill -KILL "$web" "$worker" "$dnsd" 2>/dev/null || true
}
on_signal() {
  trap - INT TERM
  echo "certmgr: stopping the web server, the worker and the DNS server"
  stop_all "$1"
  wait 2>/dev/null || true
  exit 0
}
trap 'on_signal INT' INT
trap 'on_signal TERM' TERM
echo "certmgr: admin at http://$HOST:$PORT/admin/  API docs at http://$HOST:$PORT/api/docs/"
echo "certmgr: DNS server for delegated _acme-challenge names on $CERTMGR_DNS_LISTEN (UDP and TCP) as $CERTMGR_DNS_SERVER_NAME"
echo "certmgr: management commands with this environment: scripts/manage COMMAND"
status=0
wait -n "$web" "$worker" "$dnsd" || status=$?
trap - INT TERM
echo "certmgr: a process stopped on its own (status $status); stopping the others"
stop_all
wait 2>/dev/null || true
exit "$status"
