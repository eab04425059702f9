#!/usr/bin/env bash
# Real PostgreSQL clients against a live `paystream sql`: psycopg 3 and asyncpg
# (deploy/check/sql_clients.py) and Grafana's exact query shapes through pgx, the driver
# Grafana uses (deploy/check/grafana-pgx). Every answer is checked against
# `paystream log dump`. Called by deploy/check/run; needs python3 (with venv) and go.
#
#   deploy/check/sql-clients.sh PAYSTREAM_BINARY
#
# Installs, once, the drivers (versions pinned below) into a venv under
# PAYSTREAM_TOOLS_DIR (default ~/.local/share/paystream/tools); pgx comes from the Go
# module proxy at the version go.sum pins. Decides a small simulated log in a temporary
# directory, serves it on a free loopback port, and stops the server whatever happens.
set -euo pipefail

PSYCOPG_VERSION=3.3.9
ASYNCPG_VERSION=0.32.0
PASSWORD='analysts-check-password'

binary=${1:?usage: deploy/check/sql-clients.sh PAYSTREAM_BINARY}
[[ -x $binary ]] || { echo "no paystream binary at $binary"; exit 1; }
binary=$(realpath "$binary")
here=$(cd "$(dirname "$0")" && pwd)

for tool in python3 go; do
    command -v "$tool" >/dev/null || { echo "deploy/check/sql-clients.sh: $tool is missing"; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/paystream-sql-clients.XXXXXX")
server=
cleanup() {
    if [[ -n $server ]]; then kill -TERM "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

venv=${PAYSTREAM_TOOLS_DIR:-$HOME/.local/share/paystream/tools}/sql-clients
want="psycopg $PSYCOPG_VERSION asyncpg $ASYNCPG_VERSION"
if [[ ! -x $venv/bin/python || $(cat "$venv/version" 2>/dev/null) != "$want" ]]; then
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        "psycopg[binary]==$PSYCOPG_VERSION" "asyncpg==$ASYNCPG_VERSION"
    echo "$want" >"$venv/version"
fi
(cd "$here/grafana-pgx" && go build -o "$work/grafana-pgx" .)

# A decided log: a few thousand simulated payments through the pipeline.
data=$work/data
"$binary" generate --customers 100 --terminals 200 --days 5 --seed 7 --csv "$work/payments.csv" >/dev/null
"$binary" replay "$work/payments.csv" --data-dir "$data" >/dev/null
"$binary" run --no-metrics --until-idle --data-dir "$data" >/dev/null 2>&1
read -r decisions declines < <("$binary" log dump decisions --data-dir "$data" | python3 -c '
import json, sys
rows = [json.loads(line)["value"] for line in sys.stdin if line.strip()]
print(len(rows), sum(1 for row in rows if row["outcome"] == "decline"))')
echo "log: $decisions decisions, $declines declines"

PAYSTREAM_SQL_PASSWORD=$PASSWORD "$binary" sql --sql-addr 127.0.0.1:0 --metrics-addr 127.0.0.1:0 --data-dir "$data" 2>"$work/sql.log" &
server=$!
address=
for _ in $(seq 60); do
    address=$(sed -n 's|^sql: postgres://analyst@\(.*\)/paystream$|\1|p' "$work/sql.log")
    [[ -n $address ]] && break
    kill -0 "$server" 2>/dev/null || { cat "$work/sql.log"; exit 1; }
    sleep 0.5
done
[[ -n $address ]] || { echo "paystream sql did not start"; cat "$work/sql.log"; exit 1; }
echo "paystream sql on $address"

"$venv/bin/python" "$here/sql_clients.py" "$binary" "$data" "$address" "$PASSWORD"
"$work/grafana-pgx" "$address" "$PASSWORD" "$decisions" "$declines"
