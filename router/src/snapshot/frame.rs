//! Versioned binary frames of the snapshot protocol on the lane.
//!
//! Layout (little endian): `version: u8 | kind: u8 | transfer_id: u64 | body`.
//! The transfer id is chosen by the sender and is unique per sending node;
//! the receiver keys transfers by `(from node, transfer id)`. The kind says
//! the direction, so a node that both sends and receives never confuses a
//! frame about its own send with one about a peer's.
//!
//! ```text
//! sender                                   receiver
//!   Reserve(range, index, term, size) ──▶   slot free? index newer?
//!                                     ◀──   Grant(window) | Refuse(reason)
//!   Chunk(0 = header), Chunk(1..n)    ──▶   verify, stage on disk
//!                                     ◀──   ChunkAck(seq)   (credit)
//!   Finish(count, bytes, checksum)    ──▶   verify whole, fsync, hand off
//!                                     ◀──   Done | Failed(reason)
//!   Cancel(reason)                    ──▶   (sender gave up: drop staging)
//! ```
//!
//! [`Frame::decode`] accepts arbitrary bytes and never panics: every length
//! is checked before it is used, and unknown versions, kinds, flags and
//! reason codes are errors.

use bytes::{BufMut, Bytes, BytesMut};

use super::chunk::{WireChunk, CHUNK_RAW_BYTES_LIMIT, FLAG_LZ4};
use super::error::{FailReason, FrameError, RefuseReason};
use crate::RangeId;

/// The only version this code speaks. A peer sending another version gets
/// its frames dropped (and its transfer times out), never misparsed.
pub const FRAME_VERSION: u8 = 1;

/// Bytes of `version | kind | transfer_id`.
pub const FRAME_HEADER_BYTES: usize = 10;
/// Fixed bytes of a chunk frame before its payload.
pub const CHUNK_FRAME_OVERHEAD_BYTES: usize = FRAME_HEADER_BYTES + 8 + 1 + 4 + 4;

const KIND_RESERVE: u8 = 1;
const KIND_GRANT: u8 = 2;
const KIND_REFUSE: u8 = 3;
const KIND_CHUNK: u8 = 4;
const KIND_CHUNK_ACK: u8 = 5;
const KIND_FINISH: u8 = 6;
const KIND_DONE: u8 = 7;
const KIND_FAILED: u8 = 8;
const KIND_CANCEL: u8 = 9;

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Sender → receiver: please reserve a slot for this snapshot.
    Reserve {
        transfer_id: u64,
        range_id: RangeId,
        index: u64,
        term: u64,
        size_hint_bytes: u64,
    },
    /// Receiver → sender: slot reserved; keep at most `window_chunks`
    /// chunks unacknowledged.
    Grant {
        transfer_id: u64,
        window_chunks: u32,
    },
    /// Receiver → sender: no slot for you (`index_known` is the receiver's
    /// index for the range when the reason is `Stale`, else 0).
    Refuse {
        transfer_id: u64,
        reason: RefuseReason,
        index_known: u64,
    },
    /// Sender → receiver: chunk `seq` (0 is the header).
    Chunk { transfer_id: u64, chunk: WireChunk },
    /// Receiver → sender: every chunk up to `seq` is staged.
    ChunkAck { transfer_id: u64, seq: u64 },
    /// Sender → receiver: that was all; verify against these totals.
    Finish {
        transfer_id: u64,
        chunk_count: u64,
        raw_bytes: u64,
        checksum: u32,
    },
    /// Receiver → sender: verified and handed to the engine.
    Done { transfer_id: u64 },
    /// Receiver → sender: the transfer failed and its staging is removed.
    Failed {
        transfer_id: u64,
        reason: FailReason,
    },
    /// Sender → receiver: the sender gave up; remove the staging file.
    Cancel {
        transfer_id: u64,
        reason: FailReason,
    },
}

impl Frame {
    /// The transfer this frame belongs to.
    pub fn transfer_id(&self) -> u64 {
        match self {
            Frame::Reserve { transfer_id, .. }
            | Frame::Grant { transfer_id, .. }
            | Frame::Refuse { transfer_id, .. }
            | Frame::Chunk { transfer_id, .. }
            | Frame::ChunkAck { transfer_id, .. }
            | Frame::Finish { transfer_id, .. }
            | Frame::Done { transfer_id }
            | Frame::Failed { transfer_id, .. }
            | Frame::Cancel { transfer_id, .. } => *transfer_id,
        }
    }

    /// True for frames a sender emits (and a receiver consumes).
    pub fn is_to_receiver(&self) -> bool {
        matches!(
            self,
            Frame::Reserve { .. }
                | Frame::Chunk { .. }
                | Frame::Finish { .. }
                | Frame::Cancel { .. }
        )
    }

    /// Encodes the frame.
    ///
    /// ```
    /// use flotilla_router::snapshot::frame::Frame;
    /// let frame = Frame::ChunkAck { transfer_id: 7, seq: 3 };
    /// assert_eq!(Frame::decode(&frame.encode()), Ok(frame));
    /// ```
    pub fn encode(&self) -> Bytes {
        let payload_len = match self {
            Frame::Chunk { chunk, .. } => chunk.payload.len(),
            _ => 0,
        };
        let mut out = BytesMut::with_capacity(CHUNK_FRAME_OVERHEAD_BYTES + 32 + payload_len);
        out.put_u8(FRAME_VERSION);
        let (kind, transfer_id) = (self.kind(), self.transfer_id());
        out.put_u8(kind);
        out.put_u64_le(transfer_id);
        match self {
            Frame::Reserve {
                range_id,
                index,
                term,
                size_hint_bytes,
                ..
            } => {
                out.put_u64_le(*range_id);
                out.put_u64_le(*index);
                out.put_u64_le(*term);
                out.put_u64_le(*size_hint_bytes);
            }
            Frame::Grant { window_chunks, .. } => out.put_u32_le(*window_chunks),
            Frame::Refuse {
                reason,
                index_known,
                ..
            } => {
                out.put_u8(refuse_code(*reason));
                out.put_u64_le(*index_known);
            }
            Frame::Chunk { chunk, .. } => {
                out.put_u64_le(chunk.seq);
                out.put_u8(chunk.flags());
                out.put_u32_le(chunk.raw_len);
                out.put_u32_le(chunk.crc);
                out.put_slice(&chunk.payload);
            }
            Frame::ChunkAck { seq, .. } => out.put_u64_le(*seq),
            Frame::Finish {
                chunk_count,
                raw_bytes,
                checksum,
                ..
            } => {
                out.put_u64_le(*chunk_count);
                out.put_u64_le(*raw_bytes);
                out.put_u32_le(*checksum);
            }
            Frame::Done { .. } => {}
            Frame::Failed { reason, .. } | Frame::Cancel { reason, .. } => {
                out.put_u8(fail_code(*reason))
            }
        }
        out.freeze()
    }

    /// Decodes one frame. Never panics; a chunk's payload is a zero-copy
    /// slice of `bytes`.
    pub fn decode(bytes: &Bytes) -> Result<Frame, FrameError> {
        let mut r = Reader { bytes, pos: 0 };
        let version = r.u8()?;
        if version != FRAME_VERSION {
            return Err(FrameError::Version(version));
        }
        let kind = r.u8()?;
        let transfer_id = r.u64()?;
        let frame = match kind {
            KIND_RESERVE => Frame::Reserve {
                transfer_id,
                range_id: r.u64()?,
                index: r.u64()?,
                term: r.u64()?,
                size_hint_bytes: r.u64()?,
            },
            KIND_GRANT => Frame::Grant {
                transfer_id,
                window_chunks: r.u32()?,
            },
            KIND_REFUSE => Frame::Refuse {
                transfer_id,
                reason: refuse_reason(r.u8()?)?,
                index_known: r.u64()?,
            },
            KIND_CHUNK => {
                let seq = r.u64()?;
                let flags = r.u8()?;
                if flags & !FLAG_LZ4 != 0 {
                    return Err(FrameError::Flags(flags));
                }
                let raw_len = r.u32()?;
                if raw_len > CHUNK_RAW_BYTES_LIMIT {
                    return Err(FrameError::ChunkTooLarge {
                        raw_len,
                        limit: CHUNK_RAW_BYTES_LIMIT,
                    });
                }
                let crc = r.u32()?;
                let payload = r.rest();
                let chunk = WireChunk {
                    seq,
                    compressed: flags & FLAG_LZ4 != 0,
                    raw_len,
                    crc,
                    payload,
                };
                Frame::Chunk { transfer_id, chunk }
            }
            KIND_CHUNK_ACK => Frame::ChunkAck {
                transfer_id,
                seq: r.u64()?,
            },
            KIND_FINISH => Frame::Finish {
                transfer_id,
                chunk_count: r.u64()?,
                raw_bytes: r.u64()?,
                checksum: r.u32()?,
            },
            KIND_DONE => Frame::Done { transfer_id },
            KIND_FAILED => Frame::Failed {
                transfer_id,
                reason: fail_reason(r.u8()?)?,
            },
            KIND_CANCEL => Frame::Cancel {
                transfer_id,
                reason: fail_reason(r.u8()?)?,
            },
            other => return Err(FrameError::Kind(other)),
        };
        let extra = bytes.len() - r.pos;
        if extra != 0 {
            return Err(FrameError::Trailing { kind, extra });
        }
        Ok(frame)
    }

    fn kind(&self) -> u8 {
        match self {
            Frame::Reserve { .. } => KIND_RESERVE,
            Frame::Grant { .. } => KIND_GRANT,
            Frame::Refuse { .. } => KIND_REFUSE,
            Frame::Chunk { .. } => KIND_CHUNK,
            Frame::ChunkAck { .. } => KIND_CHUNK_ACK,
            Frame::Finish { .. } => KIND_FINISH,
            Frame::Done { .. } => KIND_DONE,
            Frame::Failed { .. } => KIND_FAILED,
            Frame::Cancel { .. } => KIND_CANCEL,
        }
    }
}

/// Bounds-checked little-endian reader over a frame.
struct Reader<'a> {
    bytes: &'a Bytes,
    pos: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], FrameError> {
        let end = self.pos.checked_add(N).ok_or(FrameError::Truncated {
            len: self.bytes.len(),
        })?;
        let slice = self.bytes.get(self.pos..end).ok_or(FrameError::Truncated {
            len: self.bytes.len(),
        })?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        self.pos = end;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.take::<1>()?[0])
    }
    fn u32(&mut self) -> Result<u32, FrameError> {
        Ok(u32::from_le_bytes(self.take::<4>()?))
    }
    fn u64(&mut self) -> Result<u64, FrameError> {
        Ok(u64::from_le_bytes(self.take::<8>()?))
    }
    fn rest(&mut self) -> Bytes {
        let rest = self.bytes.slice(self.pos..);
        self.pos = self.bytes.len();
        rest
    }
}

fn refuse_code(reason: RefuseReason) -> u8 {
    match reason {
        RefuseReason::NoSlot => 1,
        RefuseReason::Stale => 2,
        RefuseReason::Busy => 3,
        RefuseReason::TooLarge => 4,
        RefuseReason::Staging => 5,
    }
}

fn refuse_reason(code: u8) -> Result<RefuseReason, FrameError> {
    Ok(match code {
        1 => RefuseReason::NoSlot,
        2 => RefuseReason::Stale,
        3 => RefuseReason::Busy,
        4 => RefuseReason::TooLarge,
        5 => RefuseReason::Staging,
        other => return Err(FrameError::Reason(other)),
    })
}

fn fail_code(reason: FailReason) -> u8 {
    match reason {
        FailReason::Corrupt => 1,
        FailReason::Protocol => 2,
        FailReason::Timeout => 3,
        FailReason::Disk => 4,
        FailReason::Rejected => 5,
        FailReason::Cancelled => 6,
        FailReason::Unknown => 7,
        FailReason::TooLarge => 8,
    }
}

fn fail_reason(code: u8) -> Result<FailReason, FrameError> {
    Ok(match code {
        1 => FailReason::Corrupt,
        2 => FailReason::Protocol,
        3 => FailReason::Timeout,
        4 => FailReason::Disk,
        5 => FailReason::Rejected,
        6 => FailReason::Cancelled,
        7 => FailReason::Unknown,
        8 => FailReason::TooLarge,
        other => return Err(FrameError::Reason(other)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips() {
        let chunk = WireChunk::encode(3, Bytes::from(vec![7u8; 4096]));
        let frames = [
            Frame::Reserve {
                transfer_id: 1,
                range_id: 2,
                index: 3,
                term: 4,
                size_hint_bytes: 5,
            },
            Frame::Grant {
                transfer_id: 1,
                window_chunks: 4,
            },
            Frame::Refuse {
                transfer_id: 1,
                reason: RefuseReason::Stale,
                index_known: 9,
            },
            Frame::Chunk {
                transfer_id: 1,
                chunk,
            },
            Frame::ChunkAck {
                transfer_id: 1,
                seq: 3,
            },
            Frame::Finish {
                transfer_id: 1,
                chunk_count: 4,
                raw_bytes: 10,
                checksum: 11,
            },
            Frame::Done { transfer_id: 1 },
            Frame::Failed {
                transfer_id: 1,
                reason: FailReason::Corrupt,
            },
            Frame::Cancel {
                transfer_id: 1,
                reason: FailReason::Timeout,
            },
        ];
        for frame in frames {
            assert_eq!(Frame::decode(&frame.encode()), Ok(frame));
        }
    }

    #[test]
    fn trailing_and_truncated_bytes_are_errors() {
        let mut bytes = Frame::Done { transfer_id: 1 }.encode().to_vec();
        bytes.push(0);
        assert!(Frame::decode(&Bytes::from(bytes.clone())).is_err());
        bytes.truncate(5);
        assert!(Frame::decode(&Bytes::from(bytes)).is_err());
    }
}
