//! How big a key range is, and where its middle is (the automatic split's
//! question), in one streaming pass: nothing but a few keys is kept.

use bytes::Bytes;
use rocksdb::ReadOptions;

use super::error::Result;
use super::store::StateStore;

/// The user data of a key range: bytes of keys plus values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSize {
    pub bytes: u64,
    pub keys: u64,
    /// A key near the byte-weighted middle (the first key past half the
    /// bytes, to within `checkpoint_bytes`), strictly after the range's
    /// first key; `None` with fewer than two keys.
    pub middle: Option<Bytes>,
}

impl StateStore {
    /// Measure `[start, end)` (empty `end`: to the end of the key space).
    /// Remembers a key every `checkpoint_bytes` so the middle is found in
    /// the same pass. Reads the whole range: run it off the raft thread.
    pub fn measure(&self, start: &[u8], end: &[u8], checkpoint_bytes: u64) -> Result<RangeSize> {
        let mut opts = ReadOptions::default();
        opts.fill_cache(false); // a background scan must not evict the hot set
        if !end.is_empty() {
            opts.set_iterate_upper_bound(end.to_vec());
        }
        let mut it = self.inner.db.raw_iterator_cf_opt(self.data_cf()?, opts);
        it.seek(start);
        let step = checkpoint_bytes.max(1);
        let (mut bytes, mut keys, mut next_mark) = (0u64, 0u64, step);
        let mut marks: Vec<(u64, Bytes)> = Vec::new();
        while let Some((key, value)) = it.item() {
            // The first key cannot be a split point: the left half would be empty.
            if keys == 1 || bytes >= next_mark {
                marks.push((bytes, Bytes::copy_from_slice(key)));
                next_mark = bytes + step;
            }
            bytes += (key.len() + value.len()) as u64;
            keys += 1;
            it.next();
        }
        it.status()
            .map_err(|source| self.rocks("measure", source))?;
        let half = bytes / 2;
        let middle = marks
            .into_iter()
            .min_by_key(|(at, _)| at.abs_diff(half))
            .map(|(_, key)| key);
        Ok(RangeSize {
            bytes,
            keys,
            middle,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StateConfig;

    #[test]
    fn measures_bytes_and_finds_a_middle_inside_the_range() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path(), StateConfig::default()).unwrap();
        let mut batch = store.apply_batch();
        for i in 0..1000u32 {
            batch.put(1, format!("k{i:04}").as_bytes(), &[0u8; 95]);
        }
        batch.put(1, b"z-outside", &[0u8; 10_000]);
        batch.set_applied(1, 10, 1);
        batch.commit().unwrap();
        let size = store.measure(b"k", b"l", 1000).unwrap();
        assert_eq!(size.keys, 1000);
        assert_eq!(size.bytes, 1000 * 100);
        let middle = size.middle.unwrap();
        assert!(
            middle.as_ref() > b"k0480".as_ref() && middle.as_ref() < b"k0520".as_ref(),
            "{middle:?}"
        );
        let one = store.measure(b"k0000", b"k0001", 1000).unwrap();
        assert_eq!((one.keys, one.middle), (1, None));
        let two = store.measure(b"k0000", b"k0002", 1 << 20).unwrap();
        assert_eq!(two.middle.as_deref(), Some(b"k0001".as_ref()));
        assert_eq!(store.measure(b"x", b"y", 10).unwrap().bytes, 0);
    }
}
