//! WebSocket tickets in Redis: `SET PREFIX:ticket:ID ... NX PX ttl`,
//! redeemed with `GETDEL`, so a ticket minted at one instance works exactly
//! once at any instance, and expires by itself.

use super::Cluster;
use crate::auth::{new_ticket_id, Claim, Ticket, TicketError, Tickets};
use futures_util::future::{BoxFuture, FutureExt};
use std::sync::Arc;
use std::time::Duration;

pub struct RedisTickets {
    cluster: Arc<Cluster>,
    ttl: Duration,
}

impl RedisTickets {
    pub fn new(cluster: Arc<Cluster>, ttl: Duration) -> Self {
        Self { cluster, ttl }
    }
}

fn unavailable(e: impl std::fmt::Display) -> TicketError {
    TicketError::Unavailable(e.to_string())
}

impl Tickets for RedisTickets {
    fn ttl(&self) -> Duration {
        self.ttl
    }

    fn issue(&self, claim: Claim) -> BoxFuture<'_, Result<Option<String>, TicketError>> {
        async move {
            let id = new_ticket_id();
            let json = serde_json::to_string(&claim).map_err(unavailable)?;
            let key = self.cluster.keys.key(&format!("ticket:{id}"));
            let ttl = self.ttl.as_millis().max(1) as u64;
            self.cluster
                .redis
                .run(move |mut c| async move {
                    redis::cmd("SET")
                        .arg(key)
                        .arg(json)
                        .arg("NX")
                        .arg("PX")
                        .arg(ttl)
                        .query_async::<()>(&mut c)
                        .await
                })
                .await
                .map_err(unavailable)?;
            Ok(Some(id))
        }
        .boxed()
    }

    fn consume(
        &self,
        ticket: String,
        watchlist_id: Option<i64>,
    ) -> BoxFuture<'_, Result<Ticket, TicketError>> {
        async move {
            // Ours are 48 hex digits; anything else names no key.
            if ticket.len() != 48 || !ticket.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(TicketError::Invalid);
            }
            let key = self.cluster.keys.key(&format!("ticket:{ticket}"));
            let stored: Option<String> =
                self.cluster
                    .redis
                    .run(move |mut c| async move {
                        redis::cmd("GETDEL").arg(key).query_async(&mut c).await
                    })
                    .await
                    .map_err(unavailable)?;
            let claim: Claim = stored
                .and_then(|s| serde_json::from_str(&s).ok())
                .ok_or(TicketError::Invalid)?;
            let t = Ticket::new(claim, self.ttl);
            t.fits(watchlist_id)?;
            Ok(t)
        }
        .boxed()
    }

    fn purge_expired(&self) -> usize {
        0
    }
}
