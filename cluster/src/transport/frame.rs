//! The peer wire format: length-prefixed frames and the `Hello` that opens every connection.
//!
//! ```text
//! u32 len (bytes after this field) | u8 version (=1) | u8 kind | u64 correlation | payload
//! ```
//!
//! All integers are big-endian. `len` is checked against [`MAX_FRAME`] as soon as the four bytes
//! are in, before anything is buffered, so a peer cannot make the reader allocate 4 GiB; the
//! limit (16 MiB) is sized for Raft snapshots. Decoding is incremental over a `BytesMut`: a
//! partial frame is `Ok(None)` (read more), a bad one is an error (close the connection); neither
//! panics on any input.
//!
//! Kinds below [`FIRST_USER_KIND`] (16) belong to the transport: [`KIND_HELLO`],
//! [`KIND_RESPONSE_OK`], [`KIND_RESPONSE_ERR`] (also the "refused" frame during the hello, with
//! correlation 0). Layers above use kinds 16 and up. Correlation 0 marks a one-way message; a
//! request carries a nonzero correlation that its response echoes.

use bytes::Buf;
use bytes::BufMut;
use bytes::Bytes;
use bytes::BytesMut;
use serde::Deserialize;
use serde::Serialize;

/// Wire version carried by every frame and by the hello.
pub const VERSION: u8 = 1;
/// Largest `len` accepted (bytes after the length field): 16 MiB.
pub const MAX_FRAME: usize = 16 * 1024 * 1024;
/// Bytes after the length field that every frame has: version, kind, correlation.
pub const HEADER_AFTER_LEN: usize = 1 + 1 + 8;
/// The first frame on a connection, both directions: postcard [`Hello`].
pub const KIND_HELLO: u8 = 0;
/// A successful response; the body is the responder's answer.
pub const KIND_RESPONSE_OK: u8 = 1;
/// A failed response (UTF-8 reason), or with correlation 0 a refused connection.
pub const KIND_RESPONSE_ERR: u8 = 2;
/// Kinds from here on are defined by the layers above the transport.
pub const FIRST_USER_KIND: u8 = 16;

/// Why bytes are not a frame. Any of these closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes is over the {MAX_FRAME} byte limit")]
    TooLarge { len: usize },
    #[error("frame of {len} bytes is shorter than its {HEADER_AFTER_LEN} byte header")]
    TooShort { len: usize },
    #[error("frame version {0} is not {VERSION}")]
    Version(u8),
    #[error("malformed hello: {0}")]
    Hello(String),
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: u8,
    pub correlation: u64,
    pub body: Bytes,
}

/// The opening frame's payload. `incarnation` differs each time a node's transport starts, so a
/// peer can tell a restarted node from a reconnect of the same one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub version: u8,
    pub cluster_id: String,
    pub node_id: u64,
    pub incarnation: u64,
}

/// Checks that a frame with `body_len` payload bytes fits the limit.
pub fn check_size(body_len: usize) -> Result<(), FrameError> {
    let len = body_len.saturating_add(HEADER_AFTER_LEN);
    match len > MAX_FRAME {
        true => Err(FrameError::TooLarge { len }),
        false => Ok(()),
    }
}

/// Appends one frame to `out`. The caller checked the size with [`check_size`]; an oversized body
/// here is a bug and is still refused rather than written.
pub fn encode(out: &mut BytesMut, kind: u8, correlation: u64, body: &[u8]) -> Result<(), FrameError> {
    check_size(body.len())?;
    let len = u32::try_from(body.len() + HEADER_AFTER_LEN).map_err(|_| FrameError::TooLarge { len: body.len() })?;
    out.reserve(4 + HEADER_AFTER_LEN + body.len());
    out.put_u32(len);
    out.put_u8(VERSION);
    out.put_u8(kind);
    out.put_u64(correlation);
    out.put_slice(body);
    Ok(())
}

/// Takes one complete frame off the front of `buf`: `Ok(None)` if more bytes are needed.
pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
    let Some(len_bytes) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge { len });
    }
    if len < HEADER_AFTER_LEN {
        return Err(FrameError::TooShort { len });
    }
    if buf.len() < 4 + len {
        buf.reserve(4 + len - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    let mut frame = buf.split_to(len);
    let version = frame.get_u8();
    if version != VERSION {
        return Err(FrameError::Version(version));
    }
    let kind = frame.get_u8();
    let correlation = frame.get_u64();
    Ok(Some(Frame {
        kind,
        correlation,
        body: frame.freeze(),
    }))
}

/// The hello frame for `hello`.
pub fn encode_hello(out: &mut BytesMut, hello: &Hello) -> Result<(), FrameError> {
    let body = postcard::to_allocvec(hello).map_err(|e| FrameError::Hello(e.to_string()))?;
    encode(out, KIND_HELLO, 0, &body)
}

/// The hello in a hello frame's body.
pub fn decode_hello(body: &[u8]) -> Result<Hello, FrameError> {
    postcard::from_bytes(body).map_err(|e| FrameError::Hello(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(kind: u8, correlation: u64, body: &[u8]) -> BytesMut {
        let mut out = BytesMut::new();
        encode(&mut out, kind, correlation, body).expect("encodes");
        out
    }

    #[test]
    fn round_trip_of_several_frames_in_one_buffer() {
        let mut buf = one(16, 0, b"one-way");
        buf.extend_from_slice(&one(KIND_RESPONSE_OK, u64::MAX, b""));
        buf.extend_from_slice(&one(200, 42, &[7u8; 1000]));
        let a = decode(&mut buf).expect("ok").expect("frame");
        assert_eq!((a.kind, a.correlation, &a.body[..]), (16, 0, &b"one-way"[..]));
        let b = decode(&mut buf).expect("ok").expect("frame");
        assert_eq!((b.kind, b.correlation, b.body.len()), (KIND_RESPONSE_OK, u64::MAX, 0));
        let c = decode(&mut buf).expect("ok").expect("frame");
        assert_eq!((c.kind, c.correlation, c.body.len()), (200, 42, 1000));
        assert_eq!(decode(&mut buf).expect("ok"), None);
        assert!(buf.is_empty());
    }

    #[test]
    fn big_endian_layout() {
        let buf = one(0x11, 0x0102030405060708, b"xy");
        assert_eq!(&buf[..], &[0, 0, 0, 12, 1, 0x11, 1, 2, 3, 4, 5, 6, 7, 8, b'x', b'y']);
    }

    #[test]
    fn every_truncation_asks_for_more_and_keeps_the_bytes() {
        let full = one(17, 9, b"hello world");
        for cut in 0..full.len() {
            let mut partial = BytesMut::from(&full[..cut]);
            assert_eq!(decode(&mut partial), Ok(None), "cut at {cut}");
            assert_eq!(partial.len(), cut);
        }
    }

    #[test]
    fn an_oversized_length_is_an_error_before_the_body_arrives() {
        let mut buf = BytesMut::new();
        buf.put_u32((MAX_FRAME + 1) as u32);
        assert_eq!(decode(&mut buf), Err(FrameError::TooLarge { len: MAX_FRAME + 1 }));
        let mut buf = BytesMut::new();
        buf.put_u32(u32::MAX);
        assert!(decode(&mut buf).is_err());
    }

    #[test]
    fn the_limit_itself_is_accepted_and_one_more_byte_is_not() {
        assert!(check_size(MAX_FRAME - HEADER_AFTER_LEN).is_ok());
        assert!(check_size(MAX_FRAME - HEADER_AFTER_LEN + 1).is_err());
        let mut out = BytesMut::new();
        let too_big = vec![0u8; MAX_FRAME - HEADER_AFTER_LEN + 1];
        assert!(encode(&mut out, 16, 1, &too_big).is_err());
        assert!(out.is_empty(), "nothing written for a refused frame");
    }

    #[test]
    fn short_or_wrong_version_frames_are_errors() {
        let mut buf = BytesMut::from(&[0u8, 0, 0, 3, 1, 2, 3][..]);
        assert_eq!(decode(&mut buf), Err(FrameError::TooShort { len: 3 }));
        let mut buf = one(16, 1, b"x");
        buf[4] = 2;
        assert_eq!(decode(&mut buf), Err(FrameError::Version(2)));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed = 0x9e3779b97f4a7c15u64;
        for _ in 0..2000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 40) as usize;
            let bytes: Vec<u8> = (0..len).map(|i| (seed >> (i % 8 * 8)) as u8).collect();
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = decode(&mut buf) {}
            let _ = decode_hello(&bytes);
        }
    }

    #[test]
    fn hello_round_trip_and_garbage() {
        let hello = Hello {
            version: VERSION,
            cluster_id: "c1".to_owned(),
            node_id: 3,
            incarnation: 99,
        };
        let mut buf = BytesMut::new();
        encode_hello(&mut buf, &hello).expect("encodes");
        let frame = decode(&mut buf).expect("ok").expect("frame");
        assert_eq!(frame.kind, KIND_HELLO);
        assert_eq!(decode_hello(&frame.body).expect("hello"), hello);
        assert!(decode_hello(&frame.body[..frame.body.len() - 1]).is_err());
        assert!(decode_hello(&[0xff, 0xff, 0xff]).is_err());
    }
}
