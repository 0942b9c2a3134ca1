// @generated automatically by Diesel CLI.
// The portable schema both backends share: `scripts/schema.sh write` regenerates it
// from the migrations; see diesel.toml.

diesel::table! {
    alert_events (id) {
        id -> BigInt,
        alert_id -> BigInt,
        user_id -> BigInt,
        symbol -> Text,
        condition -> Text,
        threshold -> Double,
        price -> Double,
        change_percent -> Nullable<Double>,
        fired_at -> BigInt,
        tick -> BigInt,
        webhook_url -> Nullable<Text>,
        webhook_status -> Nullable<Text>,
        webhook_attempts -> BigInt,
        webhook_next_at -> Nullable<BigInt>,
        webhook_last_error -> Nullable<Text>,
    }
}

diesel::table! {
    alerts (id) {
        id -> BigInt,
        user_id -> BigInt,
        symbol -> Text,
        condition -> Text,
        threshold -> Double,
        repeat_mode -> Text,
        rearm_margin_pct -> Double,
        cooldown_s -> BigInt,
        webhook_url -> Nullable<Text>,
        note -> Text,
        enabled -> Bool,
        state -> Text,
        version -> BigInt,
        last_fired_at -> Nullable<BigInt>,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    api_tokens (id) {
        id -> BigInt,
        user_id -> BigInt,
        token_hash -> Text,
        label -> Nullable<Text>,
        created_at -> BigInt,
        last_used_at -> Nullable<BigInt>,
        revoked_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    latest_quotes (symbol) {
        symbol -> Text,
        is_unknown -> Bool,
        name -> Nullable<Text>,
        price -> Nullable<Double>,
        previous_close -> Nullable<Double>,
        volume -> Nullable<BigInt>,
        currency -> Nullable<Text>,
        market_state -> Nullable<Text>,
        market_time -> Nullable<BigInt>,
        updated_at -> BigInt,
    }
}

diesel::table! {
    users (id) {
        id -> BigInt,
        name -> Text,
        is_admin -> Bool,
        created_at -> BigInt,
        webhook_secret -> Nullable<Text>,
    }
}

diesel::table! {
    watchlist_items (id) {
        id -> BigInt,
        watchlist_id -> BigInt,
        symbol -> Text,
        quantity -> Nullable<Double>,
        purchase_price -> Nullable<Double>,
        memo -> Text,
        position -> BigInt,
        added_at -> BigInt,
    }
}

diesel::table! {
    watchlists (id) {
        id -> BigInt,
        owner_id -> BigInt,
        name -> Text,
        description -> Text,
        is_public -> Bool,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::joinable!(alert_events -> users (user_id));
diesel::joinable!(alerts -> users (user_id));
diesel::joinable!(api_tokens -> users (user_id));
diesel::joinable!(watchlist_items -> watchlists (watchlist_id));
diesel::joinable!(watchlists -> users (owner_id));

diesel::allow_tables_to_appear_in_same_query!(
    alert_events,
    alerts,
    api_tokens,
    latest_quotes,
    users,
    watchlist_items,
    watchlists,
);
