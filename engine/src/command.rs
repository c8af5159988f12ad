//! Commands in the Raft log of a range, and their binary encoding.
//!
//! Every command carries the epoch version the proposer routed it with;
//! apply re-checks it, so a command routed before a split or merge is
//! rejected rather than applied to the wrong range.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flotilla_router::range::RangeDescriptor;
use flotilla_router::RangeId;

/// One write inside a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    Put { key: Bytes, value: Bytes },
    Delete { key: Bytes },
}

impl WriteOp {
    pub fn key(&self) -> &Bytes {
        match self {
            WriteOp::Put { key, .. } | WriteOp::Delete { key } => key,
        }
    }

    /// Bytes of key and value (what the operation adds to a range's size
    /// at most).
    pub fn bytes(&self) -> usize {
        match self {
            WriteOp::Put { key, value } => key.len() + value.len(),
            WriteOp::Delete { key } => key.len(),
        }
    }
}

/// A command of a range's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    /// Atomic writes within the range.
    Write { version: u64, ops: Vec<WriteOp> },
    /// Split at `split_key`: the right half becomes `new_range_id` with
    /// replicas `new_replica_ids` (same order as the parent's replicas).
    Split {
        version: u64,
        split_key: Bytes,
        new_range_id: RangeId,
        new_replica_ids: Vec<u64>,
    },
    /// Freeze this range (the source of a merge into `target`).
    PrepareMerge { version: u64, target: RangeId },
    /// Absorb the frozen right neighbour `source` (its descriptor after
    /// the freeze, whose entry is at `freeze_index` with `freeze_term`).
    CommitMerge {
        version: u64,
        source: RangeDescriptor,
        freeze_index: u64,
        freeze_term: u64,
    },
    /// Unfreeze after a failed merge.
    RollbackMerge { version: u64 },
    /// On the target: give up merging `source`. Bumping the target's
    /// version makes any `CommitMerge` ordered after this one fail, so once
    /// it applies, unfreezing the source is safe.
    AbortMerge { version: u64, source: RangeId },
}

/// Why a command could not be decoded (a bug or corruption: the log is
/// checksummed by the WAL).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed command: {0}")]
pub(crate) struct CommandDecodeError(pub String);

const TAG_WRITE: u8 = 1;
const TAG_SPLIT: u8 = 2;
const TAG_PREPARE_MERGE: u8 = 3;
const TAG_COMMIT_MERGE: u8 = 4;
const TAG_ROLLBACK_MERGE: u8 = 5;
const TAG_ABORT_MERGE: u8 = 6;
const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;

fn put_bytes(buf: &mut BytesMut, data: &[u8]) {
    buf.put_u32_le(data.len() as u32);
    buf.put_slice(data);
}

/// Whether `data` holds a `CommitMerge` (without decoding the rest: the
/// apply loop asks this of every entry).
pub(crate) fn is_commit_merge(data: &[u8]) -> bool {
    data.first() == Some(&TAG_COMMIT_MERGE)
}

/// Whether `data` holds a `PrepareMerge` (tag only, as above).
pub(crate) fn is_prepare_merge(data: &[u8]) -> bool {
    data.first() == Some(&TAG_PREPARE_MERGE)
}

impl Command {
    pub(crate) fn version(&self) -> u64 {
        match self {
            Command::Write { version, .. }
            | Command::Split { version, .. }
            | Command::PrepareMerge { version, .. }
            | Command::CommitMerge { version, .. }
            | Command::RollbackMerge { version }
            | Command::AbortMerge { version, .. } => *version,
        }
    }

    pub(crate) fn encode(&self) -> Bytes {
        let mut buf = BytesMut::new();
        match self {
            Command::Write { version, ops } => {
                buf.put_u8(TAG_WRITE);
                buf.put_u64_le(*version);
                buf.put_u32_le(ops.len() as u32);
                for op in ops {
                    match op {
                        WriteOp::Put { key, value } => {
                            buf.put_u8(OP_PUT);
                            put_bytes(&mut buf, key);
                            put_bytes(&mut buf, value);
                        }
                        WriteOp::Delete { key } => {
                            buf.put_u8(OP_DELETE);
                            put_bytes(&mut buf, key);
                        }
                    }
                }
            }
            Command::Split {
                version,
                split_key,
                new_range_id,
                new_replica_ids,
            } => {
                buf.put_u8(TAG_SPLIT);
                buf.put_u64_le(*version);
                put_bytes(&mut buf, split_key);
                buf.put_u64_le(*new_range_id);
                buf.put_u32_le(new_replica_ids.len() as u32);
                for id in new_replica_ids {
                    buf.put_u64_le(*id);
                }
            }
            Command::PrepareMerge { version, target } => {
                buf.put_u8(TAG_PREPARE_MERGE);
                buf.put_u64_le(*version);
                buf.put_u64_le(*target);
            }
            Command::CommitMerge {
                version,
                source,
                freeze_index,
                freeze_term,
            } => {
                buf.put_u8(TAG_COMMIT_MERGE);
                buf.put_u64_le(*version);
                put_bytes(&mut buf, &source.encode());
                buf.put_u64_le(*freeze_index);
                buf.put_u64_le(*freeze_term);
            }
            Command::AbortMerge { version, source } => {
                buf.put_u8(TAG_ABORT_MERGE);
                buf.put_u64_le(*version);
                buf.put_u64_le(*source);
            }
            Command::RollbackMerge { version } => {
                buf.put_u8(TAG_ROLLBACK_MERGE);
                buf.put_u64_le(*version);
            }
        }
        buf.freeze()
    }

    pub(crate) fn decode(data: &Bytes) -> Result<Command, CommandDecodeError> {
        let mut r = Reader { buf: data.clone() };
        let tag = r.u8()?;
        let version = r.u64()?;
        let command = match tag {
            TAG_WRITE => {
                let count = r.u32()? as usize;
                // Each op takes at least 5 bytes: bound the allocation.
                let mut ops = Vec::with_capacity(count.min(r.buf.len() / 5 + 1));
                for _ in 0..count {
                    match r.u8()? {
                        OP_PUT => {
                            let key = r.bytes()?;
                            let value = r.bytes()?;
                            ops.push(WriteOp::Put { key, value });
                        }
                        OP_DELETE => ops.push(WriteOp::Delete { key: r.bytes()? }),
                        other => {
                            return Err(CommandDecodeError(format!("unknown write op {other}")))
                        }
                    }
                }
                Command::Write { version, ops }
            }
            TAG_SPLIT => {
                let split_key = r.bytes()?;
                let new_range_id = r.u64()?;
                let count = r.u32()? as usize;
                let mut new_replica_ids = Vec::with_capacity(count.min(r.buf.len() / 8 + 1));
                for _ in 0..count {
                    new_replica_ids.push(r.u64()?);
                }
                Command::Split {
                    version,
                    split_key,
                    new_range_id,
                    new_replica_ids,
                }
            }
            TAG_PREPARE_MERGE => Command::PrepareMerge {
                version,
                target: r.u64()?,
            },
            TAG_COMMIT_MERGE => {
                let raw = r.bytes()?;
                let source =
                    RangeDescriptor::decode(&raw).map_err(|e| CommandDecodeError(e.to_string()))?;
                Command::CommitMerge {
                    version,
                    source,
                    freeze_index: r.u64()?,
                    freeze_term: r.u64()?,
                }
            }
            TAG_ABORT_MERGE => Command::AbortMerge {
                version,
                source: r.u64()?,
            },
            TAG_ROLLBACK_MERGE => Command::RollbackMerge { version },
            other => return Err(CommandDecodeError(format!("unknown command tag {other}"))),
        };
        if !r.buf.is_empty() {
            return Err(CommandDecodeError(format!(
                "{} trailing bytes",
                r.buf.len()
            )));
        }
        Ok(command)
    }
}

struct Reader {
    buf: Bytes,
}

impl Reader {
    fn need(&self, n: usize) -> Result<(), CommandDecodeError> {
        if self.buf.remaining() < n {
            Err(CommandDecodeError(format!(
                "truncated: need {n} bytes, have {}",
                self.buf.remaining()
            )))
        } else {
            Ok(())
        }
    }
    fn u8(&mut self) -> Result<u8, CommandDecodeError> {
        self.need(1)?;
        Ok(self.buf.get_u8())
    }
    fn u32(&mut self) -> Result<u32, CommandDecodeError> {
        self.need(4)?;
        Ok(self.buf.get_u32_le())
    }
    fn u64(&mut self) -> Result<u64, CommandDecodeError> {
        self.need(8)?;
        Ok(self.buf.get_u64_le())
    }
    fn bytes(&mut self) -> Result<Bytes, CommandDecodeError> {
        let len = self.u32()? as usize;
        self.need(len)?;
        Ok(self.buf.split_to(len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_every_command() {
        let commands = vec![
            Command::Write {
                version: 3,
                ops: vec![
                    WriteOp::Put {
                        key: Bytes::from_static(b"k"),
                        value: Bytes::from_static(b"v"),
                    },
                    WriteOp::Delete {
                        key: Bytes::from_static(b"d"),
                    },
                ],
            },
            Command::Split {
                version: 4,
                split_key: Bytes::from_static(b"m"),
                new_range_id: 99,
                new_replica_ids: vec![7, 8, 9],
            },
            Command::PrepareMerge {
                version: 5,
                target: 1,
            },
            Command::CommitMerge {
                version: 6,
                source: RangeDescriptor::whole_key_space(2, vec![]),
                freeze_index: 40,
                freeze_term: 3,
            },
            Command::RollbackMerge { version: 7 },
            Command::AbortMerge {
                version: 8,
                source: 2,
            },
        ];
        for command in commands {
            let encoded = command.encode();
            assert_eq!(Command::decode(&encoded).unwrap(), command);
            for cut in 0..encoded.len() {
                assert!(Command::decode(&encoded.slice(..cut)).is_err());
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..128)) {
            let _ = Command::decode(&Bytes::from(data));
        }
    }
}
