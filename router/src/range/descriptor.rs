//! Range descriptors: which keys a range holds, which replicas hold it, and
//! the epoch that versions both. Descriptors are persisted by the engine
//! (opaque bytes in the state store), so they have a versioned encoding.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flotilla_raftgroup::ReplicaId;

use crate::types::{NodeId, RangeId};

/// Versions a descriptor. `version` bumps on split and merge (the key span
/// changed), `conf_version` on membership changes (the replicas changed).
/// A request routed with an older epoch is rejected, never applied to the
/// wrong range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RangeEpoch {
    pub version: u64,
    pub conf_version: u64,
}

impl RangeEpoch {
    /// True when `self` is older than `other` in either dimension.
    pub fn is_stale_against(&self, other: &RangeEpoch) -> bool {
        self.version < other.version || self.conf_version < other.conf_version
    }
}

/// Whether a replica votes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplicaRole {
    Voter,
    Learner,
}

/// One replica of a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplicaDescriptor {
    pub replica_id: ReplicaId,
    pub node_id: NodeId,
    pub role: ReplicaRole,
}

/// A range: the keys `[start, end)` (an empty `end` means "to the end of the
/// key space"), its epoch and its replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeDescriptor {
    pub id: RangeId,
    pub start: Bytes,
    pub end: Bytes,
    pub epoch: RangeEpoch,
    pub replicas: Vec<ReplicaDescriptor>,
}

/// Why a descriptor could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DescriptorDecodeError {
    #[error("descriptor truncated at byte {0}")]
    Truncated(usize),
    #[error("unknown descriptor format version {0}")]
    UnknownVersion(u8),
    #[error("unknown replica role code {0}")]
    UnknownRole(u8),
    #[error("descriptor field too large: {0} bytes")]
    TooLarge(u64),
    #[error("{0} trailing bytes after the descriptor")]
    Trailing(usize),
}

const FORMAT_VERSION: u8 = 1;
/// Keys are bounded (the engine enforces a much smaller user limit).
const KEY_BYTES_MAX: u64 = 64 << 10;
const REPLICAS_MAX: u64 = 1024;

impl RangeDescriptor {
    /// The first range of a cluster: the whole key space.
    pub fn whole_key_space(id: RangeId, replicas: Vec<ReplicaDescriptor>) -> Self {
        RangeDescriptor {
            id,
            start: Bytes::new(),
            end: Bytes::new(),
            epoch: RangeEpoch {
                version: 1,
                conf_version: 1,
            },
            replicas,
        }
    }

    /// Does the range hold `key`?
    pub fn contains_key(&self, key: &[u8]) -> bool {
        key >= &self.start[..] && (self.end.is_empty() || key < &self.end[..])
    }

    /// Does the range reach the end of the key space?
    pub fn is_last(&self) -> bool {
        self.end.is_empty()
    }

    /// The replica on `node`, if any.
    pub fn replica_on(&self, node: NodeId) -> Option<&ReplicaDescriptor> {
        self.replicas.iter().find(|r| r.node_id == node)
    }

    /// The replica with `replica_id`, if any.
    pub fn replica(&self, replica_id: ReplicaId) -> Option<&ReplicaDescriptor> {
        self.replicas.iter().find(|r| r.replica_id == replica_id)
    }

    /// Versioned binary encoding (for the state store and the wire).
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(
            64 + self.start.len() + self.end.len() + 17 * self.replicas.len(),
        );
        buf.put_u8(FORMAT_VERSION);
        buf.put_u64_le(self.id);
        buf.put_u32_le(self.start.len() as u32);
        buf.put_slice(&self.start);
        buf.put_u32_le(self.end.len() as u32);
        buf.put_slice(&self.end);
        buf.put_u64_le(self.epoch.version);
        buf.put_u64_le(self.epoch.conf_version);
        buf.put_u32_le(self.replicas.len() as u32);
        for r in &self.replicas {
            buf.put_u64_le(r.replica_id);
            buf.put_u64_le(r.node_id);
            buf.put_u8(match r.role {
                ReplicaRole::Voter => 0,
                ReplicaRole::Learner => 1,
            });
        }
        buf.freeze()
    }

    /// Decodes [`RangeDescriptor::encode`]'s output; never panics on
    /// arbitrary bytes and never allocates more than the input justifies.
    pub fn decode(data: &[u8]) -> Result<RangeDescriptor, DescriptorDecodeError> {
        let total = data.len();
        let mut buf = data;
        let at = |buf: &[u8]| total - buf.len();
        let need = |buf: &[u8], n: usize| {
            if buf.remaining() < n {
                Err(DescriptorDecodeError::Truncated(total - buf.len()))
            } else {
                Ok(())
            }
        };
        need(buf, 1)?;
        let version = buf.get_u8();
        if version != FORMAT_VERSION {
            return Err(DescriptorDecodeError::UnknownVersion(version));
        }
        need(buf, 8)?;
        let id = buf.get_u64_le();
        let bytes_field = |buf: &mut &[u8]| -> Result<Bytes, DescriptorDecodeError> {
            need(buf, 4)?;
            let len = u64::from(buf.get_u32_le());
            if len > KEY_BYTES_MAX {
                return Err(DescriptorDecodeError::TooLarge(len));
            }
            need(buf, len as usize)?;
            let out = Bytes::copy_from_slice(&buf[..len as usize]);
            buf.advance(len as usize);
            Ok(out)
        };
        let start = bytes_field(&mut buf)?;
        let end = bytes_field(&mut buf)?;
        need(buf, 20)?;
        let epoch = RangeEpoch {
            version: buf.get_u64_le(),
            conf_version: buf.get_u64_le(),
        };
        let count = u64::from(buf.get_u32_le());
        if count > REPLICAS_MAX {
            return Err(DescriptorDecodeError::TooLarge(count));
        }
        let mut replicas = Vec::with_capacity(count as usize);
        for _ in 0..count {
            need(buf, 17)?;
            let replica_id = buf.get_u64_le();
            let node_id = buf.get_u64_le();
            let role = match buf.get_u8() {
                0 => ReplicaRole::Voter,
                1 => ReplicaRole::Learner,
                other => return Err(DescriptorDecodeError::UnknownRole(other)),
            };
            replicas.push(ReplicaDescriptor {
                replica_id,
                node_id,
                role,
            });
        }
        if !buf.is_empty() {
            return Err(DescriptorDecodeError::Trailing(total - at(buf)));
        }
        Ok(RangeDescriptor {
            id,
            start,
            end,
            epoch,
            replicas,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RangeDescriptor {
        RangeDescriptor {
            id: 7,
            start: Bytes::from_static(b"b"),
            end: Bytes::from_static(b"m"),
            epoch: RangeEpoch {
                version: 3,
                conf_version: 2,
            },
            replicas: vec![
                ReplicaDescriptor {
                    replica_id: 11,
                    node_id: 1,
                    role: ReplicaRole::Voter,
                },
                ReplicaDescriptor {
                    replica_id: 12,
                    node_id: 2,
                    role: ReplicaRole::Learner,
                },
            ],
        }
    }

    #[test]
    fn contains_key_respects_half_open_bounds() {
        let d = sample();
        assert!(!d.contains_key(b"a"));
        assert!(d.contains_key(b"b"));
        assert!(d.contains_key(b"lzzz"));
        assert!(!d.contains_key(b"m"));
        let all = RangeDescriptor::whole_key_space(1, vec![]);
        assert!(all.contains_key(b""));
        assert!(all.contains_key(&[0xff; 40]));
    }

    #[test]
    fn encode_decode_round_trip_and_truncation_errors() {
        let d = sample();
        let bytes = d.encode();
        assert_eq!(RangeDescriptor::decode(&bytes).unwrap(), d);
        for cut in 0..bytes.len() {
            assert!(
                RangeDescriptor::decode(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut extra = bytes.to_vec();
        extra.push(0);
        assert_eq!(
            RangeDescriptor::decode(&extra),
            Err(DescriptorDecodeError::Trailing(1))
        );
    }

    proptest::proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = RangeDescriptor::decode(&data);
        }
    }
}
