#!/usr/bin/env bash
# Runs schemathesis (property-based API testing from the OpenAPI document)
# against a real quotecast: fails on any 5xx, any answer the document does not
# describe, and any other failed check (configuration: schemathesis.toml).
#
#   scripts/schemathesis.sh [ST_ARGS...]
#
# It builds the debug binary (QUOTECAST_BIN names another, e.g.
# target/release/quotecast), starts it on a free port with a temporary SQLite
# database, creates an admin user (`quotecast user add st-admin --admin`; the
# token is the last line), and runs `st run` on
# http://ADDR/api/v1/openapi.json with that token. Extra arguments go to
# `st run` (e.g. `--max-examples 200`, `--seed 42`, `--include-path-regex items`).
#
# schemathesis is installed from PyPI into a venv at $QUOTECAST_ST_VENV
# (default target/schemathesis-venv) when missing or at another version.
set -euo pipefail
cd "$(dirname "$0")/.."

ST_VERSION=4.32.5
venv=${QUOTECAST_ST_VENV:-target/schemathesis-venv}
if [ "$("$venv/bin/st" --version 2>/dev/null)" != "st, version $ST_VERSION" ]; then
    echo "installing schemathesis $ST_VERSION into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$ST_VERSION"
fi

bin=${QUOTECAST_BIN:-}
if [ -z "$bin" ]; then
    cargo build --quiet --bin quotecast
    bin=target/debug/quotecast
fi

scratch=$(mktemp -d)
server=
cleanup() {
    if [ -n "$server" ]; then
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    rm -rf "$scratch"
}
trap cleanup EXIT

export QUOTECAST__DATABASE__URL="sqlite://$scratch/quotecast.db"
export QUOTECAST__SERVER__BIND=127.0.0.1:0
export QUOTECAST__SERVER__DEMO_DATA=false
# The run creates watchlists and items by the hundred; the per-user caps
# would answer 422 `limit_exceeded` to requests that are otherwise valid.
export QUOTECAST__LIMITS__MAX_WATCHLISTS_PER_USER=1000000
export QUOTECAST__LIMITS__MAX_ITEMS_PER_WATCHLIST=1000000
export QUOTECAST__LIMITS__MAX_ALERTS_PER_USER=1000000
# No generated webhook URL reaches the server as one it would accept (see
# the hooks' file): the run sends nothing off this machine.
export SCHEMATHESIS_HOOKS=schemathesis_hooks
export PYTHONPATH="$PWD/scripts${PYTHONPATH:+:$PYTHONPATH}"
# A symbol nobody watches is fetched with the poller's next round; a short
# round keeps `GET /api/v1/quotes` from waiting seconds per request.
export QUOTECAST__UPSTREAM__POLL_INTERVAL_MS=100
export RUST_LOG=${RUST_LOG:-info}

token=$("$bin" user add st-admin --admin | tail -n 1)

"$bin" serve >"$scratch/stdout" 2>"$scratch/stderr" &
server=$!
addr=
for _ in $(seq 1 100); do
    addr=$(sed -n 's/.*listening on http:\/\/\([^ ]*\).*/\1/p' "$scratch/stderr" | head -n 1)
    [ -n "$addr" ] && break
    kill -0 "$server" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$addr" ]; then
    echo "quotecast did not start:" >&2
    cat "$scratch/stderr" >&2
    exit 1
fi
echo "quotecast at http://$addr (log: server stderr is shown on failure)"

# Hypothesis' own files go beside schemathesis' cache, not in the work tree.
export HYPOTHESIS_STORAGE_DIRECTORY=target/schemathesis-cache/hypothesis-storage

status=0
QUOTECAST_TOKEN=$token "$venv/bin/st" --config-file schemathesis.toml run \
    "http://$addr/api/v1/openapi.json" "$@" || status=$?
if [ "$status" -ne 0 ]; then
    echo "--- quotecast stderr (last 50 lines) ---" >&2
    tail -n 50 "$scratch/stderr" >&2
fi
exit "$status"
