//! The `cluster` scenario (issue "Cluster mode on Redis"): what cluster mode
//! costs and what it keeps, measured in one run.
//!
//! 1. **Compare.** The `fanout` shape through one cluster-mode instance
//!    against the same shape through a single-process one, ABBA (so a drift
//!    of the machine over the run weighs on both alike). Both instances run
//!    at once on the same scratch PostgreSQL database and take turns, each
//!    phase connecting its sessions, measuring and closing them all; they
//!    differ only in `cluster.redis_url`, so the ratio is the price of the
//!    Redis path (rounds through a stream, the control plane, the shared
//!    demand and rate budget), not of the database.
//! 2. **Spread.** `--nodes` instances (3) against the fake Yahoo, sessions
//!    spread round-robin over them; the fake counts the upstream requests of
//!    each tick, which must be exactly ceil(distinct / batch) for the whole
//!    cluster.
//! 3. **Failover.** With those sessions still open, the poller (found with
//!    `GET /admin/v1/cluster`, confirmed by its `quotecast_cluster_poller`)
//!    gets SIGKILL. Its sessions reconnect at once to the other instances,
//!    as a client behind a balancer would; the figure is the time from the
//!    kill until the last of them has a snapshot again. The survivors'
//!    sessions must stay open, another instance must take over polling, and
//!    quotes must flow on every session afterwards.
//!
//! The instances share a scratch database `qcbench_<pid>` made on `--pg-url`
//! and a Redis under a key prefix of the run's own; both are removed at the
//! end, whatever happened.

use crate::client::{Clients, Reconnect};
use crate::multiplex::Total;
use crate::report::{
    self, AfterClose, ClusterReport, ConnectReport, DeliveryReport, FailoverReport, NodeReport,
    Percentiles, RunReport, ScenarioReport, ServerReport, Shape,
};
use crate::target::{ServerSetup, Target};
use crate::{
    between_ticks, check, fmt_ms, invariant_checks, measure_on, parse_env, procinfo, progress,
    stat_u64, Opts, Spec, BATCH_SIZE,
};
use fake_yahoo::{Endpoint, FakeYahoo};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Cluster-mode p99 over single-process p99, at most.
const P99_BOUND: f64 = 1.15;
/// Cluster-mode msgs/s over single-process msgs/s, at least.
const MSGS_BOUND: f64 = 0.9;
/// From the poller's SIGKILL until every session it held has a snapshot on
/// another instance, at most.
const FAILOVER_BOUND_S: f64 = 10.0;

pub async fn scenario(o: &Opts, rep: &mut ScenarioReport) -> Result<(), String> {
    if o.url.is_some() {
        return Err("cluster: needs instances the bench starts (it kills one); drop --url".into());
    }
    if o.nodes < 2 {
        return Err("cluster: --nodes must be at least 2 (one is killed)".into());
    }
    let mut backing = Backing::create(o)?;
    rep.cluster = Some(ClusterReport {
        redis_url: o.redis_url.clone(),
        key_prefix: backing.prefix.clone(),
        database: backing.db_name.clone(),
        lease_ms: o.lease_ms,
        ..Default::default()
    });
    let res = async {
        compare(o, rep, &mut backing).await?;
        spread(o, rep, &mut backing).await
    }
    .await;
    backing.remove();
    res
}

// --- what the instances share ------------------------------------------------

/// The scratch database and the Redis key prefix of one run; removed by
/// [`Backing::remove`] or, on a panic, when dropped.
struct Backing {
    pg_admin_url: String,
    db_name: String,
    db_url: String,
    redis_url: String,
    prefix: String,
    /// The bench's admin user's token on the database, once the first
    /// instance has created the user.
    token: Option<String>,
    removed: bool,
}

impl Backing {
    fn create(o: &Opts) -> Result<Self, String> {
        let client = redis::Client::open(o.redis_url.as_str())
            .map_err(|e| format!("cluster: --redis-url {}: {e}", o.redis_url))?;
        let mut conn = client
            .get_connection_with_timeout(Duration::from_secs(3))
            .map_err(|e| format!("cluster: no Redis at {}: {e}", o.redis_url))?;
        redis::cmd("PING")
            .query::<String>(&mut conn)
            .map_err(|e| format!("cluster: Redis at {}: {e}", o.redis_url))?;

        use diesel::connection::SimpleConnection;
        use diesel::Connection;
        let db_name = format!("qcbench_{}", std::process::id());
        let mut pg = diesel::pg::PgConnection::establish(&o.pg_url)
            .map_err(|e| format!("cluster: no PostgreSQL at {}: {e}", o.pg_url))?;
        // A previous run of the same pid that was killed left it behind.
        pg.batch_execute(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"))
            .and_then(|_| pg.batch_execute(&format!("CREATE DATABASE {db_name}")))
            .map_err(|e| format!("cluster: creating database {db_name}: {e}"))?;
        let mut url = url::Url::parse(&o.pg_url).map_err(|e| format!("--pg-url: {e}"))?;
        url.set_path(&db_name);
        Ok(Backing {
            pg_admin_url: o.pg_url.clone(),
            db_name,
            db_url: url.to_string(),
            redis_url: o.redis_url.clone(),
            prefix: format!(
                "qcbench{}x{:08x}",
                std::process::id(),
                rand::random::<u32>()
            ),
            token: None,
            removed: false,
        })
    }

    /// The key prefix of one phase's cluster (each phase starts afresh).
    fn phase_prefix(&self, phase: &str) -> String {
        format!("{}{phase}", self.prefix)
    }

    /// Environment of an instance on the shared database; in cluster mode
    /// (`node`: its id and the phase's key prefix) on Redis too.
    fn env(&self, o: &Opts, node: Option<(&str, &str)>) -> Vec<(String, String)> {
        let mut env = vec![("QUOTECAST__DATABASE__URL".to_owned(), self.db_url.clone())];
        if let Some((id, prefix)) = node {
            for (k, v) in [
                ("QUOTECAST__CLUSTER__REDIS_URL", self.redis_url.clone()),
                ("QUOTECAST__CLUSTER__KEY_PREFIX", prefix.to_owned()),
                ("QUOTECAST__CLUSTER__NODE_ID", id.to_owned()),
                ("QUOTECAST__CLUSTER__LEASE_MS", o.lease_ms.to_string()),
            ] {
                env.push((k.to_owned(), v));
            }
        }
        env
    }

    /// Drops the database and deletes the run's keys; says what it could
    /// not do, without failing the run.
    fn remove(mut self) {
        self.removed = true;
        self.cleanup();
    }

    fn cleanup(&self) {
        use diesel::connection::SimpleConnection;
        use diesel::Connection;
        match diesel::pg::PgConnection::establish(&self.pg_admin_url).and_then(|mut c| {
            c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.db_name
            ))
            .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))
        }) {
            Ok(()) => {}
            Err(e) => progress(format!("could not drop database {}: {e}", self.db_name)),
        }
        if let Err(e) = delete_keys(&self.redis_url, &format!("{}*", self.prefix)) {
            progress(format!("could not delete Redis keys {}*: {e}", self.prefix));
        }
    }
}

impl Drop for Backing {
    fn drop(&mut self) {
        if !self.removed {
            self.cleanup();
        }
    }
}

fn delete_keys(url: &str, pattern: &str) -> redis::RedisResult<()> {
    let mut conn = redis::Client::open(url)?.get_connection_with_timeout(Duration::from_secs(3))?;
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query(&mut conn)?;
        if !keys.is_empty() {
            redis::cmd("UNLINK").arg(&keys).query::<u64>(&mut conn)?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// Starts one instance on the shared database (cluster mode with `node`);
/// the first one creates the bench's admin user, whose token the others
/// reuse.
async fn start_instance(
    o: &Opts,
    b: &mut Backing,
    s: &Shape,
    node: Option<(&str, &str)>,
    fake: Option<&FakeYahoo>,
    watchlists_before: usize,
) -> Result<Target, String> {
    let mut extra_env = b.env(o, node);
    if let Some(f) = fake {
        extra_env.extend(crate::fake_upstream_env(f));
    }
    extra_env.extend(parse_env(o)?);
    let t = Target::start_quotecast(ServerSetup {
        bin: &o.server_bin,
        tick_ms: s.tick_ms,
        sessions: s.sessions,
        // The bench user keeps the watchlists of earlier phases.
        watchlists: watchlists_before + s.watchlists,
        symbols: s.symbols,
        extra_env,
        forward_log: o.server_log,
        token: b.token.clone(),
    })
    .await?;
    if b.token.is_none() {
        b.token = t.token.clone();
    }
    Ok(t)
}

// --- 1. one cluster-mode instance against a single process -------------------

async fn compare(o: &Opts, rep: &mut ScenarioReport, b: &mut Backing) -> Result<(), String> {
    let spec = crate::fanout_spec(o);
    let s = &spec.shape;
    crate::check_fd_room(o, s.sessions)?;
    progress(format!(
        "compare: {} rounds of single-process and cluster-mode quotecast, {} (load {})",
        o.rounds.max(1),
        report::shape_label(s),
        procinfo::loadavg()
    ));
    let single = start_instance(o, b, s, None, None, 0).await?;
    let prefix = b.phase_prefix("a");
    let clustered = start_instance(o, b, s, Some(("bench-solo", &prefix)), None, 0).await;
    let clustered = match clustered {
        Ok(t) => t,
        Err(e) => {
            let _ = single.stop().await;
            return Err(e);
        }
    };
    let mut single = single;
    let measured = async {
        let ids = single
            .create_watchlists(s.watchlists, s.symbols, s.distinct)
            .await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (mut one, mut many) = (Total::default(), Total::default());
        for round in 0..o.rounds.max(1) {
            let order = if round % 2 == 0 {
                [(&single, false), (&clustered, true)]
            } else {
                [(&clustered, true), (&single, false)]
            };
            for (t, cluster_mode) in order {
                let load = procinfo::loadavg();
                progress(format!(
                    "  round {}: {} (load {load})",
                    round + 1,
                    mode(cluster_mode)
                ));
                let (mut run, window) = measure_on(o, t, &spec, ids.clone(), None, load).await?;
                if cluster_mode {
                    run.target = "quotecast-cluster";
                }
                invariant_checks(o, &run, &mut rep.checks);
                if cluster_mode { &mut many } else { &mut one }.add(&run, window);
                rep.runs.push(run);
            }
        }
        Ok::<_, String>((one, many))
    }
    .await;
    let stopped = (single.stop().await, clustered.stop().await);
    let (one, many) = measured?;
    stopped.0?;
    stopped.1?;

    let (p1, pn) = (
        Percentiles::of(&one.window.latency),
        Percentiles::of(&many.window.latency),
    );
    let r = many.ratio_to(
        &one,
        "cluster mode (1 instance) / single process".into(),
        format!("{}, {} rounds", report::shape_label(s), one.runs),
    );
    rep.checks.push(check(
        "p99 delivery latency, cluster mode vs single process",
        &format!("<= {P99_BOUND:.2}x"),
        format!(
            "{} vs {} = {:.2}x",
            fmt_ms(pn.p99_ms),
            fmt_ms(p1.p99_ms),
            r.p99.unwrap_or(f64::NAN)
        ),
        r.p99.is_some_and(|v| v <= P99_BOUND),
    ));
    rep.checks.push(check(
        "msgs/s, cluster mode vs single process",
        &format!(">= {MSGS_BOUND:.2}x"),
        format!(
            "{:.0} vs {:.0} = {:.2}x",
            many.msgs_per_s(),
            one.msgs_per_s(),
            r.msgs_per_s.unwrap_or(f64::NAN)
        ),
        r.msgs_per_s.is_some_and(|v| v >= MSGS_BOUND),
    ));
    let us = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1} us"));
    rep.notes.push(format!(
        "compare, all rounds: single process {} msgs in {:.1} s, p50 {} p99 {}, server {}/msg; \
         cluster mode {} msgs in {:.1} s, p50 {} p99 {}, server {}/msg",
        one.window.msgs,
        one.window.seconds,
        fmt_ms(p1.p50_ms),
        fmt_ms(p1.p99_ms),
        us(one.cpu_us_per_msg()),
        many.window.msgs,
        many.window.seconds,
        fmt_ms(pn.p50_ms),
        fmt_ms(pn.p99_ms),
        us(many.cpu_us_per_msg()),
    ));
    rep.ratios.push(r);
    Ok(())
}

fn mode(cluster_mode: bool) -> &'static str {
    if cluster_mode {
        "cluster mode"
    } else {
        "single process"
    }
}

// --- 2 and 3. sessions spread over several instances; SIGKILL of the poller --

fn wall_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

async fn spread(o: &Opts, rep: &mut ScenarioReport, b: &mut Backing) -> Result<(), String> {
    let base = crate::fanout_spec(o);
    let spec = Spec {
        shape: Shape {
            sessions: o.cluster_sessions,
            watchlists: o.cluster_watchlists.max(1),
            symbols: base.shape.symbols,
            distinct: o.cluster_distinct.max(base.shape.symbols),
            tick_ms: base.shape.tick_ms,
            subscriptions: 0,
        },
        warmup: base.warmup,
        // The window only has to hold a few ticks to count requests.
        duration: base.duration.min(10.0),
    };
    let s = &spec.shape;
    crate::check_fd_room(o, s.sessions)?;
    progress(format!(
        "spread: {} instances in cluster mode, {} spread over them (load {})",
        o.nodes,
        report::shape_label(s),
        procinfo::loadavg()
    ));
    let fake = FakeYahoo::start();
    let prefix = b.phase_prefix("b");
    let mut nodes: Vec<(String, Target)> = Vec::new();
    for k in 0..o.nodes {
        let id = format!("bench-{}", (b'a' + (k % 26) as u8) as char);
        let before = crate::fanout_spec(o).shape.watchlists;
        match start_instance(o, b, s, Some((&id, &prefix)), Some(&fake), before).await {
            Ok(t) => nodes.push((id, t)),
            Err(e) => {
                for (_, t) in nodes {
                    let _ = t.stop().await;
                }
                return Err(e);
            }
        }
    }
    let mut killed = None;
    let res = spread_on(o, rep, &mut nodes, &fake, &spec, &mut killed).await;
    let mut stopped = Ok(());
    for (k, (id, t)) in nodes.into_iter().enumerate() {
        let r = t.stop().await;
        // The killed one exited by SIGKILL, as it should.
        if Some(k) != killed {
            if let Err(e) = r {
                stopped = stopped.and(Err(format!("{id}: {e}")));
            }
        }
    }
    res?;
    stopped
}

/// Per node: admin stats and a /proc sample.
async fn node_samples(
    nodes: &[(String, Target)],
) -> Vec<(Option<serde_json::Value>, Option<procinfo::Sample>)> {
    let mut v = Vec::new();
    for (_, t) in nodes {
        v.push((t.stats().await, t.sample()));
    }
    v
}

/// The instance holding the poller lease, by `GET /admin/v1/cluster` on
/// any live node, confirmed by its own `quotecast_cluster_poller`; waits up
/// to `limit` for one.
async fn find_poller(
    nodes: &[(String, Target)],
    skip: Option<usize>,
    limit: Duration,
) -> Option<usize> {
    let deadline = Instant::now() + limit;
    loop {
        for (k, (_, t)) in nodes.iter().enumerate() {
            if Some(k) == skip {
                continue;
            }
            let Ok((200, view)) = t
                .call(reqwest::Method::GET, "/admin/v1/cluster", None)
                .await
            else {
                continue;
            };
            let Some(holder) = view["poller"].as_str() else {
                break;
            };
            let Some(p) = nodes.iter().position(|(id, _)| id == holder) else {
                break;
            };
            let confirmed = nodes[p]
                .1
                .metrics()
                .await
                .and_then(|m| m.get("quotecast_cluster_poller").copied())
                == Some(1.0);
            if confirmed && Some(p) != skip {
                return Some(p);
            }
            break;
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn spread_on(
    o: &Opts,
    rep: &mut ScenarioReport,
    nodes: &mut [(String, Target)],
    fake: &FakeYahoo,
    spec: &Spec,
    killed: &mut Option<usize>,
) -> Result<(), String> {
    let s = &spec.shape;
    let load_before = procinfo::loadavg();
    let ids = nodes[0]
        .1
        .create_watchlists(s.watchlists, s.symbols, s.distinct)
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut plan = crate::plan_for(o, &nodes[0].1, ids);
    plan.addrs = nodes.iter().map(|(_, t)| t.addr).collect();
    plan.reconnect = Some(Reconnect {
        token: plan.token.clone(),
        concurrency: o.storm_concurrency,
        limit_ms: o.storm_limit_ms,
    });
    let mut clients = Clients::new(plan, s.sessions, o.procs, o.client_threads).await?;
    let cs = clients.connect().await?;
    progress(format!(
        "  connected {} of {} in {:.2} s",
        cs.ok, cs.requested, cs.seconds
    ));
    if let Some(e) = crate::limit_error(&cs, &nodes[0].1) {
        let _ = clients.close().await;
        return Err(e);
    }
    tokio::time::sleep(Duration::from_secs_f64(spec.warmup)).await;

    // 2. Upstream requests per tick, with every instance wanting the same
    // symbols.
    between_ticks(fake, s.tick_ms).await;
    fake.reset_counters();
    let a = node_samples(nodes).await;
    clients.start_window()?;
    tokio::time::sleep(Duration::from_secs_f64(spec.duration)).await;
    between_ticks(fake, s.tick_ms).await;
    let window = clients.end_window().await?;
    let bs = node_samples(nodes).await;
    let poller = find_poller(nodes, None, Duration::from_secs(5)).await;
    let mut node_reports = Vec::new();
    let mut cpu_s = 0.0;
    let mut requests = Some(0);
    let mut cycles = None;
    let mut errors = Some(0);
    for (k, ((id, t), ((sa, pa), (sb, pb)))) in nodes.iter().zip(a.iter().zip(&bs)).enumerate() {
        let d = |p: &[&str]| Some(stat_u64(sb, p)? - stat_u64(sa, p)?);
        let cpu = match (pa, pb) {
            (Some(x), Some(y)) => Some(y.cpu_s - x.cpu_s),
            _ => None,
        };
        cpu_s += cpu.unwrap_or(0.0);
        let req = d(&["upstream", "requests"]);
        requests = requests.zip(req).map(|(x, y)| x + y);
        if poller == Some(k) {
            cycles = d(&["upstream", "cycles"]);
        }
        errors = errors.zip(d(&["upstream", "errors"])).map(|(x, y)| x + y);
        node_reports.push(NodeReport {
            node_id: id.clone(),
            addr: t.addr.to_string(),
            pid: t.pid,
            poller: poller == Some(k),
            sessions: stat_u64(sb, &["sessions"]),
            workers: stat_u64(sb, &["workers"]),
            rss_loaded: pb.as_ref().map(|p| p.rss_bytes),
            cpu_percent: cpu.map(|c| c / window.seconds.max(1e-9) * 100.0),
            upstream_requests: req,
        });
    }
    let upstream = crate::upstream_report(fake, s, requests, cycles, errors);
    progress(format!(
        "  measured {:.1} s: {} msgs, p99 {}, spark requests per tick {:?}",
        window.seconds,
        window.msgs,
        fmt_ms(Percentiles::of(&window.latency).p99_ms),
        upstream.spark_per_tick
    ));
    let expected = upstream.expected_per_tick;
    let ticks = &upstream.spark_per_tick;
    rep.checks.push(check(
        &format!("upstream requests per tick, {} instances", nodes.len()),
        &format!(
            "exactly ceil({}/{BATCH_SIZE}) = {expected} every tick",
            s.distinct
        ),
        format!("{ticks:?} over {} ticks", ticks.len()),
        !ticks.is_empty() && ticks.iter().all(|&n| n == expected),
    ));
    let spread_ok = node_reports
        .iter()
        .all(|n| n.sessions.is_some_and(|v| v > 0));
    rep.checks.push(check(
        "sessions spread over every instance",
        "each instance holds sessions",
        node_reports
            .iter()
            .map(|n| format!("{} {}", n.node_id, n.sessions.unwrap_or(0)))
            .collect::<Vec<_>>()
            .join(", "),
        spread_ok,
    ));
    let mut delivery = DeliveryReport::of(&window, None);
    if window.seconds * 1000.0 >= 2.0 * s.tick_ms as f64 {
        delivery.expected_msgs_per_s = cs.ok as f64 * 1000.0 / s.tick_ms.max(1) as f64;
    }
    let mut server = ServerReport {
        cpu_percent: Some(cpu_s / window.seconds.max(1e-9) * 100.0),
        ..Default::default()
    };
    if window.msgs > 0 {
        server.cpu_us_per_msg = Some(cpu_s * 1e6 / window.msgs as f64);
    }
    let mut run = RunReport {
        target: "quotecast-cluster",
        shape: s.clone(),
        load_before,
        connect: ConnectReport::of(&cs),
        delivery,
        server,
        client_cpu_percent: window.client_cpu_percent(),
        client_procs: o.procs.max(1),
        after_close: AfterClose::default(),
        upstream: Some(upstream),
        churn: None,
        storm: None,
    };

    // 3. SIGKILL of the poller.
    let failover = match poller {
        Some(p) => {
            let f = kill_poller(o, nodes, p, &mut clients, fake, s, cs.ok).await;
            *killed = Some(p);
            Some(f?)
        }
        None => {
            rep.checks.push(check(
                "an instance holds the poller lease",
                "one",
                "none found in 5 s".into(),
                false,
            ));
            None
        }
    };
    if let Some(f) = &failover {
        failover_checks(o, rep, f, s.tick_ms);
        // Quotes flow on every session, on the survivors, after the takeover.
        let window = async {
            clients.start_window()?;
            tokio::time::sleep(Duration::from_secs_f64(spec.duration.min(5.0))).await;
            clients.end_window().await
        }
        .await?;
        let flowing = window.live == cs.ok && window.msgs > 0 && window.unexpected_closes == 0;
        rep.checks.push(check(
            "after the failover: every session live and getting quotes",
            &format!("{} live, quotes flowing", cs.ok),
            format!(
                "{} live, {} msgs in {:.1} s",
                window.live, window.msgs, window.seconds
            ),
            flowing,
        ));
    }

    let close = clients.close().await?;
    drop(clients);
    let mut left = (0, 0);
    let mut drained_s: f64 = 0.0;
    for (k, (_, t)) in nodes.iter().enumerate() {
        if Some(k) == *killed {
            continue;
        }
        if let Some((sessions, workers, secs)) = t.wait_drained(Duration::from_secs(15)).await {
            left = (left.0 + sessions, left.1 + workers);
            drained_s = drained_s.max(secs);
        }
    }
    run.after_close = AfterClose::of(&close, Some((left.0, left.1, drained_s)));
    invariant_checks(o, &run, &mut rep.checks);
    rep.runs.push(run);
    if let Some(c) = rep.cluster.as_mut() {
        c.nodes = node_reports;
        c.failover = failover;
    }
    Ok(())
}

/// Kills node `p` (the poller) and waits for its sessions to be back on the
/// others, and for another instance to poll.
async fn kill_poller(
    o: &Opts,
    nodes: &[(String, Target)],
    p: usize,
    clients: &mut Clients,
    fake: &FakeYahoo,
    s: &Shape,
    sessions: u64,
) -> Result<FailoverReport, String> {
    let (id, t) = &nodes[p];
    let on_killed = clients.mark(t.addr).await?;
    progress(format!(
        "  failover: SIGKILL {id} (the poller), holding {on_killed} of {sessions} sessions"
    ));
    let killed_at = Instant::now();
    let kill_us = wall_us();
    t.signal(libc::SIGKILL)?;
    let st = clients
        .await_storm(Duration::from_millis(o.storm_limit_ms) + Duration::from_secs(5))
        .await?;
    let kill_to_all_back_s = st
        .last_back_us
        .filter(|_| st.reconnected > 0)
        .map(|b| (b - kill_us) as f64 / 1e6);
    // Another instance takes the lease within lease + tick; give it a
    // little more before calling it missing.
    let bound = Duration::from_millis(o.lease_ms + s.tick_ms);
    let new_poller = find_poller(
        nodes,
        Some(p),
        bound.saturating_sub(killed_at.elapsed()) + Duration::from_secs(5),
    )
    .await;
    let first_request = || {
        fake.requests()
            .iter()
            .filter(|r| r.endpoint == Endpoint::Spark && r.received_at > killed_at)
            .map(|r| r.received_at.duration_since(killed_at).as_secs_f64())
            .reduce(f64::min)
    };
    let mut takeover_s = None;
    if new_poller.is_some() {
        // The new poller's first round may still be on its way.
        let deadline = Instant::now() + Duration::from_millis(2 * s.tick_ms + 1000);
        takeover_s = first_request();
        while takeover_s.is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            takeover_s = first_request();
        }
    }
    let f = FailoverReport {
        killed_node: id.clone(),
        killed_was_poller: true,
        sessions,
        on_killed,
        dropped: st.dropped,
        reconnected: st.reconnected,
        failed: st.failed,
        retries: st.retries,
        pending: st.pending,
        kill_to_all_back_s,
        reconnect_latency: Percentiles::of(&st.latency),
        errors: st.errors,
        new_poller: new_poller.map(|k| nodes[k].0.clone()),
        takeover_s,
        takeover_bound_s: bound.as_secs_f64(),
    };
    progress(format!(
        "  failover: {} of {} back in {}, {} failed; {} polls after {}",
        f.reconnected,
        f.on_killed,
        f.kill_to_all_back_s
            .map_or("-".into(), |v| format!("{v:.2} s")),
        f.failed,
        f.new_poller.as_deref().unwrap_or("no instance"),
        f.takeover_s.map_or("-".into(), |v| format!("{v:.2} s"))
    ));
    Ok(f)
}

fn failover_checks(o: &Opts, rep: &mut ScenarioReport, f: &FailoverReport, tick_ms: u64) {
    let secs = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2} s"));
    rep.checks.push(check(
        &format!(
            "failover: sessions of the killed poller back on the others with a snapshot ({} sessions)",
            f.on_killed
        ),
        &format!("all, within {FAILOVER_BOUND_S:.0} s of the SIGKILL"),
        format!(
            "{} of {} in {}, {} failed, {} pending",
            f.reconnected,
            f.on_killed,
            secs(f.kill_to_all_back_s),
            f.failed,
            f.pending
        ),
        f.on_killed > 0
            && f.reconnected == f.on_killed
            && f.failed == 0
            && f.pending == 0
            && f.kill_to_all_back_s.is_some_and(|v| v <= FAILOVER_BOUND_S),
    ));
    rep.checks.push(check(
        "failover: sessions on the survivors stay open",
        &format!("0 dropped besides the {} of the killed one", f.on_killed),
        format!("{}", f.dropped.saturating_sub(f.on_killed)),
        f.dropped == f.on_killed,
    ));
    rep.checks.push(check(
        "failover: another instance polls",
        &format!("within lease + tick = {} + {tick_ms} ms", o.lease_ms),
        format!(
            "{} after {}",
            f.new_poller.as_deref().unwrap_or("none"),
            secs(f.takeover_s)
        ),
        f.takeover_s.is_some_and(|v| v <= f.takeover_bound_s),
    ));
}
