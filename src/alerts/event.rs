//! An alert event on the wire. The same JSON object is the socket frame
//! (`"type":"alert"`) and the webhook body; REST adds the webhook's delivery
//! status.

use crate::db::from_micros;
use crate::db::models::AlertEvent;
use crate::quote::format_ts;
use serde::Serialize;
use utoipa::ToSchema;

/// The `alert` frame and webhook body.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertMessage<'a> {
    #[serde(rename = "type")]
    #[schema(pattern = "^alert$")]
    kind: &'static str,
    event_id: i64,
    alert_id: i64,
    symbol: &'a str,
    #[schema(value_type = crate::api::alerts::ConditionDoc)]
    condition: &'a str,
    threshold: f64,
    /// The price that fired it.
    price: f64,
    /// The day's change in percent at that tick, when known.
    #[schema(required = true)]
    change_percent: Option<f64>,
    #[schema(format = DateTime)]
    fired_at: String,
    /// The round of the upstream the price came from.
    tick: i64,
}

impl<'a> AlertMessage<'a> {
    pub fn of(e: &'a AlertEvent) -> Self {
        Self {
            kind: "alert",
            event_id: e.id,
            alert_id: e.alert_id,
            symbol: &e.symbol,
            condition: &e.condition,
            threshold: e.threshold,
            price: e.price,
            change_percent: e.change_percent,
            fired_at: format_ts(from_micros(e.fired_at)),
            tick: e.tick,
        }
    }
}

/// The frame / body text of an event.
pub fn message(e: &AlertEvent) -> String {
    // Strings and numbers only (non-finite floats become null): cannot fail.
    serde_json::to_string(&AlertMessage::of(e)).expect("alert messages always serialize")
}

/// Where an event's webhook delivery stands.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = WebhookDelivery)]
pub struct WebhookOut<'a> {
    #[schema(pattern = "^(pending|delivered|failed)$")]
    pub status: &'a str,
    pub attempts: i64,
    #[schema(required = true)]
    pub last_error: Option<&'a str>,
    /// When the next attempt is due (pending only).
    #[schema(format = DateTime, required = true)]
    pub next_attempt_at: Option<String>,
}

/// An event as `GET /api/v1/alerts/events` lists it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = AlertEvent)]
pub struct EventOut<'a> {
    #[serde(flatten)]
    pub message: AlertMessage<'a>,
    /// `null` when the alert had no webhook.
    #[schema(required = true)]
    pub webhook: Option<WebhookOut<'a>>,
}

impl<'a> EventOut<'a> {
    pub fn of(e: &'a AlertEvent) -> Self {
        let webhook = e.webhook_status.as_deref().map(|status| WebhookOut {
            status,
            attempts: e.webhook_attempts,
            last_error: e.webhook_last_error.as_deref(),
            next_attempt_at: (status == crate::db::repo::webhook_status::PENDING)
                .then(|| e.webhook_next_at.map(|t| format_ts(from_micros(t))))
                .flatten(),
        });
        Self {
            message: AlertMessage::of(e),
            webhook,
        }
    }
}
