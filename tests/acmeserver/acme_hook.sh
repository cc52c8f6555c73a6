#!/bin/sh
# Challenge hook for uacme (-h) and dehydrated (--hook), as an operator would write one:
#   dns-01:  publishes _acme-challenge.<name> TXT in BIND with nsupdate (TSIG key file), removes it after;
#   http-01 (uacme): writes the key authorization into $CHALLENGE_DIR, served as /.well-known/acme-challenge.
# Environment: NSUPDATE_SERVER, NSUPDATE_PORT, NSUPDATE_KEYFILE, CHALLENGE_DIR.
# uacme calls:      begin|done|failed <type> <identifier> <token> <key authorization or its digest>
# dehydrated calls: deploy_challenge|clean_challenge <domain> <token file> <TXT value>, and other events.
set -eu

txt() {  # txt add|delete <name> [value]
    {
        echo "server ${NSUPDATE_SERVER} ${NSUPDATE_PORT}"
        if [ "$1" = add ]; then
            echo "update add _acme-challenge.$2. 60 IN TXT \"$3\""
        else
            echo "update delete _acme-challenge.$2. TXT"
        fi
        echo "send"
    } | nsupdate -k "${NSUPDATE_KEYFILE}"
}

case "$1" in
    begin)
        case "$2" in
            dns-01) txt add "$3" "$5" ;;
            http-01) printf '%s' "$5" > "${CHALLENGE_DIR:?}/$4" ;;
            *) exit 1 ;;  # declines the challenge: uacme tries the next one
        esac ;;
    done|failed)
        case "$2" in
            dns-01) txt delete "$3" ;;
            http-01) rm -f "${CHALLENGE_DIR:?}/$4" ;;
        esac ;;
    deploy_challenge) txt add "$2" "$4" ;;
    clean_challenge) txt delete "$2" ;;
    *) ;;  # dehydrated's other events (deploy_cert, startup_hook, ...): nothing to do
esac
