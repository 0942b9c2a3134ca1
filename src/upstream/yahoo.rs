// TEMPORARY stand-in until the real Yahoo provider lands.
use super::{QuoteProvider, UpstreamError};
use crate::domain::Symbol;
use crate::quote::MarketQuote;
use futures_util::future::BoxFuture;
use std::time::Duration;

pub struct YahooProvider;

impl YahooProvider {
    pub fn new(
        _base_url: &str,
        _request_timeout: Duration,
        _connect_timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        Ok(Self)
    }
}

impl QuoteProvider for YahooProvider {
    fn name(&self) -> &'static str {
        "yahoo"
    }
    fn rate_limited(&self) -> bool {
        true
    }
    fn fetch_batch(
        &self,
        _symbols: Vec<Symbol>,
    ) -> BoxFuture<'static, Result<Vec<MarketQuote>, UpstreamError>> {
        Box::pin(async { Err(UpstreamError::Connect("not built yet".into())) })
    }
    fn fetch_one(
        &self,
        _symbol: Symbol,
    ) -> BoxFuture<'static, Result<Option<MarketQuote>, UpstreamError>> {
        Box::pin(async { Err(UpstreamError::Connect("not built yet".into())) })
    }
}
