-- Timestamps are microseconds since the Unix epoch (BIGINT) so that the same
-- queries run unchanged on SQLite and PostgreSQL.
CREATE TABLE users (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    is_admin BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL
);

CREATE TABLE api_tokens (
    id BIGSERIAL PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    token_hash TEXT NOT NULL UNIQUE,
    label TEXT,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX api_tokens_user ON api_tokens(user_id);

CREATE TABLE watchlists (
    id BIGSERIAL PRIMARY KEY,
    owner_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    is_public BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (owner_id, name)
);

CREATE TABLE watchlist_items (
    id BIGSERIAL PRIMARY KEY,
    watchlist_id BIGINT NOT NULL REFERENCES watchlists(id) ON DELETE CASCADE,
    symbol TEXT NOT NULL,
    quantity DOUBLE PRECISION,
    purchase_price DOUBLE PRECISION,
    memo TEXT NOT NULL DEFAULT '',
    position BIGINT NOT NULL,
    added_at BIGINT NOT NULL,
    UNIQUE (watchlist_id, symbol)
);

CREATE TABLE latest_quotes (
    symbol TEXT PRIMARY KEY NOT NULL,
    is_unknown BOOLEAN NOT NULL DEFAULT FALSE,
    name TEXT,
    price DOUBLE PRECISION,
    previous_close DOUBLE PRECISION,
    volume BIGINT,
    currency TEXT,
    market_state TEXT,
    market_time BIGINT,
    updated_at BIGINT NOT NULL
);
