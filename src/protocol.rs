//! The WebSocket wire protocol: what the server sends (built once per
//! broadcast and shared as bytes) and what a client may send. The `alert`
//! frame is built with the event it carries, in [`crate::alerts::event`]
//! (the same JSON is the webhook body).

use crate::quote::{format_ts, Total, WireQuote};
use bytestring::ByteString;
use chrono::Utc;
use serde::{Deserialize, Serialize};

/// WebSocket close codes of the contract. Every close the server makes
/// names one of these.
pub mod close {
    /// Normal closure (the server answers a client's close with its code).
    pub const NORMAL: u16 = 1000;
    /// Shutdown, or a peer silent past the timeout.
    pub const GOING_AWAY: u16 = 1001;
    /// A malformed WebSocket frame or a frame out of sequence.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text message (or close reason) that is not UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// Kicked, token revoked, access lost, or too many bad messages.
    pub const POLICY: u16 = 1008;
    /// A message over `realtime.max_message_bytes`.
    pub const TOO_BIG: u16 = 1009;
    /// Something broke on our side.
    pub const INTERNAL: u16 = 1011;
    /// The watchlist was deleted.
    pub const WATCHLIST_DELETED: u16 = 4404;
}

/// Bad client messages tolerated before the socket is closed with 1008.
pub const MAX_BAD_MESSAGES: u32 = 10;

/// The most frames one client message may be split into; past it the
/// socket is closed with 1009 (see `session::frames`). Browsers send a
/// message in one frame; a client that fragments it at all uses a few.
pub const MAX_FRAGMENTS: u32 = 64;

/// An encoded text frame. Cloning shares the bytes, so one broadcast is
/// serialized once whatever the number of sessions.
pub type Frame = ByteString;

/// The upstream state as `snapshot` and `status` say it.
fn upstream_word(degraded: bool) -> &'static str {
    if degraded {
        "degraded"
    } else {
        "ok"
    }
}

/// What every `snapshot` says besides its quotes.
pub struct SnapshotHead<'a> {
    pub watchlist_id: i64,
    pub epoch: &'a str,
    pub seq: u64,
    pub stale: bool,
    pub degraded: bool,
    pub totals: &'a [Total],
}

#[derive(Serialize)]
struct Snapshot<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    watchlist_id: i64,
    epoch: &'a str,
    seq: u64,
    stale: bool,
    upstream: &'static str,
    totals: &'a [Total],
    quotes: &'a [WireQuote<'a>],
}

/// What every `quotes` message says besides its quotes.
pub struct QuotesHead<'a> {
    pub watchlist_id: i64,
    pub epoch: &'a str,
    pub seq: u64,
    pub tick: u64,
    pub totals: &'a [Total],
}

#[derive(Serialize)]
struct Quotes<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    watchlist_id: i64,
    epoch: &'a str,
    seq: u64,
    tick: u64,
    ts: String,
    totals: &'a [Total],
    quotes: &'a [WireQuote<'a>],
}

#[derive(Serialize)]
struct Status<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    upstream: &'static str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_in_ms: Option<u64>,
}

#[derive(Serialize)]
struct Subscribed<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    watchlist_id: i64,
    epoch: &'a str,
    recovered: bool,
}

#[derive(Serialize)]
struct Unsubscribed {
    #[serde(rename = "type")]
    kind: &'static str,
    watchlist_id: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
}

#[derive(Serialize)]
struct ErrorMsg<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    watchlist_id: Option<i64>,
}

fn encode<T: Serialize>(value: &T) -> Frame {
    // These frames are plain structs of strings, numbers and options: no
    // maps with non-string keys, no serializer that can fail (serde_json
    // writes a non-finite float as null). So this cannot fail, and if a
    // change ever made it fail, sending "" would hide it: fail loudly.
    // `every_frame_encodes` covers each frame with hostile values.
    ByteString::from(serde_json::to_string(value).expect("protocol frames always serialize"))
}

pub fn snapshot(head: &SnapshotHead<'_>, quotes: &[WireQuote<'_>]) -> Frame {
    encode(&Snapshot {
        kind: "snapshot",
        watchlist_id: head.watchlist_id,
        epoch: head.epoch,
        seq: head.seq,
        stale: head.stale,
        upstream: upstream_word(head.degraded),
        totals: head.totals,
        quotes,
    })
}

pub fn quotes(head: &QuotesHead<'_>, quotes: &[WireQuote<'_>]) -> Frame {
    encode(&Quotes {
        kind: "quotes",
        watchlist_id: head.watchlist_id,
        epoch: head.epoch,
        seq: head.seq,
        tick: head.tick,
        ts: format_ts(Utc::now()),
        totals: head.totals,
        quotes,
    })
}

pub fn status(degraded: bool, message: &str, retry_in_ms: Option<u64>) -> Frame {
    encode(&Status {
        kind: "status",
        upstream: upstream_word(degraded),
        message,
        retry_in_ms,
    })
}

pub fn subscribed(watchlist_id: i64, epoch: &str, recovered: bool) -> Frame {
    encode(&Subscribed {
        kind: "subscribed",
        watchlist_id,
        epoch,
        recovered,
    })
}

/// Why a subscription ended without the client asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The watchlist was deleted.
    Deleted,
    /// The caller lost access (the watchlist was made private).
    Forbidden,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Deleted => "deleted",
            EndReason::Forbidden => "forbidden",
        }
    }
}

pub fn unsubscribed(watchlist_id: i64, reason: Option<EndReason>) -> Frame {
    encode(&Unsubscribed {
        kind: "unsubscribed",
        watchlist_id,
        reason: reason.map(EndReason::as_str),
    })
}

pub fn error(code: &str, message: &str) -> Frame {
    encode(&ErrorMsg {
        kind: "error",
        code,
        message,
        watchlist_id: None,
    })
}

/// A refused subscription request; it does not count as misbehaviour.
pub fn refusal(refusal: Refusal, watchlist_id: i64) -> Frame {
    encode(&ErrorMsg {
        kind: "error",
        code: refusal.code(),
        message: refusal.message(),
        watchlist_id: Some(watchlist_id),
    })
}

pub fn pong() -> Frame {
    ByteString::from_static(r#"{"type":"pong"}"#)
}

/// Where a client left off: the epoch and seq of the last message it got.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Since {
    pub epoch: String,
    pub seq: u64,
}

impl Since {
    /// The v1 endpoint's `?since=EPOCH:SEQ`.
    pub fn parse_query(raw: &str) -> Option<Since> {
        let (epoch, seq) = raw.rsplit_once(':')?;
        if epoch.is_empty() || epoch.len() > MAX_EPOCH_LEN {
            return None;
        }
        Some(Since {
            epoch: epoch.to_owned(),
            seq: seq.parse().ok()?,
        })
    }
}

/// Longest epoch a client may send back (ours are 16 hex digits).
pub const MAX_EPOCH_LEN: usize = 64;

/// A message a client may send. `snapshot` takes a `watchlist_id` on the
/// multi-watchlist endpoint; `subscribe` and `unsubscribe` exist only there.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientMessage {
    Ping,
    Snapshot {
        watchlist_id: Option<i64>,
    },
    Subscribe {
        watchlist_id: i64,
        since: Option<Since>,
        intraday: bool,
    },
    Unsubscribe {
        watchlist_id: i64,
    },
}

/// Why a client message was refused: the `code` of the `error` reply. Each
/// counts towards [`MAX_BAD_MESSAGES`].
#[derive(Debug, PartialEq, Eq)]
pub enum ClientError {
    MalformedJson,
    UnknownType,
    /// A known type with missing or wrong fields.
    InvalidMessage,
    Binary,
}

impl ClientError {
    pub fn code(&self) -> &'static str {
        match self {
            ClientError::MalformedJson => "malformed_json",
            ClientError::UnknownType => "unknown_type",
            ClientError::InvalidMessage => "invalid_message",
            ClientError::Binary => "binary_not_supported",
        }
    }

    pub fn message(&self) -> &'static str {
        match self {
            ClientError::MalformedJson => "message is not a JSON object",
            ClientError::UnknownType => {
                "unknown message type; expected ping, snapshot, subscribe or unsubscribe"
            }
            ClientError::InvalidMessage => {
                "message fields are missing or of the wrong type (see the protocol in README)"
            }
            ClientError::Binary => "binary frames are not supported; send JSON text",
        }
    }
}

/// Why a subscription request was refused; the socket stays open and the
/// refusal is not misbehaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NotFound,
    Forbidden,
    AlreadySubscribed,
    NotSubscribed,
    LimitExceeded,
    /// The access check could not run (database unavailable); try again.
    Unavailable,
}

impl Refusal {
    pub fn code(self) -> &'static str {
        match self {
            Refusal::NotFound => "not_found",
            Refusal::Forbidden => "forbidden",
            Refusal::AlreadySubscribed => "already_subscribed",
            Refusal::NotSubscribed => "not_subscribed",
            Refusal::LimitExceeded => "limit_exceeded",
            Refusal::Unavailable => "unavailable",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Refusal::NotFound => "no such watchlist",
            Refusal::Forbidden => "this watchlist is private",
            Refusal::AlreadySubscribed => "already subscribed to this watchlist",
            Refusal::NotSubscribed => "not subscribed to this watchlist",
            Refusal::LimitExceeded => "too many subscriptions on this socket",
            Refusal::Unavailable => "could not check this watchlist now; try again",
        }
    }
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Wire {
    Ping {},
    Snapshot {
        #[serde(default)]
        watchlist_id: Option<i64>,
    },
    Subscribe {
        watchlist_id: i64,
        #[serde(default)]
        since: Option<Since>,
        #[serde(default)]
        intraday: bool,
    },
    Unsubscribe {
        watchlist_id: i64,
    },
}

/// The message types of each endpoint, so "known type, bad fields" can be
/// told from "unknown type".
const TYPES: [&str; 4] = ["ping", "snapshot", "subscribe", "unsubscribe"];
const V1_TYPES: [&str; 2] = ["ping", "snapshot"];

/// A client message on `GET /ws/v1`.
pub fn parse_client(text: &str) -> Result<ClientMessage, ClientError> {
    parse(text, &TYPES)
}

/// A client message on a v1 socket (`GET /ws/v1/watchlists/{id}`), which
/// knows only `ping` and `snapshot`, as it always did.
pub fn parse_client_v1(text: &str) -> Result<ClientMessage, ClientError> {
    parse(text, &V1_TYPES)
}

fn parse(text: &str, types: &[&str]) -> Result<ClientMessage, ClientError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|_| ClientError::MalformedJson)?;
    let Some(object) = value.as_object() else {
        return Err(ClientError::MalformedJson);
    };
    match object.get("type").and_then(|t| t.as_str()) {
        Some(t) if types.contains(&t) => {}
        _ => return Err(ClientError::UnknownType),
    }
    let wire: Wire = serde_json::from_value(value).map_err(|_| ClientError::InvalidMessage)?;
    Ok(match wire {
        Wire::Ping {} => ClientMessage::Ping,
        Wire::Snapshot { watchlist_id } => ClientMessage::Snapshot { watchlist_id },
        Wire::Subscribe {
            watchlist_id,
            since,
            intraday,
        } => match since {
            Some(s) if s.epoch.len() > MAX_EPOCH_LEN => return Err(ClientError::InvalidMessage),
            since => ClientMessage::Subscribe {
                watchlist_id,
                since,
                intraday,
            },
        },
        Wire::Unsubscribe { watchlist_id } => ClientMessage::Unsubscribe { watchlist_id },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages_parse() {
        assert_eq!(parse_client(r#"{"type":"ping"}"#), Ok(ClientMessage::Ping));
        assert_eq!(
            parse_client(r#"{"type":"snapshot","x":1}"#),
            Ok(ClientMessage::Snapshot { watchlist_id: None })
        );
        assert_eq!(parse_client("{"), Err(ClientError::MalformedJson));
        assert_eq!(parse_client("[1]"), Err(ClientError::MalformedJson));
        // v2 knows `subscribe`; one without a watchlist is a bad message.
        assert_eq!(
            parse_client(r#"{"type":"subscribe"}"#),
            Err(ClientError::InvalidMessage)
        );
        assert_eq!(
            parse_client(r#"{"type":"subscribe_all"}"#),
            Err(ClientError::UnknownType)
        );
        assert_eq!(
            parse_client(r#"{"kind":"ping"}"#),
            Err(ClientError::UnknownType)
        );
        assert_eq!(
            parse_client(
                r#"{"type":"subscribe","watchlist_id":7,"since":{"epoch":"e","seq":4},"intraday":true}"#
            ),
            Ok(ClientMessage::Subscribe {
                watchlist_id: 7,
                since: Some(Since {
                    epoch: "e".into(),
                    seq: 4
                }),
                intraday: true
            })
        );
        assert_eq!(
            parse_client(r#"{"type":"subscribe","watchlist_id":"7"}"#),
            Err(ClientError::InvalidMessage)
        );
        assert_eq!(
            parse_client(r#"{"type":"subscribe","watchlist_id":7,"since":{"epoch":"e","seq":-1}}"#),
            Err(ClientError::InvalidMessage)
        );
        let long = format!(
            r#"{{"type":"subscribe","watchlist_id":7,"since":{{"epoch":"{}","seq":1}}}}"#,
            "e".repeat(MAX_EPOCH_LEN + 1)
        );
        assert_eq!(parse_client(&long), Err(ClientError::InvalidMessage));
        assert_eq!(
            parse_client(r#"{"type":"unsubscribe","watchlist_id":7}"#),
            Ok(ClientMessage::Unsubscribe { watchlist_id: 7 })
        );
    }

    #[test]
    fn v1_knows_only_ping_and_snapshot() {
        assert_eq!(
            parse_client_v1(r#"{"type":"ping"}"#),
            Ok(ClientMessage::Ping)
        );
        for text in [
            r#"{"type":"subscribe"}"#,
            r#"{"type":"subscribe","watchlist_id":7}"#,
            r#"{"type":"unsubscribe","watchlist_id":7}"#,
        ] {
            assert_eq!(
                parse_client_v1(text),
                Err(ClientError::UnknownType),
                "{text}"
            );
        }
    }

    #[test]
    fn since_query_parses() {
        assert_eq!(
            Since::parse_query("ab12:41"),
            Some(Since {
                epoch: "ab12".into(),
                seq: 41
            })
        );
        assert_eq!(Since::parse_query("ab12"), None);
        assert_eq!(Since::parse_query(":41"), None);
        assert_eq!(Since::parse_query("ab:x"), None);
    }

    #[test]
    fn frames_have_the_contract_shape() {
        let f = status(true, "upstream rate limited", Some(1500));
        let v: serde_json::Value = serde_json::from_str(&f).unwrap();
        assert_eq!(v["type"], "status");
        assert_eq!(v["upstream"], "degraded");
        assert_eq!(v["retry_in_ms"], 1500);
        let head = QuotesHead {
            watchlist_id: 7,
            epoch: "e1",
            seq: 42,
            tick: 9,
            totals: &[],
        };
        let v: serde_json::Value = serde_json::from_str(&quotes(&head, &[])).unwrap();
        assert_eq!(v["seq"], 42);
        assert_eq!(v["tick"], 9);
        assert_eq!(v["epoch"], "e1");
        assert!(v["ts"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn every_frame_encodes() {
        let nasty = Total {
            currency: "\u{0}\"\\".into(),
            market_value: Some(f64::NAN),
            cost: Some(f64::INFINITY),
            unrealized_pl: Some(f64::NEG_INFINITY),
            day_change: None,
        };
        let totals = [nasty];
        let snap = SnapshotHead {
            watchlist_id: i64::MIN,
            epoch: "\u{7f}",
            seq: u64::MAX,
            stale: true,
            degraded: true,
            totals: &totals,
        };
        let frames = [
            snapshot(&snap, &[]),
            quotes(
                &QuotesHead {
                    watchlist_id: 1,
                    epoch: "",
                    seq: 0,
                    tick: u64::MAX,
                    totals: &totals,
                },
                &[],
            ),
            status(false, "\u{1}", None),
            subscribed(1, "e", false),
            unsubscribed(1, Some(EndReason::Deleted)),
            error("c", "\u{2028}"),
            refusal(Refusal::LimitExceeded, 3),
        ];
        for f in frames {
            let v: serde_json::Value = serde_json::from_str(&f).unwrap();
            assert!(v["type"].is_string(), "{f}");
        }
    }
}
