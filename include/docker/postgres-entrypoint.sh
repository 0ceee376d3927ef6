#!/usr/bin/env bash
# Entrypoint of mlops-loop/postgres: on an empty data folder, initdb with POSTGRES_USER as
# superuser (password POSTGRES_PASSWORD, scram-sha-256 over TCP) and create POSTGRES_DB;
# then run the server on every address.
set -euo pipefail
: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required}"
user="${POSTGRES_USER:-postgres}"
db="${POSTGRES_DB:-${user}}"
if [ ! -s "${PGDATA}/PG_VERSION" ]; then
    pwfile=$(mktemp)
    printf '%s\n' "${POSTGRES_PASSWORD}" >"${pwfile}"
    initdb --username="${user}" --pwfile="${pwfile}" --auth-local=trust \
        --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    rm -f "${pwfile}"
    echo "host all all all scram-sha-256" >>"${PGDATA}/pg_hba.conf"
    pg_ctl -D "${PGDATA}" -w -o "-c listen_addresses=''" start >/dev/null
    if [ "${db}" != postgres ]; then createdb --username="${user}" "${db}"; fi
    pg_ctl -D "${PGDATA}" -w -m fast stop >/dev/null
    echo "postgres-entrypoint: initialised ${PGDATA} (user ${user}, database ${db})"
fi
exec postgres -D "${PGDATA}" -c listen_addresses='*' "$@"
