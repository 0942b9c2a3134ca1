//! Periodic housekeeping on the realtime arbiter, until shutdown:
//! * sessions whose socket stopped draining are cut off (their actor is not
//!   polled, so they cannot notice by themselves);
//! * sessions whose token was revoked (by the CLI, possibly in another
//!   process) are closed with 1008;
//! * expired WebSocket tickets are removed;
//! * when a crowd of sessions has halved or gone, the HTTP worker threads
//!   are told to renew actix's pools and give the allocator's free memory
//!   back ([`crate::memory`]).
//!
//! Lifecycle: spawned by [`crate::startup`]; ends when the shutdown signal
//! fires.

use crate::db::repo;
use crate::memory::Trimmer;
use crate::protocol::close;
use crate::state::AppState;
use actix_web::web;
use std::time::Duration;
use tokio::sync::watch;

pub async fn run(state: web::Data<AppState>, mut shutdown: watch::Receiver<bool>) {
    let rt = &state.settings.realtime;
    let mut stall = tokio::time::interval(state.settings.heartbeat_interval());
    let mut revoke = tokio::time::interval(Duration::from_millis(rt.auth_recheck_interval_ms));
    stall.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    revoke.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut trim = tokio::time::interval(Duration::from_secs(1));
    trim.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut trimmer = Trimmer::default();
    let timeout_ms = rt.client_timeout_ms;
    loop {
        tokio::select! {
            _ = stall.tick() => {
                let cut = state.sessions.cut_stalled(timeout_ms);
                state.metrics.sessions_cut.inc_by(cut as u64);
            }
            _ = revoke.tick() => {
                close_revoked(&state).await;
                state.tickets.purge_expired();
            }
            _ = trim.tick() => {
                if trimmer.observe(state.sessions.len()) {
                    // Each HTTP worker thread renews its pools, then trims:
                    // a trim here would run before the renewals had freed
                    // anything.
                    state.crowd_gone.announce();
                }
            }
            r = shutdown.changed() => {
                if r.is_err() || *shutdown.borrow() {
                    break;
                }
            }
        }
    }
}

async fn close_revoked(state: &AppState) {
    let tokens = state.sessions.token_ids();
    if tokens.is_empty() {
        return;
    }
    match state.db.run(move |c| repo::revoked_among(c, &tokens)).await {
        Ok(revoked) if !revoked.is_empty() => {
            let n = state.sessions.close_where(
                |e| revoked.contains(&e.who.token_id),
                close::POLICY,
                "token revoked",
            );
            log::info!("closed {n} sessions of revoked tokens");
        }
        Ok(_) => {}
        Err(e) => log::warn!("revocation check failed: {e}"),
    }
}
