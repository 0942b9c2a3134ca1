//! Cluster mode with real processes: several `quotecast` instances on
//! loopback sharing one PostgreSQL database and one Redis (each test with
//! its own key prefix and database), a fake Yahoo that counts requests, and
//! failures caused for real (SIGKILL, SIGTERM, SIGSTOP, a Redis stopped).

mod support;

use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};
use support::cluster::{the_poller, Cluster, Node, PrivateRedis};
use support::fake_yahoo::{Endpoint, FakeYahoo};
use support::{code, eventually, eventually_within, items, Api, Event, Ws, DEADLINE};

const POLL: Duration = Duration::from_millis(200);
const LEASE: Duration = Duration::from_millis(1000);
/// Scheduling slack on a loaded 2-core machine, on top of the contract's
/// bounds (process start-up and the test's own polling).
const SLACK: Duration = Duration::from_millis(800);

/// A cluster whose upstream is a fake Yahoo of its own; `None` when the
/// test is skipped.
fn cluster_with_fake(test: &str) -> Option<(Cluster, FakeYahoo)> {
    let fake = FakeYahoo::start();
    let c = Cluster::new(test)?.with_fake(&fake.base_url());
    Some((c, fake))
}

/// A socket on watchlist `id` at each node, past its snapshot.
async fn a_socket_at_each(nodes: &[Node], id: i64, token: &str) -> Vec<Ws> {
    let mut sockets = Vec::new();
    for n in nodes {
        sockets.push(n.open(id, token).await.0);
    }
    sockets
}

/// The next `quotes` message, checking that its seq follows the last one
/// seen on this connection (no repeat, no regression).
async fn next_quotes(ws: &mut Ws, last_seq: &mut u64) -> Value {
    let m = ws.wait_type("quotes").await;
    let seq = m["seq"].as_u64().unwrap();
    assert!(seq > *last_seq, "seq went from {last_seq} to {seq}");
    *last_seq = seq;
    m
}

/// The status of `GET /readyz` at `node`.
async fn readyz(node: &Node) -> u16 {
    node.request(reqwest::Method::GET, "/readyz", None, None)
        .await
        .0
}

async fn first_seq(ws: &mut Ws) -> u64 {
    ws.wait_type("snapshot").await["seq"].as_u64().unwrap()
}

/// Three instances, sessions on all of them: exactly one polls, and the
/// cluster's upstream requests per tick are ceil(distinct symbols / batch).
#[tokio::test]
async fn one_poller_and_one_fetch_per_tick_for_the_cluster() {
    let Some((mut c, fake)) = cluster_with_fake("one_poller") else {
        return;
    };
    c.set("QUOTECAST__UPSTREAM__BATCH_SIZE", "5");
    let nodes = [c.node("a"), c.node("b"), c.node("c")];
    let alice = c.user("alice");
    // 12 distinct symbols over three watchlists that overlap.
    let lists = [
        ["S01", "S02", "S03", "S04", "S05", "S06"],
        ["S04", "S05", "S06", "S07", "S08", "S09"],
        ["S09", "S10", "S11", "S12", "S01", "S02"],
    ];
    let mut sockets = Vec::new();
    for (n, list) in nodes.iter().zip(lists) {
        let id = n
            .watchlist(&alice, &format!("W{}", n.name), false, items(&list))
            .await;
        sockets.push(n.open(id, &alice).await.0);
    }
    let poller = the_poller(&nodes).await;
    for n in &nodes {
        let view = n.admin("/admin/v1/cluster").await;
        assert_eq!(view["poller"], nodes[poller].name, "{view}");
        assert_eq!(view["nodes"].as_array().unwrap().len(), 3, "{view}");
        assert_eq!(view["node_id"], n.name);
    }
    let stats = nodes[0].admin("/admin/v1/stats").await;
    assert_eq!(stats["node_id"], "a");

    // Every tick now wants all 12: in sorted order, in batches of 5, 5, 2.
    eventually("every symbol fetched", async || {
        let seen: HashSet<String> = fake
            .requests()
            .into_iter()
            .flat_map(|r| r.symbols)
            .collect();
        seen.len() >= 12
    })
    .await;
    let redis = c.redis();
    let mut conn = redis.get_multiplexed_async_connection().await.unwrap();
    let ticks_key = c.key("ticks");
    let last_id = async |conn: &mut redis::aio::MultiplexedConnection| -> String {
        let r: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(&ticks_key)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(conn)
            .await
            .unwrap();
        r.ids.first().map_or("0-0".into(), |e| e.id.clone())
    };
    let before = last_id(&mut conn).await;
    fake.reset_counters();
    assert!(fake.wait_for_spark_requests(3 * 8, DEADLINE));
    let after = last_id(&mut conn).await;
    let chunks: Vec<Vec<String>> = vec![
        (1..=5).map(|i| format!("S{i:02}")).collect(),
        (6..=10).map(|i| format!("S{i:02}")).collect(),
        (11..=12).map(|i| format!("S{i:02}")).collect(),
    ];
    let mut counts = [0usize; 3];
    for r in fake
        .requests()
        .into_iter()
        .filter(|r| r.endpoint == Endpoint::Spark)
    {
        let k = chunks
            .iter()
            .position(|c| *c == r.symbols)
            .unwrap_or_else(|| panic!("a request outside the tick's batches: {:?}", r.symbols));
        counts[k] += 1;
    }
    // Rounds published in the same span (the window may cut one at each end).
    let rounds: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(c.key("ticks"))
        .arg(format!("({before}"))
        .arg(&after)
        .query_async(&mut conn)
        .await
        .unwrap();
    let rounds = rounds.ids.len();
    for n in counts {
        assert!(
            n.abs_diff(rounds) <= 1,
            "batches {counts:?} for {rounds} rounds"
        );
    }
    // The others do not poll.
    for (i, n) in nodes.iter().enumerate() {
        assert_eq!(n.is_poller().await, i == poller);
    }
}

/// The same tick gives the same prices on every instance, and ticks
/// increase.
#[tokio::test]
async fn the_same_tick_gives_the_same_prices_everywhere() {
    let Some((c, _fake)) = cluster_with_fake("same_tick") else {
        return;
    };
    let nodes = [c.node("a"), c.node("b"), c.node("c")];
    let alice = c.user("alice");
    let id = nodes[0]
        .watchlist(&alice, "W", true, items(&["AAPL", "MSFT", "7203.T"]))
        .await;
    let mut seen: Vec<BTreeMap<u64, Vec<(String, f64)>>> = vec![BTreeMap::new(); 3];
    let mut sockets = a_socket_at_each(&nodes, id, &alice).await;
    for (i, ws) in sockets.iter_mut().enumerate() {
        let mut last_tick = 0;
        let mut last_seq = 0;
        while seen[i].len() < 6 {
            let m = next_quotes(ws, &mut last_seq).await;
            let tick = m["tick"].as_u64().unwrap();
            assert!(tick > last_tick, "tick went from {last_tick} to {tick}");
            last_tick = tick;
            let prices = m["quotes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|q| {
                    (
                        q["symbol"].as_str().unwrap().to_owned(),
                        q["price"].as_f64().unwrap(),
                    )
                })
                .collect();
            seen[i].insert(tick, prices);
        }
    }
    let common: Vec<u64> = seen[0]
        .keys()
        .filter(|t| seen[1].contains_key(t) && seen[2].contains_key(t))
        .copied()
        .collect();
    assert!(!common.is_empty(), "no tick seen by all three: {seen:?}");
    for t in common {
        assert_eq!(seen[0][&t], seen[1][&t], "tick {t}");
        assert_eq!(seen[0][&t], seen[2][&t], "tick {t}");
    }
}

/// SIGKILL the poller: another polls within lease + one poll interval, the
/// survivors' sessions keep receiving, and within a connection seq never
/// repeats or goes back.
#[tokio::test]
async fn a_killed_poller_is_replaced() {
    let Some((c, fake)) = cluster_with_fake("killed_poller") else {
        return;
    };
    let mut nodes = vec![c.node("a"), c.node("b"), c.node("c")];
    let alice = c.user("alice");
    let id = nodes[0]
        .watchlist(&alice, "W", false, items(&["AAPL", "NVDA"]))
        .await;
    let poller = the_poller(&nodes).await;
    let mut victim = nodes.remove(poller);
    let mut sockets = Vec::new();
    for n in &nodes {
        let mut ws = n.ws(id, &alice).await;
        let seq = first_seq(&mut ws).await;
        sockets.push((ws, seq));
    }
    for (ws, seq) in sockets.iter_mut() {
        next_quotes(ws, seq).await;
    }
    let killed_at = Instant::now();
    victim.kill();
    let new = eventually_within(
        LEASE + POLL + SLACK + DEADLINE,
        "a new poller",
        async || {
            for (i, n) in nodes.iter().enumerate() {
                if n.is_poller().await {
                    return Some(i);
                }
            }
            None
        },
    )
    .await;
    let took = killed_at.elapsed();
    assert!(
        took <= LEASE + POLL + SLACK,
        "{} polled {took:?} after the kill",
        nodes[new].name
    );
    // Quotes flow again to every survivor, in order.
    let after = fake.spark_requests();
    assert!(fake.wait_for_spark_requests(after + 3, DEADLINE));
    for (ws, seq) in sockets.iter_mut() {
        for _ in 0..3 {
            next_quotes(ws, seq).await;
        }
    }
    assert_eq!(the_poller(&nodes).await, new, "exactly one poller");
}

/// SIGTERM the poller: it closes its sessions with 1001, hands the lease
/// back, exits 0, and another instance polls within one poll interval.
#[tokio::test]
async fn a_stopped_poller_hands_the_lease_back() {
    let Some((c, _fake)) = cluster_with_fake("stopped_poller") else {
        return;
    };
    let mut nodes = vec![c.node("a"), c.node("b")];
    let alice = c.user("alice");
    let id = nodes[0]
        .watchlist(&alice, "W", false, items(&["AAPL"]))
        .await;
    let poller = the_poller(&nodes).await;
    let mut victim = nodes.remove(poller);
    let other = &nodes[0];
    let (mut on_victim, _) = victim.open(id, &alice).await;
    let mut on_other = other.ws(id, &alice).await;
    let mut seq = first_seq(&mut on_other).await;

    victim.signal(libc::SIGTERM);
    assert_eq!(on_victim.wait_close().await, Some(1001));
    assert_eq!(
        victim.wait_exit(DEADLINE),
        Some(0),
        "{}",
        victim.log.lock().unwrap()
    );
    let exited = Instant::now();
    eventually_within(POLL + SLACK, "the other to poll", async || {
        other.is_poller().await
    })
    .await;
    assert!(exited.elapsed() <= POLL + SLACK);
    assert!(victim
        .log
        .lock()
        .unwrap()
        .contains("handed the poller lease back"));
    for _ in 0..3 {
        next_quotes(&mut on_other, &mut seq).await;
    }
}

/// A poller paused past its lease (SIGSTOP) is replaced; when it runs again
/// (SIGCONT) it cannot publish: every round after the takeover is the new
/// poller's.
#[tokio::test]
async fn a_paused_poller_cannot_publish_a_stale_tick() {
    let Some((c, fake)) = cluster_with_fake("paused_poller") else {
        return;
    };
    let nodes = [c.node("a"), c.node("b")];
    let alice = c.user("alice");
    let id = nodes[0]
        .watchlist(&alice, "W", false, items(&["AAPL", "MSFT"]))
        .await;
    // Sessions on both, so both want symbols.
    let mut sockets = a_socket_at_each(&nodes, id, &alice).await;
    for ws in sockets.iter_mut() {
        ws.wait_type("quotes").await;
    }
    let poller = the_poller(&nodes).await;
    let (paused, other) = (&nodes[poller], &nodes[1 - poller]);
    paused.signal(libc::SIGSTOP);
    eventually_within(LEASE + POLL + DEADLINE, "a takeover", async || {
        other.is_poller().await
    })
    .await;
    let redis = c.redis();
    let mut conn = redis.get_multiplexed_async_connection().await.unwrap();
    let takeover: u64 = redis::cmd("GET")
        .arg(c.key("tick"))
        .query_async::<Option<u64>>(&mut conn)
        .await
        .unwrap()
        .unwrap_or(0);
    paused.signal(libc::SIGCONT);
    // Give the paused one several of its ticks to try.
    let before = fake.spark_requests();
    assert!(fake.wait_for_spark_requests(before + 8, DEADLINE));
    eventually("the paused one to stand down", async || {
        !paused.is_poller().await
    })
    .await;
    let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
        .arg(c.key("ticks"))
        .arg(format!("({takeover}-0"))
        .arg("+")
        .query_async::<redis::streams::StreamRangeReply>(&mut conn)
        .await
        .unwrap()
        .ids
        .into_iter()
        .map(|e| {
            let fields = e
                .map
                .iter()
                .filter_map(|(k, v)| {
                    Some((
                        k.clone(),
                        redis::from_redis_value::<String>(v.clone()).ok()?,
                    ))
                })
                .collect();
            (e.id, fields)
        })
        .collect();
    assert!(entries.len() >= 4, "{entries:?}");
    for (id, fields) in &entries {
        assert_eq!(fields["node"], other.name, "entry {id} after the takeover");
    }
    eventually("the paused one to say it lost the lease", async || {
        paused.log.lock().unwrap().contains("lost the poller lease")
    })
    .await;
}

/// One rate budget: across instances and a failover, the upstream never
/// sees more than capacity + refill × window requests.
#[tokio::test]
async fn one_rate_budget_for_the_cluster() {
    let Some((mut c, fake)) = cluster_with_fake("one_budget") else {
        return;
    };
    let (capacity, refill) = (4.0, 3.0);
    c.set("QUOTECAST__UPSTREAM__BATCH_SIZE", "1");
    c.set("QUOTECAST__UPSTREAM__RATE_LIMIT__CAPACITY", "4");
    c.set("QUOTECAST__UPSTREAM__RATE_LIMIT__REFILL_PER_SEC", "3");
    let mut nodes = vec![c.node("a"), c.node("b"), c.node("c")];
    let alice = c.user("alice");
    let symbols: Vec<String> = (0..10).map(|i| format!("R{i}")).collect();
    let list: Vec<&str> = symbols.iter().map(String::as_str).collect();
    let id = nodes[0].watchlist(&alice, "W", false, items(&list)).await;
    let _sockets = a_socket_at_each(&nodes, id, &alice).await;
    // Let it run against the budget, kill the poller, let it run again.
    assert!(fake.wait_for_spark_requests(10, DEADLINE));
    let poller = the_poller(&nodes).await;
    nodes.remove(poller).kill();
    let n = fake.spark_requests();
    assert!(fake.wait_for_spark_requests(n + 6, DEADLINE + LEASE));
    let mut times: Vec<Instant> = fake.requests().into_iter().map(|r| r.received_at).collect();
    times.sort();
    let first = times[0];
    for (i, t) in times.iter().enumerate() {
        let window = t.duration_since(first).as_secs_f64();
        // One extra for the clocks: Redis grants, the fake receives later.
        let allowed = capacity + refill * window + 1.0;
        assert!(
            (i + 1) as f64 <= allowed,
            "{} requests within {window:.2} s (allowed {allowed:.1})",
            i + 1
        );
    }
}

/// Effects of REST and admin calls at one instance reach sessions at
/// another: item changes, an admin kick and refresh, a watchlist made
/// private, a revoked token, a deleted watchlist (4404, no worker left).
#[tokio::test]
async fn the_control_plane_reaches_every_instance() {
    let Some((mut c, fake)) = cluster_with_fake("control_plane") else {
        return;
    };
    c.set("QUOTECAST__UPSTREAM__CLOSED_POLL_INTERVAL_MS", "600000");
    let (a, b) = (c.node("a"), c.node("b"));
    let alice = c.user("alice");
    let bob = c.user("bob");
    let id = a.watchlist(&alice, "Shared", true, items(&["AAPL"])).await;

    // An item added at A: the session at B gets a snapshot with it.
    let (mut alice_b, _) = b.open(id, &alice).await;
    assert_eq!(
        a.add_item(&alice, id, json!({"symbol": "MSFT"})).await.0,
        201
    );
    alice_b
        .wait_for("a snapshot with MSFT", |v| {
            v["type"] == "snapshot" && v["quotes"].as_array().is_some_and(|q| q.len() == 2)
        })
        .await;

    // The admin at A sees B's sessions, with their node, and kicks one.
    let (mut kicked, _) = b.open(id, &bob).await;
    let sessions = a.admin("/admin/v1/sessions").await;
    let rows = sessions.as_array().unwrap();
    assert!(rows.iter().all(|r| r["node_id"] == "b"), "{sessions}");
    let bobs = rows.iter().find(|r| r["user"] == "bob").unwrap()["id"]
        .as_u64()
        .unwrap();
    assert_eq!(a.kick(a.admin_token(), bobs).await.0, 204);
    assert_eq!(kicked.wait_close().await, Some(1008));
    assert_eq!(a.kick(a.admin_token(), 424242).await.0, 404);

    // Refresh at A of a worker on B: a closed market is fetched at once.
    fake.set_market_closed("AAPL", true);
    fake.set_market_closed("MSFT", true);
    eventually("closed markets known", async || {
        let (_, v) = b.get("/api/v1/quotes?symbols=AAPL,MSFT", &alice).await;
        v["quotes"][0]["market_state"] == "CLOSED" && v["quotes"][1]["market_state"] == "CLOSED"
    })
    .await;
    // A learns of B's workers from B's heartbeat (every lease/3).
    eventually("B's worker known at A", async || {
        let view = a.admin("/admin/v1/cluster").await;
        view["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["node_id"] == "b" && n["workers"] == 1)
    })
    .await;
    let before = fake.times_served("AAPL");
    assert_eq!(a.refresh(a.admin_token(), id).await.0, 202);
    eventually("AAPL fetched on request", async || {
        fake.times_served("AAPL") > before
    })
    .await;

    // Made private at A: bob's session at B closes with 1008.
    let (mut bob_b, _) = b.open(id, &bob).await;
    let (s, _) = a
        .patch_watchlist(&alice, id, json!({"is_public": false}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(bob_b.wait_close().await, Some(1008));

    // A revoked token (through the shared database) closes its sessions.
    let (_, tid, carol) = quotecast::cli::add_user(&c.db, "carol", false).unwrap();
    let carols = a
        .watchlist(&carol, "Carol's", false, items(&["NVDA"]))
        .await;
    let (mut carol_b, _) = b.open(carols, &carol).await;
    quotecast::cli::revoke_token(&c.db, tid).unwrap();
    assert_eq!(carol_b.wait_close().await, Some(1008));

    // Deleted at A: 4404 at B, and no worker anywhere.
    assert_eq!(a.delete_watchlist(&alice, id).await.0, 204);
    assert_eq!(alice_b.wait_close().await, Some(4404));
    for n in [&a, &b] {
        eventually("no worker", async || {
            n.admin("/admin/v1/stats").await["workers"] == 0
        })
        .await;
    }
}

/// A ticket minted at A works once at B and is refused at C.
#[tokio::test]
async fn a_ticket_works_once_anywhere() {
    let Some(c) = Cluster::new("tickets") else {
        return;
    };
    let nodes = [c.node("a"), c.node("b"), c.node("c")];
    let alice = c.user("alice");
    let id = nodes[0]
        .watchlist(&alice, "W", false, items(&["AAPL"]))
        .await;
    let (s, body) = nodes[0]
        .post("/api/v1/ws-tickets", &alice, json!({"watchlist_id": id}))
        .await;
    assert_eq!(s, 200, "{body}");
    let ticket = body["ticket"].as_str().unwrap();
    let path = format!("/ws/v1/watchlists/{id}?ticket={ticket}");
    let mut ws = nodes[1].try_ws(&path, None).await.expect("works at B");
    ws.wait_type("snapshot").await;
    let (s, _) = nodes[2].try_ws(&path, None).await.err().expect("used up");
    assert_eq!(s, 401);
    // And one for /ws/v1.
    let (_, body) = nodes[2].post("/api/v1/ws-tickets", &alice, json!({})).await;
    let path = format!("/ws/v1?ticket={}", body["ticket"].as_str().unwrap());
    assert!(nodes[0].try_ws(&path, None).await.is_ok());
}

/// `limits.max_sessions_per_user` counts the user's sessions on every
/// instance.
#[tokio::test]
async fn the_per_user_limit_is_cluster_wide() {
    let Some(mut c) = Cluster::new("user_limit") else {
        return;
    };
    c.set("QUOTECAST__LIMITS__MAX_SESSIONS_PER_USER", "2");
    let nodes = [c.node("a"), c.node("b"), c.node("c")];
    let alice = c.user("alice");
    let id = nodes[0]
        .watchlist(&alice, "W", false, items(&["AAPL"]))
        .await;
    let path = format!("/ws/v1/watchlists/{id}");
    let one = nodes[0].try_ws(&path, Some(&alice)).await.expect("first");
    let _two = nodes[1].try_ws(&path, Some(&alice)).await.expect("second");
    let (s, body) = nodes[2]
        .try_ws(&path, Some(&alice))
        .await
        .err()
        .expect("third refused");
    assert_eq!((s, code(&body)), (429, "too_many_sessions"));
    one.close().await;
    eventually("a place again", async || {
        nodes[2].try_ws(&path, Some(&alice)).await.is_ok()
    })
    .await;
}

/// Redis stops: each instance says `degraded` (naming the cluster bus)
/// within two poll intervals and `/readyz` answers 503, sessions stay open;
/// Redis back: quotes and `status: ok` return without a restart.
#[tokio::test]
async fn a_redis_outage_degrades_and_recovers() {
    let fake = FakeYahoo::start();
    let mut redis = PrivateRedis::start();
    let Some(c) = Cluster::with_redis("redis_outage", redis.url()) else {
        return;
    };
    let c = c.with_fake(&fake.base_url());
    let nodes = [c.node("a"), c.node("b")];
    let alice = c.user("alice");
    let id = nodes[0]
        .watchlist(&alice, "W", false, items(&["AAPL"]))
        .await;
    let mut sockets = a_socket_at_each(&nodes, id, &alice).await;
    for ws in sockets.iter_mut() {
        ws.wait_type("quotes").await;
    }
    for n in &nodes {
        assert_eq!(readyz(n).await, 200);
    }

    redis.kill();
    let down_at = Instant::now();
    for ws in sockets.iter_mut() {
        let status = ws
            .wait_for("degraded", |v| {
                v["type"] == "status" && v["upstream"] == "degraded"
            })
            .await;
        assert!(
            status["message"].as_str().unwrap().contains("cluster bus"),
            "{status}"
        );
    }
    assert!(
        down_at.elapsed() <= 2 * POLL + SLACK,
        "{:?}",
        down_at.elapsed()
    );
    for n in &nodes {
        eventually("readyz 503", async || readyz(n).await == 503).await;
    }

    redis.restart();
    let up_at = Instant::now();
    for ws in sockets.iter_mut() {
        ws.wait_for("status ok", |v| {
            v["type"] == "status" && v["upstream"] == "ok"
        })
        .await;
        ws.wait_type("quotes").await;
    }
    assert!(
        up_at.elapsed() <= LEASE + 2 * POLL + SLACK + SLACK,
        "{:?}",
        up_at.elapsed()
    );
    for n in &nodes {
        eventually("ready again", async || readyz(n).await == 200).await;
    }
    // Still the same sockets.
    for ws in sockets.iter_mut() {
        assert!(!matches!(
            ws.next_event(Duration::from_millis(1)).await,
            Some(Event::Closed(_))
        ));
    }
}

/// Cluster mode with SQLite, or with a Redis that does not answer, stops at
/// start with one line naming the keys, and a non-zero exit.
#[tokio::test]
async fn cluster_mode_refuses_sqlite_and_an_unreachable_redis() {
    let run = |env: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_quotecast"));
        cmd.env_clear()
            .env("QUOTECAST__SERVER__BIND", "127.0.0.1:0")
            .env("QUOTECAST__SERVER__DEMO_DATA", "false");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("run quotecast")
    };
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}/q.db", dir.path().display());
    let out = run(&[
        ("QUOTECAST__CLUSTER__REDIS_URL", "redis://127.0.0.1:6379/0"),
        ("QUOTECAST__DATABASE__URL", &sqlite),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err.lines().last().unwrap_or_default();
    assert!(
        line.contains("cluster.redis_url") && line.contains("database.url"),
        "{err}"
    );

    let Some(c) = Cluster::new("unreachable_redis") else {
        return;
    };
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{free}/0");
    let out = run(&[
        ("QUOTECAST__CLUSTER__REDIS_URL", &url),
        ("QUOTECAST__DATABASE__URL", &c.db_url),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err.lines().last().unwrap_or_default();
    assert!(line.starts_with("quotecast: cluster.redis_url"), "{err}");
}

/// The fence is checked inside the publish script: a poller whose lease was
/// taken over (here: by hand, as a pause would let happen) cannot publish,
/// even while its own clock still says it holds the lease; and publishing
/// is idempotent per round.
#[actix_web::test]
async fn a_publish_under_a_stale_lease_is_refused_by_redis() {
    use quotecast::cluster::{bus::RedisBus, lease::Lease, Cluster as Node};
    use quotecast::feed::{BusError, PollerRole, QuoteBus, Round};
    let Some(url) = support::cluster::redis_url("stale_lease") else {
        return;
    };
    let prefix = format!("qct{}", rand::random::<u32>());
    let settings = quotecast::config::Settings::load_with_env(
        None,
        [
            ("QUOTECAST__CLUSTER__REDIS_URL", url.as_str()),
            ("QUOTECAST__CLUSTER__KEY_PREFIX", prefix.as_str()),
            ("QUOTECAST__CLUSTER__LEASE_MS", "5000"),
            (
                "QUOTECAST__DATABASE__URL",
                "postgres://unused@127.0.0.1/unused",
            ),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    )
    .unwrap();
    let arbiter = actix::Arbiter::new();
    let metrics = std::sync::Arc::new(quotecast::metrics::Metrics::new());
    let node = Node::connect(
        &settings,
        "127.0.0.1:1".parse().unwrap(),
        arbiter.handle(),
        metrics,
    )
    .await
    .unwrap();
    let lease = Lease::new(node.clone());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    arbiter.spawn(lease.clone().run(stopped));
    eventually("the lease", async || lease.is_poller()).await;
    let bus = RedisBus::new(node.clone(), lease.clone());
    let first = bus.publish(true, Round::default()).await.unwrap();
    assert!(bus.publish(true, Round::default()).await.unwrap() > first);

    // Someone else holds it now; this instance has not noticed yet.
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(format!("{prefix}:poller"))
        .arg("someone-else:999")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(lease.is_poller(), "its own clock still says so");
    assert!(matches!(
        bus.publish(true, Round::default()).await,
        Err(BusError::Fenced)
    ));
    let _ = stop.send(true);
    arbiter.stop();
}
