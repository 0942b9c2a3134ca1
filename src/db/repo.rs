//! Every query of the service, written once for both backends (see
//! [`with_conn!`](crate::with_conn)). Functions take a connection and are meant
//! to run inside [`Db::run`](super::Db::run) or the CLI.

use super::models::*;
use super::schema::*;
use super::{now_micros, DbConn, DbError};
use crate::{with_conn, write_tx};
use diesel::prelude::*;
use std::collections::HashMap;

type Res<T> = Result<T, DbError>;

// ---- users and tokens ------------------------------------------------------

pub fn create_user(conn: &mut DbConn, name: &str, is_admin: bool) -> Res<User> {
    let row = NewUser {
        name,
        is_admin,
        created_at: now_micros(),
    };
    Ok(with_conn!(conn, |c| diesel::insert_into(users::table)
        .values(&row)
        .returning(User::as_returning())
        .get_result(c))?)
}

pub fn find_user_by_name(conn: &mut DbConn, name: &str) -> Res<User> {
    Ok(with_conn!(conn, |c| users::table
        .filter(users::name.eq(name))
        .select(User::as_select())
        .first(c))?)
}

pub fn count_users(conn: &mut DbConn) -> Res<i64> {
    Ok(with_conn!(conn, |c| users::table.count().get_result(c))?)
}

pub fn insert_token(
    conn: &mut DbConn,
    user_id: i64,
    token_hash: &str,
    label: Option<&str>,
) -> Res<ApiToken> {
    let row = NewApiToken {
        user_id,
        token_hash,
        label,
        created_at: now_micros(),
    };
    Ok(with_conn!(conn, |c| diesel::insert_into(
        api_tokens::table
    )
    .values(&row)
    .returning(ApiToken::as_returning())
    .get_result(c))?)
}

/// The user and token id behind a token hash, unless the token is revoked.
/// Records `last_used_at`, at most once a minute per token so that reads do
/// not turn into a write per request.
pub fn authenticate(conn: &mut DbConn, token_hash: &str) -> Res<(User, i64)> {
    let (token, user): (ApiToken, User) = with_conn!(conn, |c| api_tokens::table
        .inner_join(users::table)
        .filter(api_tokens::token_hash.eq(token_hash))
        .filter(api_tokens::revoked_at.is_null())
        .select((ApiToken::as_select(), User::as_select()))
        .first(c))?;
    let now = now_micros();
    if token.last_used_at.is_none_or(|t| now - t > 60_000_000) {
        with_conn!(conn, |c| diesel::update(api_tokens::table.find(token.id))
            .set(api_tokens::last_used_at.eq(Some(now)))
            .execute(c))?;
    }
    Ok((user, token.id))
}

/// Marks a token revoked; `NotFound` if there is no such token.
pub fn revoke_token(conn: &mut DbConn, token_id: i64) -> Res<()> {
    let n = with_conn!(conn, |c| diesel::update(
        api_tokens::table
            .find(token_id)
            .filter(api_tokens::revoked_at.is_null())
    )
    .set(api_tokens::revoked_at.eq(Some(now_micros())))
    .execute(c))?;
    if n == 0 {
        // Either missing or already revoked; tell them apart for the CLI.
        let exists: i64 = with_conn!(conn, |c| api_tokens::table
            .filter(api_tokens::id.eq(token_id))
            .count()
            .get_result(c))?;
        if exists == 0 {
            return Err(DbError::NotFound);
        }
    }
    Ok(())
}

/// Which of `token_ids` are revoked or gone. Asked in chunks, so any number
/// of live sessions stays under the backends' bind-parameter limits.
pub fn revoked_among(conn: &mut DbConn, token_ids: &[i64]) -> Res<Vec<i64>> {
    let mut live = std::collections::HashSet::new();
    for chunk in token_ids.chunks(500) {
        let rows: Vec<i64> = with_conn!(conn, |c| api_tokens::table
            .filter(api_tokens::id.eq_any(chunk))
            .filter(api_tokens::revoked_at.is_null())
            .select(api_tokens::id)
            .load(c))?;
        live.extend(rows);
    }
    Ok(token_ids
        .iter()
        .copied()
        .filter(|id| !live.contains(id))
        .collect())
}

/// Refuses `rows` rows of `table`, the new ones counted in, over its cap of
/// `max`.
fn below_cap(table: &'static str, rows: i64, max: i64) -> Res<()> {
    if rows > max {
        return Err(DbError::CapReached { table, max });
    }
    Ok(())
}

// ---- watchlists --------------------------------------------------------------

pub fn list_watchlists(conn: &mut DbConn, owner_id: i64) -> Res<Vec<Watchlist>> {
    Ok(with_conn!(conn, |c| watchlists::table
        .filter(watchlists::owner_id.eq(owner_id))
        .order(watchlists::id.asc())
        .select(Watchlist::as_select())
        .load(c))?)
}

pub fn get_watchlist(conn: &mut DbConn, id: i64) -> Res<Watchlist> {
    Ok(with_conn!(conn, |c| watchlists::table
        .find(id)
        .select(Watchlist::as_select())
        .first(c))?)
}

pub fn get_items(conn: &mut DbConn, watchlist_id: i64) -> Res<Vec<Item>> {
    Ok(with_conn!(conn, |c| watchlist_items::table
        .filter(watchlist_items::watchlist_id.eq(watchlist_id))
        .order((watchlist_items::position.asc(), watchlist_items::id.asc()))
        .select(Item::as_select())
        .load(c))?)
}

/// Items of several watchlists in one query, grouped by watchlist id.
pub fn get_items_of(conn: &mut DbConn, watchlist_ids: &[i64]) -> Res<HashMap<i64, Vec<Item>>> {
    let rows: Vec<Item> = with_conn!(conn, |c| watchlist_items::table
        .filter(watchlist_items::watchlist_id.eq_any(watchlist_ids))
        .order((watchlist_items::position.asc(), watchlist_items::id.asc()))
        .select(Item::as_select())
        .load(c))?;
    let mut out: HashMap<i64, Vec<Item>> = HashMap::new();
    for item in rows {
        out.entry(item.watchlist_id).or_default().push(item);
    }
    Ok(out)
}

/// An item to add, already validated.
#[derive(Debug, Clone)]
pub struct ItemInput {
    pub symbol: String,
    pub quantity: Option<f64>,
    pub purchase_price: Option<f64>,
    pub memo: String,
}

/// A watchlist to create, already validated.
#[derive(Debug, Clone)]
pub struct WatchlistInput<'a> {
    pub owner_id: i64,
    pub name: &'a str,
    pub description: &'a str,
    pub is_public: bool,
    pub items: &'a [ItemInput],
}

/// Creates a watchlist and its initial items in one transaction, enforcing
/// the per-user watchlist limit and the per-watchlist item limit.
pub fn create_watchlist(
    conn: &mut DbConn,
    input: &WatchlistInput<'_>,
    max_watchlists: i64,
    max_items: i64,
) -> Res<Watchlist> {
    let WatchlistInput {
        owner_id,
        name,
        description,
        is_public,
        items,
    } = *input;
    below_cap("watchlist_items", items.len() as i64, max_items)?;
    write_tx!(conn, |c| {
        let count: i64 = watchlists::table
            .filter(watchlists::owner_id.eq(owner_id))
            .count()
            .get_result(c)?;
        below_cap("watchlists", count + 1, max_watchlists)?;
        let now = now_micros();
        let wl: Watchlist = diesel::insert_into(watchlists::table)
            .values(&NewWatchlist {
                owner_id,
                name,
                description,
                is_public,
                created_at: now,
                updated_at: now,
            })
            .returning(Watchlist::as_returning())
            .get_result(c)?;
        for (pos, item) in items.iter().enumerate() {
            diesel::insert_into(watchlist_items::table)
                .values(&item_row(wl.id, item, pos as i64, now))
                .execute(c)?;
        }
        Ok(wl)
    })
}

/// Fields of a watchlist to change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, AsChangeset)]
#[diesel(table_name = watchlists)]
pub struct WatchlistPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub is_public: Option<bool>,
    pub updated_at: Option<i64>,
}

pub fn update_watchlist(conn: &mut DbConn, id: i64, mut patch: WatchlistPatch) -> Res<Watchlist> {
    patch.updated_at = Some(now_micros());
    Ok(with_conn!(conn, |c| diesel::update(
        watchlists::table.find(id)
    )
    .set(&patch)
    .returning(Watchlist::as_returning())
    .get_result(c))?)
}

/// Deletes a watchlist and its items. Items are deleted explicitly as well
/// as by the foreign key, so nothing depends on the backend's FK settings.
pub fn delete_watchlist(conn: &mut DbConn, id: i64) -> Res<()> {
    write_tx!(conn, |c| {
        diesel::delete(watchlist_items::table.filter(watchlist_items::watchlist_id.eq(id)))
            .execute(c)?;
        let n = diesel::delete(watchlists::table.find(id)).execute(c)?;
        if n == 0 {
            return Err(DbError::NotFound);
        }
        Ok(())
    })
}

/// The row of `item` at `position` in watchlist `watchlist_id`.
fn item_row(watchlist_id: i64, item: &ItemInput, position: i64, added_at: i64) -> NewItem<'_> {
    NewItem {
        watchlist_id,
        symbol: &item.symbol,
        quantity: item.quantity,
        purchase_price: item.purchase_price,
        memo: &item.memo,
        position,
        added_at,
    }
}

pub fn add_item(
    conn: &mut DbConn,
    watchlist_id: i64,
    item: &ItemInput,
    max_items: i64,
) -> Res<Item> {
    write_tx!(conn, |c| {
        let count: i64 = watchlist_items::table
            .filter(watchlist_items::watchlist_id.eq(watchlist_id))
            .count()
            .get_result(c)?;
        below_cap("watchlist_items", count + 1, max_items)?;
        let next: Option<i64> = watchlist_items::table
            .filter(watchlist_items::watchlist_id.eq(watchlist_id))
            .select(diesel::dsl::max(watchlist_items::position))
            .first(c)?;
        let now = now_micros();
        let row: Item = diesel::insert_into(watchlist_items::table)
            .values(&item_row(
                watchlist_id,
                item,
                next.map_or(0, |p| p + 1),
                now,
            ))
            .returning(Item::as_returning())
            .get_result(c)?;
        diesel::update(watchlists::table.find(watchlist_id))
            .set(watchlists::updated_at.eq(now))
            .execute(c)?;
        Ok(row)
    })
}

/// Item fields to change. The outer `Option` says whether the field was
/// given; the inner one clears it (JSON `null`).
#[derive(Debug, Clone, Default)]
pub struct ItemPatch {
    pub quantity: Option<Option<f64>>,
    pub purchase_price: Option<Option<f64>>,
    pub memo: Option<String>,
}

pub fn patch_item(
    conn: &mut DbConn,
    watchlist_id: i64,
    symbol: &str,
    patch: &ItemPatch,
) -> Res<Item> {
    #[derive(AsChangeset)]
    #[diesel(table_name = watchlist_items)]
    struct Changes<'a> {
        quantity: Option<Option<f64>>,
        purchase_price: Option<Option<f64>>,
        memo: Option<&'a str>,
    }
    let changes = Changes {
        quantity: patch.quantity,
        purchase_price: patch.purchase_price,
        memo: patch.memo.as_deref(),
    };
    let target = watchlist_items::table
        .filter(watchlist_items::watchlist_id.eq(watchlist_id))
        .filter(watchlist_items::symbol.eq(symbol));
    write_tx!(conn, |c| {
        let item: Item = if changes.quantity.is_none()
            && changes.purchase_price.is_none()
            && changes.memo.is_none()
        {
            // An empty patch is valid and changes nothing; diesel cannot
            // build an UPDATE without columns.
            target.select(Item::as_select()).first(c)?
        } else {
            diesel::update(target)
                .set(&changes)
                .returning(Item::as_returning())
                .get_result(c)?
        };
        diesel::update(watchlists::table.find(watchlist_id))
            .set(watchlists::updated_at.eq(now_micros()))
            .execute(c)?;
        Ok::<_, DbError>(item)
    })
}

pub fn delete_item(conn: &mut DbConn, watchlist_id: i64, symbol: &str) -> Res<()> {
    write_tx!(conn, |c| {
        let n = diesel::delete(
            watchlist_items::table
                .filter(watchlist_items::watchlist_id.eq(watchlist_id))
                .filter(watchlist_items::symbol.eq(symbol)),
        )
        .execute(c)?;
        if n == 0 {
            return Err(DbError::NotFound);
        }
        diesel::update(watchlists::table.find(watchlist_id))
            .set(watchlists::updated_at.eq(now_micros()))
            .execute(c)?;
        Ok(())
    })
}

// ---- latest quotes -----------------------------------------------------------

pub fn load_latest_quotes(conn: &mut DbConn) -> Res<Vec<StoredQuote>> {
    Ok(with_conn!(conn, |c| latest_quotes::table
        .select(StoredQuote::as_select())
        .load(c))?)
}

pub fn get_latest_quotes(conn: &mut DbConn, symbols: &[String]) -> Res<Vec<StoredQuote>> {
    Ok(with_conn!(conn, |c| latest_quotes::table
        .filter(latest_quotes::symbol.eq_any(symbols))
        .select(StoredQuote::as_select())
        .load(c))?)
}

/// Inserts or replaces the stored quotes, in one transaction.
pub fn upsert_latest_quotes(conn: &mut DbConn, rows: &[StoredQuote]) -> Res<()> {
    write_tx!(conn, |c| {
        for row in rows {
            diesel::insert_into(latest_quotes::table)
                .values(row)
                .on_conflict(latest_quotes::symbol)
                .do_update()
                .set(row)
                .execute(c)?;
        }
        Ok::<_, DbError>(())
    })
}

// ---- price alerts ------------------------------------------------------------

/// The stored names of a webhook delivery's states.
pub mod webhook_status {
    pub const PENDING: &str = "pending";
    pub const DELIVERED: &str = "delivered";
    pub const FAILED: &str = "failed";
}

/// Creates an alert, enforcing the per-user limit in the same transaction.
pub fn create_alert(conn: &mut DbConn, row: &NewAlert<'_>, max_alerts: i64) -> Res<Alert> {
    write_tx!(conn, |c| {
        let count: i64 = alerts::table
            .filter(alerts::user_id.eq(row.user_id))
            .count()
            .get_result(c)?;
        below_cap("alerts", count + 1, max_alerts)?;
        Ok(diesel::insert_into(alerts::table)
            .values(row)
            .returning(Alert::as_returning())
            .get_result(c)?)
    })
}

pub fn list_alerts(conn: &mut DbConn, user_id: i64) -> Res<Vec<Alert>> {
    Ok(with_conn!(conn, |c| alerts::table
        .filter(alerts::user_id.eq(user_id))
        .order(alerts::id.asc())
        .select(Alert::as_select())
        .load(c))?)
}

pub fn get_alert(conn: &mut DbConn, id: i64) -> Res<Alert> {
    Ok(with_conn!(conn, |c| alerts::table
        .find(id)
        .select(Alert::as_select())
        .first(c))?)
}

/// Every enabled alert: what the evaluator holds in memory.
pub fn enabled_alerts(conn: &mut DbConn) -> Res<Vec<Alert>> {
    Ok(with_conn!(conn, |c| alerts::table
        .filter(alerts::enabled.eq(true))
        .order(alerts::id.asc())
        .select(Alert::as_select())
        .load(c))?)
}

/// Fields of an alert to change (`None`: as it is); `webhook_url:
/// Some(None)` clears the URL.
#[derive(Debug, Clone, Default, AsChangeset)]
#[diesel(table_name = alerts)]
pub struct AlertChanges {
    pub threshold: Option<f64>,
    pub enabled: Option<bool>,
    pub note: Option<String>,
    pub webhook_url: Option<Option<String>>,
    pub state: Option<String>,
}

/// Applies `changes` if the alert is still at `version` (else `None`: it
/// changed meanwhile, read it again); the version grows by one.
pub fn update_alert_if(
    conn: &mut DbConn,
    id: i64,
    version: i64,
    changes: &AlertChanges,
) -> Res<Option<Alert>> {
    let target = alerts::table
        .filter(alerts::id.eq(id))
        .filter(alerts::version.eq(version));
    let bump = (
        alerts::version.eq(version + 1),
        alerts::updated_at.eq(now_micros()),
    );
    Ok(with_conn!(conn, |c| diesel::update(target)
        .set((changes, bump))
        .returning(Alert::as_returning())
        .get_result(c)
        .optional())?)
}

/// Deletes an alert; its events stay (history, and webhooks still owed).
pub fn delete_alert(conn: &mut DbConn, id: i64) -> Res<()> {
    let n = with_conn!(conn, |c| diesel::delete(alerts::table.find(id)).execute(c))?;
    if n == 0 {
        return Err(DbError::NotFound);
    }
    Ok(())
}

/// Serializes the writers of `alert_events` until the transaction ends, so
/// that ids become visible in the order they were taken and a reader paging
/// with `after=` never skips one committed late. SQLite's write transaction
/// already does; PostgreSQL's sequences do not.
trait EventOrder {
    fn lock_event_order(&mut self) -> QueryResult<()>;
}

impl EventOrder for diesel::SqliteConnection {
    fn lock_event_order(&mut self) -> QueryResult<()> {
        Ok(())
    }
}

impl EventOrder for diesel::PgConnection {
    fn lock_event_order(&mut self) -> QueryResult<()> {
        /// Any constant; only this lock uses it.
        const ALERT_EVENTS_LOCK: i64 = 0x7163_6576;
        diesel::sql_query(format!("SELECT pg_advisory_xact_lock({ALERT_EVENTS_LOCK})"))
            .execute(self)
            .map(|_| ())
    }
}

/// An alert firing: the rule's new state and the event, written together.
#[derive(Debug, Clone)]
pub struct Firing<'a> {
    /// The version the evaluator saw; the firing is stored only if the
    /// alert is still at it.
    pub version: i64,
    /// The rule's state after firing.
    pub state: &'a str,
    /// Whether the rule stays enabled (`once` rules do not).
    pub enabled: bool,
    pub event: NewAlertEvent<'a>,
}

/// Stores a firing in one transaction: the alert's state change,
/// conditional on the version the evaluator saw, and the event. `None`
/// when the alert changed meanwhile (edited, deleted, or fired by another
/// evaluator): nothing is stored then.
pub fn fire_alert(conn: &mut DbConn, firing: &Firing<'_>) -> Res<Option<AlertEvent>> {
    let ev = &firing.event;
    write_tx!(conn, |c| {
        c.lock_event_order()?;
        let n = diesel::update(
            alerts::table
                .filter(alerts::id.eq(ev.alert_id))
                .filter(alerts::version.eq(firing.version)),
        )
        .set((
            alerts::state.eq(firing.state),
            alerts::enabled.eq(firing.enabled),
            alerts::last_fired_at.eq(Some(ev.fired_at)),
            alerts::version.eq(firing.version + 1),
            alerts::updated_at.eq(now_micros()),
        ))
        .execute(c)?;
        if n == 0 {
            return Ok(None);
        }
        let stored: AlertEvent = diesel::insert_into(alert_events::table)
            .values(ev)
            .returning(AlertEvent::as_returning())
            .get_result(c)?;
        Ok::<_, DbError>(Some(stored))
    })
}

/// Sets a fired alert's state back to `state` (re-armed) if it is still at
/// `version`; false when it changed meanwhile.
pub fn set_alert_state_if(conn: &mut DbConn, id: i64, version: i64, state: &str) -> Res<bool> {
    let n = with_conn!(conn, |c| diesel::update(
        alerts::table
            .filter(alerts::id.eq(id))
            .filter(alerts::version.eq(version))
    )
    .set((
        alerts::state.eq(state),
        alerts::version.eq(version + 1),
        alerts::updated_at.eq(now_micros()),
    ))
    .execute(c))?;
    Ok(n == 1)
}

/// A user's events with ids above `after`, oldest first, at most `limit`.
pub fn list_events(
    conn: &mut DbConn,
    user_id: i64,
    after: i64,
    limit: i64,
) -> Res<Vec<AlertEvent>> {
    Ok(with_conn!(conn, |c| alert_events::table
        .filter(alert_events::user_id.eq(user_id))
        .filter(alert_events::id.gt(after))
        .order(alert_events::id.asc())
        .limit(limit)
        .select(AlertEvent::as_select())
        .load(c))?)
}

/// Claims up to `limit` pending deliveries due at `now`: each is moved to
/// `claim_until`, conditional on being unchanged, so that of several
/// instances claiming at once only one gets it. A claimed delivery that is
/// never reported (the process died) is due again at `claim_until`.
pub fn claim_deliveries(
    conn: &mut DbConn,
    now: i64,
    claim_until: i64,
    limit: i64,
) -> Res<Vec<AlertEvent>> {
    use webhook_status::PENDING;
    write_tx!(conn, |c| {
        let due: Vec<(i64, Option<i64>)> = alert_events::table
            .filter(alert_events::webhook_status.eq(PENDING))
            .filter(alert_events::webhook_next_at.le(now))
            .order((alert_events::webhook_next_at.asc(), alert_events::id.asc()))
            .limit(limit)
            .select((alert_events::id, alert_events::webhook_next_at))
            .load(c)?;
        let mut claimed = Vec::with_capacity(due.len());
        for (id, at) in due {
            let n = diesel::update(
                alert_events::table
                    .filter(alert_events::id.eq(id))
                    .filter(alert_events::webhook_status.eq(PENDING))
                    .filter(alert_events::webhook_next_at.eq(at)),
            )
            .set(alert_events::webhook_next_at.eq(Some(claim_until)))
            .execute(c)?;
            if n == 1 {
                claimed.push(id);
            }
        }
        Ok::<_, DbError>(
            alert_events::table
                .filter(alert_events::id.eq_any(&claimed))
                .order(alert_events::id.asc())
                .select(AlertEvent::as_select())
                .load(c)?,
        )
    })
}

/// Gives back claims (`(event id, claim_until)`) whose attempts were
/// abandoned (a shutdown), so they are due at once rather than when the
/// claim would lapse. A claim already replaced by an attempt's record is
/// left alone.
pub fn release_claims(conn: &mut DbConn, claims: &[(i64, i64)], now: i64) -> Res<()> {
    write_tx!(conn, |c| {
        for (id, until) in claims {
            diesel::update(
                alert_events::table
                    .filter(alert_events::id.eq(id))
                    .filter(alert_events::webhook_status.eq(webhook_status::PENDING))
                    .filter(alert_events::webhook_next_at.eq(until)),
            )
            .set(alert_events::webhook_next_at.eq(Some(now)))
            .execute(c)?;
        }
        Ok::<_, DbError>(())
    })
}

/// When the next pending delivery is due (claimed ones included).
pub fn next_delivery_at(conn: &mut DbConn) -> Res<Option<i64>> {
    Ok(with_conn!(conn, |c| alert_events::table
        .filter(alert_events::webhook_status.eq(webhook_status::PENDING))
        .select(diesel::dsl::min(alert_events::webhook_next_at))
        .first(c))?)
}

/// The outcome of one delivery attempt.
#[derive(Debug, Clone)]
pub struct Attempted<'a> {
    pub event_id: i64,
    /// One of [`webhook_status`].
    pub status: &'a str,
    /// When to try again (pending only).
    pub next_at: Option<i64>,
    pub error: Option<&'a str>,
}

/// Records an attempt: one more attempt, the new status and error.
pub fn record_attempt(conn: &mut DbConn, a: &Attempted<'_>) -> Res<()> {
    with_conn!(conn, |c| diesel::update(
        alert_events::table.find(a.event_id)
    )
    .set((
        alert_events::webhook_attempts.eq(alert_events::webhook_attempts + 1),
        alert_events::webhook_status.eq(Some(a.status)),
        alert_events::webhook_next_at.eq(a.next_at),
        alert_events::webhook_last_error.eq(a.error),
    ))
    .execute(c))?;
    Ok(())
}

/// The user's webhook secret; `candidate` becomes it if the user has none
/// yet (the first caller to store one wins).
pub fn webhook_secret(conn: &mut DbConn, user_id: i64, candidate: &str) -> Res<String> {
    let current: Option<String> = with_conn!(conn, |c| users::table
        .find(user_id)
        .select(users::webhook_secret)
        .first(c))?;
    if let Some(s) = current {
        return Ok(s);
    }
    with_conn!(conn, |c| diesel::update(
        users::table
            .find(user_id)
            .filter(users::webhook_secret.is_null())
    )
    .set(users::webhook_secret.eq(Some(candidate)))
    .execute(c))?;
    let stored: Option<String> = with_conn!(conn, |c| users::table
        .find(user_id)
        .select(users::webhook_secret)
        .first(c))?;
    stored.ok_or(DbError::NotFound)
}

/// Replaces the user's webhook secret.
pub fn set_webhook_secret(conn: &mut DbConn, user_id: i64, secret: &str) -> Res<()> {
    let n = with_conn!(conn, |c| diesel::update(users::table.find(user_id))
        .set(users::webhook_secret.eq(Some(secret)))
        .execute(c))?;
    if n == 0 {
        return Err(DbError::NotFound);
    }
    Ok(())
}
