//! Length-prefixed, checksummed frames: the unit everything on a transport
//! connection travels in.
//!
//! Layout (little endian), 9 header bytes then the payload:
//!
//! ```text
//! len: u32   payload length in bytes
//! kind: u8   Hello | HelloAck | Raft | Lane
//! crc: u32   CRC32C of len, kind and payload
//! payload: [u8; len]
//! ```
//!
//! The checksum covers the length and kind too, so a flipped bit anywhere
//! in a frame is detected (a changed length shows up as a truncated frame
//! or trailing bytes, a changed kind or payload as a checksum mismatch).
//! The length is checked against the configured maximum before any buffer
//! is reserved: a hostile length field cannot make a node allocate.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::error::FrameError;

/// Bytes before the payload.
pub const FRAME_HEADER_BYTES: usize = 9;
/// The smallest `frame_bytes_max` a configuration may set.
pub const FRAME_BYTES_MIN: usize = 4096;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// Dialer's handshake (see `handshake`).
    Hello = 1,
    /// Acceptor's answer to the handshake.
    HelloAck = 2,
    /// A batch of Raft messages (see `codec`).
    Raft = 3,
    /// One opaque frame of the snapshot lane.
    Lane = 4,
}

impl FrameKind {
    fn from_u8(code: u8) -> Result<FrameKind, FrameError> {
        match code {
            1 => Ok(FrameKind::Hello),
            2 => Ok(FrameKind::HelloAck),
            3 => Ok(FrameKind::Raft),
            4 => Ok(FrameKind::Lane),
            other => Err(FrameError::UnknownKind(other)),
        }
    }
}

/// A decoded frame; the payload shares the read buffer (no copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameKind,
    pub payload: Bytes,
}

fn checksum(len_kind: &[u8], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(len_kind), payload)
}

/// The header for `payload`, for writers that send a large payload without
/// copying it behind the header.
pub fn header(
    kind: FrameKind,
    payload: &[u8],
    frame_bytes_max: usize,
) -> Result<[u8; FRAME_HEADER_BYTES], FrameError> {
    let total = FRAME_HEADER_BYTES + payload.len();
    if total > frame_bytes_max || payload.len() > u32::MAX as usize {
        return Err(FrameError::TooLarge {
            len: total,
            max: frame_bytes_max,
        });
    }
    let mut out = [0u8; FRAME_HEADER_BYTES];
    out[..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    out[4] = kind as u8;
    let crc = checksum(&out[..5], payload);
    out[5..].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Appends a complete frame to `out`.
pub fn encode(
    kind: FrameKind,
    payload: &[u8],
    out: &mut BytesMut,
    frame_bytes_max: usize,
) -> Result<(), FrameError> {
    let head = header(kind, payload, frame_bytes_max)?;
    out.reserve(head.len() + payload.len());
    out.put_slice(&head);
    out.put_slice(payload);
    Ok(())
}

/// Reserves room for a header at the end of `out` so that a payload can be
/// encoded in place; returns where the frame starts, for [`finish`].
pub fn begin(out: &mut BytesMut) -> usize {
    let start = out.len();
    out.put_bytes(0, FRAME_HEADER_BYTES);
    start
}

/// Completes the frame begun at `start` (everything after its header is
/// the payload). On error the frame is removed from `out` again.
pub fn finish(
    out: &mut BytesMut,
    start: usize,
    kind: FrameKind,
    frame_bytes_max: usize,
) -> Result<usize, FrameError> {
    let total = out.len() - start;
    let payload_len = total - FRAME_HEADER_BYTES;
    if total > frame_bytes_max {
        out.truncate(start);
        return Err(FrameError::TooLarge {
            len: total,
            max: frame_bytes_max,
        });
    }
    let frame = &mut out[start..];
    frame[..4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    frame[4] = kind as u8;
    let crc = checksum(&frame[..5], &frame[FRAME_HEADER_BYTES..]);
    frame[5..FRAME_HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
    Ok(total)
}

/// Takes one frame off the front of `buf`, or `Ok(None)` when more bytes
/// are needed. When it needs more, it reserves exactly what the frame
/// still lacks (bounded by `frame_bytes_max`), so reads fill it in place.
pub fn decode(buf: &mut BytesMut, frame_bytes_max: usize) -> Result<Option<Frame>, FrameError> {
    if buf.len() < FRAME_HEADER_BYTES {
        return Ok(None);
    }
    let mut len_raw = [0u8; 4];
    len_raw.copy_from_slice(&buf[..4]);
    let payload_len = u32::from_le_bytes(len_raw) as usize;
    let total = FRAME_HEADER_BYTES.saturating_add(payload_len);
    if total > frame_bytes_max {
        return Err(FrameError::TooLarge {
            len: total,
            max: frame_bytes_max,
        });
    }
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    let kind_code = buf[4];
    let mut crc_raw = [0u8; 4];
    crc_raw.copy_from_slice(&buf[5..FRAME_HEADER_BYTES]);
    let stored = u32::from_le_bytes(crc_raw);
    let computed = checksum(&buf[..5], &buf[FRAME_HEADER_BYTES..total]);
    if stored != computed {
        return Err(FrameError::Checksum { stored, computed });
    }
    let kind = FrameKind::from_u8(kind_code)?;
    let mut frame = buf.split_to(total);
    frame.advance(FRAME_HEADER_BYTES);
    Ok(Some(Frame {
        kind,
        payload: frame.freeze(),
    }))
}

/// Decodes a buffer that must hold exactly one frame (handshakes, tests).
pub fn decode_exact(bytes: &[u8], frame_bytes_max: usize) -> Result<Frame, FrameError> {
    let mut buf = BytesMut::from(bytes);
    match decode(&mut buf, frame_bytes_max)? {
        Some(frame) if buf.is_empty() => Ok(frame),
        Some(_) => Err(FrameError::TrailingBytes(buf.len())),
        None => {
            let need = if bytes.len() < FRAME_HEADER_BYTES {
                FRAME_HEADER_BYTES
            } else {
                let mut len_raw = [0u8; 4];
                len_raw.copy_from_slice(&bytes[..4]);
                FRAME_HEADER_BYTES + u32::from_le_bytes(len_raw) as usize
            };
            Err(FrameError::Truncated {
                have: bytes.len(),
                need,
            })
        }
    }
}
