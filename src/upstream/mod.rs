//! The upstream quote source.
//!
//! * [`QuoteProvider`] is the seam: the simulated provider ([`sim`]) and the Yahoo
//!   provider ([`yahoo`]) implement it. Providers only speak to their source; they
//!   know nothing of rate limits, backoff or watchlists.
//! * [`fetcher`] is the one shared fetcher: per tick it takes the union of symbols
//!   of every live PriceWorker, fetches each distinct symbol once (in batches),
//!   through the token bucket ([`bucket`]), and hands each worker its slice.

pub mod bucket;
pub mod fetcher;
pub mod sim;
pub mod yahoo;

use crate::domain::Symbol;
use crate::quote::Fetched;
use futures_util::future::BoxFuture;
use std::time::Duration;

/// Why an upstream request failed. Every variant is a failure of that one
/// request (or batch); none of them stops the service.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("rate limited by the upstream (HTTP 429)")]
    RateLimited { retry_after: Option<Duration> },
    #[error("upstream answered HTTP {status}")]
    Status {
        status: u16,
        retry_after: Option<Duration>,
    },
    #[error("upstream did not answer in time")]
    Timeout,
    #[error("upstream unreachable: {0}")]
    Connect(String),
    #[error("upstream sent data that does not parse: {0}")]
    BadData(String),
}

impl UpstreamError {
    /// Label for the `outcome` of request counters.
    pub fn outcome(&self) -> &'static str {
        match self {
            UpstreamError::RateLimited { .. } => "rate_limited",
            UpstreamError::Status { status, .. } if *status >= 500 => "server_error",
            UpstreamError::Status { .. } => "client_error",
            UpstreamError::Timeout => "timeout",
            UpstreamError::Connect(_) => "connect_error",
            UpstreamError::BadData(_) => "bad_data",
        }
    }

    /// The wait the upstream asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            UpstreamError::RateLimited { retry_after }
            | UpstreamError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// A source of quotes. Implementations must be cheap to call concurrently and
/// must never panic on what the source sends.
pub trait QuoteProvider: Send + Sync + 'static {
    /// `sim` or `yahoo`, for logs and admin output.
    fn name(&self) -> &'static str;

    /// Whether requests cost upstream quota, so the fetcher puts them behind the
    /// token bucket. A real source's do; the simulator says otherwise.
    fn rate_limited(&self) -> bool {
        true
    }

    /// Fetch up to `batch_size` symbols in one request. Symbols the source does
    /// not mention in its answer are simply absent from the result.
    fn fetch_batch(
        &self,
        symbols: Vec<Symbol>,
    ) -> BoxFuture<'static, Result<Vec<Fetched>, UpstreamError>>;

    /// Fetch one symbol on its own, to tell "unknown" (`Ok(None)`) from
    /// "temporarily missing from the batch answer".
    fn fetch_one(
        &self,
        symbol: Symbol,
    ) -> BoxFuture<'static, Result<Option<Fetched>, UpstreamError>>;
}
