//! Price alerts in cluster mode, with real processes (see tests/cluster.rs
//! for the harness): an alert fires once for the cluster, not once per
//! instance, whichever instance it was created through; its event reaches
//! the owner's sockets on every instance and no one else's; and a failover
//! does not fire it again.

mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::cluster::{the_poller, Cluster, Node};
use support::fake_yahoo::FakeYahoo;
use support::{eventually, throughout, Api, Ws};

async fn multi(node: &Node, token: &str) -> Ws {
    node.try_ws("/ws/v1", Some(token))
        .await
        .unwrap_or_else(|(s, b)| panic!("upgrade refused: {s} {b}"))
}

async fn events(node: &Node, token: &str) -> Vec<Value> {
    let (s, body) = node.get("/api/v1/alerts/events", token).await;
    assert_eq!(s, 200, "{body}");
    body.as_array().unwrap().clone()
}

#[tokio::test]
async fn an_alert_fires_once_for_the_cluster_and_reaches_every_instance() {
    let fake = FakeYahoo::start();
    fake.set_prices_move(false);
    fake.set_price("ALRT", 100.0);
    let Some(mut c) = Cluster::new("cluster_alert") else {
        return;
    };
    c = c.with_fake(&fake.base_url());
    // The poller learns of an alert made through another instance by its
    // reload; keep that short.
    c.set("QUOTECAST__ALERTS__RELOAD_INTERVAL_MS", "200");
    let mut nodes = vec![c.node("a"), c.node("b"), c.node("c")];
    let alice = c.user("alice");
    let bob = c.user("bob");
    let poller = the_poller(&nodes).await;
    // Created through an instance that does not poll.
    let via = (poller + 1) % nodes.len();
    let (s, alert) = nodes[via]
        .post(
            "/api/v1/alerts",
            &alice,
            json!({"symbol": "ALRT", "condition": "above", "threshold": 150.0,
                   "repeat": "rearm", "rearm_margin_pct": 1.0}),
        )
        .await;
    assert_eq!(s, 201, "{alert}");
    let mut mine = Vec::new();
    let mut theirs = Vec::new();
    for n in &nodes {
        mine.push(multi(n, &alice).await);
        theirs.push(multi(n, &bob).await);
    }
    // The alert's symbol is fetched for it alone (no watchlist is open):
    // wait until the poller has seen it below the threshold.
    eventually("the alert's symbol fetched", async || {
        let (s, body) = nodes[via].get("/api/v1/quotes?symbols=ALRT", &alice).await;
        (s == 200 && body["quotes"][0]["price"] == 100.0).then_some(())
    })
    .await;
    assert!(events(&nodes[via], &alice).await.is_empty());

    fake.set_price("ALRT", 200.0);
    let mut event_id = None;
    for (i, ws) in mine.iter_mut().enumerate() {
        let frame = ws.wait_type("alert").await;
        assert_eq!(frame["alert_id"], alert["id"], "node {i}: {frame}");
        assert_eq!(frame["price"], 200.0, "node {i}: {frame}");
        let id = frame["event_id"].as_i64().unwrap();
        assert_eq!(*event_id.get_or_insert(id), id, "node {i}: another event");
    }
    for (i, ws) in theirs.iter_mut().enumerate() {
        ws.assert_no_alert(&format!("bob on node {i}")).await;
    }
    // One event, seen alike through every instance, and no second one
    // while the price stays above (ticks go on meanwhile).
    throughout(Duration::from_secs(2), async || {
        for n in &nodes {
            let list = events(n, &alice).await;
            assert_eq!(list.len(), 1, "{}: {list:?}", n.name);
            assert_eq!(list[0]["event_id"].as_i64(), event_id);
        }
    })
    .await;

    // The poller dies: its successor loads the alert as fired and does not
    // fire it again for the same crossing.
    nodes[poller].kill();
    let dead = nodes.remove(poller);
    mine.remove(poller);
    let next = the_poller(&nodes).await;
    let cycles = async |n: &Node| n.admin("/admin/v1/stats").await["upstream"]["cycles"].as_u64();
    let start = cycles(&nodes[next]).await.unwrap();
    eventually("the new poller ticking", async || {
        (cycles(&nodes[next]).await >= Some(start + 5)).then_some(())
    })
    .await;
    assert_eq!(events(&nodes[0], &alice).await.len(), 1);

    // A real return below the margin and back above fires once more, on
    // the sockets of the surviving instances.
    fake.set_price("ALRT", 140.0);
    eventually("re-armed", async || {
        let (_, a) = nodes[0]
            .get(&format!("/api/v1/alerts/{}", alert["id"]), &alice)
            .await;
        (a["state"] == "armed").then_some(())
    })
    .await;
    fake.set_price("ALRT", 160.0);
    for ws in mine.iter_mut() {
        let frame = ws.wait_type("alert").await;
        assert_eq!(frame["price"], 160.0, "{frame}");
    }
    assert_eq!(events(&nodes[1], &alice).await.len(), 2);
    drop(dead);
}
