//! The WebSocket wire protocol: what the server sends (built once per
//! broadcast and shared as bytes) and what a client may send.

use crate::quote::{format_ts, WireQuote};
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

#[derive(Serialize)]
struct Snapshot<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    watchlist_id: i64,
    seq: u64,
    stale: bool,
    quotes: &'a [WireQuote<'a>],
}

#[derive(Serialize)]
struct Quotes<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    watchlist_id: i64,
    seq: u64,
    ts: String,
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
struct ErrorMsg<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    code: &'a str,
    message: &'a str,
}

fn encode<T: Serialize>(value: &T) -> Frame {
    // These frames are plain structs of strings, numbers and options: no
    // maps with non-string keys, no serializer that can fail (serde_json
    // writes a non-finite float as null). So this cannot fail, and if a
    // change ever made it fail, sending "" would hide it: fail loudly.
    // `every_frame_encodes` covers each frame with hostile values.
    ByteString::from(serde_json::to_string(value).expect("protocol frames always serialize"))
}

pub fn snapshot(watchlist_id: i64, seq: u64, stale: bool, quotes: &[WireQuote<'_>]) -> Frame {
    encode(&Snapshot {
        kind: "snapshot",
        watchlist_id,
        seq,
        stale,
        quotes,
    })
}

pub fn quotes(watchlist_id: i64, seq: u64, quotes: &[WireQuote<'_>]) -> Frame {
    encode(&Quotes {
        kind: "quotes",
        watchlist_id,
        seq,
        ts: format_ts(Utc::now()),
        quotes,
    })
}

pub fn status(degraded: bool, message: &str, retry_in_ms: Option<u64>) -> Frame {
    encode(&Status {
        kind: "status",
        upstream: if degraded { "degraded" } else { "ok" },
        message,
        retry_in_ms,
    })
}

pub fn error(code: &str, message: &str) -> Frame {
    encode(&ErrorMsg {
        kind: "error",
        code,
        message,
    })
}

pub fn pong() -> Frame {
    ByteString::from_static(r#"{"type":"pong"}"#)
}

/// A message a client may send.
#[derive(Debug, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    Ping,
    Snapshot,
}

/// Why a client message was refused: the `code` of the `error` reply.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientError {
    MalformedJson,
    UnknownType,
    Binary,
}

impl ClientError {
    pub fn code(&self) -> &'static str {
        match self {
            ClientError::MalformedJson => "malformed_json",
            ClientError::UnknownType => "unknown_type",
            ClientError::Binary => "binary_not_supported",
        }
    }

    pub fn message(&self) -> &'static str {
        match self {
            ClientError::MalformedJson => "message is not a JSON object",
            ClientError::UnknownType => "unknown message type; expected ping or snapshot",
            ClientError::Binary => "binary frames are not supported; send JSON text",
        }
    }
}

pub fn parse_client(text: &str) -> Result<ClientMessage, ClientError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|_| ClientError::MalformedJson)?;
    if !value.is_object() {
        return Err(ClientError::MalformedJson);
    }
    serde_json::from_value(value).map_err(|_| ClientError::UnknownType)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages_parse() {
        assert_eq!(parse_client(r#"{"type":"ping"}"#), Ok(ClientMessage::Ping));
        assert_eq!(
            parse_client(r#"{"type":"snapshot","x":1}"#),
            Ok(ClientMessage::Snapshot)
        );
        assert_eq!(parse_client("{"), Err(ClientError::MalformedJson));
        assert_eq!(parse_client("[1]"), Err(ClientError::MalformedJson));
        assert_eq!(
            parse_client(r#"{"type":"subscribe"}"#),
            Err(ClientError::UnknownType)
        );
        assert_eq!(
            parse_client(r#"{"kind":"ping"}"#),
            Err(ClientError::UnknownType)
        );
    }

    #[test]
    fn frames_have_the_contract_shape() {
        let f = status(true, "upstream rate limited", Some(1500));
        let v: serde_json::Value = serde_json::from_str(&f).unwrap();
        assert_eq!(v["type"], "status");
        assert_eq!(v["upstream"], "degraded");
        assert_eq!(v["retry_in_ms"], 1500);
        let v: serde_json::Value = serde_json::from_str(&quotes(7, 42, &[])).unwrap();
        assert_eq!(v["seq"], 42);
        assert!(v["ts"].as_str().unwrap().ends_with('Z'));
    }
}
