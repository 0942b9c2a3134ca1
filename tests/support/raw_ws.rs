//! A WebSocket client over a bare TCP socket, for tests that must send what
//! a well-behaved client library never would: headers declaring absurd
//! lengths, fragments, unmasked frames, invalid UTF-8. It does the HTTP
//! upgrade itself, writes raw bytes, and reads the server's frames.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};

// The opcodes as the client library defines them, by their short names.
pub const CONT: OpCode = OpCode::Data(Data::Continue);
pub const TEXT: OpCode = OpCode::Data(Data::Text);
pub const BINARY: OpCode = OpCode::Data(Data::Binary);
pub const CLOSE: OpCode = OpCode::Control(Control::Close);
pub const PING: OpCode = OpCode::Control(Control::Ping);
pub const PONG: OpCode = OpCode::Control(Control::Pong);

/// A frame from the server.
#[derive(Debug, PartialEq)]
pub enum ServerFrame {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>),
    /// The server closed the TCP connection (or reset it).
    Eof,
}

/// A client frame: masked with a random key, the length in the fewest bytes.
pub fn frame(fin: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mask: [u8; 4] = rand::random();
    let mut out = header(fin, opcode, payload.len() as u64, mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// A masked client frame header declaring `len` payload bytes.
pub fn header(fin: bool, opcode: OpCode, len: u64, mask: [u8; 4]) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | u8::from(opcode)];
    if len <= 125 {
        out.push(0x80 | len as u8);
    } else if len <= 0xffff {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&len.to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out
}

/// A WebSocket upgrade request for `path`, with `extra` header lines (each
/// ending in CRLF).
pub fn upgrade_request(addr: SocketAddr, path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// Sends `request` on a new connection and reads the answer (head and a
/// body of its content-length); with `then_closed`, also waits for the
/// server to close the connection, with nothing more written.
pub async fn exchange(addr: SocketAddr, request: &str, then_closed: bool) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send request");
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + super::DEADLINE;
    let complete = |out: &[u8]| {
        let text = String::from_utf8_lossy(out);
        let (head, body) = text.split_once("\r\n\r\n")?;
        let len: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().to_string())
            })?
            .parse()
            .ok()?;
        (body.len() >= len).then_some(())
    };
    while complete(&out).is_none() {
        let mut chunk = [0; 4096];
        let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .expect("a whole answer in time")
            .expect("read answer");
        assert!(
            n > 0,
            "connection closed mid-answer: {}",
            String::from_utf8_lossy(&out)
        );
        out.extend_from_slice(&chunk[..n]);
    }
    if then_closed {
        let mut rest = Vec::new();
        tokio::time::timeout_at(deadline, stream.read_to_end(&mut rest))
            .await
            .expect("the server closes the connection after its answer")
            .expect("read to the end");
        assert!(rest.is_empty(), "more after the answer: {rest:?}");
    }
    String::from_utf8(out).expect("an HTTP answer is text")
}

pub struct RawWs {
    stream: TcpStream,
    /// Bytes read from the socket and not yet parsed into a frame.
    buf: Vec<u8>,
}

impl RawWs {
    /// Upgrades `GET path` with a bearer token; panics unless the answer is 101.
    pub async fn connect(addr: SocketAddr, path: &str, token: &str) -> RawWs {
        Self::connect_sending(addr, path, token, &[]).await
    }

    /// Connects, with `early` (frames, say) in the same write as the
    /// upgrade request, before the 101 has come.
    pub async fn connect_sending(addr: SocketAddr, path: &str, token: &str, early: &[u8]) -> RawWs {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let mut request =
            upgrade_request(addr, path, &format!("Authorization: Bearer {token}\r\n")).into_bytes();
        request.extend_from_slice(early);
        stream.write_all(&request).await.expect("send upgrade");
        let mut ws = RawWs {
            stream,
            buf: Vec::new(),
        };
        let head_end = loop {
            if let Some(i) = ws.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(ws.fill(super::DEADLINE).await, "no upgrade answer");
        };
        let head = String::from_utf8_lossy(&ws.buf[..head_end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
        ws.buf.drain(..head_end);
        ws
    }

    /// Writes raw bytes.
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    pub async fn send_frame(&mut self, fin: bool, opcode: OpCode, payload: &[u8]) {
        self.send(&frame(fin, opcode, payload))
            .await
            .expect("send frame");
    }

    /// Reads more bytes, waiting at most `timeout`; false when none came in
    /// time or the connection is closed.
    async fn fill(&mut self, timeout: Duration) -> bool {
        let mut chunk = [0; 4096];
        match tokio::time::timeout(timeout, self.stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            _ => false,
        }
    }

    /// A whole frame from what is buffered, if there is one.
    fn parse(&mut self) -> Option<ServerFrame> {
        let b = &self.buf;
        if b.len() < 2 {
            return None;
        }
        assert_eq!(b[1] & 0x80, 0, "server frames are not masked");
        let (len, at) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 if b.len() >= 10 => (
                u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
                10,
            ),
            126 | 127 => return None,
            n => (n as usize, 2),
        };
        if b.len() < at + len {
            return None;
        }
        let payload = b[at..at + len].to_vec();
        let opcode = OpCode::from(b[0] & 0x0f);
        self.buf.drain(..at + len);
        Some(match opcode {
            TEXT => ServerFrame::Text(String::from_utf8(payload).expect("server text is UTF-8")),
            BINARY => ServerFrame::Binary(payload),
            PING => ServerFrame::Ping(payload),
            PONG => ServerFrame::Pong(payload),
            CLOSE => ServerFrame::Close(
                (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]])),
            ),
            other => panic!("server sent opcode {other}"),
        })
    }

    /// The next frame, or `None` if none came within `timeout`.
    pub async fn next_frame(&mut self, timeout: Duration) -> Option<ServerFrame> {
        let end = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(f) = self.parse() {
                return Some(f);
            }
            let left = end.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return None;
            }
            let mut chunk = [0; 4096];
            match tokio::time::timeout(left, self.stream.read(&mut chunk)).await {
                Err(_) => return None,
                Ok(Ok(0)) | Ok(Err(_)) => return Some(ServerFrame::Eof),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The next frame other than a ping, panicking after the deadline.
    async fn next_not_ping(&mut self, what: &str) -> ServerFrame {
        let end = tokio::time::Instant::now() + super::DEADLINE;
        loop {
            let left = end.saturating_duration_since(tokio::time::Instant::now());
            match self.next_frame(left).await {
                Some(ServerFrame::Ping(_)) => continue,
                Some(f) => return f,
                None => panic!("timed out waiting for {what}"),
            }
        }
    }

    /// Waits for a JSON text message of this `type`, skipping others.
    pub async fn wait_type(&mut self, kind: &str) -> serde_json::Value {
        loop {
            match self.next_not_ping(kind).await {
                ServerFrame::Text(t) => {
                    let v: serde_json::Value = serde_json::from_str(&t).expect("server sends JSON");
                    if v["type"] == kind {
                        return v;
                    }
                }
                other => panic!("{other:?} while waiting for {kind}"),
            }
        }
    }

    /// Waits for the server's close frame, skipping messages; its code.
    pub async fn wait_close(&mut self) -> Option<u16> {
        loop {
            match self.next_not_ping("close").await {
                ServerFrame::Close(code) => return code,
                ServerFrame::Eof => panic!("connection closed without a close frame"),
                _ => continue,
            }
        }
    }

    /// Waits for the server to end the TCP connection.
    pub async fn wait_eof(&mut self) {
        loop {
            if let ServerFrame::Eof = self.next_not_ping("end of connection").await {
                return;
            }
        }
    }
}
