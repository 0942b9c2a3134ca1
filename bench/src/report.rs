//! What a run measured, as JSON (`--json`) and as a table for people.

use crate::client::{CloseStats, ConnectStats, WindowStats};
use crate::hist::Hist;
use crate::procinfo::Machine;
use serde::Serialize;
use std::fmt::Write as _;

#[derive(Debug, Clone, Serialize)]
pub struct Shape {
    pub sessions: usize,
    pub watchlists: usize,
    pub symbols: usize,
    pub distinct: usize,
    pub tick_ms: u64,
    /// 0: every session is a v1 socket on one watchlist; K: every session is
    /// a `GET /ws/v1` socket subscribed to K watchlists.
    pub subscriptions: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub samples: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

impl Percentiles {
    pub fn of(h: &Hist) -> Self {
        let ms = |q: f64| h.quantile(q).map(|us| us as f64 / 1000.0);
        Percentiles {
            samples: h.count(),
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: (h.count() > 0).then(|| h.max as f64 / 1000.0),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ConnectReport {
    pub requested: u64,
    pub ok: u64,
    pub failed: u64,
    pub seconds: f64,
    pub per_s: f64,
    pub errors: std::collections::BTreeMap<String, u64>,
    pub first_error: Option<String>,
    pub latency: Percentiles,
    /// During the connect phase; 100 = one core.
    pub server_cpu_percent: Option<f64>,
    pub client_cpu_percent: Option<f64>,
    pub server_threads: Vec<ThreadCpu>,
    /// Server context switches per successful connect.
    pub server_ctx_switches_per_connect: Option<f64>,
}

impl ConnectReport {
    pub fn of(c: &ConnectStats) -> Self {
        ConnectReport {
            requested: c.requested,
            ok: c.ok,
            failed: c.failed,
            seconds: c.seconds,
            per_s: if c.seconds > 0.0 {
                c.ok as f64 / c.seconds
            } else {
                0.0
            },
            errors: c.errors.clone(),
            first_error: c.first_error.clone(),
            latency: Percentiles::of(&c.latency),
            server_cpu_percent: None,
            client_cpu_percent: (c.seconds > 0.0).then(|| c.client_cpu_s / c.seconds * 100.0),
            server_threads: Vec::new(),
            server_ctx_switches_per_connect: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DeliveryReport {
    pub window_s: f64,
    pub messages: u64,
    pub msgs_per_s: f64,
    /// sessions x ticks per second: what an on-time tick delivers (0 when
    /// the window is shorter than two ticks).
    pub expected_msgs_per_s: f64,
    pub bytes: u64,
    pub bytes_per_s: f64,
    pub avg_msg_bytes: f64,
    pub other_messages: u64,
    pub pings: u64,
    pub latency: Percentiles,
    /// Over the whole life of the sessions.
    pub seq_gaps: u64,
    pub seq_missed: u64,
    pub duplicates: u64,
    pub unexpected_closes: u64,
    pub live_sessions: u64,
}

impl DeliveryReport {
    pub fn of(w: &WindowStats, close: Option<&CloseStats>) -> Self {
        let s = w.seconds.max(1e-9);
        DeliveryReport {
            window_s: w.seconds,
            messages: w.msgs,
            msgs_per_s: w.msgs as f64 / s,
            expected_msgs_per_s: 0.0,
            bytes: w.bytes,
            bytes_per_s: w.bytes as f64 / s,
            avg_msg_bytes: if w.msgs + w.other_msgs > 0 {
                w.bytes as f64 / (w.msgs + w.other_msgs) as f64
            } else {
                0.0
            },
            other_messages: w.other_msgs,
            pings: w.pings,
            latency: Percentiles::of(&w.latency),
            seq_gaps: close.map_or(w.gaps, |c| c.gaps.max(w.gaps)),
            seq_missed: close.map_or(w.missed, |c| c.missed.max(w.missed)),
            duplicates: w.duplicates,
            unexpected_closes: close.map_or(w.unexpected_closes, |c| {
                c.unexpected_closes.max(w.unexpected_closes)
            }),
            live_sessions: w.live,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ThreadCpu {
    pub name: String,
    pub cpu_percent: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerReport {
    pub pid: Option<u32>,
    pub rss_baseline: Option<u64>,
    pub rss_loaded: Option<u64>,
    pub rss_after_close: Option<u64>,
    /// (rss_loaded - rss_baseline) / sessions.
    pub bytes_per_session: Option<f64>,
    pub fds_loaded: Option<usize>,
    /// Over the measuring window; 100 = one core.
    pub cpu_percent: Option<f64>,
    /// Server CPU time per delivered message, over the window.
    pub cpu_us_per_msg: Option<f64>,
    pub ctx_switches_per_msg: Option<f64>,
    pub threads: Vec<ThreadCpu>,
    /// From /metrics over the window: mean time of one broadcast of a worker
    /// (handing a frame to every relay, one per HTTP worker thread), and
    /// messages dropped for lagging sessions.
    pub fanout_loop_ms: Option<f64>,
    pub messages_dropped: Option<f64>,
    /// Messages dropped from before the connects to after the close: seq
    /// gaps, counted over the sessions' whole lives, can come only from
    /// these (a lagging session skips ahead).
    pub messages_dropped_run: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct AfterClose {
    pub clean_closes: u64,
    pub unclean_closes: u64,
    pub close_s: f64,
    /// From admin stats (quotecast only).
    pub sessions: Option<u64>,
    pub workers: Option<u64>,
    pub drained_s: Option<f64>,
}

impl AfterClose {
    /// `drained`: sessions and workers left, and the seconds it took, from
    /// admin stats (quotecast only).
    pub fn of(close: &CloseStats, drained: Option<(u64, u64, f64)>) -> Self {
        Self {
            clean_closes: close.clean,
            unclean_closes: close.unclean,
            close_s: close.seconds,
            sessions: drained.map(|d| d.0),
            workers: drained.map(|d| d.1),
            drained_s: drained.map(|d| d.2),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct UpstreamReport {
    pub distinct_symbols: usize,
    pub batch_size: usize,
    pub expected_per_tick: usize,
    /// Admin stats deltas over the window.
    pub requests: Option<u64>,
    pub cycles: Option<u64>,
    pub requests_per_cycle: Option<f64>,
    /// From the fake Yahoo: spark requests of each complete tick in the window.
    pub spark_per_tick: Vec<usize>,
    pub chart_requests: Option<usize>,
    pub max_symbols_per_request: Option<usize>,
    pub errors: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub target: &'static str,
    pub shape: Shape,
    pub load_before: String,
    pub connect: ConnectReport,
    pub delivery: DeliveryReport,
    pub server: ServerReport,
    pub client_cpu_percent: f64,
    pub client_procs: usize,
    pub after_close: AfterClose,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<UpstreamReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub churn: Option<ChurnReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storm: Option<StormReport>,
}

/// Every session dropped by the server at once, all reconnecting at once;
/// then all closed, and the server's RSS watched afterwards.
#[derive(Debug, Clone, Serialize)]
pub struct StormReport {
    /// How the server dropped them (e.g. their token revoked).
    pub drop_by: String,
    pub sessions: u64,
    pub dropped: u64,
    pub reconnected: u64,
    pub failed: u64,
    /// Reconnect attempts that failed and were tried again.
    pub retries: u64,
    /// Sessions neither back nor given up when the wait ended.
    pub pending: u64,
    /// First to last drop seen by the clients: how "at once" the drop was.
    pub drop_window_s: Option<f64>,
    /// First drop to the last session back with its snapshot(s).
    pub storm_s: Option<f64>,
    /// reconnected / storm_s.
    pub sessions_per_s: Option<f64>,
    /// Per session, from its drop to its snapshot(s) on the new socket.
    pub reconnect_latency: Percentiles,
    pub errors: std::collections::BTreeMap<String, u64>,
    pub close_codes: std::collections::BTreeMap<u16, u64>,
    /// From the first drop a client saw to the last session back (the
    /// storm's own span, `storm_s`), sampled every 10 ms; 100 = one core.
    pub server_cpu_percent: Option<f64>,
    /// Server CPU over that span per session back, microseconds.
    pub server_cpu_us_per_session: Option<f64>,
    /// RSS before any session connected (the baseline of the check).
    pub rss_baseline: Option<u64>,
    /// The server's peak RSS over its life (VmHWM, or a sample above it).
    pub rss_peak: Option<u64>,
    /// (seconds after every session had closed, RSS).
    pub rss_after_close: Vec<(f64, u64)>,
    /// The first of those samples within 25% above the baseline.
    pub rss_back_within_s: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChurnReport {
    pub cycles: u64,
    pub failed: u64,
    pub concurrency: usize,
    pub seconds: f64,
    pub cycles_per_s: f64,
    pub errors: std::collections::BTreeMap<String, u64>,
    pub first_error: Option<String>,
    pub warmup_cycles: u64,
    pub rss_after_warmup: Option<u64>,
    pub rss_end: Option<u64>,
    /// rss_end / rss_after_warmup.
    pub rss_ratio: Option<f64>,
    pub cycle_latency: Percentiles,
    /// (cycles done, server RSS) every tenth of the run, sessions live.
    pub rss_trace: Vec<(u64, u64)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub target: String,
    pub measured: String,
    pub pass: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    pub scenario: String,
    pub machine: Machine,
    pub started_at: String,
    pub runs: Vec<RunReport>,
    /// quotecast / ceiling where both ran at the same shape, and any other
    /// comparison a scenario makes (each says which in `what`).
    pub ratios: Vec<Ratio>,
    pub checks: Vec<Check>,
    pub notes: Vec<String>,
    /// The `cluster` scenario's instances and failover.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterReport>,
}

/// What the `cluster` scenario saw of its instances, besides the runs.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ClusterReport {
    pub redis_url: String,
    /// The run's own prefix: nothing of another cluster sharing the Redis
    /// is read or removed.
    pub key_prefix: String,
    /// The scratch PostgreSQL database every instance shares (dropped at
    /// the end).
    pub database: String,
    pub lease_ms: u64,
    /// The instances of the spread phase, after every session connected.
    pub nodes: Vec<NodeReport>,
    pub failover: Option<FailoverReport>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct NodeReport {
    pub node_id: String,
    pub addr: String,
    pub pid: Option<u32>,
    pub poller: bool,
    /// Its sessions as `GET /admin/v1/cluster` lists them.
    pub sessions: Option<u64>,
    pub workers: Option<u64>,
    pub rss_loaded: Option<u64>,
    /// Its CPU over the measuring window (one core = 100).
    pub cpu_percent: Option<f64>,
    /// Upstream requests it made in the window (only the poller makes any).
    pub upstream_requests: Option<u64>,
}

/// SIGKILL of the poller while it holds its share of the sessions.
#[derive(Debug, Clone, Serialize)]
pub struct FailoverReport {
    pub killed_node: String,
    pub killed_was_poller: bool,
    /// Every session of the cluster, and those on the killed instance.
    pub sessions: u64,
    pub on_killed: u64,
    /// Sessions the clients saw dropped: those of the killed instance, and
    /// any survivor's (none should be).
    pub dropped: u64,
    pub reconnected: u64,
    pub failed: u64,
    pub retries: u64,
    /// Dropped and neither back nor given up when the wait ended.
    pub pending: u64,
    /// From the SIGKILL to the last dropped session's snapshot on another
    /// instance.
    pub kill_to_all_back_s: Option<f64>,
    /// Per session, from its drop to its snapshot on another instance.
    pub reconnect_latency: Percentiles,
    pub errors: std::collections::BTreeMap<String, u64>,
    /// The instance that polls after the failover, and when its first
    /// upstream request came after the kill.
    pub new_poller: Option<String>,
    pub takeover_s: Option<f64>,
    /// The spec's bound on the takeover: `cluster.lease_ms` + one tick.
    pub takeover_bound_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    /// What over what, e.g. "quotecast / ceiling".
    pub what: String,
    pub shape: String,
    pub msgs_per_s: Option<f64>,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub connects_per_s: Option<f64>,
    pub bytes_per_session: Option<f64>,
    /// Server CPU per delivered message.
    pub cpu_us_per_msg: Option<f64>,
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / 1048576.0)
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| {
        if v < 10.0 {
            format!("{v:.2} ms")
        } else {
            format!("{v:.1} ms")
        }
    })
}

fn threads(t: &[ThreadCpu]) -> String {
    t.iter()
        .take(6)
        .map(|t| format!("{} {:.0}%", t.name, t.cpu_percent))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn shape_label(s: &Shape) -> String {
    let sessions = match s.subscriptions {
        0 => format!("{} sessions", s.sessions),
        k => format!("{} /ws/v1 sessions x {k} subscriptions", s.sessions),
    };
    format!(
        "{sessions}, {} watchlist(s) x {} symbols ({} distinct), tick {} ms",
        s.watchlists, s.symbols, s.distinct, s.tick_ms
    )
}

pub fn human_run(r: &RunReport) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "== {}: {}  [load before: {}]",
        r.target,
        shape_label(&r.shape),
        r.load_before
    );
    let c = &r.connect;
    let _ = writeln!(
        o,
        "  connect     {} ok, {} failed in {:.2} s = {:.0} connects/s (per connect p50 {}, p99 {}){}",
        c.ok,
        c.failed,
        c.seconds,
        c.per_s,
        ms(c.latency.p50_ms),
        ms(c.latency.p99_ms),
        if c.errors.is_empty() {
            String::new()
        } else {
            format!("; errors {:?}", c.errors)
        }
    );
    if let (Some(sc), Some(cc)) = (c.server_cpu_percent, c.client_cpu_percent) {
        let _ = writeln!(
            o,
            "  connect CPU server {:.0}% [{}]; client {:.0}%{}",
            sc,
            threads(&c.server_threads),
            cc,
            c.server_ctx_switches_per_connect
                .map_or(String::new(), |v| format!(
                    "; server {v:.1} context switches/connect"
                ))
        );
    }
    if let Some(ch) = &r.churn {
        let _ = writeln!(
            o,
            "  churn       {} cycles ({} failed) at concurrency {} in {:.1} s = {:.0} cycles/s (cycle p50 {}, p99 {})",
            ch.cycles,
            ch.failed,
            ch.concurrency,
            ch.seconds,
            ch.cycles_per_s,
            ms(ch.cycle_latency.p50_ms),
            ms(ch.cycle_latency.p99_ms)
        );
        if let (Some(a), Some(b)) = (ch.rss_after_warmup, ch.rss_end) {
            let _ = writeln!(
                o,
                "  churn RSS   {} after {} warm-up cycles, {} at the end ({:+.1}%)",
                mib(a),
                ch.warmup_cycles,
                mib(b),
                (b as f64 / a as f64 - 1.0) * 100.0
            );
        }
        if !ch.rss_trace.is_empty() {
            let trace: Vec<String> = ch
                .rss_trace
                .iter()
                .map(|(n, b)| format!("{}k {:.1}", n / 1000, *b as f64 / 1048576.0))
                .collect();
            let _ = writeln!(o, "  RSS trace   (cycles, MiB) {}", trace.join(", "));
        }
    }
    if let Some(st) = &r.storm {
        human_storm(&mut o, st);
    }
    let d = &r.delivery;
    if r.churn.is_none() {
        let _ = writeln!(
            o,
            "  delivery    {} quotes msgs in {:.1} s = {:.0} msgs/s (on-time ticks: {:.0}), {:.1} MB/s (avg {:.0} B/msg); {} other msgs, {} pings",
            d.messages,
            d.window_s,
            d.msgs_per_s,
            d.expected_msgs_per_s,
            d.bytes_per_s / 1e6,
            d.avg_msg_bytes,
            d.other_messages,
            d.pings
        );
        let l = &d.latency;
        let _ = writeln!(
            o,
            "  latency     p50 {}  p99 {}  p99.9 {}  max {}  ({} samples, ts to receipt)",
            ms(l.p50_ms),
            ms(l.p99_ms),
            ms(l.p999_ms),
            ms(l.max_ms),
            l.samples
        );
        let _ = writeln!(
            o,
            "  seq         {} gaps ({} missed), {} duplicates, {} unexpected closes, {} live at window end{}",
            d.seq_gaps,
            d.seq_missed,
            d.duplicates,
            d.unexpected_closes,
            d.live_sessions,
            r.server
                .messages_dropped_run
                .map_or(String::new(), |v| format!(
                    "; server dropped {v:.0} msgs over the run"
                ))
        );
    }
    let s = &r.server;
    if let (Some(b), Some(l), None) = (s.rss_baseline, s.rss_loaded, &r.churn) {
        let _ = writeln!(
            o,
            "  server RSS  {} baseline, {} loaded ({} B/session), {} after close; {} fds loaded",
            mib(b),
            mib(l),
            s.bytes_per_session
                .map_or("-".into(), |v| format!("{v:.0}")),
            s.rss_after_close.map_or("-".into(), mib),
            s.fds_loaded.map_or("-".into(), |v| v.to_string())
        );
    }
    if let Some(cpu) = s.cpu_percent {
        let _ = writeln!(
            o,
            "  CPU         server {:.0}% [{}]; client {:.0}% ({} proc)",
            cpu,
            threads(&s.threads),
            r.client_cpu_percent,
            r.client_procs
        );
        if let (Some(us), Some(cs)) = (s.cpu_us_per_msg, s.ctx_switches_per_msg) {
            let _ = writeln!(
                o,
                "  per msg     server {us:.1} us CPU, {cs:.2} context switches{}{}",
                s.fanout_loop_ms.map_or(String::new(), |v| format!(
                    "; worker broadcast loop {v:.2} ms"
                )),
                s.messages_dropped
                    .map_or(String::new(), |v| format!("; {v:.0} dropped"))
            );
        }
    }
    let a = &r.after_close;
    let _ = writeln!(
        o,
        "  close       {} clean, {} unclean in {:.2} s{}",
        a.clean_closes,
        a.unclean_closes,
        a.close_s,
        match (a.sessions, a.workers) {
            (Some(s), Some(w)) => format!(
                "; admin stats after: {s} sessions, {w} workers (after {:.2} s)",
                a.drained_s.unwrap_or(0.0)
            ),
            _ => String::new(),
        }
    );
    if let Some(u) = &r.upstream {
        let _ = writeln!(
            o,
            "  upstream    {} distinct / batch {} = {} expected per tick; spark per tick {:?}; requests/cycle {}; chart {}; errors {}",
            u.distinct_symbols,
            u.batch_size,
            u.expected_per_tick,
            u.spark_per_tick,
            u.requests_per_cycle.map_or("-".into(), |v| format!("{v:.2}")),
            u.chart_requests.map_or("-".into(), |v| v.to_string()),
            u.errors.map_or("-".into(), |v| v.to_string())
        );
    }
    o
}

fn human_storm(o: &mut String, st: &StormReport) {
    let secs = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2} s"));
    let _ = writeln!(
        o,
        "  storm       {} of {} sessions dropped ({}) within {}; {} back in {} = {} sessions/s; {} failed, {} retries, {} pending{}",
        st.dropped,
        st.sessions,
        st.drop_by,
        secs(st.drop_window_s),
        st.reconnected,
        secs(st.storm_s),
        st.sessions_per_s.map_or("-".into(), |v| format!("{v:.0}")),
        st.failed,
        st.retries,
        st.pending,
        if st.errors.is_empty() {
            String::new()
        } else {
            format!("; errors {:?}", st.errors)
        }
    );
    let l = &st.reconnect_latency;
    let _ = writeln!(
        o,
        "  storm back  per session p50 {}  p99 {}  max {} (drop to snapshot); close codes {:?}; server CPU {} from first drop to last back ({} per session)",
        ms(l.p50_ms),
        ms(l.p99_ms),
        ms(l.max_ms),
        st.close_codes,
        st.server_cpu_percent
            .map_or("-".into(), |v| format!("{v:.0}%")),
        st.server_cpu_us_per_session
            .map_or("-".into(), |v| format!("{v:.0} us"))
    );
    let trace: Vec<String> = st
        .rss_after_close
        .iter()
        .map(|(t, b)| format!("{t:.0} s {:.1}", *b as f64 / 1048576.0))
        .collect();
    let _ = writeln!(
        o,
        "  storm RSS   {} before connect, {} peak; after close (MiB): {}; within 25% of the baseline {}",
        st.rss_baseline.map_or("-".into(), mib),
        st.rss_peak.map_or("-".into(), mib),
        trace.join(", "),
        st.rss_back_within_s
            .map_or("not yet".into(), |v| format!("after {v:.0} s"))
    );
}

pub fn human(rep: &ScenarioReport) -> String {
    let mut o = String::new();
    let m = &rep.machine;
    let _ = writeln!(
        o,
        "quotecast-bench {} — {} CPUs ({}), {} GiB, fd limit {}/{}, kernel {}",
        rep.scenario, m.cpus, m.cpu_model, m.mem_gib, m.fd_soft_limit, m.fd_hard_limit, m.kernel
    );
    for r in &rep.runs {
        o.push_str(&human_run(r));
    }
    let mut whats: Vec<&str> = Vec::new();
    for r in &rep.ratios {
        if !whats.contains(&r.what.as_str()) {
            whats.push(&r.what);
        }
    }
    for what in whats {
        let _ = writeln!(o, "\n{what}:");
        let f = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}"));
        for r in rep.ratios.iter().filter(|r| r.what == what) {
            let _ = writeln!(
                o,
                "  {}: msgs/s {}, p50 {}, p99 {}, connects/s {}, bytes/session {}, CPU/msg {}",
                r.shape,
                f(r.msgs_per_s),
                f(r.p50),
                f(r.p99),
                f(r.connects_per_s),
                f(r.bytes_per_session),
                f(r.cpu_us_per_msg)
            );
        }
    }
    if let Some(c) = &rep.cluster {
        human_cluster(&mut o, c);
    }
    if !rep.checks.is_empty() {
        let _ = writeln!(o, "\nchecks:");
        for c in &rep.checks {
            let _ = writeln!(
                o,
                "  [{}] {}: {} (target {})",
                if c.pass { "PASS" } else { "MISS" },
                c.name,
                c.measured,
                c.target
            );
        }
    }
    for n in &rep.notes {
        let _ = writeln!(o, "note: {n}");
    }
    o
}

fn human_cluster(o: &mut String, c: &ClusterReport) {
    let _ = writeln!(
        o,
        "\ncluster: Redis {} (prefix {}), PostgreSQL database {}, lease {} ms",
        c.redis_url, c.key_prefix, c.database, c.lease_ms
    );
    let _ = writeln!(
        o,
        "  {:<10} {:<22} {:>7} {:>9} {:>8} {:>10} {:>6} {:>9}",
        "node", "addr", "poller", "sessions", "workers", "RSS", "CPU", "upstream"
    );
    let opt = |v: Option<u64>| v.map_or("-".into(), |v| v.to_string());
    for n in &c.nodes {
        let _ = writeln!(
            o,
            "  {:<10} {:<22} {:>7} {:>9} {:>8} {:>10} {:>6} {:>9}",
            n.node_id,
            n.addr,
            if n.poller { "yes" } else { "" },
            opt(n.sessions),
            opt(n.workers),
            n.rss_loaded.map_or("-".into(), mib),
            n.cpu_percent.map_or("-".into(), |v| format!("{v:.0}%")),
            opt(n.upstream_requests)
        );
    }
    if let Some(f) = &c.failover {
        let s = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2} s"));
        let _ = writeln!(
            o,
            "  failover    SIGKILL {}{}: {} of {} sessions on it, {} dropped, {} back on the others ({} failed, {} pending, {} retries) {} after the kill; per session p50 {}, p99 {}",
            f.killed_node,
            if f.killed_was_poller { " (the poller)" } else { "" },
            f.on_killed,
            f.sessions,
            f.dropped,
            f.reconnected,
            f.failed,
            f.pending,
            f.retries,
            s(f.kill_to_all_back_s),
            ms(f.reconnect_latency.p50_ms),
            ms(f.reconnect_latency.p99_ms)
        );
        let _ = writeln!(
            o,
            "  takeover    {} polls {} after the kill (bound: lease + tick = {:.1} s); errors {:?}",
            f.new_poller.as_deref().unwrap_or("no instance"),
            s(f.takeover_s),
            f.takeover_bound_s,
            f.errors
        );
    }
}
