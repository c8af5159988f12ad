//! Column families and the layout of metadata keys.
//!
//! - `data`: raw user keys, exactly as the client wrote them. Ranges are
//!   disjoint, so a range is just `[start, end)` of this column family and a
//!   split or merge moves no bytes.
//! - `meta`: small records the store owns. Keys are
//!   `[KIND_STORE][name]` for node-wide records and
//!   `[KIND_RANGE][range id, 8 bytes big-endian][field]` for per-range
//!   records. Big-endian ids keep every record of one range contiguous, so
//!   destroying a replica's metadata is one `delete_range`.

use super::RangeId;

/// Column family of user data.
pub const CF_DATA: &str = "data";
/// Column family of store and range metadata.
pub const CF_META: &str = "meta";

const KIND_STORE: u8 = 0x01;
const KIND_RANGE: u8 = 0x02;

/// Node-wide record: which cluster and node this directory belongs to.
pub fn identity_key() -> Vec<u8> {
    vec![KIND_STORE, b'i', b'd']
}

/// Node-wide record: the next id the node may allocate.
pub fn id_counter_key() -> Vec<u8> {
    vec![KIND_STORE, b'c', b'n']
}

/// Per-range fields. The byte values are on disk: never renumber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RangeField {
    /// Applied index and term.
    Applied = 0x01,
    /// The engine's range descriptor, opaque bytes.
    Descriptor = 0x02,
    /// Raft log truncated state (index and term of the last compacted entry).
    Truncated = 0x03,
    /// A snapshot apply is in progress (or was interrupted by a crash).
    SnapshotApplying = 0x04,
    /// The range lost its data in an interrupted snapshot apply.
    NeedsSnapshot = 0x05,
    /// The replica was removed from the range at this configuration
    /// version: older snapshots and messages must not bring it back.
    Tombstone = 0x06,
}

impl RangeField {
    pub fn from_u8(code: u8) -> Option<Self> {
        match code {
            0x01 => Some(RangeField::Applied),
            0x02 => Some(RangeField::Descriptor),
            0x03 => Some(RangeField::Truncated),
            0x04 => Some(RangeField::SnapshotApplying),
            0x05 => Some(RangeField::NeedsSnapshot),
            0x06 => Some(RangeField::Tombstone),
            _ => None,
        }
    }
}

/// Length of a per-range metadata key.
pub const RANGE_KEY_LEN: usize = 10;

/// Key of one field of one range.
pub fn range_key(range_id: RangeId, field: RangeField) -> [u8; RANGE_KEY_LEN] {
    let mut key = [0u8; RANGE_KEY_LEN];
    key[0] = KIND_RANGE;
    key[1..9].copy_from_slice(&range_id.to_be_bytes());
    key[9] = field as u8;
    key
}

/// `[start, end)` covering every metadata record of `range_id`.
pub fn range_meta_bounds(range_id: RangeId) -> (Vec<u8>, Vec<u8>) {
    let mut start = vec![KIND_RANGE];
    start.extend_from_slice(&range_id.to_be_bytes());
    let end = match range_id.checked_add(1) {
        Some(next) => {
            let mut end = vec![KIND_RANGE];
            end.extend_from_slice(&next.to_be_bytes());
            end
        }
        // The last possible id: everything after KIND_RANGE.
        None => vec![KIND_RANGE + 1],
    };
    (start, end)
}

/// `[start, end)` covering the metadata records of every range.
pub fn all_ranges_meta_bounds() -> (Vec<u8>, Vec<u8>) {
    (vec![KIND_RANGE], vec![KIND_RANGE + 1])
}

/// Splits a per-range metadata key into its range id and field; `None` for
/// anything else (a key of an unknown newer field is skipped, not an error).
pub fn parse_range_key(key: &[u8]) -> Option<(RangeId, Option<RangeField>)> {
    if key.len() != RANGE_KEY_LEN || key[0] != KIND_RANGE {
        return None;
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&key[1..9]);
    Some((u64::from_be_bytes(id), RangeField::from_u8(key[9])))
}

/// Is `key` inside `[start, end)`? An empty `end` means "to the end of the
/// key space" (the last range of the cluster).
pub fn in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    key >= start && (end.is_empty() || key < end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_keys_sort_by_range_then_field() {
        let a = range_key(1, RangeField::NeedsSnapshot);
        let b = range_key(2, RangeField::Applied);
        assert!(a < b);
        let (lo, hi) = range_meta_bounds(1);
        assert!(lo.as_slice() < &a[..] && &a[..] < hi.as_slice());
        assert!(hi.as_slice() <= &b[..]);
        assert_eq!(parse_range_key(&b), Some((2, Some(RangeField::Applied))));
        let (lo, hi) = range_meta_bounds(u64::MAX);
        let last = range_key(u64::MAX, RangeField::Applied);
        assert!(lo.as_slice() < &last[..] && &last[..] < hi.as_slice());
    }
}
