# The development environment of `make run`, sourced by scripts/run.sh and scripts/manage so that management
# commands see the same database, keys and URLs as the quickstart. Every value can be overridden.
export DEBUG=${DEBUG:-1}
export CERTMGR_OUTBOUND_ALLOWED_NETWORKS=${CERTMGR_OUTBOUND_ALLOWED_NETWORKS:-}
HOST=${CERTMGR_HOST:-127.0.0.1}
PORT=${CERTMGR_PORT:-8000}
export CERTMGR_BASE_URL=${CERTMGR_BASE_URL:-http://$HOST:$PORT}
# certmgr's own DNS server (delegated _acme-challenge names): an unprivileged port here, 53 in production.
export CERTMGR_DNS_LISTEN=${CERTMGR_DNS_LISTEN:-127.0.0.1:8053}
export CERTMGR_DNS_SERVER_NAME=${CERTMGR_DNS_SERVER_NAME:-acme-ns.localhost.}
