//! The inbound half of a WebSocket: client frames (RFC 6455 §5) in, whole
//! client messages out, in bounded memory whatever the client sends.
//!
//! [`FrameDecoder`] is the state machine, fed chunks of the upgraded byte
//! stream as they arrive; [`Messages`] drives it over that stream (the
//! socket's reads, see [`super::transport::SocketInput`]) and is what the
//! session actor reads. The outbound half is [`super::outbox`].
//!
//! Limits, checked as soon as the bytes that decide them arrive:
//! * a frame header whose length would take its message past
//!   `max_message_bytes` is refused before any of its payload is read, so a
//!   header declaring 2^62 bytes costs nothing;
//! * a fragmented message (§5.4) is reassembled, the byte limit applies to
//!   the whole message, and at most `max_fragments` frames make one message;
//! * control frames (ping, pong, close) may come between fragments and are
//!   delivered at once.
//!
//! Memory: the decoder owns one text message (its buffer never grows past
//! `max_message_bytes`, and its growth is capped by the lengths the headers
//! declared, not doubled past them), a header (at most 14 bytes) and a
//! control payload (at most 125 bytes), both fixed arrays. Binary payloads
//! are counted and skipped, never kept: the service refuses binary messages.
//! [`Messages`] also holds the unread rest of the chunk it is decoding: one
//! read of the socket, at most 8 KiB, and the socket is not read again until
//! that chunk is consumed.
//!
//! Any [`Violation`] ends the stream: nothing more is yielded and the socket
//! is not read again.

use actix_web::error::PayloadError;
use bytes::{Buf, Bytes};
use bytestring::ByteString;
use futures_util::Stream;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use crate::protocol::close;

/// The longest frame header: 2 bytes, a 64-bit length and the mask key.
const MAX_HEADER: usize = 14;
/// The longest control-frame payload (§5.5).
const MAX_CONTROL: usize = 125;

/// What a client may send, from `[realtime]` and the protocol rules.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The largest message, in payload bytes over all its fragments.
    pub max_message_bytes: usize,
    /// The most frames one data message may be split into.
    pub max_fragments: u32,
}

/// A whole client message, or why the client is being closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A text message, reassembled and checked to be UTF-8.
    Text(ByteString),
    /// A binary message: its payload was skipped, only its length is known.
    Binary {
        len: usize,
    },
    Ping(Bytes),
    Pong,
    /// The client's closing handshake; the stream ends after it.
    Close(Option<CloseFrame>),
    /// The client broke the protocol or a limit; the stream ends after it.
    Violation(Violation),
}

/// The body of a client's close frame, checked (§5.5.1, §7.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    pub code: u16,
    pub reason: ByteString,
}

/// Why a client's input is refused; each maps to the close code to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// A message (declared or reassembled) over `max_message_bytes`.
    TooBig,
    /// A message split into more than `max_fragments` frames. 1009 rather
    /// than 1008: it is a size limit counted in frames, and the client's
    /// remedy is the same as for bytes (send the message in fewer pieces);
    /// 1008 stays "the server decided against you" (kicked, revoked,
    /// misbehaving).
    TooManyFragments,
    /// A text message, or a close reason, that is not UTF-8 (§8.1).
    InvalidUtf8,
    /// A client frame without a mask (§5.1).
    Unmasked,
    /// RSV1-3 set, with no extension negotiated (§5.2).
    ReservedBits,
    /// An opcode RFC 6455 does not define (§5.2).
    UnknownOpcode,
    /// A 64-bit length with its top bit set (§5.2).
    BadLength,
    /// A control frame with more than 125 bytes (§5.5).
    ControlTooLong,
    /// A control frame without FIN (§5.5).
    ControlFragmented,
    /// A continuation frame with no message open (§5.4).
    ContinuationWithoutStart,
    /// A text or binary frame while a fragmented message is open (§5.4).
    InterruptedMessage,
    /// A close payload of one byte, or a code not allowed on the wire (§7.4).
    BadClosePayload,
}

impl Violation {
    pub fn close_code(self) -> u16 {
        match self {
            Violation::TooBig | Violation::TooManyFragments => close::TOO_BIG,
            Violation::InvalidUtf8 => close::INVALID_PAYLOAD,
            Violation::Unmasked
            | Violation::ReservedBits
            | Violation::UnknownOpcode
            | Violation::BadLength
            | Violation::ControlTooLong
            | Violation::ControlFragmented
            | Violation::ContinuationWithoutStart
            | Violation::InterruptedMessage
            | Violation::BadClosePayload => close::PROTOCOL_ERROR,
        }
    }

    /// The reason sent in the close frame.
    pub fn reason(self) -> &'static str {
        match self {
            Violation::TooBig => "message too big",
            Violation::TooManyFragments => "message in too many fragments",
            Violation::InvalidUtf8 => "invalid UTF-8",
            Violation::Unmasked => "client frame not masked",
            Violation::ReservedBits => "reserved bits set",
            Violation::UnknownOpcode => "unknown opcode",
            Violation::BadLength => "invalid frame length",
            Violation::ControlTooLong => "control frame too long",
            Violation::ControlFragmented => "fragmented control frame",
            Violation::ContinuationWithoutStart => "continuation without a message",
            Violation::InterruptedMessage => "new message before the last one ended",
            Violation::BadClosePayload => "invalid close frame",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Binary,
}

/// Where the payload of the frame being read goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dest {
    /// Appended, unmasked, to the open text message.
    Text,
    /// Counted and skipped.
    Binary,
    /// Into the control buffer.
    Ping,
    Close,
    /// Skipped: a pong's payload is of no use to the server.
    Pong,
}

/// The frame whose payload is being read.
#[derive(Debug, Clone, Copy)]
struct Frame {
    dest: Dest,
    fin: bool,
    len: usize,
    read: usize,
    mask: [u8; 4],
}

#[derive(Debug, Clone, Copy)]
enum State {
    Header,
    Payload(Frame),
    /// After a close or a violation: nothing more is read.
    Ended,
}

/// The data message being reassembled.
#[derive(Debug, Clone, Copy)]
struct Open {
    kind: Kind,
    len: usize,
    fragments: u32,
}

/// The frame state machine: feed it bytes with [`FrameDecoder::decode`].
#[derive(Debug)]
pub struct FrameDecoder {
    limits: Limits,
    state: State,
    header: [u8; MAX_HEADER],
    header_len: usize,
    open: Option<Open>,
    /// The open text message's payload so far, unmasked.
    text: Vec<u8>,
    control: [u8; MAX_CONTROL],
}

impl FrameDecoder {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            state: State::Header,
            header: [0; MAX_HEADER],
            header_len: 0,
            open: None,
            text: Vec::new(),
            control: [0; MAX_CONTROL],
        }
    }

    /// Consumes bytes from `input` until one message is whole (returned) or
    /// `input` is empty (`None`: feed more). After a close or a violation it
    /// consumes nothing and returns `None`.
    pub fn decode(&mut self, input: &mut Bytes) -> Option<Inbound> {
        match self.step(input) {
            Ok(msg) => msg,
            Err(v) => {
                self.end();
                Some(Inbound::Violation(v))
            }
        }
    }

    /// Whether a close or a violation ended the input.
    pub fn is_ended(&self) -> bool {
        matches!(self.state, State::Ended)
    }

    /// Heap bytes held for the client: the open text message's buffer.
    /// At most `max_message_bytes`.
    pub fn buffered(&self) -> usize {
        self.text.capacity()
    }

    fn end(&mut self) {
        self.state = State::Ended;
        self.open = None;
        self.text = Vec::new();
    }

    fn step(&mut self, input: &mut Bytes) -> Result<Option<Inbound>, Violation> {
        loop {
            match self.state {
                State::Ended => return Ok(None),
                State::Header => match self.read_header(input)? {
                    Some(frame) => self.state = State::Payload(frame),
                    None => return Ok(None),
                },
                State::Payload(mut frame) => {
                    if frame.read < frame.len {
                        if input.is_empty() {
                            return Ok(None);
                        }
                        self.read_payload(&mut frame, input);
                        self.state = State::Payload(frame);
                    }
                    if frame.read == frame.len {
                        self.state = State::Header;
                        if let Some(msg) = self.finish(frame)? {
                            return Ok(Some(msg));
                        }
                    }
                }
            }
        }
    }

    /// Moves header bytes from `input` into `self.header` until `want` are there.
    fn fill_header(&mut self, input: &mut Bytes, want: usize) -> bool {
        if self.header_len < want {
            let take = (want - self.header_len).min(input.len());
            self.header[self.header_len..self.header_len + take].copy_from_slice(&input[..take]);
            self.header_len += take;
            input.advance(take);
        }
        self.header_len >= want
    }

    /// Reads a header as far as `input` goes; every check is made as soon as
    /// the bytes it needs are in, so a refused header is refused before the
    /// rest of it, let alone its payload, is read. The checks are pure, so
    /// running them again when a header arrives in pieces is harmless.
    fn read_header(&mut self, input: &mut Bytes) -> Result<Option<Frame>, Violation> {
        if !self.fill_header(input, 2) {
            return Ok(None);
        }
        let (b0, b1) = (self.header[0], self.header[1]);
        let fin = b0 & 0x80 != 0;
        if b0 & 0x70 != 0 {
            return Err(Violation::ReservedBits);
        }
        let dest = match b0 & 0x0f {
            0x0 => match self.open {
                None => return Err(Violation::ContinuationWithoutStart),
                Some(open) if open.fragments >= self.limits.max_fragments => {
                    return Err(Violation::TooManyFragments)
                }
                Some(open) => match open.kind {
                    Kind::Text => Dest::Text,
                    Kind::Binary => Dest::Binary,
                },
            },
            0x1 | 0x2 if self.open.is_some() => return Err(Violation::InterruptedMessage),
            0x1 => Dest::Text,
            0x2 => Dest::Binary,
            0x8 => Dest::Close,
            0x9 => Dest::Ping,
            0xa => Dest::Pong,
            _ => return Err(Violation::UnknownOpcode),
        };
        if b1 & 0x80 == 0 {
            return Err(Violation::Unmasked);
        }
        let control = matches!(dest, Dest::Ping | Dest::Pong | Dest::Close);
        let len7 = b1 & 0x7f;
        if control && !fin {
            return Err(Violation::ControlFragmented);
        }
        if control && usize::from(len7) > MAX_CONTROL {
            return Err(Violation::ControlTooLong);
        }
        let ext = match len7 {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        if !self.fill_header(input, 2 + ext) {
            return Ok(None);
        }
        let declared: u64 = match ext {
            0 => u64::from(len7),
            2 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
            _ => {
                let mut be = [0; 8];
                be.copy_from_slice(&self.header[2..10]);
                u64::from_be_bytes(be)
            }
        };
        if declared >> 63 != 0 {
            return Err(Violation::BadLength);
        }
        let so_far = self.open.map_or(0, |o| o.len);
        let room = self.limits.max_message_bytes.saturating_sub(so_far);
        if !control && declared > room as u64 {
            return Err(Violation::TooBig);
        }
        // Bounded by `room` or by MAX_CONTROL: fits a usize.
        let len = declared as usize;
        if !self.fill_header(input, 2 + ext + 4) {
            return Ok(None);
        }
        let mut mask = [0; 4];
        mask.copy_from_slice(&self.header[2 + ext..2 + ext + 4]);
        self.header_len = 0;

        // The header is whole and accepted: open or extend the message.
        match (b0 & 0x0f, &mut self.open) {
            (0x0, Some(open)) => open.fragments += 1,
            (0x1, open) => {
                *open = Some(Open {
                    kind: Kind::Text,
                    len: 0,
                    fragments: 1,
                })
            }
            (0x2, open) => {
                *open = Some(Open {
                    kind: Kind::Binary,
                    len: 0,
                    fragments: 1,
                })
            }
            _ => {}
        }
        Ok(Some(Frame {
            dest,
            fin,
            len,
            read: 0,
            mask,
        }))
    }

    fn read_payload(&mut self, frame: &mut Frame, input: &mut Bytes) {
        let take = (frame.len - frame.read).min(input.len());
        match frame.dest {
            Dest::Text => {
                let start = self.text.len();
                self.reserve_text(take, frame.len - frame.read);
                self.text.extend_from_slice(&input[..take]);
                unmask(&mut self.text[start..], frame.mask, frame.read);
            }
            Dest::Ping | Dest::Close => {
                let to = &mut self.control[frame.read..frame.read + take];
                to.copy_from_slice(&input[..take]);
                unmask(to, frame.mask, frame.read);
            }
            Dest::Binary | Dest::Pong => {}
        }
        if let (Dest::Text | Dest::Binary, Some(open)) = (frame.dest, &mut self.open) {
            open.len += take;
        }
        input.advance(take);
        frame.read += take;
    }

    /// Makes room for `take` more bytes of a frame that has `left` to come.
    /// Doubling amortizes byte-at-a-time input, but never past what the
    /// accepted headers declared, so capacity stays within the limit.
    fn reserve_text(&mut self, take: usize, left: usize) {
        let len = self.text.len();
        let needed = len + take;
        if needed > self.text.capacity() {
            let frame_end = len + left;
            let target = needed.max(frame_end.min(self.text.capacity() * 2));
            self.text.reserve_exact(target - len);
        }
    }

    fn finish(&mut self, frame: Frame) -> Result<Option<Inbound>, Violation> {
        Ok(Some(match frame.dest {
            Dest::Text | Dest::Binary if !frame.fin => return Ok(None),
            Dest::Text => {
                self.open = None;
                let bytes = Bytes::from(std::mem::take(&mut self.text));
                Inbound::Text(ByteString::try_from(bytes).map_err(|_| Violation::InvalidUtf8)?)
            }
            Dest::Binary => {
                let len = self.open.take().map_or(0, |o| o.len);
                Inbound::Binary { len }
            }
            // A control frame's length was checked to be within MAX_CONTROL.
            Dest::Ping => Inbound::Ping(Bytes::copy_from_slice(&self.control[..frame.len])),
            Dest::Pong => Inbound::Pong,
            Dest::Close => {
                let close = parse_close(&self.control[..frame.len])?;
                self.end();
                Inbound::Close(close)
            }
        }))
    }
}

fn parse_close(payload: &[u8]) -> Result<Option<CloseFrame>, Violation> {
    match payload {
        [] => Ok(None),
        [_] => Err(Violation::BadClosePayload),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            // The codes an endpoint may send (§7.4.1, §7.4.2 and the IANA
            // registry); 1004-1006 and 1015 are never on the wire.
            if !matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
                return Err(Violation::BadClosePayload);
            }
            let reason = ByteString::try_from(Bytes::copy_from_slice(reason))
                .map_err(|_| Violation::InvalidUtf8)?;
            Ok(Some(CloseFrame { code, reason }))
        }
    }
}

/// Unmasks `buf`, which starts `offset` bytes into its frame's payload, in
/// place: eight bytes at a time, with the key turned to that offset.
fn unmask(buf: &mut [u8], mask: [u8; 4], offset: usize) {
    let key: [u8; 4] = std::array::from_fn(|i| mask[(offset + i) & 3]);
    let word = u64::from_ne_bytes(std::array::from_fn(|i| key[i & 3]));
    let mut words = buf.chunks_exact_mut(8);
    for w in &mut words {
        let mut b = [0; 8];
        b.copy_from_slice(w);
        w.copy_from_slice(&(u64::from_ne_bytes(b) ^ word).to_ne_bytes());
    }
    // The remainder starts a multiple of 8, so of 4, bytes in.
    for (i, b) in words.into_remainder().iter_mut().enumerate() {
        *b ^= key[i & 3];
    }
}

/// A client's messages, decoded from the upgraded byte stream.
pub struct Messages<S> {
    input: S,
    /// The unread rest of the last chunk.
    chunk: Bytes,
    decoder: FrameDecoder,
    input_ended: bool,
}

impl<S> Messages<S> {
    pub fn new(input: S, limits: Limits) -> Self {
        Self {
            input,
            chunk: Bytes::new(),
            decoder: FrameDecoder::new(limits),
            input_ended: false,
        }
    }
}

impl<S> Stream for Messages<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Inbound;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Inbound>> {
        let this = self.get_mut();
        loop {
            if let Some(msg) = this.decoder.decode(&mut this.chunk) {
                if this.decoder.is_ended() {
                    this.chunk = Bytes::new();
                }
                return Poll::Ready(Some(msg));
            }
            if this.decoder.is_ended() || this.input_ended {
                this.chunk = Bytes::new();
                return Poll::Ready(None);
            }
            match ready!(Pin::new(&mut this.input).poll_next(cx)) {
                Some(Ok(chunk)) => this.chunk = chunk,
                // The peer is gone, cleanly or not: with no socket to
                // answer on, a half-read frame is just dropped.
                Some(Err(e)) => {
                    log::debug!("websocket input failed: {e}");
                    this.input_ended = true;
                }
                None => this.input_ended = true,
            }
        }
    }
}

#[cfg(test)]
mod tests;
