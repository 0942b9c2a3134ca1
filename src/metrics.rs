//! Prometheus metrics. One registry per running application (not the
//! process-global default), so several instances in one test process do not
//! share counters.

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub sessions: IntGauge,
    pub workers: IntGauge,
    /// Relays alive (one per HTTP worker thread while the server runs).
    pub relays: IntGauge,
    /// Listeners that renew actix's pools after a crowd (one per HTTP
    /// worker thread while the server runs).
    pub pool_refreshers: IntGauge,
    pub watched_symbols: IntGauge,
    pub sessions_opened: IntCounter,
    pub sessions_closed: IntCounter,
    /// Sessions whose socket stopped draining and was cut off from outside.
    pub sessions_cut: IntCounter,
    /// Times the allocator was asked to give its free memory back after a crowd left.
    pub memory_trims: IntCounter,
    pub messages_sent: IntCounter,
    pub messages_dropped: IntCounter,
    pub worker_ticks: IntCounter,
    /// Upstream requests by `outcome` (ok, rate_limited, server_error, ...;
    /// `throttled` counts ticks cut short by our own token bucket).
    pub upstream_requests: IntCounterVec,
    pub upstream_latency: Histogram,
    /// Time for a worker to hand one broadcast to all of its sessions.
    pub fanout_seconds: Histogram,
    /// 1 on the instance that polls (cluster mode; always 1 alone).
    pub cluster_poller: IntGauge,
    /// Rounds and control events read from / written to the cluster bus.
    pub bus_in: IntCounter,
    pub bus_out: IntCounter,
    /// Failed cluster bus operations.
    pub bus_errors: IntCounter,
    // ---- price alerts (`crate::alerts`)
    /// CPU time to evaluate one round's symbols against the alerts in
    /// memory (the evaluating thread's, so preemption does not count).
    pub alert_eval_seconds: Histogram,
    /// Alert events stored.
    pub alert_events: IntCounter,
    /// Rounds the alert evaluator could not take because it was behind.
    pub alert_rounds_skipped: IntCounter,
    /// Webhook delivery attempts by `outcome` (delivered, retry, failed).
    pub webhook_attempts: IntCounterVec,
}

/// `metric`, once `registry` renders it.
fn registered<M: Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str| {
            registered(&registry, IntGauge::new(name, help).expect("valid metric"))
        };
        let counter = |name: &str, help: &str| {
            registered(
                &registry,
                IntCounter::new(name, help).expect("valid metric"),
            )
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let opts = HistogramOpts::new(name, help).buckets(buckets);
            registered(&registry, Histogram::with_opts(opts).expect("valid metric"))
        };
        let by_outcome = |name: &str, help: &str| {
            let vec = IntCounterVec::new(Opts::new(name, help), &["outcome"]);
            registered(&registry, vec.expect("valid metric"))
        };
        let upstream_requests = by_outcome(
            "quotecast_upstream_requests_total",
            "Upstream requests by outcome",
        );
        let webhook_attempts = by_outcome(
            "quotecast_webhook_attempts_total",
            "Alert webhook delivery attempts by outcome (delivered, retry, failed)",
        );
        Self {
            sessions: gauge("quotecast_sessions", "Open WebSocket sessions"),
            workers: gauge("quotecast_workers", "Running PriceWorkers"),
            relays: gauge(
                "quotecast_relays",
                "Frame relays alive (one per HTTP worker thread)",
            ),
            pool_refreshers: gauge(
                "quotecast_pool_refreshers",
                "Listeners that renew actix's per-thread pools after a crowd (one per HTTP worker thread)",
            ),
            watched_symbols: gauge("quotecast_watched_symbols", "Distinct symbols watched"),
            sessions_opened: counter(
                "quotecast_sessions_opened_total",
                "WebSocket sessions opened",
            ),
            sessions_closed: counter(
                "quotecast_sessions_closed_total",
                "WebSocket sessions closed",
            ),
            sessions_cut: counter(
                "quotecast_sessions_cut_total",
                "Sessions cut off because their socket stopped draining",
            ),
            memory_trims: counter(
                "quotecast_memory_trims_total",
                "Times the allocator was asked to give its free memory back after a crowd of sessions left",
            ),
            messages_sent: counter(
                "quotecast_messages_sent_total",
                "Messages written to sessions",
            ),
            messages_dropped: counter(
                "quotecast_messages_dropped_total",
                "Messages not queued because a session lagged (coalesced into a later snapshot)",
            ),
            worker_ticks: counter(
                "quotecast_worker_ticks_total",
                "Ticks handled by PriceWorkers",
            ),
            upstream_latency: histogram(
                "quotecast_upstream_request_duration_seconds",
                "Upstream request latency",
                vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0],
            ),
            fanout_seconds: histogram(
                "quotecast_fanout_duration_seconds",
                "Time for a worker to hand one broadcast to the relays of its sessions",
                vec![
                    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
                ],
            ),
            cluster_poller: gauge(
                "quotecast_cluster_poller",
                "1 on the instance that polls the upstream",
            ),
            bus_in: counter(
                "quotecast_bus_messages_in_total",
                "Messages read from the cluster bus (rounds and control events)",
            ),
            bus_out: counter(
                "quotecast_bus_messages_out_total",
                "Messages written to the cluster bus (rounds and control events)",
            ),
            bus_errors: counter(
                "quotecast_bus_errors_total",
                "Failed cluster bus operations",
            ),
            alert_eval_seconds: histogram(
                "quotecast_alert_eval_seconds",
                "CPU time of evaluating one round's symbols against the enabled price alerts",
                vec![
                    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                    0.01, 0.1,
                ],
            ),
            alert_events: counter("quotecast_alert_events_total", "Price alert events stored"),
            alert_rounds_skipped: counter(
                "quotecast_alert_rounds_skipped_total",
                "Rounds not evaluated for alerts because the evaluator was behind",
            ),
            webhook_attempts,
            upstream_requests,
            registry,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Counts something in a gauge while it lives: the gauge goes up when this
/// is made and down when it is dropped, however its owner ends.
pub struct GaugeGuard(IntGauge);

impl GaugeGuard {
    pub fn new(gauge: IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
