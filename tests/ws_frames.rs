//! What the server does with raw client frames (issue "Hardening"): limits
//! decided from the frame header, fragmented messages reassembled, control
//! frames between fragments, 1007 for invalid UTF-8. Raw sockets through
//! `support::raw_ws`; SQLite is enough, no database is involved past the
//! upgrade.

mod support;

use quotecast::protocol::MAX_FRAGMENTS;
use serde_json::json;
use std::time::Duration;
use support::raw_ws::{self, RawWs, ServerFrame, BINARY, CONT, PING, PONG, TEXT};
use support::{Backend, TestApp};

/// The default `realtime.max_message_bytes`, which the tests run with.
const LIMIT: usize = 4096;

/// A session on a fresh watchlist, past its first snapshot.
async fn session(app: &TestApp) -> RawWs {
    let token = app.user(&format!("u{}", rand::random::<u32>()));
    let id = app.private_watchlist(&token, json!([])).await;
    let mut ws = RawWs::connect(app.addr, &format!("/ws/v1/watchlists/{id}"), &token).await;
    ws.wait_type("snapshot").await;
    ws
}

async fn app() -> TestApp {
    app_with(|_| {}).await
}

/// The app with settings adjusted by `tweak` (but not the message limit).
async fn app_with(tweak: impl FnOnce(&mut quotecast::config::Settings)) -> TestApp {
    let app = TestApp::spawn_with(Backend::Sqlite, tweak).await;
    assert_eq!(
        app.state.settings.realtime.max_message_bytes, LIMIT,
        "the tests assume the default limit"
    );
    app
}

/// `{"type":"ping"}` in `n` fragments (some of them empty when n > 15).
fn ping_in_fragments(n: usize) -> Vec<u8> {
    let msg = br#"{"type":"ping"}"#;
    let mut out = Vec::new();
    for i in 0..n {
        let piece = &msg[msg.len() * i / n..msg.len() * (i + 1) / n];
        let opcode = if i == 0 { TEXT } else { CONT };
        out.extend(raw_ws::frame(i == n - 1, opcode, piece));
    }
    out
}

/// A header declaring 2^62 bytes, then a client that keeps streaming: the
/// close comes from the header alone, while the client has sent little, and
/// the server stops reading (so buffers nothing) and ends the connection.
/// Before the fix the server buffered every byte waiting for the frame's end.
#[actix_web::test]
async fn a_huge_frame_header_closes_with_1009_before_its_payload() {
    let app = app().await;
    let mut ws = session(&app).await;
    ws.send(&raw_ws::header(true, BINARY, 1 << 62, rand::random()))
        .await
        .unwrap();
    // Stream the payload a kilobyte at a time, each time giving the server
    // a moment to answer; it must answer long before 4 limits have gone out.
    let chunk = vec![0x55; 1024];
    let mut sent = 0;
    let code = loop {
        match ws.next_frame(Duration::from_millis(250)).await {
            Some(ServerFrame::Close(code)) => break code,
            Some(ServerFrame::Ping(_)) | None => {}
            Some(other) => panic!("{other:?} instead of a close"),
        }
        assert!(
            sent < 4 * LIMIT,
            "no close after {sent} payload bytes of a 2^62-byte frame"
        );
        ws.send(&chunk).await.expect("server still reading");
        sent += chunk.len();
    };
    assert_eq!(code, Some(1009));
    // The server ends the connection rather than read on.
    ws.wait_eof().await;
    // The session is gone: the server keeps nothing for this client.
    app.wait_counts(0, 0).await;
}

/// A fragmented `{"type":"ping"}` is one message: it gets one `pong`.
#[actix_web::test]
async fn a_fragmented_message_is_reassembled() {
    let app = app().await;
    let mut ws = session(&app).await;
    ws.send(&ping_in_fragments(3)).await.unwrap();
    ws.wait_type("pong").await;
    // And the most fragments allowed.
    ws.send(&ping_in_fragments(MAX_FRAGMENTS as usize))
        .await
        .unwrap();
    ws.wait_type("pong").await;
    // No error came for any fragment: the next message is the next pong.
    ws.send_frame(true, TEXT, br#"{"type":"ping"}"#).await;
    ws.wait_type("pong").await;
}

/// The limit applies to the whole message, not to each fragment.
#[actix_web::test]
async fn a_fragmented_message_over_the_limit_closes_with_1009() {
    let app = app().await;
    let mut ws = session(&app).await;
    let half = vec![b' '; LIMIT / 2 + 1];
    ws.send_frame(false, TEXT, &half).await;
    ws.send_frame(true, CONT, &half).await;
    assert_eq!(ws.wait_close().await, Some(1009));
}

/// One fragment past the bound is refused (1009, see `session::frames`).
#[actix_web::test]
async fn too_many_fragments_close_with_1009() {
    let app = app().await;
    let mut ws = session(&app).await;
    ws.send(&ping_in_fragments(MAX_FRAGMENTS as usize + 1))
        .await
        .unwrap();
    assert_eq!(ws.wait_close().await, Some(1009));
}

#[actix_web::test]
async fn invalid_utf8_closes_with_1007() {
    let app = app().await;
    let mut ws = session(&app).await;
    ws.send_frame(true, TEXT, b"{\"type\":\"ping\xff\"}").await;
    assert_eq!(ws.wait_close().await, Some(1007));
}

/// A ping between two fragments is answered at once, before the message
/// is complete; a pong there is accepted; the message still goes through.
#[actix_web::test]
async fn control_frames_between_fragments_work() {
    let app = app().await;
    let mut ws = session(&app).await;
    ws.send_frame(false, TEXT, br#"{"type":"#).await;
    ws.send_frame(true, PING, b"between").await;
    loop {
        match ws.next_frame(support::DEADLINE).await {
            Some(ServerFrame::Pong(p)) => {
                assert_eq!(p, b"between");
                break;
            }
            Some(ServerFrame::Ping(_)) => continue,
            other => panic!("{other:?} instead of the pong"),
        }
    }
    ws.send_frame(true, PONG, b"").await;
    ws.send_frame(true, CONT, br#""ping"}"#).await;
    ws.wait_type("pong").await;
}

/// Protocol errors close with 1002; binary messages still get an error.
#[actix_web::test]
async fn protocol_errors_close_with_1002() {
    let app = app().await;
    let mut ws = session(&app).await;
    ws.send_frame(true, BINARY, &[1, 2, 3]).await;
    assert_eq!(ws.wait_type("error").await["code"], "binary_not_supported");
    // Unmasked.
    ws.send(&[0x81, 0x02, b'h', b'i']).await.unwrap();
    assert_eq!(ws.wait_close().await, Some(1002));

    let mut ws = session(&app).await;
    ws.send_frame(true, CONT, b"no message open").await;
    assert_eq!(ws.wait_close().await, Some(1002));
}

/// A client that floods pings (and `{"type":"ping"}` messages) and never
/// reads the answers cannot make the server queue answers without end: once
/// the answers stop draining, the server stops reading, the client's writes
/// stall, and the session is cut off as stalled after `client_timeout_ms`.
#[actix_web::test]
async fn a_ping_flood_that_never_reads_is_throttled_then_cut_off() {
    let app = app_with(|s| {
        s.realtime.heartbeat_interval_ms = 200;
        s.realtime.client_timeout_ms = 1000;
        s.realtime.socket_send_buffer_bytes = 4096;
    })
    .await;
    let mut ws = session(&app).await;
    let mut burst = Vec::new();
    for i in 0..500 {
        if i % 2 == 0 {
            burst.extend(raw_ws::frame(true, PING, &[b'p'; 125]));
        } else {
            burst.extend(raw_ws::frame(true, TEXT, br#"{"type":"ping"}"#));
        }
    }
    // Write until a write stalls: the server has stopped reading. Its
    // answers fill the socket buffers on both sides (a few MB with the
    // kernel's autotuning) long before this bound.
    const BOUND: usize = 256 << 20;
    let mut sent = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(2), ws.send(&burst)).await {
            Err(_) => break,
            Ok(Ok(())) => sent += burst.len(),
            // Cut off already: also an end.
            Ok(Err(_)) => break,
        }
        assert!(
            sent < BOUND,
            "the server read {sent} bytes of pings nobody answered"
        );
    }
    eprintln!("{sent} bytes written before the server stopped reading");
    // The server gives up on the session rather than hold it.
    app.wait_counts(0, 0).await;
}

/// A client may send frames right behind its upgrade request, before the
/// 101 comes (RFC 6455 does not forbid it): they reach the session, read
/// from what came in with the request.
#[actix_web::test]
async fn frames_sent_with_the_upgrade_request_are_read() {
    let app = app().await;
    let token = app.user("early");
    let early = raw_ws::frame(true, TEXT, br#"{"type":"ping"}"#);
    let mut ws = RawWs::connect_sending(app.addr, "/ws/v1", &token, &early).await;
    ws.wait_type("pong").await;
    // And the socket reads on after that.
    ws.send_frame(true, TEXT, br#"{"type":"ping"}"#).await;
    ws.wait_type("pong").await;
}

/// An upgrade request that is refused, or is for no WebSocket endpoint, is
/// answered like any request (status, JSON error), and the connection is
/// closed after the answer: the client asked to leave HTTP on it.
#[actix_web::test]
async fn a_refused_upgrade_gets_its_json_error_and_the_connection_closes() {
    let app = app().await;
    let token = app.user("refused");
    let cases = [
        ("/ws/v1", String::new(), "401", "unauthorized"),
        (
            "/ws/v1",
            "Authorization: Bearer qc_not_a_token\r\n".to_string(),
            "401",
            "unauthorized",
        ),
        (
            "/ws/v1/watchlists/999999",
            format!("Authorization: Bearer {token}\r\n"),
            "404",
            "not_found",
        ),
        (
            "/ws/v1?since=1:2",
            format!("Authorization: Bearer {token}\r\n"),
            "400",
            "bad_request",
        ),
        ("/api/v1/no-such-route", String::new(), "404", "not_found"),
    ];
    for (path, extra, status, code) in cases {
        let answer = raw_ws::exchange(
            app.addr,
            &raw_ws::upgrade_request(app.addr, path, &extra),
            true,
        )
        .await;
        let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status} ")),
            "{path}: {head}"
        );
        assert!(
            head.to_ascii_lowercase().contains("connection: close"),
            "{path}: {head}"
        );
        let body: serde_json::Value = serde_json::from_str(body).expect("a JSON error body");
        assert_eq!(body["error"]["code"], code, "{path}: {body}");
    }
    // The server counted no session for any of them.
    assert_eq!(app.state.sessions.len(), 0);
}

/// actix-http hands a connection over only for `Upgrade: websocket`; an
/// upgrade header that merely contains it would get a 101 with no socket
/// behind it, so it is refused with 400 instead.
#[actix_web::test]
async fn an_upgrade_header_other_than_websocket_is_refused() {
    let app = app().await;
    let token = app.user("other-upgrade");
    let request = format!(
        "GET /ws/v1 HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket, h2c\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n",
        addr = app.addr
    );
    let answer = raw_ws::exchange(app.addr, &request, false).await;
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(
        answer.contains("the Upgrade header must be websocket"),
        "{answer}"
    );
    assert_eq!(app.state.sessions.len(), 0);
}
