#!/usr/bin/env bash
# Debian packages the test suite needs (real servers for integration tests, a browser for admin tests),
# and a running PostgreSQL. Idempotent: installs only what is missing.
set -euo pipefail

PACKAGES=(
  chromium                                   # admin tests in a real browser (Playwright drives it)
  pdns-server pdns-backend-sqlite3           # PowerDNS with its HTTP API
  bind9 bind9-utils dnsutils                 # BIND for RFC 2136 + TSIG; tsig-keygen, dig
  sqlite3
  ca-certificates                            # the system CA bundle the bulk-import test reads
  prometheus                                 # promtool check metrics on /metrics
  pebble dnsdist                             # ACME test CA; routes Pebble's DNS queries to PowerDNS/BIND by zone
  lego                                       # ACME client: tests/acmeserver/test_lego.py
  gnutls-bin                                 # ocsptool: GnuTLS as a second OCSP relying party
  nginx                                      # ssl_stapling of the OCSP responder's answers (tests/pki/test_ocsp.py)
  openssh-server                             # sshd for the SSH sync destination (tests/syncs/test_ssh.py)
  wrk                                        # HTTP load generator of bench/ocsp_bench.py
  acme-tiny dehydrated uacme                 # ACME clients against certmgr's ACME server (tests/acmeserver/test_clients.py)
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  # policy-rc.d keeps the packages' own daemons from starting: tests start their own on free ports.
  $SUDO sh -c 'printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d'
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  $SUDO rm -f /usr/sbin/policy-rc.d
fi

# PostgreSQL: the tests' database server.
if command -v pg_ctlcluster >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  echo "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
