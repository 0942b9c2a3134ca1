//! `quotecast-bench`: the load client of quotecast, and its scenarios.
//!
//! It starts the server itself (temporary SQLite database, simulated or fake
//! Yahoo upstream, raised limits) or targets a running one (`--url`,
//! `--token`), opens WebSocket sessions over watchlists it creates through
//! the public API, and measures what a user would see: connect rate,
//! delivery latency from each message's `ts` to its receipt, messages and
//! bytes per second, `seq` gaps, and the server's RSS and CPU from /proc.
//! Each scenario also runs the same shape against a bare broadcaster (the
//! ceiling, [`ceiling`]) so quotecast's numbers read as a ratio to what this
//! machine can do at all. `docs/BENCHMARKS.md` has the procedure and results.

mod alerts;
mod ceiling;
mod client;
mod cluster;
mod cpu;
mod hist;
mod multiplex;
mod procinfo;
mod report;
mod storm;
mod target;

use clap::{Args, Parser, Subcommand, ValueEnum};
use client::{Clients, Plan};
use fake_yahoo::{Endpoint, FakeYahoo};
use report::{
    AfterClose, Check, ChurnReport, ConnectReport, DeliveryReport, Percentiles, Ratio, RunReport,
    ScenarioReport, ServerReport, Shape, ThreadCpu, UpstreamReport,
};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use target::{Kind, ServerSetup, Target};

#[derive(Parser)]
#[command(
    name = "quotecast-bench",
    version,
    about = "Load client for quotecast: WebSocket sessions, delivery latency, throughput, memory per session, upstream requests per tick, churn, multiplexed sockets, reconnect storms, CPU per message; each measured against a bare broadcaster (the ceiling) too."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// 10,000 sessions on 1 watchlist of 20 symbols, 1 s tick: latency percentiles and msgs/s, quotecast and ceiling.
    Fanout(Opts),
    /// Steps the tick down (1000 ms ... 10 ms) at 2,000 sessions over 100 watchlists; the fastest tick kept on time with p99 < 100 ms and no gaps.
    Throughput(Opts),
    /// 19,000 idle sessions over 1,000 watchlists (60 s tick): server bytes per session, projected to 1M.
    Idle(Opts),
    /// 1,000 watchlists of 20 over 200 distinct symbols against a fake Yahoo: spark requests per tick (must be 10).
    Upstream(Opts),
    /// 100,000 connect/snapshot/close cycles at concurrency 200: rate, no leaked sessions or workers, RSS back within 10%.
    Churn(Opts),
    /// 200 /ws/v1 sockets x 10 subscriptions against 2,000 v1 sockets on the same watchlists, same server, 100 ms tick: msgs/s and p99 within 10%.
    Multiplex(Opts),
    /// 10,000 sessions: connects/s, then all dropped by the server at once and reconnecting at once; RSS back near the baseline after close.
    Storm(Opts),
    /// Server CPU per delivered message at 2,000 sessions x 100 ms and 10,000 sessions x 1 s, quotecast and ceiling.
    Cpu(Opts),
    /// Cluster mode on Redis: fanout through one cluster-mode instance vs single-process (ABBA), upstream requests per tick over 3 instances, SIGKILL of the poller holding 3,000 sessions.
    Cluster(Opts),
    /// 10,000 price alerts on 500 symbols (1 s tick, no sessions): the server's alert evaluation time per round (budget 1 ms).
    Alerts(Opts),
    /// One custom run shaped by the flags: quotecast, or the ceiling with --ceiling, or both with --both.
    Run(Opts),
    /// The ceiling broadcaster (started by the bench itself).
    #[command(hide = true)]
    CeilingServer(ceiling::CeilingArgs),
    /// A client process of --procs (started by the bench itself).
    #[command(hide = true)]
    Worker,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Only {
    Quotecast,
    Ceiling,
}

#[derive(Args, Clone, Debug)]
struct Opts {
    /// The quotecast binary to start (not used with --url).
    #[arg(long, default_value = "target/release/quotecast")]
    server_bin: PathBuf,
    /// Target a running quotecast instead of starting one (needs --token of an admin user).
    #[arg(long, requires = "token")]
    url: Option<String>,
    /// API token of an admin user of the --url server.
    #[arg(long)]
    token: Option<String>,
    /// PID of the --url server, to read its RSS and CPU from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Sessions (scenario default otherwise).
    #[arg(long)]
    sessions: Option<usize>,
    /// Watchlists the sessions are spread over (session i opens watchlist i mod W).
    #[arg(long)]
    watchlists: Option<usize>,
    /// Symbols per watchlist.
    #[arg(long)]
    symbols: Option<usize>,
    /// Distinct symbols over all watchlists (watchlist w holds (w*symbols + j) mod distinct).
    #[arg(long)]
    distinct: Option<usize>,
    /// Upstream tick (QUOTECAST__UPSTREAM__POLL_INTERVAL_MS), milliseconds.
    #[arg(long)]
    tick_ms: Option<u64>,
    /// Throughput: the ticks to step through, slowest first (e.g. 1000,500,250).
    #[arg(long, value_delimiter = ',')]
    ticks: Option<Vec<u64>>,
    /// Seconds of measuring, after the sessions are connected and warmed up.
    #[arg(long)]
    duration: Option<f64>,
    /// Seconds between the last connect and the start of measuring.
    #[arg(long)]
    warmup: Option<f64>,
    /// Client processes (the bench re-executes itself), each opening sessions/K.
    #[arg(long, default_value_t = 1)]
    procs: usize,
    /// Bind sessions round-robin to 127.0.0.1 .. 127.0.0.K. With one source
    /// address, connect() spends most of its time searching for a free local
    /// port once ~15k are in use; 1 turns binding off.
    #[arg(long, default_value_t = 4)]
    source_ips: usize,
    /// Sessions connecting at once, over all client processes (default 200); churn: cycles in flight.
    #[arg(long)]
    concurrency: Option<usize>,
    /// Threads of each client process's runtime.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Runtime threads of the ceiling server (0: one per core, like quotecast's HTTP workers).
    #[arg(long, default_value_t = 0)]
    ceiling_threads: usize,
    /// Run the ceiling's threads under SCHED_BATCH, as quotecast runs its own
    /// by default (`server.batch_scheduling`): the same policy on both sides.
    #[arg(long)]
    ceiling_batch: bool,
    /// Make every session sleep this many ms after each message, so it lags: latency grows, and seq gaps appear once the server coalesces.
    #[arg(long, default_value_t = 0)]
    lag: u64,
    /// Run: measure the ceiling broadcaster instead of quotecast.
    #[arg(long, conflicts_with = "both")]
    ceiling: bool,
    /// Run: measure quotecast and the ceiling.
    #[arg(long)]
    both: bool,
    /// Scenarios: measure only one of the two.
    #[arg(long, value_enum)]
    only: Option<Only>,
    /// Throughput: bisection steps between the last passing and the first failing tick.
    #[arg(long, default_value_t = 2)]
    refine: usize,
    /// Churn: connect/disconnect cycles.
    #[arg(long)]
    cycles: Option<u64>,
    /// Alerts: how many alerts to create (spread over --distinct symbols, default 500).
    #[arg(long)]
    alerts: Option<usize>,
    /// Churn: cycles after which the reference RSS is taken.
    #[arg(long)]
    warmup_cycles: Option<u64>,
    /// Give up on one connect (and its snapshot) after this long.
    #[arg(long, default_value_t = 10_000)]
    connect_timeout_ms: u64,
    /// Multiplex: subscriptions per /ws/v1 socket (default 10); the v1 phase opens --sessions x this many sockets.
    #[arg(long)]
    subscriptions: Option<usize>,
    /// Multiplex: rounds of both phases (ABBA order: /ws/v1 first in even rounds).
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Storm: reconnects in flight at once per client process (0: every dropped session at once).
    #[arg(long, default_value_t = 0)]
    storm_concurrency: usize,
    /// Storm: give up on a dropped session not back after this long.
    #[arg(long, default_value_t = 60_000)]
    storm_limit_ms: u64,
    /// Storm: seconds to watch the server's RSS after every session closed.
    #[arg(long, default_value_t = 30.0)]
    rss_watch: f64,
    /// Storm: seconds between RSS samples after close.
    #[arg(long, default_value_t = 5.0)]
    rss_step: f64,
    /// Cluster: the Redis the instances share (the run's keys are removed at the end).
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Cluster: a PostgreSQL database to connect to, to create (and at the end drop) a scratch database `qcbench_<pid>` the instances share.
    #[arg(long, default_value = "postgres://root@127.0.0.1:5432/postgres")]
    pg_url: String,
    /// Cluster: instances of the spread and failover phase.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Cluster: sessions spread round-robin over the instances (spread and failover phase).
    #[arg(long, default_value_t = 3_000)]
    cluster_sessions: usize,
    /// Cluster: watchlists of the spread phase.
    #[arg(long, default_value_t = 300)]
    cluster_watchlists: usize,
    /// Cluster: distinct symbols of the spread phase (requests per tick must be ceil(distinct / 20)).
    #[arg(long, default_value_t = 200)]
    cluster_distinct: usize,
    /// Cluster: `cluster.lease_ms` of every instance.
    #[arg(long, default_value_t = 10_000)]
    lease_ms: u64,
    /// Before starting, wait (up to 10 min) until the 1-minute load average is below this (0: do not wait).
    #[arg(long, default_value_t = 0.0)]
    max_load: f64,
    /// Extra environment for the quotecast server, KEY=VALUE (repeatable).
    #[arg(long = "server-env", value_name = "KEY=VALUE")]
    server_env: Vec<String>,
    /// Copy the server's log to stderr.
    #[arg(long)]
    server_log: bool,
    /// Print the report as JSON on stdout (progress still goes to stderr).
    #[arg(long)]
    json: bool,
    /// Also write the JSON report to this file.
    #[arg(long, value_name = "FILE")]
    save: Option<PathBuf>,
}

/// One run's shape and timing.
#[derive(Clone)]
struct Spec {
    shape: Shape,
    warmup: f64,
    duration: f64,
}

const BATCH_SIZE: usize = 20;
const FD_LIMIT_HINT: &str = "raise `ulimit -n` or use --procs/--source-ips";

pub fn runtime(threads: usize) -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))
}

fn progress(msg: impl AsRef<str>) {
    eprintln!(
        "[bench {}] {}",
        chrono::Local::now().format("%H:%M:%S"),
        msg.as_ref()
    );
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::CeilingServer(a) => ceiling::main(a),
        Cmd::Worker => {
            procinfo::raise_fd_limit();
            client::worker_main()
        }
        Cmd::Fanout(o) => scenario("fanout", o),
        Cmd::Throughput(o) => scenario("throughput", o),
        Cmd::Idle(o) => scenario("idle", o),
        Cmd::Upstream(o) => scenario("upstream", o),
        Cmd::Churn(o) => scenario("churn", o),
        Cmd::Multiplex(o) => scenario("multiplex", o),
        Cmd::Storm(o) => scenario("storm", o),
        Cmd::Cpu(o) => scenario("cpu", o),
        Cmd::Alerts(o) => scenario("alerts", o),
        Cmd::Cluster(o) => scenario("cluster", o),
        Cmd::Run(o) => scenario("run", o),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quotecast-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn scenario(name: &'static str, opts: Opts) -> Result<(), String> {
    let fd = procinfo::raise_fd_limit();
    let rt = runtime(opts.client_threads)?;
    let rep = rt.block_on(async {
        wait_quiet(opts.max_load).await;
        let mut rep = ScenarioReport {
            scenario: name.to_owned(),
            machine: procinfo::machine(fd),
            started_at: chrono::Utc::now().to_rfc3339(),
            runs: Vec::new(),
            ratios: Vec::new(),
            checks: Vec::new(),
            notes: Vec::new(),
            cluster: None,
        };
        match name {
            "fanout" => fanout(&opts, &mut rep).await?,
            "throughput" => throughput(&opts, &mut rep).await?,
            "idle" => idle(&opts, &mut rep).await?,
            "upstream" => upstream(&opts, &mut rep).await?,
            "churn" => churn(&opts, &mut rep).await?,
            "multiplex" => multiplex::scenario(&opts, &mut rep).await?,
            "storm" => storm::scenario(&opts, &mut rep).await?,
            "cpu" => cpu::scenario(&opts, &mut rep).await?,
            "alerts" => alerts::scenario(&opts, &mut rep).await?,
            "cluster" => cluster::scenario(&opts, &mut rep).await?,
            _ => custom(&opts, &mut rep).await?,
        }
        Ok::<_, String>(rep)
    })?;
    // The sessions are closed; do not wait for stray tasks.
    rt.shutdown_background();
    let json = serde_json::to_string_pretty(&rep).map_err(|e| e.to_string())?;
    if let Some(path) = &opts.save {
        std::fs::write(path, &json).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if opts.json {
        println!("{json}");
    } else {
        print!("{}", report::human(&rep));
    }
    Ok(())
}

/// Points a quotecast the bench starts at the fake Yahoo, with a rate budget
/// that never holds a tick back.
fn fake_upstream_env(f: &FakeYahoo) -> Vec<(String, String)> {
    [
        ("QUOTECAST__UPSTREAM__PROVIDER", "yahoo".to_owned()),
        ("QUOTECAST__UPSTREAM__BASE_URL", f.base_url()),
        ("QUOTECAST__UPSTREAM__BATCH_SIZE", BATCH_SIZE.to_string()),
        ("QUOTECAST__UPSTREAM__RATE_LIMIT__CAPACITY", "10000".into()),
        (
            "QUOTECAST__UPSTREAM__RATE_LIMIT__REFILL_PER_SEC",
            "10000".into(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

// --- scenario definitions ----------------------------------------------------

/// The `fanout` shape: many v1 sockets on one 20-symbol watchlist, a tick a
/// second. The other scenarios' shapes say how they differ from it.
const FANOUT: Shape = Shape {
    sessions: 10_000,
    watchlists: 1,
    symbols: 20,
    distinct: 20,
    tick_ms: 1000,
    subscriptions: 0,
};

/// `fanout`'s spec; the cluster scenario compares on it too.
fn fanout_spec(o: &Opts) -> Spec {
    spec(o, FANOUT, 3.0, 20.0)
}

fn spec(o: &Opts, d: Shape, warmup: f64, duration: f64) -> Spec {
    let symbols = o.symbols.unwrap_or(d.symbols);
    Spec {
        shape: Shape {
            sessions: o.sessions.unwrap_or(d.sessions),
            watchlists: o.watchlists.unwrap_or(d.watchlists).max(1),
            symbols,
            distinct: o.distinct.unwrap_or(d.distinct).max(symbols),
            tick_ms: o.tick_ms.unwrap_or(d.tick_ms),
            subscriptions: d.subscriptions,
        },
        warmup: o.warmup.unwrap_or(warmup),
        duration: o.duration.unwrap_or(duration),
    }
}

/// The targets a scenario measures, ceiling first.
fn kinds(o: &Opts) -> Vec<Kind> {
    match o.only {
        Some(Only::Quotecast) => vec![Kind::Quotecast],
        Some(Only::Ceiling) => vec![Kind::Ceiling],
        None => vec![Kind::Ceiling, Kind::Quotecast],
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn ratio_of(q: &RunReport, c: &RunReport) -> Ratio {
    Ratio {
        what: "quotecast / ceiling".into(),
        shape: report::shape_label(&q.shape),
        msgs_per_s: ratio(Some(q.delivery.msgs_per_s), Some(c.delivery.msgs_per_s)),
        p50: ratio(q.delivery.latency.p50_ms, c.delivery.latency.p50_ms),
        p99: ratio(q.delivery.latency.p99_ms, c.delivery.latency.p99_ms),
        connects_per_s: ratio(Some(q.connect.per_s), Some(c.connect.per_s)),
        bytes_per_session: ratio(q.server.bytes_per_session, c.server.bytes_per_session),
        cpu_us_per_msg: ratio(q.server.cpu_us_per_msg, c.server.cpu_us_per_msg),
    }
}

fn check(name: &str, target: &str, measured: String, pass: bool) -> Check {
    Check {
        name: name.to_owned(),
        target: target.to_owned(),
        measured,
        pass,
    }
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1} ms"))
}

/// Checks every run of quotecast must pass: no gaps unless lagging on
/// purpose, nothing left on the server after the sessions closed.
fn invariant_checks(o: &Opts, r: &RunReport, checks: &mut Vec<Check>) {
    if o.lag == 0 {
        checks.push(check(
            &format!("{}: seq gaps ({})", r.target, report::shape_label(&r.shape)),
            "0",
            r.delivery.seq_gaps.to_string(),
            r.delivery.seq_gaps == 0,
        ));
    }
    if let (Some(s), Some(w)) = (r.after_close.sessions, r.after_close.workers) {
        checks.push(check(
            &format!("{}: sessions/workers left after close", r.target),
            "0/0",
            format!("{s}/{w}"),
            s == 0 && w == 0,
        ));
    }
}

fn find(runs: &[RunReport], kind: Kind) -> Option<&RunReport> {
    runs.iter().find(|r| r.target == kind.name())
}

/// Measures `s` on each target asked for; returns the quotecast and ceiling
/// runs (either may be absent with `--only`).
async fn measure_each(
    o: &Opts,
    s: &Spec,
    rep: &mut ScenarioReport,
) -> Result<(Option<RunReport>, Option<RunReport>), String> {
    for k in kinds(o) {
        let r = measure(o, k, s, None).await?;
        rep.runs.push(r);
    }
    Ok((
        find(&rep.runs, Kind::Quotecast).cloned(),
        find(&rep.runs, Kind::Ceiling).cloned(),
    ))
}

fn connect_rate_check(q: &RunReport) -> Check {
    check(
        "quotecast connects/s",
        ">= 5000",
        format!("{:.0}", q.connect.per_s),
        q.connect.per_s >= 5000.0,
    )
}

async fn fanout(o: &Opts, rep: &mut ScenarioReport) -> Result<(), String> {
    let s = fanout_spec(o);
    let (q, c) = measure_each(o, &s, rep).await?;
    if let Some(q) = &q {
        let p99 = q.delivery.latency.p99_ms;
        rep.checks.push(check(
            "quotecast p99 delivery latency",
            "<= 150 ms",
            fmt_ms(p99),
            p99.is_some_and(|v| v <= 150.0),
        ));
        rep.checks.push(connect_rate_check(q));
        invariant_checks(o, q, &mut rep.checks);
    }
    if let (Some(q), Some(c)) = (&q, &c) {
        let r = ratio_of(q, c);
        rep.checks.push(check(
            "p99 vs ceiling",
            "<= 1.25x",
            format!(
                "{} vs {} = {:.2}x",
                fmt_ms(q.delivery.latency.p99_ms),
                fmt_ms(c.delivery.latency.p99_ms),
                r.p99.unwrap_or(f64::NAN)
            ),
            r.p99.is_some_and(|v| v <= 1.25),
        ));
        rep.checks.push(check(
            "msgs/s vs ceiling",
            ">= 0.70x",
            format!(
                "{:.0} vs {:.0} = {:.2}x",
                q.delivery.msgs_per_s,
                c.delivery.msgs_per_s,
                r.msgs_per_s.unwrap_or(f64::NAN)
            ),
            r.msgs_per_s.is_some_and(|v| v >= 0.7),
        ));
        rep.ratios.push(r);
    }
    Ok(())
}

async fn throughput(o: &Opts, rep: &mut ScenarioReport) -> Result<(), String> {
    let base = spec(
        o,
        Shape {
            sessions: 2_000,
            watchlists: 100,
            distinct: 200,
            ..FANOUT
        },
        2.0,
        6.0,
    );
    let ticks = o
        .ticks
        .clone()
        .unwrap_or_else(|| vec![1000, 500, 250, 100, 50, 25, 10]);
    let mut best: BTreeMap<&'static str, RunReport> = BTreeMap::new();
    let mut peak: BTreeMap<&'static str, RunReport> = BTreeMap::new();
    for k in kinds(o) {
        let mut last_pass: Option<u64> = None;
        let mut first_miss: Option<u64> = None;
        let mut plan: Vec<u64> = ticks.clone();
        plan.reverse();
        let mut refinements = 0;
        while let Some(t) = plan.pop() {
            let mut s = base.clone();
            s.shape.tick_ms = t;
            let r = measure(o, k, &s, None).await?;
            let p99 = r.delivery.latency.p99_ms;
            // A server that stretches its tick under load is not keeping it.
            let on_time = r.delivery.msgs_per_s >= 0.9 * r.delivery.expected_msgs_per_s;
            let ok = p99.is_some_and(|v| v < 100.0)
                && r.delivery.seq_gaps == 0
                && r.connect.failed == 0
                && on_time;
            if k == Kind::Quotecast {
                invariant_checks(o, &r, &mut rep.checks);
            }
            rep.runs.push(r.clone());
            if peak
                .get(k.name())
                .is_none_or(|p| r.delivery.msgs_per_s > p.delivery.msgs_per_s)
            {
                peak.insert(k.name(), r.clone());
            }
            if ok {
                last_pass = Some(t);
                best.insert(k.name(), r);
            } else {
                progress(format!(
                    "{}: tick {t} ms misses (p99 {}, {} gaps, {:.0} of {:.0} msgs/s)",
                    k.name(),
                    fmt_ms(p99),
                    r.delivery.seq_gaps,
                    r.delivery.msgs_per_s,
                    r.delivery.expected_msgs_per_s
                ));
                first_miss = Some(first_miss.map_or(t, |m: u64| m.max(t)));
                plan.clear();
            }
            // Between the last pass and the first miss, halve the interval
            // a few times: the steps of the list are coarse.
            if plan.is_empty() && refinements < o.refine {
                if let (Some(pass), Some(miss)) = (last_pass, first_miss) {
                    let mid = (pass + miss) / 2;
                    if mid != pass && mid != miss {
                        refinements += 1;
                        plan.push(mid);
                    }
                }
            }
        }
        // Capacity: the fastest tick of the list, whatever the latency; the
        // messages delivered per second are what the server sustains.
        let fastest = *ticks.last().unwrap_or(&10);
        if !rep
            .runs
            .iter()
            .any(|r| r.target == k.name() && r.shape.tick_ms == fastest)
        {
            let mut s = base.clone();
            s.shape.tick_ms = fastest;
            progress(format!("{}: saturation run at {fastest} ms", k.name()));
            let r = measure(o, k, &s, None).await?;
            if peak
                .get(k.name())
                .is_none_or(|p| r.delivery.msgs_per_s > p.delivery.msgs_per_s)
            {
                peak.insert(k.name(), r.clone());
            }
            rep.runs.push(r);
        }
    }
    if let (Some(q), Some(c)) = (peak.get("quotecast"), peak.get("ceiling")) {
        let x = q.delivery.msgs_per_s / c.delivery.msgs_per_s.max(1e-9);
        rep.checks.push(check(
            "peak msgs/s delivered (any tick, any latency) vs ceiling",
            ">= 0.70x",
            format!(
                "{:.0} (tick {} ms) vs {:.0} (tick {} ms) = {x:.2}x",
                q.delivery.msgs_per_s, q.shape.tick_ms, c.delivery.msgs_per_s, c.shape.tick_ms
            ),
            x >= 0.7,
        ));
    }
    let q = best.get("quotecast");
    let c = best.get("ceiling");
    for (name, r) in [("quotecast", q), ("ceiling", c)] {
        if kinds(o).iter().any(|k| k.name() == name) {
            rep.checks.push(check(
                &format!(
                    "{name}: fastest tick with p99 < 100 ms, no gaps, >= 90% of on-time msgs/s"
                ),
                "(reported)",
                r.map_or("none".into(), |r| {
                    format!(
                        "{} ms: {:.0} msgs/s, p99 {}",
                        r.shape.tick_ms,
                        r.delivery.msgs_per_s,
                        fmt_ms(r.delivery.latency.p99_ms)
                    )
                }),
                r.is_some(),
            ));
        }
    }
    if let (Some(q), Some(c)) = (q, c) {
        let x = q.delivery.msgs_per_s / c.delivery.msgs_per_s.max(1e-9);
        rep.checks.push(check(
            "sustained msgs/s (p99 < 100 ms) vs ceiling",
            ">= 0.70x",
            format!(
                "{:.0} vs {:.0} = {x:.2}x",
                q.delivery.msgs_per_s, c.delivery.msgs_per_s
            ),
            x >= 0.7,
        ));
        if c.shape.tick_ms == *ticks.last().unwrap_or(&0) {
            rep.notes.push(
                "the ceiling passed the fastest tick tried; its true limit is higher (try --ticks)"
                    .into(),
            );
        }
    }
    for (qr, cr) in rep
        .runs
        .iter()
        .filter(|r| r.target == "quotecast")
        .filter_map(|q| {
            rep.runs
                .iter()
                .find(|c| c.target == "ceiling" && c.shape.tick_ms == q.shape.tick_ms)
                .map(|c| (q, c))
        })
    {
        rep.ratios.push(ratio_of(qr, cr));
    }
    Ok(())
}

async fn idle(o: &Opts, rep: &mut ScenarioReport) -> Result<(), String> {
    let s = spec(
        o,
        Shape {
            sessions: 19_000,
            watchlists: 1_000,
            distinct: 200,
            tick_ms: 60_000,
            ..FANOUT
        },
        5.0,
        5.0,
    );
    let (q, c) = measure_each(o, &s, rep).await?;
    if let Some(q) = &q {
        rep.checks.push(check(
            "quotecast sessions held in one server process",
            &format!(">= {}", s.shape.sessions),
            q.connect.ok.to_string(),
            q.connect.ok >= s.shape.sessions as u64 && q.delivery.live_sessions == q.connect.ok,
        ));
        let bps = q.server.bytes_per_session;
        rep.checks.push(check(
            "quotecast server RSS per idle session",
            "<= 16384 B",
            bps.map_or("-".into(), |v| format!("{v:.0} B")),
            bps.is_some_and(|v| v <= 16384.0),
        ));
        rep.checks.push(connect_rate_check(q));
        invariant_checks(o, q, &mut rep.checks);
        if let Some(cpu) = q.server.cpu_percent {
            rep.notes.push(format!(
                "idle CPU: {cpu:.0}% of one core for {} idle sessions (heartbeat pings and pongs); \
                 linearly, 1,000,000 idle sessions would need about {:.1} cores for that alone",
                q.connect.ok,
                cpu / 100.0 * 1e6 / q.connect.ok.max(1) as f64
            ));
        }
        if let (Some(b), Some(bps)) = (q.server.rss_baseline, bps) {
            let gib = (b as f64 + 1e6 * bps) / (1u64 << 30) as f64;
            rep.notes.push(format!(
                "projection: 1,000,000 idle sessions would take about {gib:.1} GiB of server RSS \
                 ({:.1} KiB each plus a {:.0} MiB base); one process also needs 1M descriptors \
                 (fs.nr_open, ulimit -n) and clients from many source addresses (~28k ports each)",
                bps / 1024.0,
                b as f64 / 1048576.0
            ));
        }
    }
    if let (Some(q), Some(c)) = (&q, &c) {
        rep.ratios.push(ratio_of(q, c));
    }
    Ok(())
}

async fn upstream(o: &Opts, rep: &mut ScenarioReport) -> Result<(), String> {
    let s = spec(
        o,
        Shape {
            sessions: 1_000,
            watchlists: 1_000,
            distinct: 200,
            ..FANOUT
        },
        3.0,
        10.0,
    );
    if o.url.is_some() {
        return Err(
            "upstream: needs a server the bench starts (it points it at a fake Yahoo); drop --url"
                .into(),
        );
    }
    let fake = FakeYahoo::start();
    let r = measure(o, Kind::Quotecast, &s, Some(&fake)).await?;
    let expected = s.shape.distinct.div_ceil(BATCH_SIZE);
    if let Some(u) = &r.upstream {
        let exact = !u.spark_per_tick.is_empty() && u.spark_per_tick.iter().all(|&n| n == expected);
        rep.checks.push(check(
            "spark requests per tick",
            &format!(
                "exactly ceil({}/{BATCH_SIZE}) = {expected}",
                s.shape.distinct
            ),
            format!(
                "{:?} over {} ticks",
                u.spark_per_tick,
                u.spark_per_tick.len()
            ),
            exact,
        ));
        rep.checks.push(check(
            "chart (single-symbol) requests",
            "0",
            u.chart_requests.map_or("-".into(), |v| v.to_string()),
            u.chart_requests == Some(0),
        ));
        rep.checks.push(check(
            "symbols per spark request",
            &format!("<= {BATCH_SIZE}"),
            u.max_symbols_per_request
                .map_or("-".into(), |v| v.to_string()),
            u.max_symbols_per_request.is_some_and(|v| v <= BATCH_SIZE),
        ));
    }
    invariant_checks(o, &r, &mut rep.checks);
    rep.notes
        .push("no ceiling run: the ceiling has no upstream; this scenario counts requests".into());
    rep.runs.push(r);
    Ok(())
}

async fn custom(o: &Opts, rep: &mut ScenarioReport) -> Result<(), String> {
    let s = spec(
        o,
        Shape {
            sessions: 1_000,
            watchlists: 10,
            ..FANOUT
        },
        2.0,
        10.0,
    );
    let ks = if o.both {
        vec![Kind::Ceiling, Kind::Quotecast]
    } else if o.ceiling {
        vec![Kind::Ceiling]
    } else {
        vec![Kind::Quotecast]
    };
    for k in ks {
        let r = measure(o, k, &s, None).await?;
        if k == Kind::Quotecast {
            invariant_checks(o, &r, &mut rep.checks);
        }
        rep.runs.push(r);
    }
    if let (Some(q), Some(c)) = (
        find(&rep.runs, Kind::Quotecast),
        find(&rep.runs, Kind::Ceiling),
    ) {
        rep.ratios.push(ratio_of(q, c));
    }
    Ok(())
}

// --- one measured run ----------------------------------------------------------

async fn wait_quiet(max_load: f64) {
    if max_load <= 0.0 {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let l = procinfo::load1();
        if l < max_load {
            return;
        }
        if Instant::now() > deadline {
            progress(format!("load still {l:.2} after 10 min; measuring anyway"));
            return;
        }
        progress(format!("load {l:.2} >= {max_load}; waiting 30 s"));
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
}

fn parse_env(o: &Opts) -> Result<Vec<(String, String)>, String> {
    o.server_env
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| format!("--server-env {kv}: expected KEY=VALUE"))
        })
        .collect()
}

async fn start_target(
    o: &Opts,
    kind: Kind,
    s: &Shape,
    fake: Option<&FakeYahoo>,
) -> Result<Target, String> {
    let t = start_server(o, kind, s, fake).await?;
    // The policy the server's threads run under moves its numbers (the
    // storm's most): each run's log says which it was.
    if let Some(policy) = t.pid.and_then(procinfo::sched_policy) {
        progress(format!("  {} runs under {policy}", kind.name()));
    }
    Ok(t)
}

async fn start_server(
    o: &Opts,
    kind: Kind,
    s: &Shape,
    fake: Option<&FakeYahoo>,
) -> Result<Target, String> {
    match kind {
        Kind::Ceiling => {
            let mut args: Vec<String> = [
                ("--tick-ms", s.tick_ms.to_string()),
                ("--watchlists", s.watchlists.to_string()),
                ("--symbols", s.symbols.to_string()),
                ("--distinct", s.distinct.to_string()),
                ("--threads", o.ceiling_threads.to_string()),
            ]
            .into_iter()
            .flat_map(|(k, v)| [k.to_owned(), v])
            .collect();
            if o.ceiling_batch {
                args.push("--batch-scheduling".into());
            }
            Target::start_ceiling(&args, o.server_log).await
        }
        Kind::Quotecast => {
            if let Some(url) = &o.url {
                return Target::external(url, o.token.as_deref().unwrap_or(""), o.server_pid).await;
            }
            let mut extra_env = Vec::new();
            if let Some(f) = fake {
                extra_env.extend(fake_upstream_env(f));
            }
            extra_env.extend(parse_env(o)?);
            Target::start_quotecast(ServerSetup {
                bin: &o.server_bin,
                tick_ms: s.tick_ms,
                sessions: s.sessions,
                watchlists: s.watchlists,
                symbols: s.symbols,
                extra_env,
                forward_log: o.server_log,
                token: None,
            })
            .await
        }
    }
}

/// The upstream's side of a window: the server's request and cycle counts
/// (admin stats deltas) and what the fake Yahoo saw.
fn upstream_report(
    f: &FakeYahoo,
    s: &Shape,
    requests: Option<u64>,
    cycles: Option<u64>,
    errors: Option<u64>,
) -> UpstreamReport {
    UpstreamReport {
        distinct_symbols: s.distinct,
        batch_size: BATCH_SIZE,
        expected_per_tick: s.distinct.div_ceil(BATCH_SIZE),
        requests,
        cycles,
        requests_per_cycle: match (requests, cycles) {
            (Some(r), Some(c)) if c > 0 => Some(r as f64 / c as f64),
            _ => None,
        },
        spark_per_tick: spark_per_tick(f, s.tick_ms),
        chart_requests: Some(f.chart_requests()),
        max_symbols_per_request: Some(f.max_spark_symbols()),
        errors,
    }
}

/// Messages the server dropped between two reads of `/metrics`.
fn dropped_between(
    a: &Option<BTreeMap<String, f64>>,
    b: &Option<BTreeMap<String, f64>>,
) -> Option<f64> {
    let name = "quotecast_messages_dropped_total";
    Some(b.as_ref()?.get(name)? - a.as_ref()?.get(name)?)
}

/// The server's memory with `sessions` connected, against before they were,
/// and what it dropped over the run.
fn loaded_server(
    t: &Target,
    dropped_run: Option<f64>,
    baseline: &Option<procinfo::Sample>,
    loaded: &Option<procinfo::Sample>,
    sessions: u64,
) -> ServerReport {
    let mut server = ServerReport {
        pid: t.pid,
        messages_dropped_run: dropped_run,
        ..Default::default()
    };
    if let (Some(b), Some(l)) = (baseline, loaded) {
        server.rss_baseline = Some(b.rss_bytes);
        server.rss_loaded = Some(l.rss_bytes);
        server.fds_loaded = Some(l.fds);
        if sessions > 0 {
            server.bytes_per_session =
                Some((l.rss_bytes as f64 - b.rss_bytes as f64) / sessions as f64);
        }
    }
    server
}

/// Sessions connected to a target, and what their connect phase measured.
struct Connected {
    clients: Clients,
    stats: client::ConnectStats,
    report: ConnectReport,
    /// The server's `/metrics` from before the connects.
    metrics_start: Option<BTreeMap<String, f64>>,
}

/// Connects `sessions` sockets of `plan` to `t`, sampling the server around
/// the connects. Running out of file descriptors or local ports is an error
/// (after closing what did connect): the numbers would be of a smaller run.
async fn connect_all(
    o: &Opts,
    t: &Target,
    plan: Plan,
    sessions: usize,
) -> Result<Connected, String> {
    let mut clients = Clients::new(plan, sessions, o.procs, o.client_threads).await?;
    let metrics_start = t.metrics().await;
    let before = t.sample();
    let cs = clients.connect().await?;
    let after = t.sample();
    progress(format!(
        "  connected {} of {} in {:.2} s",
        cs.ok, cs.requested, cs.seconds
    ));
    if let Some(e) = limit_error(&cs, t) {
        let _ = clients.close().await;
        return Err(e);
    }
    Ok(Connected {
        report: connect_report(&cs, &before, &after),
        clients,
        stats: cs,
        metrics_start,
    })
}

/// The connect phase, with the server's CPU from samples around it.
fn connect_report(
    cs: &client::ConnectStats,
    before: &Option<procinfo::Sample>,
    after: &Option<procinfo::Sample>,
) -> ConnectReport {
    let mut connect = ConnectReport::of(cs);
    if let (Some(a), Some(b)) = (before, after) {
        let secs = cs.seconds.max(1e-3);
        connect.server_cpu_percent = Some((b.cpu_s - a.cpu_s) / secs * 100.0);
        connect.server_threads = thread_cpu(a, b, secs);
        if cs.ok > 0 {
            connect.server_ctx_switches_per_connect =
                Some(b.ctx_switches_since(a) as f64 / cs.ok as f64);
        }
    }
    connect
}

/// The server's CPU over a measuring window, from samples at its ends.
fn window_cpu(
    server: &mut ServerReport,
    start: &Option<procinfo::Sample>,
    end: &Option<procinfo::Sample>,
    window: &client::WindowStats,
) {
    if let (Some(a), Some(b)) = (start, end) {
        server.cpu_percent = Some((b.cpu_s - a.cpu_s) / window.seconds * 100.0);
        server.threads = thread_cpu(a, b, window.seconds);
        if window.msgs > 0 {
            server.cpu_us_per_msg = Some((b.cpu_s - a.cpu_s) * 1e6 / window.msgs as f64);
            server.ctx_switches_per_msg = Some(b.ctx_switches_since(a) as f64 / window.msgs as f64);
        }
    }
}

fn thread_cpu(a: &procinfo::Sample, b: &procinfo::Sample, secs: f64) -> Vec<ThreadCpu> {
    let mut v: Vec<ThreadCpu> = b
        .threads
        .iter()
        .map(|(name, t)| ThreadCpu {
            name: name.clone(),
            cpu_percent: (t.0 - a.threads.get(name).map_or(0.0, |x| x.0)) / secs * 100.0,
        })
        .filter(|t| t.cpu_percent >= 0.5)
        .collect();
    v.sort_by(|x, y| y.cpu_percent.total_cmp(&x.cpu_percent));
    v
}

/// Waits until the fake Yahoo has just finished a tick's burst of requests,
/// so a window starts and ends between ticks and every tick in it is whole.
async fn between_ticks(fake: &FakeYahoo, tick_ms: u64) {
    let start = fake.total_requests();
    let deadline = Instant::now() + Duration::from_millis(2 * tick_ms + 1000);
    while fake.total_requests() == start && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let quiet = Duration::from_millis((tick_ms / 4).clamp(1, 100));
    let mut last = fake.total_requests();
    let mut since = Instant::now();
    while since.elapsed() < quiet && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
        let n = fake.total_requests();
        if n != last {
            last = n;
            since = Instant::now();
        }
    }
}

fn spark_per_tick(fake: &FakeYahoo, tick_ms: u64) -> Vec<usize> {
    let mut reqs: Vec<(Instant, Vec<String>)> = fake
        .requests()
        .into_iter()
        .filter(|r| r.endpoint == Endpoint::Spark)
        .map(|r| (r.received_at, r.symbols))
        .collect();
    reqs.sort_by_key(|r| r.0);
    ticks_of(&reqs, Duration::from_millis(tick_ms / 2))
}

/// Spark requests per upstream round. A round asks for each symbol once, so
/// a request naming a symbol the current round already asked for starts the
/// next one; so does a quiet gap longer than `split`. Gaps alone merge
/// rounds on a loaded machine, where a round's requests spread over more
/// than half a tick.
fn ticks_of(reqs: &[(Instant, Vec<String>)], split: Duration) -> Vec<usize> {
    let mut ticks = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut prev: Option<Instant> = None;
    for (t, symbols) in reqs {
        let repeat = symbols.iter().any(|s| seen.contains(s));
        match (prev, ticks.last_mut()) {
            (Some(p), Some(last)) if t.duration_since(p) <= split && !repeat => *last += 1,
            _ => {
                ticks.push(1);
                seen.clear();
            }
        }
        seen.extend(symbols.iter().cloned());
        prev = Some(*t);
    }
    ticks
}

fn stat_u64(v: &Option<serde_json::Value>, path: &[&str]) -> Option<u64> {
    let mut cur = v.as_ref()?;
    for p in path {
        cur = cur.get(*p)?;
    }
    cur.as_u64()
}

fn plan_for(o: &Opts, t: &Target, ids: Vec<i64>) -> Plan {
    Plan {
        addr: t.addr,
        token: t.token.clone(),
        watchlist_ids: ids,
        source_ips: o.source_ips,
        concurrency: o.concurrency.unwrap_or(200),
        lag_ms: o.lag,
        connect_timeout_ms: o.connect_timeout_ms,
        subscriptions: 0,
        reconnect: None,
        addrs: Vec::new(),
    }
}

/// The connect phase stopped on a limit: say which, and what to do.
fn limit_error(c: &client::ConnectStats, t: &Target) -> Option<String> {
    if let Some(at) = c.fd_limit_at {
        return Some(format!(
            "open-file limit reached at {at} sockets: {FD_LIMIT_HINT}"
        ));
    }
    if let Some(at) = c.no_ports_at {
        return Some(format!(
            "out of local ports at {at} sockets: use --source-ips K (or widen net.ipv4.ip_local_port_range)"
        ));
    }
    if c.failed > 0 {
        if let Some((fds, limit)) = t.fd_exhausted() {
            return Some(format!(
                "the {} server reached its open-file limit at {fds} descriptors (limit {limit}): \
                 raise its `ulimit -n`, or use fewer sessions",
                t.kind.name()
            ));
        }
    }
    None
}

/// Refuses a run whose sockets cannot fit in the client processes.
fn check_fd_room(o: &Opts, sessions: usize) -> Result<(), String> {
    let per_proc = sessions.div_ceil(o.procs.max(1)) as u64;
    let (soft, _) = procinfo::raise_fd_limit();
    if per_proc + 64 > soft {
        return Err(format!(
            "open-file limit {soft} is too low for {per_proc} sockets in one client process: {FD_LIMIT_HINT}"
        ));
    }
    Ok(())
}

/// One run on a target of its own: started, measured, stopped.
async fn measure(
    o: &Opts,
    kind: Kind,
    spec: &Spec,
    fake: Option<&FakeYahoo>,
) -> Result<RunReport, String> {
    let s = &spec.shape;
    check_fd_room(o, s.sessions)?;
    let load_before = procinfo::loadavg();
    progress(format!(
        "{}: {} (load {load_before})",
        kind.name(),
        report::shape_label(s)
    ));
    let mut t = start_target(o, kind, s, fake).await?;
    let measured = async {
        let ids = t
            .create_watchlists(s.watchlists, s.symbols, s.distinct)
            .await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        measure_on(o, &t, spec, ids, fake, load_before).await
    }
    .await;
    let stopped = t.stop().await;
    let (run, _) = measured?;
    stopped?;
    Ok(run)
}

/// One run on a target that is up, with its watchlists: connect, warm up,
/// measure, close, wait until the server has let go of every session.
/// Returns the report and the window's raw counts (to merge runs).
async fn measure_on(
    o: &Opts,
    t: &Target,
    spec: &Spec,
    ids: Vec<i64>,
    fake: Option<&FakeYahoo>,
    load_before: String,
) -> Result<(RunReport, client::WindowStats), String> {
    let s = &spec.shape;
    let kind = t.kind;
    let baseline = t.sample();

    let mut plan = plan_for(o, t, ids);
    plan.subscriptions = s.subscriptions;
    let Connected {
        mut clients,
        stats: cs,
        report: connect,
        metrics_start,
    } = connect_all(o, t, plan, s.sessions).await?;

    tokio::time::sleep(Duration::from_secs_f64(spec.warmup)).await;
    if let Some(f) = fake {
        between_ticks(f, s.tick_ms).await;
        f.reset_counters();
    }
    let stats_a = t.stats().await;
    let metrics_a = t.metrics().await;
    let loaded = t.sample();
    clients.start_window()?;
    tokio::time::sleep(Duration::from_secs_f64(spec.duration)).await;
    if let Some(f) = fake {
        between_ticks(f, s.tick_ms).await;
    }
    let window = clients.end_window().await?;
    let loaded_end = t.sample();
    let stats_b = t.stats().await;
    let metrics_b = t.metrics().await;
    let metric = |name: &str| -> Option<f64> {
        Some(metrics_b.as_ref()?.get(name)? - metrics_a.as_ref()?.get(name)?)
    };
    let upstream = fake.map(|f| {
        let d = |p: &[&str]| Some(stat_u64(&stats_b, p)? - stat_u64(&stats_a, p)?);
        let (requests, cycles) = (d(&["upstream", "requests"]), d(&["upstream", "cycles"]));
        upstream_report(f, s, requests, cycles, d(&["upstream", "errors"]))
    });
    progress(format!(
        "  measured {:.1} s: {} msgs, p99 {}",
        window.seconds,
        window.msgs,
        fmt_ms(Percentiles::of(&window.latency).p99_ms)
    ));

    let close = clients.close().await?;
    drop(clients);
    let drained = t.wait_drained(Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = t.sample();
    let metrics_end = t.metrics().await;

    let mut server = loaded_server(
        t,
        dropped_between(&metrics_start, &metrics_end),
        &baseline,
        &loaded,
        cs.ok,
    );
    server.rss_after_close = after.as_ref().map(|a| a.rss_bytes);
    window_cpu(&mut server, &loaded, &loaded_end, &window);
    if let (Some(sum), Some(n)) = (
        metric("quotecast_fanout_duration_seconds_sum"),
        metric("quotecast_fanout_duration_seconds_count"),
    ) {
        server.fanout_loop_ms = (n > 0.0).then(|| sum / n * 1000.0);
    }
    server.messages_dropped = metric("quotecast_messages_dropped_total");
    let per_tick = cs.ok * s.subscriptions.max(1) as u64;
    let sessions = Lived {
        connect,
        window,
        close,
        drained,
    };
    let run = RunReport {
        upstream,
        ..windowed_run(o, kind, s, load_before, server, &sessions, per_tick)
    };
    Ok((run, sessions.window))
}

/// What a run's sessions lived through, as the clients measured it: the
/// connects, the delivery window and the close; and whether the server let
/// go of them all after (`Target::wait_drained`).
struct Lived {
    connect: ConnectReport,
    window: client::WindowStats,
    close: client::CloseStats,
    drained: Option<(u64, u64, f64)>,
}

/// The report of a run measured over a delivery window and then closed (a
/// fan-out run, a storm). `per_tick` is how many `quotes` messages each tick
/// should bring the sessions. The scenario's own part (upstream, churn,
/// storm) is left for the caller.
fn windowed_run(
    o: &Opts,
    kind: Kind,
    s: &Shape,
    load_before: String,
    server: ServerReport,
    lived: &Lived,
    per_tick: u64,
) -> RunReport {
    let window = &lived.window;
    let mut delivery = DeliveryReport::of(window, Some(&lived.close));
    // Only meaningful when the window holds a few ticks.
    if window.seconds * 1000.0 >= 2.0 * s.tick_ms as f64 {
        delivery.expected_msgs_per_s = per_tick as f64 * 1000.0 / s.tick_ms.max(1) as f64;
    }
    RunReport {
        target: kind.name(),
        shape: s.clone(),
        load_before,
        connect: lived.connect.clone(),
        delivery,
        server,
        client_cpu_percent: window.client_cpu_percent(),
        client_procs: o.procs.max(1),
        after_close: AfterClose::of(&lived.close, lived.drained),
        upstream: None,
        churn: None,
        storm: None,
    }
}

// --- churn ---------------------------------------------------------------------

async fn churn(o: &Opts, rep: &mut ScenarioReport) -> Result<(), String> {
    let s = spec(
        o,
        Shape {
            sessions: 0,
            watchlists: 10,
            ..FANOUT
        },
        0.0,
        0.0,
    );
    let cycles = o.cycles.unwrap_or(100_000);
    let warmup = o.warmup_cycles.unwrap_or(10_000).min(cycles);
    let mut shape = s.shape.clone();
    shape.sessions = o.concurrency.unwrap_or(200).max(1);
    for k in kinds(o) {
        let r = churn_run(o, k, &shape, cycles, warmup).await?;
        if k == Kind::Quotecast {
            if let (Some(s), Some(w)) = (r.after_close.sessions, r.after_close.workers) {
                rep.checks.push(check(
                    "quotecast: sessions/workers left after churn",
                    "0/0",
                    format!("{s}/{w}"),
                    s == 0 && w == 0,
                ));
            }
            if let Some(c) = &r.churn {
                rep.checks.push(check(
                    "quotecast churn cycles/s (connect, snapshot, close)",
                    ">= 5000 connects/s",
                    format!("{:.0}", c.cycles_per_s),
                    c.cycles_per_s >= 5000.0,
                ));
                rep.checks.push(check(
                    "quotecast churn failures",
                    "0",
                    c.failed.to_string(),
                    c.failed == 0,
                ));
                rep.checks.push(check(
                    &format!("quotecast RSS after {cycles} cycles vs after {warmup}"),
                    "within 10%",
                    c.rss_ratio
                        .map_or("-".into(), |v| format!("{:+.1}%", (v - 1.0) * 100.0)),
                    c.rss_ratio.is_some_and(|v| (0.9..=1.1).contains(&v)),
                ));
            }
        }
        rep.runs.push(r);
    }
    if let (Some(q), Some(c)) = (
        find(&rep.runs, Kind::Quotecast),
        find(&rep.runs, Kind::Ceiling),
    ) {
        if let (Some(qc), Some(cc)) = (&q.churn, &c.churn) {
            rep.ratios.push(Ratio {
                what: "quotecast / ceiling".into(),
                shape: format!("churn, concurrency {}", qc.concurrency),
                msgs_per_s: None,
                p50: ratio(qc.cycle_latency.p50_ms, cc.cycle_latency.p50_ms),
                p99: ratio(qc.cycle_latency.p99_ms, cc.cycle_latency.p99_ms),
                connects_per_s: Some(qc.cycles_per_s / cc.cycles_per_s.max(1e-9)),
                bytes_per_session: None,
                cpu_us_per_msg: None,
            });
        }
    }
    Ok(())
}

async fn churn_run(
    o: &Opts,
    kind: Kind,
    s: &Shape,
    cycles: u64,
    warmup: u64,
) -> Result<RunReport, String> {
    let load_before = procinfo::loadavg();
    let concurrency = s.sessions;
    progress(format!(
        "{}: churn, {cycles} cycles at concurrency {concurrency} over {} watchlist(s) (load {load_before})",
        kind.name(),
        s.watchlists
    ));
    let mut t = start_target(o, kind, s, None).await?;
    let ids = Arc::new(
        t.create_watchlists(s.watchlists, s.symbols, s.distinct)
            .await?,
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline = t.sample();

    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let lat = Arc::new(hist::AtomicHist::default());
    let errors = Arc::new(std::sync::Mutex::new((
        BTreeMap::<String, u64>::new(),
        None::<String>,
    )));
    let limit = Duration::from_millis(o.connect_timeout_ms);
    let started = Instant::now();
    let cpu0 = procinfo::self_cpu_seconds();
    let srv0 = t.sample();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (next, done, lat, errors, ids) = (
            next.clone(),
            done.clone(),
            lat.clone(),
            errors.clone(),
            ids.clone(),
        );
        let (addr, token, source_ips) = (t.addr, t.token.clone(), o.source_ips);
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= cycles {
                    break;
                }
                let t0 = Instant::now();
                let src = (source_ips > 1).then(|| {
                    std::net::IpAddr::V4(std::net::Ipv4Addr::new(
                        127,
                        0,
                        0,
                        1 + (i as usize % source_ips) as u8,
                    ))
                });
                let wl = ids[i as usize % ids.len()];
                let res = tokio::time::timeout(limit, async {
                    let mut ws = client::open_ws(addr, src, wl, token.as_deref()).await?;
                    client::first_text(&mut ws, limit)
                        .await
                        .ok_or_else(|| "no_snapshot: no snapshot".to_owned())?;
                    client::close_ws(&mut ws).await;
                    Ok::<_, String>(())
                })
                .await
                .unwrap_or_else(|_| Err("timeout: no answer in time".into()));
                match res {
                    Ok(()) => lat.record(t0.elapsed().as_micros() as u64),
                    Err(e) => {
                        let key = e.split(':').next().unwrap_or("other").to_owned();
                        let mut g = errors.lock().unwrap_or_else(|p| p.into_inner());
                        *g.0.entry(key).or_default() += 1;
                        g.1.get_or_insert(e);
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let mut rss_warm = None;
    let mut rss_trace = Vec::new();
    let step = (cycles / 10).max(1);
    let mut last_report = Instant::now();
    while done.load(Ordering::Relaxed) < cycles {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let d = done.load(Ordering::Relaxed);
        if rss_warm.is_none() && d >= warmup {
            rss_warm = Some(t.sample().map(|x| x.rss_bytes));
        }
        if d >= step * (rss_trace.len() as u64 + 1) {
            if let Some(x) = t.sample() {
                rss_trace.push((d, x.rss_bytes));
            }
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            last_report = Instant::now();
            progress(format!("  {d} cycles"));
        }
        if tasks.iter().all(|t| t.is_finished()) {
            break;
        }
    }
    for task in tasks {
        let _ = task.await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let client_cpu = procinfo::self_cpu_seconds() - cpu0;
    let srv1 = t.sample();
    let drained = t.wait_drained(Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let end = t.sample();
    let (errs, first_error) = {
        let g = errors.lock().unwrap_or_else(|p| p.into_inner());
        (g.0.clone(), g.1.clone())
    };
    let failed: u64 = errs.values().sum();
    if errs.contains_key("fd_limit") {
        let _ = t.stop().await;
        return Err(format!(
            "open-file limit reached during churn at concurrency {concurrency}: {FD_LIMIT_HINT}"
        ));
    }
    let lat = lat.snapshot();
    let ok = lat.count();
    let rss_after_warmup = rss_warm.flatten();
    let rss_end = end.as_ref().map(|e| e.rss_bytes);
    let mut server = ServerReport {
        pid: t.pid,
        rss_baseline: baseline.as_ref().map(|b| b.rss_bytes),
        rss_loaded: rss_after_warmup,
        rss_after_close: rss_end,
        ..Default::default()
    };
    if let (Some(a), Some(b)) = (&srv0, &srv1) {
        server.cpu_percent = Some((b.cpu_s - a.cpu_s) / seconds * 100.0);
        server.threads = thread_cpu(a, b, seconds);
    }
    let cycle_latency = Percentiles::of(&lat);
    let run = RunReport {
        target: kind.name(),
        shape: s.clone(),
        load_before,
        connect: ConnectReport {
            requested: cycles,
            ok,
            failed,
            seconds,
            per_s: ok as f64 / seconds.max(1e-9),
            errors: errs.clone(),
            first_error: first_error.clone(),
            latency: cycle_latency.clone(),
            server_cpu_percent: server.cpu_percent,
            client_cpu_percent: Some(client_cpu / seconds.max(1e-9) * 100.0),
            server_threads: server.threads.clone(),
            server_ctx_switches_per_connect: match (&srv0, &srv1) {
                (Some(a), Some(b)) if ok > 0 => Some(b.ctx_switches_since(a) as f64 / ok as f64),
                _ => None,
            },
        },
        delivery: DeliveryReport::of(&client::WindowStats::default(), None),
        server,
        client_cpu_percent: client_cpu / seconds.max(1e-9) * 100.0,
        client_procs: 1,
        after_close: AfterClose {
            clean_closes: ok,
            unclean_closes: 0,
            close_s: 0.0,
            sessions: drained.map(|d| d.0),
            workers: drained.map(|d| d.1),
            drained_s: drained.map(|d| d.2),
        },
        upstream: None,
        churn: Some(ChurnReport {
            cycles: ok,
            failed,
            concurrency,
            seconds,
            cycles_per_s: ok as f64 / seconds.max(1e-9),
            errors: errs,
            first_error,
            warmup_cycles: warmup,
            rss_after_warmup,
            rss_end,
            rss_ratio: match (rss_after_warmup, rss_end) {
                (Some(a), Some(b)) if a > 0 => Some(b as f64 / a as f64),
                _ => None,
            },
            cycle_latency,
            rss_trace,
        }),
        storm: None,
    };
    t.stop().await?;
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_split_on_a_repeated_symbol_or_a_quiet_gap() {
        let t0 = Instant::now();
        let req = |ms: u64, syms: &[&str]| {
            (
                t0 + Duration::from_millis(ms),
                syms.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            )
        };
        let split = Duration::from_millis(500);
        // Slow rounds whose requests leave no long gap: the repeats split them.
        let slow = [
            req(0, &["A", "B"]),
            req(300, &["C"]),
            req(600, &["A", "B"]),
            req(900, &["C"]),
            req(1200, &["A"]),
        ];
        assert_eq!(ticks_of(&slow, split), [2, 2, 1]);
        // A gap splits too, even without a repeat.
        let gap = [req(0, &["A"]), req(1000, &["B"]), req(1100, &["C"])];
        assert_eq!(ticks_of(&gap, split), [1, 2]);
        // A round that asks twice for a symbol shows as two.
        let twice = [req(0, &["A", "B"]), req(10, &["B"]), req(20, &["C"])];
        assert_eq!(ticks_of(&twice, split), [1, 2]);
        assert!(ticks_of(&[], split).is_empty());
    }
}
