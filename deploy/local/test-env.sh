# Source this file (`source deploy/local/test-env.sh`): starts PostgreSQL and Redis if
# they are stopped, creates the role and database the tests use, and exports the URLs
# the tests read. Idempotent. Needs root or sudo (for `service` and the postgres user).
#
#   PAYSTREAM_TEST_POSTGRES_URL  postgres://paystream:paystream@127.0.0.1:5432/test
#   PAYSTREAM_TEST_REDIS_URL     redis://127.0.0.1:6379
#
# The password is a fixed local test credential for a database on loopback, not a secret.

paystream_test_env() {
    local sudo=() postgres=(sudo -u postgres)
    if [[ $(id -u) -eq 0 ]]; then
        postgres=(runuser -u postgres --)
    else
        sudo=(sudo)
    fi
    if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
        echo "test-env.sh: starting PostgreSQL"
        "${sudo[@]}" service postgresql start >/dev/null || return 1
        for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null && break; sleep 1; done
    fi
    pg_isready -h 127.0.0.1 -p 5432 || { echo "test-env.sh: PostgreSQL does not answer on 127.0.0.1:5432"; return 1; }
    "${postgres[@]}" psql -q -v ON_ERROR_STOP=1 -d postgres <<'SQL' || return 1
SELECT 'CREATE ROLE paystream LOGIN PASSWORD ''paystream'''
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'paystream') \gexec
SELECT 'CREATE DATABASE test OWNER paystream'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'test') \gexec
SQL
    export PAYSTREAM_TEST_POSTGRES_URL="${PAYSTREAM_TEST_POSTGRES_URL:-postgres://paystream:paystream@127.0.0.1:5432/test}"
    psql "$PAYSTREAM_TEST_POSTGRES_URL" -Atqc "select 1" >/dev/null \
        || { echo "test-env.sh: cannot connect to $PAYSTREAM_TEST_POSTGRES_URL"; return 1; }

    if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
        echo "test-env.sh: starting Redis"
        "${sudo[@]}" service redis-server start >/dev/null 2>&1 || redis-server --daemonize yes >/dev/null
        for _ in $(seq 1 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 1; done
    fi
    redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null || { echo "test-env.sh: Redis does not answer on 127.0.0.1:6379"; return 1; }
    export PAYSTREAM_TEST_REDIS_URL="${PAYSTREAM_TEST_REDIS_URL:-redis://127.0.0.1:6379}"
    echo "test-env.sh: PostgreSQL at $PAYSTREAM_TEST_POSTGRES_URL, Redis at $PAYSTREAM_TEST_REDIS_URL"
}
paystream_test_env
