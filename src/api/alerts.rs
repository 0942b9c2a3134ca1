//! Price alert CRUD and the event list: `/api/v1/alerts`,
//! `/api/v1/alerts/{id}`, `/api/v1/alerts/events?after=`. Alerts are their
//! owner's only (403 for someone else's, 404 for none). Every change is
//! passed to the evaluator ([`crate::alerts::Alerts`]) once stored.

use super::ApiError;
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
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Deserializer, Serialize};

/// Most events one `GET /api/v1/alerts/events` returns.
pub const MAX_EVENTS_PAGE: i64 = 500;
/// Events returned when `limit` is not given.
pub const DEFAULT_EVENTS_PAGE: i64 = 100;
/// Tries of a change that keeps losing to concurrent ones (the evaluator
/// firing the alert between the read and the write).
const PATCH_TRIES: usize = 5;

#[derive(Serialize)]
pub struct AlertOut {
    pub id: i64,
    pub symbol: String,
    pub condition: String,
    pub threshold: f64,
    pub repeat: String,
    pub rearm_margin_pct: f64,
    pub cooldown_s: i64,
    pub webhook_url: Option<String>,
    pub note: String,
    pub enabled: bool,
    pub state: String,
    pub last_fired_at: Option<String>,
    pub created_at: String,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateAlert {
    symbol: String,
    condition: String,
    threshold: f64,
    repeat: Option<String>,
    rearm_margin_pct: Option<f64>,
    cooldown_s: Option<i64>,
    webhook_url: Option<String>,
    note: Option<String>,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchAlert {
    #[serde(default, deserialize_with = "required")]
    threshold: Option<f64>,
    #[serde(default, deserialize_with = "required")]
    enabled: Option<bool>,
    #[serde(default, deserialize_with = "required")]
    note: Option<String>,
    /// `null` removes the webhook.
    #[serde(default, deserialize_with = "nullable")]
    webhook_url: Option<Option<String>>,
}

/// `after` and `limit` of the event list, as given (checked by hand so that
/// a bad value answers 422 like any other field).
#[derive(Deserialize)]
pub struct EventsQuery {
    after: Option<String>,
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

pub async fn list(caller: Caller, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let me = caller.user.id;
    let alerts = state.db.run(move |c| repo::list_alerts(c, me)).await?;
    Ok(HttpResponse::Ok().json(alerts.into_iter().map(AlertOut::from).collect::<Vec<_>>()))
}

pub async fn create(
    caller: Caller,
    state: web::Data<AppState>,
    body: web::Json<CreateAlert>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
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
pub async fn update(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<i64>,
    body: web::Json<PatchAlert>,
) -> Result<HttpResponse, ApiError> {
    let (id, me) = (path.into_inner(), caller.user.id);
    let body = body.into_inner();
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
