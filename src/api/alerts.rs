//! Price alert CRUD and the event list: `/api/v1/alerts`,
//! `/api/v1/alerts/{id}`, `/api/v1/alerts/events?after=`. Alerts are their
//! owner's only (403 for someone else's, 404 for none). Every change is
//! passed to the evaluator ([`crate::alerts::Alerts`]) once stored.

use super::json::Object;
use super::openapi::{Authenticated, JsonBody, OwnsAlert};
use super::{ApiError, ErrorBody};
use crate::access;
use crate::alerts::address::{self, WebhookUrl};
use crate::alerts::event::EventOut;
use crate::alerts::rule::{AlertState, Condition, Cooldown, Note, RearmMargin, Repeat, Threshold};
use crate::auth::Caller;
use crate::db::models::{Alert, NewAlert};
use crate::db::repo::{self, AlertChanges};
use crate::db::{from_micros, now_micros, DbError};
use crate::domain::{DomainError, Symbol};
use crate::quote::format_ts;
use crate::state::AppState;
use actix_web::{delete, get, patch, post, web, HttpResponse};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Most events one `GET /api/v1/alerts/events` returns.
pub const MAX_EVENTS_PAGE: i64 = 500;
/// Events returned when `limit` is not given.
pub const DEFAULT_EVENTS_PAGE: i64 = 100;
/// Tries of a change that keeps losing to concurrent ones (the evaluator
/// firing the alert between the read and the write).
const PATCH_TRIES: usize = 5;

/// An alert as the API shows it.
#[derive(Serialize, ToSchema)]
#[schema(as = Alert)]
pub struct AlertOut {
    pub id: i64,
    pub symbol: String,
    #[schema(value_type = ConditionDoc)]
    pub condition: String,
    pub threshold: f64,
    #[schema(value_type = RepeatDoc)]
    pub repeat: String,
    pub rearm_margin_pct: f64,
    pub cooldown_s: i64,
    #[schema(required = true)]
    pub webhook_url: Option<String>,
    pub note: String,
    pub enabled: bool,
    /// `armed`: it may fire; `fired`: a `rearm` alert waiting for the price
    /// to go back past its margin.
    #[schema(pattern = "^(armed|fired)$")]
    pub state: String,
    #[schema(format = DateTime, required = true)]
    pub last_fired_at: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

impl From<Alert> for AlertOut {
    fn from(a: Alert) -> Self {
        Self {
            id: a.id,
            symbol: a.symbol,
            condition: a.condition,
            threshold: a.threshold,
            repeat: a.repeat_mode,
            rearm_margin_pct: a.rearm_margin_pct,
            cooldown_s: a.cooldown_s,
            webhook_url: a.webhook_url,
            note: a.note,
            enabled: a.enabled,
            state: a.state,
            last_fired_at: a.last_fired_at.map(|t| format_ts(from_micros(t))),
            created_at: format_ts(from_micros(a.created_at)),
            updated_at: format_ts(from_micros(a.updated_at)),
        }
    }
}

/// A new alert.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewAlert)]
pub struct CreateAlert {
    #[schema(value_type = Symbol)]
    symbol: String,
    #[schema(value_type = ConditionDoc)]
    condition: String,
    /// A price above 0 (at most 1e15) for `above`, `below`, `cross_above`
    /// and `cross_below`; a change in percent within ±1e6 for
    /// `change_pct_above` and `change_pct_below`.
    #[schema(minimum = -1e6, maximum = 1e15)]
    threshold: f64,
    /// Default `once`.
    #[schema(value_type = Option<RepeatDoc>)]
    repeat: Option<String>,
    /// How far back past the threshold (percent of it, or percentage
    /// points) a fired `rearm` alert's value must go before it may fire
    /// again. Default 0.5.
    #[schema(minimum = 0.0, maximum = 100.0)]
    rearm_margin_pct: Option<f64>,
    /// Least seconds between two firings of a `rearm` alert. Default 0.
    #[serde(default, deserialize_with = "super::json::optional_integer")]
    #[schema(minimum = 0, maximum = 2592000)]
    cooldown_s: Option<i64>,
    /// Where each firing is POSTed, signed; `http(s)://`, and not to a
    /// loopback, private, link-local or multicast address unless the server
    /// allows it (`alerts.allow_private_webhooks`).
    #[schema(pattern = "^[\\s]*[hH][tT][tT][pP][sS]?://", max_length = 2048)]
    webhook_url: Option<String>,
    #[schema(max_length = 500)]
    note: Option<String>,
}

/// When an alert fires (SPEC, "Price alerts").
#[derive(ToSchema)]
#[schema(as = Condition)]
#[allow(dead_code)] // Only described: the handlers read the string.
pub enum ConditionDoc {
    #[schema(rename = "above")]
    Above,
    #[schema(rename = "below")]
    Below,
    #[schema(rename = "cross_above")]
    CrossAbove,
    #[schema(rename = "cross_below")]
    CrossBelow,
    #[schema(rename = "change_pct_above")]
    ChangePctAbove,
    #[schema(rename = "change_pct_below")]
    ChangePctBelow,
}

/// `once`: disabled after firing; `rearm`: fires again after the value has
/// gone back past the threshold by the margin, and not within the cooldown.
#[derive(ToSchema)]
#[schema(as = Repeat)]
#[allow(dead_code)] // Only described: the handlers read the string.
pub enum RepeatDoc {
    #[schema(rename = "once")]
    Once,
    #[schema(rename = "rearm")]
    Rearm,
}

/// A present field must have a value (`null` is refused); an absent one
/// is `None`.
fn required<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// `Some(None)` for an explicit `null`, `None` for an absent field.
fn nullable<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// Changes to an alert; absent fields stay as they are.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = AlertChanges)]
pub struct PatchAlert {
    /// As on creation, for the alert's condition. A new threshold arms the
    /// alert afresh.
    #[serde(default, deserialize_with = "required")]
    #[schema(value_type = f64, required = false, minimum = -1e6, maximum = 1e15)]
    threshold: Option<f64>,
    /// Enabling a disabled alert arms it afresh.
    #[serde(default, deserialize_with = "required")]
    #[schema(value_type = bool, required = false)]
    enabled: Option<bool>,
    #[serde(default, deserialize_with = "required")]
    #[schema(value_type = String, required = false, max_length = 500)]
    note: Option<String>,
    /// `null` removes the webhook.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, required = false,
        pattern = "^[\\s]*[hH][tT][tT][pP][sS]?://", max_length = 2048)]
    webhook_url: Option<Option<String>>,
}

/// `after` and `limit` of the event list, as given (checked by hand so that
/// a bad value answers 422 like any other field).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Events with ids above this (default 0).
    #[param(value_type = Option<i64>, minimum = 0)]
    after: Option<String>,
    /// At most this many (default 100).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 500)]
    limit: Option<String>,
}

/// A webhook URL that passes the syntax and the address rules.
async fn webhook_url(state: &AppState, raw: &str) -> Result<WebhookUrl, ApiError> {
    let url = WebhookUrl::parse(raw)?;
    address::check(&url, state.settings.alerts.allow_private_webhooks)
        .await
        .map_err(|e| ApiError::from(e.into_domain()))?;
    Ok(url)
}

/// An alert-level failure in words a client understands.
fn alert_error(e: DbError) -> ApiError {
    match e {
        DbError::NotFound => ApiError::NotFound("no such alert".into()),
        DbError::CapReached { max, .. } => {
            ApiError::LimitExceeded(format!("a user has at most {max} alerts"))
        }
        other => other.into(),
    }
}

/// Loads an alert the caller owns (inside `Db::run`).
fn owned(c: &mut crate::db::DbConn, id: i64, me: i64) -> Result<Alert, ApiError> {
    let alert = repo::get_alert(c, id).map_err(alert_error)?;
    access::check_alert_owner(alert.user_id, me)?;
    Ok(alert)
}

/// The caller's alerts, oldest first.
#[utoipa::path(
    tag = "alerts",
    operation_id = "list_alerts",
    security(("bearer" = [])),
    responses((status = 200, description = "The alerts.", body = [AlertOut]), Authenticated),
)]
#[get("/alerts")]
pub async fn list(caller: Caller, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let me = caller.user.id;
    let alerts = state.db.run(move |c| repo::list_alerts(c, me)).await?;
    Ok(HttpResponse::Ok().json(alerts.into_iter().map(AlertOut::from).collect::<Vec<_>>()))
}

/// Creates an alert, armed and enabled.
#[utoipa::path(
    tag = "alerts",
    operation_id = "create_alert",
    security(("bearer" = [])),
    request_body = CreateAlert,
    responses(
        (status = 201, description = "The alert.", body = AlertOut),
        (status = 422, description = "A field is invalid (`invalid_value`), the webhook URL \
            breaks the address rules (`invalid_value`), or the caller has \
            `limits.max_alerts_per_user` alerts (`limit_exceeded`).", body = ErrorBody),
        JsonBody,
        Authenticated,
    ),
)]
#[post("/alerts")]
pub async fn create(
    caller: Caller,
    state: web::Data<AppState>,
    body: web::Json<Object<CreateAlert>>,
) -> Result<HttpResponse, ApiError> {
    let Object(body) = body.into_inner();
    let symbol = Symbol::parse(&body.symbol)?;
    let condition = Condition::parse(&body.condition)?;
    let threshold = Threshold::parse(condition, body.threshold)?;
    let repeat = body
        .repeat
        .as_deref()
        .map(Repeat::parse)
        .transpose()?
        .unwrap_or(Repeat::Once);
    let margin = RearmMargin::parse(body.rearm_margin_pct.unwrap_or(RearmMargin::DEFAULT))?;
    let cooldown = Cooldown::parse(body.cooldown_s.unwrap_or(0))?;
    let note = Note::parse("note", body.note.as_deref().unwrap_or(""))?.into_inner();
    let url = match body.webhook_url.as_deref() {
        Some(raw) => Some(webhook_url(&state, raw).await?),
        None => None,
    };
    let me = caller.user.id;
    let max = state.settings.limits.max_alerts_per_user;
    let alert = state
        .db
        .run(move |c| {
            let now = now_micros();
            let row = NewAlert {
                user_id: me,
                symbol: symbol.as_str(),
                condition: condition.as_str(),
                threshold: threshold.get(),
                repeat_mode: repeat.as_str(),
                rearm_margin_pct: margin.get(),
                cooldown_s: cooldown.get(),
                webhook_url: url.as_ref().map(WebhookUrl::as_str),
                note: &note,
                enabled: true,
                state: AlertState::Armed.as_str(),
                created_at: now,
                updated_at: now,
            };
            repo::create_alert(c, &row, max).map_err(alert_error)
        })
        .await?;
    state.alerts.saved(alert.clone());
    Ok(HttpResponse::Created().json(AlertOut::from(alert)))
}

/// One of the caller's alerts.
#[utoipa::path(
    tag = "alerts",
    operation_id = "get_alert",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The alert's id.")),
    responses(
        (status = 200, description = "The alert.", body = AlertOut),
        OwnsAlert,
        Authenticated,
    ),
)]
#[get("/alerts/{id}")]
pub async fn get(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let (id, me) = (path.into_inner(), caller.user.id);
    let alert = state.db.run(move |c| owned(c, id, me)).await?;
    Ok(HttpResponse::Ok().json(AlertOut::from(alert)))
}

/// Changes `threshold`, `enabled`, `note`, `webhook_url`. A new threshold,
/// or enabling a disabled alert, arms it afresh.
#[utoipa::path(
    tag = "alerts",
    operation_id = "update_alert",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The alert's id.")),
    request_body = PatchAlert,
    responses(
        (status = 200, description = "The alert as it is now.", body = AlertOut),
        OwnsAlert,
        (status = 422, description = "A field is invalid, or the webhook URL breaks the \
            address rules (`invalid_value`).", body = ErrorBody),
        JsonBody,
        Authenticated,
    ),
)]
#[patch("/alerts/{id}")]
pub async fn update(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<i64>,
    body: web::Json<Object<PatchAlert>>,
) -> Result<HttpResponse, ApiError> {
    let (id, me) = (path.into_inner(), caller.user.id);
    let Object(body) = body.into_inner();
    let note = body
        .note
        .as_deref()
        .map(|n| Note::parse("note", n))
        .transpose()?
        .map(|n| n.into_inner());
    let url = match &body.webhook_url {
        Some(Some(raw)) => Some(Some(webhook_url(&state, raw).await?.as_str().to_owned())),
        Some(None) => Some(None),
        None => None,
    };
    let (threshold, enabled) = (body.threshold, body.enabled);
    let alert = state
        .db
        .run(move |c| {
            for _ in 0..PATCH_TRIES {
                let current = owned(c, id, me)?;
                let condition = Condition::parse(&current.condition).map_err(|_| {
                    ApiError::Internal(format!("alert {id} has an unknown condition"))
                })?;
                let threshold = threshold
                    .map(|t| Threshold::parse(condition, t))
                    .transpose()?
                    .map(Threshold::get);
                let rearm = threshold.is_some_and(|t| t != current.threshold)
                    || (enabled == Some(true) && !current.enabled);
                let changes = AlertChanges {
                    threshold,
                    enabled,
                    note: note.clone(),
                    webhook_url: url.clone(),
                    state: rearm.then(|| AlertState::Armed.as_str().to_owned()),
                };
                if let Some(a) =
                    repo::update_alert_if(c, id, current.version, &changes).map_err(alert_error)?
                {
                    return Ok(a);
                }
            }
            Err(ApiError::Unavailable(
                "the alert keeps changing; try again".into(),
            ))
        })
        .await?;
    state.alerts.saved(alert.clone());
    Ok(HttpResponse::Ok().json(AlertOut::from(alert)))
}

/// Deletes one of the caller's alerts; its events stay.
#[utoipa::path(
    tag = "alerts",
    operation_id = "delete_alert",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The alert's id.")),
    responses(
        (status = 204, description = "Deleted."),
        OwnsAlert,
        Authenticated,
    ),
)]
#[delete("/alerts/{id}")]
pub async fn delete(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let (id, me) = (path.into_inner(), caller.user.id);
    state
        .db
        .run(move |c| {
            owned(c, id, me)?;
            repo::delete_alert(c, id).map_err(alert_error)
        })
        .await?;
    state.alerts.deleted(id);
    Ok(HttpResponse::NoContent().finish())
}

/// An integer query parameter within `range`, or 422 naming it.
fn query_int(
    field: &'static str,
    raw: Option<&str>,
    default: i64,
    range: std::ops::RangeInclusive<i64>,
) -> Result<i64, ApiError> {
    let Some(raw) = raw else {
        return Ok(default);
    };
    raw.parse::<i64>()
        .ok()
        .filter(|v| range.contains(v))
        .ok_or_else(|| {
            DomainError {
                field,
                message: format!(
                    "must be a whole number from {} to {}",
                    range.start(),
                    range.end()
                ),
            }
            .into()
        })
}

/// The caller's events with ids above `after` (default 0), oldest first, at
/// most `limit` (default 100, at most 500). A client pages by passing the
/// last `event_id` it has as `after`.
#[utoipa::path(
    tag = "alerts",
    operation_id = "list_alert_events",
    security(("bearer" = [])),
    params(EventsQuery),
    responses(
        (status = 200, description = "The events, oldest first.", body = [EventOut]),
        (status = 400, description = "The query string does not parse, e.g. a parameter \
            given twice (`bad_request`).", body = ErrorBody),
        (status = 422, description = "`after` or `limit` is not a whole number in its range \
            (`invalid_value`).", body = ErrorBody),
        Authenticated,
    ),
)]
#[get("/alerts/events")]
pub async fn events(
    caller: Caller,
    state: web::Data<AppState>,
    query: web::Query<EventsQuery>,
) -> Result<HttpResponse, ApiError> {
    let after = query_int("after", query.after.as_deref(), 0, 0..=i64::MAX)?;
    let limit = query_int(
        "limit",
        query.limit.as_deref(),
        DEFAULT_EVENTS_PAGE,
        1..=MAX_EVENTS_PAGE,
    )?;
    let me = caller.user.id;
    let events = state
        .db
        .run(move |c| repo::list_events(c, me, after, limit))
        .await?;
    Ok(HttpResponse::Ok().json(events.iter().map(EventOut::of).collect::<Vec<_>>()))
}
