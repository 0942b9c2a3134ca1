#!/usr/bin/env bash
# Generates src/db/schema.rs from the migrations, so that nobody edits it by hand.
#
#   scripts/schema.sh write   regenerate src/db/schema.rs
#   scripts/schema.sh check   exit 1 with a diff if src/db/schema.rs is out of date
#   scripts/schema.sh patch   record hand edits of src/db/schema.rs (what
#                             print-schema cannot infer) in src/db/schema.patch
#
# The schema comes from `diesel print-schema` (settings and patch in diesel.toml)
# on a scratch SQLite file migrated with migrations/sqlite. Every mode then
# checks that migrations/postgres yields the same tables, on a scratch database
# of the PostgreSQL server at QUOTECAST_TEST_PG_URL (an admin URL, default
# postgres://postgres@127.0.0.1:5432/postgres). Without a server that part is
# skipped, loudly; with QUOTECAST_REQUIRE_PG=1 (as in CI) it fails instead.
#
# Needs diesel_cli with both backends (psql too, for PostgreSQL):
#   cargo install diesel_cli --no-default-features --features sqlite-bundled,postgres
set -euo pipefail

mode=${1:-}
case $mode in
write | check | patch) ;;
*)
    echo "usage: scripts/schema.sh write|check|patch" >&2
    exit 2
    ;;
esac

cd "$(dirname "$0")/.."
schema=src/db/schema.rs
patch=src/db/schema.patch

if ! command -v diesel >/dev/null; then
    echo "schema.sh: diesel not found; install it with" >&2
    echo "  cargo install diesel_cli --no-default-features --features sqlite-bundled,postgres" >&2
    exit 2
fi

scratch=$(mktemp -d)
pg_admin=${QUOTECAST_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
pg_db=
cleanup() {
    rm -rf "$scratch"
    if [[ -n $pg_db ]]; then
        psql -q "$pg_admin" -c "DROP DATABASE IF EXISTS $pg_db WITH (FORCE)" >/dev/null || true
    fi
}
trap cleanup EXIT

# Migrations run under an empty config: under diesel.toml, `migration run`
# would also rewrite $schema as a side effect, which `check` must not do.
no_config=$scratch/no-config.toml
: >"$no_config"

sqlite_url=$scratch/schema.db
diesel migration run --config-file "$no_config" \
    --migration-dir migrations/sqlite --database-url "$sqlite_url" >/dev/null

if [[ $mode == patch ]]; then
    # An empty patch file stands for "no patch".
    diesel print-schema --database-url "$sqlite_url" --patch-file /dev/null >"$scratch/unpatched.rs"
    if diff -U1 --label "a/$schema" --label "b/$schema" \
        "$scratch/unpatched.rs" "$schema" >"$scratch/schema.patch"; then
        echo "schema.sh: $schema is what print-schema prints unpatched; nothing to record" >&2
        exit 1
    fi
    cp "$scratch/schema.patch" "$patch"
    echo "wrote $patch"
fi

diesel print-schema --database-url "$sqlite_url" >"$scratch/schema.rs"
status=0
if [[ $mode == write ]]; then
    cp "$scratch/schema.rs" "$schema"
    echo "wrote $schema"
elif ! diff -u --label "$schema (committed)" --label "$schema (from the migrations)" \
    "$schema" "$scratch/schema.rs"; then
    echo "schema.sh: $schema is out of date: run scripts/schema.sh write" >&2
    status=1
fi

# The table definitions, without the header comment.
tables() { sed -n '/^diesel::/,$p'; }

if psql -q "$pg_admin" -c 'SELECT 1' >/dev/null 2>&1; then
    pg_db=quotecast_schema_$$
    psql -q -v ON_ERROR_STOP=1 "$pg_admin" -c "CREATE DATABASE $pg_db" >/dev/null
    pg_url=${pg_admin%/*}/$pg_db
    diesel migration run --config-file "$no_config" \
        --migration-dir migrations/postgres --database-url "$pg_url" >/dev/null
    # Without the patch, which is for SQLite: PostgreSQL knows its ids are NOT
    # NULL. It names BigInt and Double by their aliases Int8 and Float8.
    diesel print-schema --database-url "$pg_url" --patch-file /dev/null |
        sed -e 's/Int8\([>,]\)/BigInt\1/g' -e 's/Float8\([>,]\)/Double\1/g' |
        tables >"$scratch/postgres.rs"
    tables <"$scratch/schema.rs" >"$scratch/sqlite.rs"
    if ! diff -u --label "$schema (from migrations/sqlite)" \
        --label "$schema (from migrations/postgres)" \
        "$scratch/sqlite.rs" "$scratch/postgres.rs"; then
        echo "schema.sh: migrations/sqlite and migrations/postgres yield different tables" >&2
        status=1
    fi
elif [[ ${QUOTECAST_REQUIRE_PG:-} == 1 ]]; then
    echo "schema.sh: PostgreSQL required (QUOTECAST_REQUIRE_PG=1) but $pg_admin does not answer" >&2
    exit 1
else
    echo "SKIPPED the PostgreSQL comparison: no server answers at $pg_admin (or no psql); set QUOTECAST_TEST_PG_URL" >&2
fi
exit $status
