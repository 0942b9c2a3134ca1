//! Webhook delivery from the outbox: the events whose `webhook_status` is
//! `pending`, in the database, so pending deliveries survive a restart.
//!
//! The [`Deliverer`] claims due deliveries ([`repo::claim_deliveries`]: a
//! conditional update, so of several instances only one takes each), at
//! most `alerts.webhook_max_in_flight` at once, and makes one attempt each:
//! the URL's addresses are checked again ([`address::check`], and the
//! client's [`CheckedResolver`]), the event is POSTed as JSON with
//! `X-Quotecast-Signature: sha256=<hex HMAC-SHA256 of the body>` keyed with
//! the owner's webhook secret, within `alerts.webhook_timeout_ms`, redirects
//! not followed. A 2xx answer delivers it; anything else is retried after
//! `alerts.webhook_backoff_ms` doubled per attempt (capped at an hour, plus
//! up to 10% jitter) until `alerts.webhook_max_attempts`, then it is
//! `failed`. Delivery is at least once: an attempt cut short by a crash or
//! a shutdown is made again once its claim lapses (receivers can tell a
//! repeat by `event_id`).
//!
//! Lifecycle: spawned by [`super::start`] on the realtime arbiter; ends when
//! the shutdown signal fires, dropping attempts in flight and giving their
//! claims back, so the next start (of any instance) makes them at once.

use super::address::{self, CheckedResolver, WebhookUrl};
use super::{event, TaskGuard};
use crate::config::AlertSettings;
use crate::db::models::AlertEvent;
use crate::db::repo::{self, webhook_status, Attempted};
use crate::db::{now_micros, Db, DbError};
use crate::metrics::Metrics;
use hmac::{Hmac, Mac};
use rand::{Rng, RngCore};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

/// The signature header.
pub const SIGNATURE_HEADER: &str = "X-Quotecast-Signature";
/// Longest wait between two looks at the outbox, for deliveries stored by
/// other instances or whose claim lapsed.
const IDLE_RECHECK: Duration = Duration::from_secs(2);
/// Longest wait before a retry.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// How long a claim outlives the attempt's timeout.
const CLAIM_MARGIN: Duration = Duration::from_secs(30);

/// A new random webhook secret (256 bits).
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("whsec_{}", hex::encode(bytes))
}

/// The signature header's value for `body`: `sha256=` and the hex
/// HMAC-SHA256 of the body keyed with the secret's UTF-8 bytes.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any size");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The wait before the attempt after `attempts` failed ones: the base,
/// doubled per further attempt, capped, plus up to 10% jitter.
pub fn backoff(base: Duration, attempts: u32) -> Duration {
    let exp = attempts.saturating_sub(1).min(30);
    let delay = base.saturating_mul(1u32 << exp).min(MAX_BACKOFF);
    let jitter = rand::thread_rng().gen_range(0.0..=0.1);
    delay + delay.mul_f64(jitter)
}

/// Delivery rules, from `[alerts]`.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub timeout: Duration,
    pub max_attempts: u32,
    pub backoff: Duration,
    pub max_in_flight: usize,
    pub allow_private: bool,
}

impl DeliveryConfig {
    pub fn from_settings(s: &AlertSettings) -> Self {
        Self {
            timeout: Duration::from_millis(s.webhook_timeout_ms),
            max_attempts: s.webhook_max_attempts,
            backoff: Duration::from_millis(s.webhook_backoff_ms),
            max_in_flight: s.webhook_max_in_flight,
            allow_private: s.allow_private_webhooks,
        }
    }
}

/// What every attempt shares.
struct Shared {
    db: Db,
    client: reqwest::Client,
    cfg: DeliveryConfig,
    metrics: Arc<Metrics>,
    /// Pinged when an attempt ends, so the loop can claim more.
    done: Notify,
}

pub struct Deliverer {
    shared: Arc<Shared>,
    /// Pinged when an event with a webhook was stored.
    wake: Arc<Notify>,
}

impl Deliverer {
    pub fn new(
        db: Db,
        cfg: DeliveryConfig,
        wake: Arc<Notify>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would resolve and connect where the rules cannot see.
            .no_proxy()
            .dns_resolver(CheckedResolver::new(cfg.allow_private))
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .user_agent(concat!("quotecast-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            shared: Arc::new(Shared {
                db,
                client,
                cfg,
                metrics,
                done: Notify::new(),
            }),
            wake,
        })
    }

    /// Runs until `shutdown` turns true (or its sender is dropped).
    pub async fn run(self, mut shutdown: watch::Receiver<bool>, _guard: TaskGuard) {
        let shared = &self.shared;
        // Attempts running, each returning its event id; and their claims.
        let mut in_flight: JoinSet<i64> = JoinSet::new();
        let mut claims: HashMap<i64, i64> = HashMap::new();
        loop {
            while let Some(done) = in_flight.try_join_next() {
                if let Ok(id) = done {
                    claims.remove(&id);
                }
            }
            let room = shared.cfg.max_in_flight.saturating_sub(in_flight.len());
            let wait = if room > 0 {
                self.claim(room, &mut in_flight, &mut claims).await
            } else {
                IDLE_RECHECK
            };
            tokio::select! {
                r = shutdown.changed() => {
                    if r.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
                _ = self.wake.notified() => {}
                _ = shared.done.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        in_flight.abort_all();
        while let Some(done) = in_flight.join_next().await {
            if let Ok(id) = done {
                claims.remove(&id);
            }
        }
        if !claims.is_empty() {
            let claims: Vec<(i64, i64)> = claims.into_iter().collect();
            let now = now_micros();
            if let Err(e) = shared
                .db
                .run(move |c| repo::release_claims(c, &claims, now))
                .await
            {
                log::warn!("webhook claims not given back (they lapse instead): {e}");
            }
        }
        log::debug!("webhook deliverer stopped");
    }

    /// Claims up to `room` due deliveries and starts them; how long until
    /// the next one is due.
    async fn claim(
        &self,
        room: usize,
        in_flight: &mut JoinSet<i64>,
        claims: &mut HashMap<i64, i64>,
    ) -> Duration {
        let shared = &self.shared;
        let now = now_micros();
        let lease = shared.cfg.timeout + CLAIM_MARGIN;
        let until = now + lease.as_micros() as i64;
        let claimed = shared
            .db
            .run(move |c| {
                let claimed = repo::claim_deliveries(c, now, until, room as i64)?;
                let next = repo::next_delivery_at(c)?;
                Ok::<_, DbError>((claimed, next))
            })
            .await;
        match claimed {
            Ok((events, next)) => {
                for ev in events {
                    let shared = self.shared.clone();
                    claims.insert(ev.id, until);
                    in_flight.spawn(async move {
                        let id = ev.id;
                        attempt(&shared, ev).await;
                        shared.done.notify_one();
                        id
                    });
                }
                let due_in = next.map_or(IDLE_RECHECK, |at| {
                    Duration::from_micros(at.saturating_sub(now_micros()).max(0) as u64)
                });
                due_in.clamp(Duration::from_millis(10), IDLE_RECHECK)
            }
            Err(e) => {
                log::warn!("webhook outbox unavailable: {e}");
                IDLE_RECHECK
            }
        }
    }
}

/// One delivery attempt of a claimed event, and its record.
async fn attempt(shared: &Shared, ev: AlertEvent) {
    let cfg = &shared.cfg;
    let result = match tokio::time::timeout(cfg.timeout, send(shared, &ev)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {} ms", cfg.timeout.as_millis())),
    };
    let attempts = ev.webhook_attempts.saturating_add(1);
    let (status, next_at, outcome) = match &result {
        Ok(()) => (webhook_status::DELIVERED, None, "delivered"),
        Err(_) if attempts >= i64::from(cfg.max_attempts) => {
            (webhook_status::FAILED, None, "failed")
        }
        Err(_) => {
            let wait = backoff(cfg.backoff, attempts as u32);
            let at = now_micros() + wait.as_micros() as i64;
            (webhook_status::PENDING, Some(at), "retry")
        }
    };
    if let Err(e) = &result {
        log::info!(
            "webhook of alert event {} failed (attempt {attempts}): {e}",
            ev.id
        );
    }
    shared
        .metrics
        .webhook_attempts
        .with_label_values(&[outcome])
        .inc();
    let error = result.err();
    let id = ev.id;
    let recorded = shared
        .db
        .run(move |c| {
            repo::record_attempt(
                c,
                &Attempted {
                    event_id: id,
                    status,
                    next_at,
                    error: error.as_deref(),
                },
            )
        })
        .await;
    if let Err(e) = recorded {
        // The claim lapses and the attempt is made again.
        log::warn!("webhook attempt of event {id} not recorded: {e}");
    }
}

/// Sends one event; `Err` says why it did not count as delivered.
async fn send(shared: &Shared, ev: &AlertEvent) -> Result<(), String> {
    let raw = ev.webhook_url.as_deref().ok_or("no webhook URL")?;
    let url = WebhookUrl::parse(raw).map_err(|e| e.to_string())?;
    address::check(&url, shared.cfg.allow_private)
        .await
        .map_err(|e| e.to_string())?;
    let user_id = ev.user_id;
    let candidate = new_secret();
    let secret = shared
        .db
        .run(move |c| repo::webhook_secret(c, user_id, &candidate))
        .await
        .map_err(|e| format!("secret unavailable: {e}"))?;
    let body = event::message(ev);
    let res = shared
        .client
        .post(url.url().clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, signature(&secret, body.as_bytes()))
        .header("X-Quotecast-Event-Id", ev.id.to_string())
        .body(body)
        .send()
        .await
        .map_err(|e| {
            // reqwest's Display hides the cause (refused, reset, resolver).
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg = format!("{msg}: {s}");
                src = s.source();
            }
            msg
        })?;
    let status = res.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("answered HTTP {}", status.as_u16()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_hex() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn secrets_are_random_and_prefixed() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        assert!(a.starts_with("whsec_") && a.len() == 6 + 64, "{a}");
    }

    #[test]
    fn backoff_doubles_from_the_base_up_to_an_hour() {
        let base = Duration::from_secs(10);
        for (attempts, expect) in [(1, 10), (2, 20), (3, 40), (6, 320), (20, 3600)] {
            let d = backoff(base, attempts);
            let expect = Duration::from_secs(expect);
            assert!(d >= expect && d <= expect.mul_f64(1.1), "{attempts}: {d:?}");
        }
    }
}
