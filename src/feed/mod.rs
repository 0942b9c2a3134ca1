//! The feed: how quotes get from the one poller to the PriceWorkers.
//!
//! The poll loop ([`crate::upstream::fetcher`]) talks to the rest of the
//! service only through four small seams, each a trait with a local
//! implementation (in [`local`]) and a cluster one (Redis, in
//! `crate::cluster`):
//!
//! | seam | question it answers | local implementation |
//! |---|---|---|
//! | [`Demand`] | which symbols are wanted; "fetch these now" | the live workers' symbols ([`WorkerRegistry`]) plus extra sources |
//! | [`QuoteBus`] | how a round's quotes reach the workers | straight into the [`Distributor`] |
//! | [`RateLimiter`] | may the next upstream request go out | the in-process [`TokenBucket`](crate::upstream::bucket::TokenBucket) |
//! | [`PollerRole`] | does this instance poll at all | always |
//!
//! Whatever carries a round, it ends in the [`Distributor`] of every
//! instance: it applies the round's changes to the [`QuoteCache`] and hands
//! each local worker a [`QuoteTick`] with the full latest state.

pub mod cache;
pub mod intraday;
pub mod local;
pub mod pinned;
pub mod registry;
pub mod signal;

pub use cache::{QuoteCache, QuoteMap};
pub use intraday::IntradayStore;
pub use pinned::PinnedSymbols;
pub use registry::{Distributor, WatchGuard, WorkerRegistry};

use crate::domain::Symbol;
use crate::quote::{Known, Point};
use actix::prelude::*;
use futures_util::future::BoxFuture;
use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// Health of the upstream as the poller sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct UpstreamHealth {
    pub degraded: bool,
    pub message: String,
    pub retry_in_ms: Option<u64>,
}

impl UpstreamHealth {
    pub fn ok() -> Self {
        Self {
            degraded: false,
            message: "upstream ok".into(),
            retry_in_ms: None,
        }
    }

    /// Whether two health reports would read the same to a client (the
    /// countdown alone changing is not news).
    pub fn same_state(&self, other: &Self) -> bool {
        self.degraded == other.degraded && self.message == other.message
    }
}

/// What one polling round found: the symbols whose state it learnt (only
/// those), the upstream's intraday points of symbols whose points changed,
/// and the upstream's health after the round.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Round {
    pub changed: Vec<(Symbol, Known)>,
    pub intraday: Vec<(Symbol, Arc<[Point]>)>,
    pub health: UpstreamHealth,
}

/// One round as a worker receives it: the full latest state (shared, not
/// copied per worker) so a worker that missed a tick loses nothing, plus
/// the upstream health and the round's id.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct QuoteTick {
    /// Increasing id of the round, the same on every instance.
    pub tick: u64,
    pub quotes: Arc<QuoteMap>,
    pub health: Arc<UpstreamHealth>,
}

/// Why a round could not be published.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// Another instance holds the poller lease now: this round must not land.
    #[error("not the poller any more")]
    Fenced,
    #[error("quote bus unavailable: {0}")]
    Unavailable(String),
}

/// Which symbols the poller fetches.
pub trait Demand: Send + Sync + 'static {
    /// Every symbol wanted now, by anyone.
    fn wanted(&self) -> BoxFuture<'_, BTreeSet<Symbol>>;

    /// Symbols to fetch at the next round whatever their schedule (admin
    /// refresh); taking them clears them.
    fn take_forced(&self) -> BoxFuture<'_, HashSet<Symbol>>;

    /// Asks for these symbols to be fetched now.
    fn force(&self, symbols: Vec<Symbol>);

    /// Asks for these symbols to be fetched once, soon, whether or not
    /// anyone watches them (a REST user asking for a price); they are not
    /// polled afterwards unless they are wanted.
    fn fetch_once(&self, symbols: Vec<Symbol>);

    /// Symbols asked for with [`Demand::fetch_once`]; taking them clears them.
    fn take_once(&self) -> BoxFuture<'_, HashSet<Symbol>>;

    /// Resolves when the demand may have grown or a refresh was asked for,
    /// so new symbols do not wait a whole tick.
    fn changed(&self) -> BoxFuture<'_, ()>;
}

/// How a round reaches the workers of every instance.
pub trait QuoteBus: Send + Sync + 'static {
    /// Publishes one round (`full`: a tick of the grid, else an extra round
    /// for new or forced symbols); returns the round's tick id.
    fn publish(&self, full: bool, round: Round) -> BoxFuture<'_, Result<u64, BusError>>;
}

/// Paces upstream requests.
pub trait RateLimiter: Send + Sync + 'static {
    /// Takes a permit for one upstream request, waiting at most `max_wait`;
    /// the error says how long until one would be available.
    fn acquire(&self, max_wait: Duration) -> BoxFuture<'_, Result<(), Duration>>;
}

/// Whether this instance polls.
pub trait PollerRole: Send + Sync + 'static {
    fn is_poller(&self) -> bool;

    /// Resolves when the answer of [`PollerRole::is_poller`] may have changed.
    fn changed(&self) -> BoxFuture<'_, ()>;
}

/// Told of every round this instance published as the poller, with its
/// tick id (price alerts are evaluated here, once for the cluster).
/// Implementations must not block: hand the work to a task of their own.
pub trait RoundObserver: Send + Sync + 'static {
    fn published(&self, tick: u64, round: &Round);
}

/// The four seams, as the poll loop holds them.
#[derive(Clone)]
pub struct Seams {
    pub demand: Arc<dyn Demand>,
    pub bus: Arc<dyn QuoteBus>,
    pub limiter: Arc<dyn RateLimiter>,
    pub role: Arc<dyn PollerRole>,
}
