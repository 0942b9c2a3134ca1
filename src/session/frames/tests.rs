//! Unit and property tests of the frame decoder. Every case runs on the
//! whole input, byte at a time and cut at random, through [`Messages`].

use super::*;
use futures_util::{stream, FutureExt, StreamExt};
use proptest::prelude::*;
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::cell::Cell;
use std::rc::Rc;

const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CONT: u8 = 0x0;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xa;

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn limits() -> Limits {
    Limits {
        max_message_bytes: 100,
        max_fragments: 4,
    }
}

/// How a frame writes its length.
#[derive(Debug, Clone, Copy)]
enum Width {
    Shortest,
    Bits16,
    Bits64,
}

/// A client frame: masked, with the length written as `width` says.
fn frame_with(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4], width: Width) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | opcode];
    let len = payload.len();
    match width {
        Width::Shortest if len <= 125 => out.push(0x80 | len as u8),
        Width::Shortest | Width::Bits16 if len <= 0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame_with(fin, opcode, payload, MASK, Width::Shortest)
}

fn text(s: &str) -> Inbound {
    Inbound::Text(ByteString::from(s))
}

fn violation(v: Violation) -> Inbound {
    Inbound::Violation(v)
}

/// Decodes `chunks` through [`Messages`] to the end of the stream.
fn decode_chunks(limits: Limits, chunks: Vec<Vec<u8>>) -> Vec<Inbound> {
    let input = stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from(c))));
    let mut messages = Messages::new(input, limits);
    let mut out = Vec::new();
    // The input is always ready, so each poll completes at once.
    while let Some(msg) = messages.next().now_or_never().expect("ready") {
        out.push(msg);
    }
    out
}

/// `bytes` cut at the given (sorted, deduplicated) positions.
fn cut(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    at.sort_unstable();
    at.dedup();
    let mut chunks = Vec::new();
    let mut from = 0;
    for c in at.into_iter().chain([bytes.len()]) {
        chunks.push(bytes[from..c].to_vec());
        from = c;
    }
    chunks
}

/// The whole input, byte at a time, and cut at random.
fn chunkings(bytes: &[u8]) -> Vec<Vec<Vec<u8>>> {
    let mut all = vec![
        vec![bytes.to_vec()],
        bytes.iter().map(|b| vec![*b]).collect(),
    ];
    let mut rng = StdRng::seed_from_u64(bytes.len() as u64);
    for _ in 0..20 {
        let n = rng.gen_range(0..8);
        let cuts: Vec<usize> = (0..n).map(|_| rng.gen_range(0..=bytes.len())).collect();
        all.push(cut(bytes, &cuts));
    }
    all
}

fn assert_decodes_with(limits: Limits, bytes: &[u8], expected: &[Inbound]) {
    for chunks in chunkings(bytes) {
        let sizes: Vec<usize> = chunks.iter().map(Vec::len).collect();
        assert_eq!(decode_chunks(limits, chunks), expected, "chunks {sizes:?}");
    }
}

fn assert_decodes(bytes: &[u8], expected: &[Inbound]) {
    assert_decodes_with(limits(), bytes, expected)
}

fn concat(frames: &[Vec<u8>]) -> Vec<u8> {
    frames.concat()
}

#[test]
fn a_text_frame_is_a_text_message() {
    assert_decodes(
        &frame(true, TEXT, br#"{"type":"ping"}"#),
        &[text(r#"{"type":"ping"}"#)],
    );
    assert_decodes(&frame(true, TEXT, b""), &[text("")]);
}

#[test]
fn unmasking_is_right_at_every_length_offset_and_cut() {
    let limits = Limits {
        max_message_bytes: 300,
        max_fragments: 4,
    };
    let masks = [[0, 0, 0, 0], MASK, [0xff, 0x01, 0x80, 0x7f]];
    for len in 0..=300 {
        let s: String = (0..len).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        let mask = masks[len % masks.len()];
        let bytes = frame_with(true, TEXT, s.as_bytes(), mask, Width::Shortest);
        assert_decodes_with(limits, &bytes, &[text(&s)]);
    }
}

#[test]
fn every_length_encoding_is_read() {
    let s = "x".repeat(100);
    for width in [Width::Shortest, Width::Bits16, Width::Bits64] {
        let bytes = frame_with(true, TEXT, s.as_bytes(), MASK, width);
        assert_decodes(&bytes, &[text(&s)]);
    }
}

#[test]
fn a_fragmented_message_is_reassembled() {
    let bytes = concat(&[
        frame(false, TEXT, br#"{"type""#),
        frame(false, CONT, b""),
        frame(true, CONT, br#":"ping"}"#),
    ]);
    assert_decodes(&bytes, &[text(r#"{"type":"ping"}"#)]);
}

#[test]
fn a_character_split_between_fragments_is_valid() {
    let e = "é".as_bytes();
    let bytes = concat(&[frame(false, TEXT, &e[..1]), frame(true, CONT, &e[1..])]);
    assert_decodes(&bytes, &[text("é")]);
}

#[test]
fn control_frames_between_fragments_come_at_once() {
    let bytes = concat(&[
        frame(false, TEXT, b"ab"),
        frame(true, PING, b"hi"),
        frame(false, CONT, b"cd"),
        frame(true, PONG, b"whatever"),
        frame(true, CONT, b"ef"),
        frame(true, PING, b""),
    ]);
    assert_decodes(
        &bytes,
        &[
            Inbound::Ping(Bytes::from_static(b"hi")),
            Inbound::Pong,
            text("abcdef"),
            Inbound::Ping(Bytes::new()),
        ],
    );
}

#[test]
fn a_close_between_fragments_ends_the_input() {
    let bytes = concat(&[
        frame(false, TEXT, b"ab"),
        frame(true, CLOSE, b""),
        frame(true, CONT, b"cd"),
    ]);
    assert_decodes(&bytes, &[Inbound::Close(None)]);
}

#[test]
fn binary_messages_are_counted_not_kept() {
    let bytes = concat(&[
        frame(true, BINARY, &[7; 100]),
        frame(false, BINARY, &[1; 60]),
        frame(true, CONT, &[2; 40]),
        frame(true, TEXT, b"after"),
    ]);
    assert_decodes(
        &bytes,
        &[
            Inbound::Binary { len: 100 },
            Inbound::Binary { len: 100 },
            text("after"),
        ],
    );
    let mut d = FrameDecoder::new(limits());
    let mut input = Bytes::from(frame(true, BINARY, &[7; 100]));
    assert_eq!(d.decode(&mut input), Some(Inbound::Binary { len: 100 }));
    assert_eq!(d.buffered(), 0);
}

#[test]
fn a_message_at_the_limit_passes_and_one_byte_more_does_not() {
    let at = "x".repeat(100);
    assert_decodes(&frame(true, TEXT, at.as_bytes()), &[text(&at)]);
    let over = "x".repeat(101);
    assert_decodes(
        &frame(true, TEXT, over.as_bytes()),
        &[violation(Violation::TooBig)],
    );
    assert_decodes(
        &frame(true, BINARY, &[0; 101]),
        &[violation(Violation::TooBig)],
    );
}

/// The header alone decides: 2^62 declared bytes are refused from the 10
/// bytes that declare them, before the mask key or any payload.
#[test]
fn a_huge_declared_length_is_refused_from_the_header_alone() {
    let mut header = vec![0x80 | TEXT, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 62).to_be_bytes());
    let mut d = FrameDecoder::new(limits());
    let mut input = Bytes::from(header.clone());
    assert_eq!(d.decode(&mut input), Some(violation(Violation::TooBig)));
    assert!(input.is_empty());
    assert_eq!(d.buffered(), 0);
    assert!(d.is_ended());

    // Byte at a time: refused on the 10th byte.
    let mut d = FrameDecoder::new(limits());
    for (i, b) in header.iter().enumerate() {
        let got = d.decode(&mut Bytes::copy_from_slice(&[*b]));
        if i < 9 {
            assert_eq!(got, None, "byte {i}");
        } else {
            assert_eq!(got, Some(violation(Violation::TooBig)));
        }
    }
    // The same through a 16-bit length, and followed by a stream of bytes.
    let mut bytes = vec![0x80 | BINARY, 0x80 | 126, 0x01, 0x00];
    bytes.extend_from_slice(&[0; 1000]);
    assert_decodes(&bytes, &[violation(Violation::TooBig)]);
}

#[test]
fn the_limit_applies_to_the_whole_fragmented_message() {
    let bytes = concat(&[
        frame(false, TEXT, &[b'x'; 60]),
        frame(true, CONT, &[b'x'; 41]),
    ]);
    assert_decodes(&bytes, &[violation(Violation::TooBig)]);
    // Refused at the continuation's header, before its payload.
    let mut d = FrameDecoder::new(limits());
    let first = frame(false, TEXT, &[b'x'; 60]);
    assert_eq!(d.decode(&mut Bytes::from(first)), None);
    let mut header = Bytes::from_static(&[CONT, 0x80 | 41]);
    assert_eq!(d.decode(&mut header), Some(violation(Violation::TooBig)));
    assert_eq!(d.buffered(), 0, "the partial message is released");

    let bytes = concat(&[
        frame(false, BINARY, &[0; 60]),
        frame(false, CONT, &[0; 40]),
        frame(true, CONT, &[0; 1]),
    ]);
    assert_decodes(&bytes, &[violation(Violation::TooBig)]);
}

#[test]
fn fragments_are_bounded() {
    let at: Vec<Vec<u8>> = [frame(false, TEXT, b"a")]
        .into_iter()
        .chain((0..2).map(|_| frame(false, CONT, b"b")))
        .chain([frame(true, CONT, b"c")])
        .collect();
    assert_decodes(&concat(&at), &[text("abbc")]);
    let over: Vec<Vec<u8>> = [frame(false, TEXT, b"a")]
        .into_iter()
        .chain((0..3).map(|_| frame(false, CONT, b"")))
        .chain([frame(true, CONT, b"c")])
        .collect();
    assert_decodes(&concat(&over), &[violation(Violation::TooManyFragments)]);
    assert_eq!(Violation::TooManyFragments.close_code(), 1009);
}

#[test]
fn invalid_utf8_is_refused_with_1007() {
    assert_decodes(
        &frame(true, TEXT, &[b'{', 0xff, b'}']),
        &[violation(Violation::InvalidUtf8)],
    );
    // A character cut off by the end of the message.
    let bytes = concat(&[frame(false, TEXT, b"a"), frame(true, CONT, &[0xc3])]);
    assert_decodes(&bytes, &[violation(Violation::InvalidUtf8)]);
    assert_eq!(Violation::InvalidUtf8.close_code(), 1007);
}

#[test]
fn protocol_errors_are_refused_with_1002() {
    let unmasked = vec![0x80 | TEXT, 2, b'h', b'i'];
    let rsv = {
        let mut f = frame(true, TEXT, b"hi");
        f[0] |= 0x40;
        f
    };
    let long_ping = frame(true, PING, &[0; 126]);
    let fragmented_ping = frame(false, PING, b"");
    let mut huge_length = vec![0x80 | BINARY, 0x80 | 127];
    huge_length.extend_from_slice(&u64::MAX.to_be_bytes());
    let cases = [
        (unmasked, Violation::Unmasked),
        (rsv, Violation::ReservedBits),
        (long_ping, Violation::ControlTooLong),
        (fragmented_ping, Violation::ControlFragmented),
        (frame(true, CONT, b"x"), Violation::ContinuationWithoutStart),
        (
            concat(&[frame(false, TEXT, b"a"), frame(true, TEXT, b"b")]),
            Violation::InterruptedMessage,
        ),
        (
            concat(&[frame(false, BINARY, b"a"), frame(true, TEXT, b"b")]),
            Violation::InterruptedMessage,
        ),
        (huge_length, Violation::BadLength),
        (frame(true, CLOSE, &[3]), Violation::BadClosePayload),
        (
            frame(true, CLOSE, &1005u16.to_be_bytes()),
            Violation::BadClosePayload,
        ),
        (
            frame(true, CLOSE, &999u16.to_be_bytes()),
            Violation::BadClosePayload,
        ),
    ];
    for (bytes, v) in cases {
        assert_decodes(&bytes, &[violation(v)]);
        assert_eq!(v.close_code(), 1002, "{v:?}");
    }
    for opcode in (3..=7).chain(0xb..=0xf) {
        assert_decodes(
            &frame(true, opcode, b""),
            &[violation(Violation::UnknownOpcode)],
        );
    }
}

#[test]
fn close_frames_are_read_and_checked() {
    assert_decodes(&frame(true, CLOSE, b""), &[Inbound::Close(None)]);
    let mut body = 1000u16.to_be_bytes().to_vec();
    body.extend_from_slice("bye ✓".as_bytes());
    assert_decodes(
        &frame(true, CLOSE, &body),
        &[Inbound::Close(Some(CloseFrame {
            code: 1000,
            reason: ByteString::from("bye ✓"),
        }))],
    );
    let mut bad = 4000u16.to_be_bytes().to_vec();
    bad.push(0xff);
    assert_decodes(
        &frame(true, CLOSE, &bad),
        &[violation(Violation::InvalidUtf8)],
    );
}

#[test]
fn nothing_is_read_after_a_close_or_a_violation() {
    for first in [frame(true, CLOSE, b""), frame(true, 0x3, b"")] {
        let pulled = Rc::new(Cell::new(0));
        let counter = pulled.clone();
        let chunks = vec![
            first,
            frame(true, TEXT, b"never"),
            frame(true, TEXT, b"never"),
        ];
        let input = stream::iter(chunks).map(move |c| {
            counter.set(counter.get() + 1);
            Ok(Bytes::from(c))
        });
        let mut messages = Messages::new(input, limits());
        let first = messages.next().now_or_never().unwrap();
        assert!(
            matches!(first, Some(Inbound::Close(_) | Inbound::Violation(_))),
            "{first:?}"
        );
        assert_eq!(messages.next().now_or_never().unwrap(), None);
        assert_eq!(messages.next().now_or_never().unwrap(), None);
        assert_eq!(pulled.get(), 1, "the socket is not read past the end");
    }
}

#[test]
fn input_ending_inside_a_frame_ends_the_stream_quietly() {
    let mut bytes = frame(true, TEXT, b"whole");
    bytes.extend_from_slice(&frame(true, TEXT, b"cut off")[..5]);
    assert_decodes(&bytes, &[text("whole")]);
}

#[test]
fn an_input_error_ends_the_stream() {
    let chunks: Vec<Result<Bytes, PayloadError>> = vec![
        Ok(Bytes::from(frame(true, TEXT, b"one"))),
        Err(PayloadError::Incomplete(None)),
        Ok(Bytes::from(frame(true, TEXT, b"two"))),
    ];
    let mut messages = Messages::new(stream::iter(chunks), limits());
    assert_eq!(messages.next().now_or_never().unwrap(), Some(text("one")));
    assert_eq!(messages.next().now_or_never().unwrap(), None);
}

#[test]
fn the_buffer_grows_with_what_arrives_not_with_what_is_declared() {
    let mut d = FrameDecoder::new(limits());
    let mut header = Bytes::from(frame(true, TEXT, &[b'x'; 100])[..6].to_vec());
    assert_eq!(d.decode(&mut header), None);
    assert_eq!(d.buffered(), 0, "nothing reserved for declared bytes");
    let mut one = Bytes::from_static(b"x");
    assert_eq!(d.decode(&mut one), None);
    assert!(d.buffered() < 100);
}

#[test]
fn the_buffer_never_passes_the_limit() {
    let bytes = concat(&[
        frame(false, TEXT, &[b'x'; 30]),
        frame(false, CONT, &[b'x'; 30]),
        frame(false, CONT, &[b'x'; 39]),
        frame(true, CONT, &[b'x'; 1]),
    ]);
    for chunks in chunkings(&bytes) {
        let mut d = FrameDecoder::new(limits());
        let mut out = Vec::new();
        for c in chunks {
            let mut c = Bytes::from(c);
            while let Some(m) = d.decode(&mut c) {
                out.push(m);
            }
            assert!(d.buffered() <= 100, "{}", d.buffered());
        }
        assert_eq!(out, [text(&"x".repeat(100))]);
    }
}

// Property tests.

/// What a client sends: a message (and the control frames among its
/// fragments), or a control frame.
#[derive(Debug, Clone)]
enum Sent {
    Data(Data),
    Control(Control),
}

/// One client message, in fragments.
#[derive(Debug, Clone)]
struct Data {
    text: bool,
    payload: Vec<u8>,
    /// Where the payload is cut into fragments.
    cuts: Vec<usize>,
    /// A control frame after each fragment but the last, or none.
    between: Vec<Option<Control>>,
    masks: Vec<[u8; 4]>,
    widths: Vec<Width>,
}

#[derive(Debug, Clone)]
struct Control {
    ping: bool,
    payload: Vec<u8>,
    mask: [u8; 4],
}

const PROP_LIMITS: Limits = Limits {
    max_message_bytes: 600,
    max_fragments: 6,
};

fn width() -> impl Strategy<Value = Width> {
    prop_oneof![
        6 => Just(Width::Shortest),
        1 => Just(Width::Bits16),
        1 => Just(Width::Bits64),
    ]
}

fn control() -> impl Strategy<Value = Control> {
    (
        any::<bool>(),
        prop::collection::vec(any::<u8>(), 0..=125),
        any::<[u8; 4]>(),
    )
        .prop_map(|(ping, payload, mask)| Control {
            ping,
            payload,
            mask,
        })
}

fn sent() -> impl Strategy<Value = Sent> {
    let n = PROP_LIMITS.max_fragments as usize;
    let data = (
        prop_oneof![
            // Text of any characters, up to 600 bytes.
            "\\PC{0,150}".prop_map(|s| (true, s.into_bytes())),
            prop::collection::vec(any::<u8>(), 0..=600).prop_map(|b| (false, b)),
        ],
        prop::collection::vec(any::<usize>(), 0..n),
        prop::collection::vec(prop::option::weighted(0.3, control()), n),
        prop::collection::vec(any::<[u8; 4]>(), n),
        prop::collection::vec(width(), n),
    )
        .prop_map(|((text, payload), cuts, between, masks, widths)| {
            Sent::Data(Data {
                text,
                payload,
                cuts,
                between,
                masks,
                widths,
            })
        });
    prop_oneof![4 => data, 1 => control().prop_map(Sent::Control)]
}

fn control_frame(c: &Control) -> (Vec<u8>, Inbound) {
    let opcode = if c.ping { PING } else { PONG };
    let frame = frame_with(true, opcode, &c.payload, c.mask, Width::Shortest);
    let msg = if c.ping {
        Inbound::Ping(Bytes::from(c.payload.clone()))
    } else {
        Inbound::Pong
    };
    (frame, msg)
}

/// The wire bytes of `sent` and the messages they must decode to.
fn wire(sent: &[Sent]) -> (Vec<u8>, Vec<Inbound>) {
    let mut bytes = Vec::new();
    let mut expected = Vec::new();
    for s in sent {
        match s {
            Sent::Control(c) => {
                let (f, m) = control_frame(c);
                bytes.extend(f);
                expected.push(m);
            }
            Sent::Data(d) => {
                let pieces = cut(&d.payload, &d.cuts);
                let last = pieces.len() - 1;
                for (i, piece) in pieces.iter().enumerate() {
                    let opcode = match (i, d.text) {
                        (0, true) => TEXT,
                        (0, false) => BINARY,
                        _ => CONT,
                    };
                    let (mask, width) = (d.masks[i], d.widths[i]);
                    bytes.extend(frame_with(i == last, opcode, piece, mask, width));
                    if let (true, Some(c)) = (i < last, &d.between[i]) {
                        let (f, m) = control_frame(c);
                        bytes.extend(f);
                        expected.push(m);
                    }
                }
                expected.push(if d.text {
                    Inbound::Text(ByteString::try_from(d.payload.clone()).expect("utf-8"))
                } else {
                    Inbound::Binary {
                        len: d.payload.len(),
                    }
                });
            }
        }
    }
    (bytes, expected)
}

/// Feeds `chunks` to a decoder, checking its invariants after each step:
/// the buffer stays within the limit and nothing comes after an end.
fn drive(limits: Limits, chunks: &[Vec<u8>]) -> Vec<Inbound> {
    let mut d = FrameDecoder::new(limits);
    let mut out = Vec::new();
    for c in chunks {
        let mut c = Bytes::copy_from_slice(c);
        while let Some(m) = d.decode(&mut c) {
            assert!(!out.iter().any(ends), "a message after the end: {m:?}");
            out.push(m);
            assert!(d.buffered() <= limits.max_message_bytes);
        }
        assert!(d.buffered() <= limits.max_message_bytes);
        assert!(c.is_empty() || d.is_ended(), "input left unread");
    }
    out
}

fn ends(m: &Inbound) -> bool {
    matches!(m, Inbound::Close(_) | Inbound::Violation(_))
}

/// A frame of arbitrary header fields, mostly well-formed, so the decoder
/// reaches deep states (fragments, limits, UTF-8) rather than the first
/// check.
fn rough_frame() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<bool>(),
        prop_oneof![8 => 0u8..=2, 2 => 8u8..=10, 1 => 0u8..=15],
        prop::bool::weighted(0.02),
        prop::bool::weighted(0.98),
        prop_oneof![
            4 => prop::collection::vec(any::<u8>(), 0..40),
            1 => "\\PC{0,40}".prop_map(String::into_bytes),
            1 => prop::collection::vec(any::<u8>(), 100..700),
        ],
        any::<[u8; 4]>(),
        width(),
    )
        .prop_map(|(fin, opcode, rsv, masked, payload, mask, width)| {
            let mut f = frame_with(fin, opcode, &payload, mask, width);
            if rsv {
                f[0] |= 0x20;
            }
            if !masked {
                f[1] &= 0x7f;
            }
            f
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Valid client frames decode to the same messages however they are cut.
    #[test]
    fn valid_frames_decode_alike_however_cut(
        sent in prop::collection::vec(sent(), 0..8),
        cuts in prop::collection::vec(any::<usize>(), 0..40),
    ) {
        let (bytes, expected) = wire(&sent);
        prop_assert_eq!(&drive(PROP_LIMITS, std::slice::from_ref(&bytes)), &expected);
        prop_assert_eq!(&drive(PROP_LIMITS, &cut(&bytes, &cuts)), &expected);
        prop_assert_eq!(&decode_chunks(PROP_LIMITS, cut(&bytes, &cuts)), &expected);
    }

    /// Byte at a time too (fewer cases: it is the slowest cut).
    #[test]
    fn valid_frames_decode_alike_byte_at_a_time(sent in prop::collection::vec(sent(), 0..4)) {
        let (bytes, expected) = wire(&sent);
        let bytes: Vec<Vec<u8>> = bytes.iter().map(|b| vec![*b]).collect();
        prop_assert_eq!(drive(PROP_LIMITS, &bytes), expected);
    }

    /// Arbitrary bytes never panic, never grow the buffer past the limit,
    /// and decode alike however cut.
    #[test]
    fn arbitrary_bytes_are_bounded(
        bytes in prop::collection::vec(any::<u8>(), 0..2048),
        cuts in prop::collection::vec(any::<usize>(), 0..40),
    ) {
        let whole = drive(PROP_LIMITS, std::slice::from_ref(&bytes));
        prop_assert_eq!(drive(PROP_LIMITS, &cut(&bytes, &cuts)), whole);
    }

    /// Likewise for frames with arbitrary header fields.
    #[test]
    fn rough_frames_are_bounded(
        frames in prop::collection::vec(rough_frame(), 0..24),
        cuts in prop::collection::vec(any::<usize>(), 0..40),
    ) {
        let bytes = frames.concat();
        let whole = drive(PROP_LIMITS, std::slice::from_ref(&bytes));
        prop_assert_eq!(&drive(PROP_LIMITS, &cut(&bytes, &cuts)), &whole);
        prop_assert_eq!(decode_chunks(PROP_LIMITS, cut(&bytes, &cuts)), whole);
    }
}
