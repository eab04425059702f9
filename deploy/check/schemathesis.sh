#!/usr/bin/env bash
# Checks a live `paystream serve` against its OpenAPI document with schemathesis:
# every check (`--checks all`), two customers as peers for object_level_authorization
# (one's payments must be 404 to the other), and a merchant for the merchant routes.
# Called by CI; needs python3 (with venv) and curl.
#
#   deploy/check/schemathesis.sh PAYSTREAM_BINARY [OPENAPI]
#
# OPENAPI: the document to test against (a file or URL), by default the one the binary
# serves at /openapi.json. Environment:
#   PAYSTREAM_TOOLS_DIR        where the venv goes (default ~/.local/share/paystream/tools)
#   SCHEMATHESIS_MAX_EXAMPLES  test cases per operation and phase (default 50)
#   SCHEMATHESIS_SEED          the seed (default 1, so a failure is reproducible; an
#                              integer, or `random`)
#   SCHEMATHESIS_REPORT_DIR    if set, the reports (JUnit, and NDJSON with every request
#                              and response) are written there, in main/ and logout/
#
# The identities carry access tokens taken before the run, which live 15 minutes: a run
# that outlives them fails (50 examples take about a minute; 100, two).
#
# Installs, once, schemathesis (version pinned below) into a venv under the tools
# directory. Starts `serve` on free loopback ports with a temporary data directory and
# rate limits out of reach, signs up the accounts, logs them in, runs schemathesis, and
# stops the server whatever happens. Exits 1 if schemathesis found anything.
set -euo pipefail

SCHEMATHESIS_VERSION=4.32.5
MAX_EXAMPLES=${SCHEMATHESIS_MAX_EXAMPLES:-50}
SEED=${SCHEMATHESIS_SEED:-1}
PASSWORD='correct horse battery staple'

# Paths are taken relative to the caller's directory.
binary=${1:?usage: deploy/check/schemathesis.sh PAYSTREAM_BINARY [OPENAPI]}
[[ -x $binary ]] || { echo "no paystream binary at $binary"; exit 1; }
binary=$(realpath "$binary")
spec=${2:-}
if [[ -n $spec && -f $spec ]]; then spec=$(realpath "$spec"); fi
report_dir=
if [[ -n ${SCHEMATHESIS_REPORT_DIR:-} ]]; then report_dir=$(realpath -m "$SCHEMATHESIS_REPORT_DIR"); fi

started=$(date +%s)
step() { echo "== $* ($(($(date +%s) - started)) s)"; }

for tool in python3 curl; do
    command -v "$tool" >/dev/null || { echo "deploy/check/schemathesis.sh: $tool is missing"; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/paystream-schemathesis.XXXXXX")
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do
        for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- Tools ---------------------------------------------------------------------------
step "tools"
venv=${PAYSTREAM_TOOLS_DIR:-$HOME/.local/share/paystream/tools}/schemathesis
if [[ ! -x $venv/bin/st || $(cat "$venv/version" 2>/dev/null) != "$SCHEMATHESIS_VERSION" ]]; then
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
    echo "$SCHEMATHESIS_VERSION" >"$venv/version"
fi
st=$venv/bin/st
"$st" --version

# --- paystream serve ---------------------------------------------------------------------
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_for() { # wait_for SECONDS WHAT COMMAND...
    local seconds=$1 what=$2
    shift 2
    for _ in $(seq $((seconds * 2))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
    echo "timed out after ${seconds}s waiting for $what"
    return 1
}
step "paystream serve"
http_port=$(free_port)
metrics_port=$(free_port)
api=http://127.0.0.1:$http_port
# Embedded defaults; the gateway's rate limits out of reach (schemathesis sends
# thousands of requests a minute from one address with a few credentials).
"$binary" serve --data-dir "$work/data" --http-addr "127.0.0.1:$http_port" \
    --metrics-addr "127.0.0.1:$metrics_port" \
    --rate-limit-per-minute 1000000 --auth-rate-limit-per-minute 1000000 >"$work/serve.log" 2>&1 &
pids+=($!)
wait_for 60 "paystream serve's /readyz" curl -sf "http://127.0.0.1:$metrics_port/readyz" ||
    { tail -n 30 "$work/serve.log"; exit 1; }
[[ -n $spec ]] || spec=$api/openapi.json
echo "API $api, document $spec"

# --- Accounts and their tokens ---------------------------------------------------------------
# alice and bob: customers, the peers; carol: the merchant of M1; dave: a customer whose
# session the logout run ends. All logged in before schemathesis starts: it learns the
# addresses from /v1/me and tries them with wrong passwords, and after 5 failures an
# account's logins are refused for 15 minutes (so the identities carry fixed tokens,
# which live 15 minutes, rather than log in again).
step "accounts"
signup() {
    curl -sf "$api/v1/auth/signup" -H 'content-type: application/json' \
        -d "{\"email\":\"$1@example.com\",\"password\":\"$PASSWORD\",\"display_name\":\"$1\"}" >/dev/null
}
token() {
    curl -sf "$api/v1/auth/login" -H 'content-type: application/json' \
        -d "{\"email\":\"$1@example.com\",\"password\":\"$PASSWORD\"}" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])'
}
for user in alice bob carol dave; do signup "$user" || { echo "sign-up of $user failed"; exit 1; }; done
"$binary" auth set-roles --data-dir "$work/data" --email carol@example.com --role merchant --merchant-id M1
declare -A tokens
for user in alice bob carol dave; do
    tokens[$user]=$(token "$user") || { echo "login of $user failed"; exit 1; }
done
tokens_taken=$(date +%s)

# Web Fuzzing Commons auth documents (JSON), and the configurations naming them.
wfc() { # wfc FILE USER...: one entry per user, its token in Authorization
    local file=$1 user
    shift
    {
        echo '{"auth": ['
        for user in "$@"; do
            [[ $user == "$1" ]] || echo ','
            printf '{"name": "%s", "fixedHeaders": [{"name": "Authorization", "value": "Bearer %s"}]}\n' \
                "$user" "${tokens[$user]}"
        done
        echo ']}'
    } >"$file"
}
wfc "$work/users.json" alice bob carol
wfc "$work/logout-users.json" dave
cat >"$work/schemathesis.toml" <<EOF
# Identities in order: an operation one refuses (401/403) is tried with the next, so
# the merchant routes end with carol. alice and bob must not see each other's objects.
[auth.wfc]
path = "$work/users.json"
peers = ["alice", "bob"]
EOF
# Generated Idempotency-Keys repeat (hypothesis likes "0"), and the same key with
# another body is refused (422, as documented), so most schema-valid payments would
# never be decided: a valid generated key gets a unique suffix on each call. Invalid
# keys (negative cases) go as generated.
cat >"$work/hooks.py" <<'EOF'
import re
import uuid

import schemathesis
from schemathesis.core.parameters import ParameterLocation

VALID_KEY = re.compile(r"[!-~]{1,255}")


@schemathesis.hook
def before_call(context, case, kwargs):
    headers = case.headers or {}
    key = headers.get("Idempotency-Key")
    if not isinstance(key, str) or not VALID_KEY.fullmatch(key):
        return
    if case.meta is not None and case.meta.is_negative_at(ParameterLocation.HEADER):
        return
    headers["Idempotency-Key"] = f"{key[:200]}-{uuid.uuid4().hex}"
EOF
cat >"$work/logout.toml" <<EOF
[auth.wfc]
path = "$work/logout-users.json"
EOF

# --- schemathesis -------------------------------------------------------------------------------
options=(--url "$api" --checks all "--phases=examples,coverage,fuzzing,stateful"
    --max-examples "$MAX_EXAMPLES" --request-timeout 20 --generation-database none --no-color)
[[ $SEED == random ]] || options+=(--seed "$SEED")
main_reports=()
logout_reports=()
if [[ -n $report_dir ]]; then
    main_reports=("--report=junit,ndjson" --report-dir "$report_dir/main")
    logout_reports=("--report=junit,ndjson" --report-dir "$report_dir/logout")
fi
status=0
# Everything but logout, which would end the session its identity's token belongs to.
step "schemathesis: every operation but logout"
(cd "$work" && SCHEMATHESIS_HOOKS=$work/hooks.py "$st" --config-file "$work/schemathesis.toml" \
    run "$spec" "${options[@]}" "${main_reports[@]}" --exclude-path /v1/auth/logout) || status=1
step "schemathesis: logout"
(cd "$work" && "$st" --config-file "$work/logout.toml" \
    run "$spec" "${options[@]}" "${logout_reports[@]}" --include-path /v1/auth/logout) || status=1

if (($(date +%s) - tokens_taken >= 15 * 60)); then
    echo "the run outlived the identities' access tokens (15 minutes): lower SCHEMATHESIS_MAX_EXAMPLES"
    status=1
fi
if ! kill -0 "${pids[0]}" 2>/dev/null; then
    echo "paystream serve stopped during the run"
    status=1
fi
step "done"
if ((status != 0)); then
    echo "paystream serve's log, last lines:"
    tail -n 30 "$work/serve.log"
    echo "deploy/check/schemathesis.sh: schemathesis found failures (see above)"
    exit 1
fi
echo "deploy/check/schemathesis.sh: schemathesis found nothing"
