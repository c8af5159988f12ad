//! The ordered range map: key → range in O(log n), ordered iteration over
//! the ranges a scan crosses, and updates from split, merge and membership
//! changes that refuse anything older than what the map already knows.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use bytes::Bytes;

use super::descriptor::RangeDescriptor;
use crate::types::RangeId;

/// Why the map refused an update, or which invariant is broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeMapError {
    #[error("range {0} is not in the map")]
    UnknownRange(RangeId),
    #[error("range {0} is already in the map")]
    DuplicateRange(RangeId),
    #[error("update of range {range} is stale: epoch {offered:?} is not newer than {current:?}")]
    StaleEpoch {
        range: RangeId,
        offered: super::RangeEpoch,
        current: super::RangeEpoch,
    },
    #[error("range {new} would overlap range {existing}")]
    Overlap { new: RangeId, existing: RangeId },
    #[error("split of range {range} does not partition it: {reason}")]
    BadSplit { range: RangeId, reason: String },
    #[error("merge of range {source_range} into {target}: {reason}")]
    BadMerge {
        target: RangeId,
        source_range: RangeId,
        reason: String,
    },
    #[error("the key space is not covered: gap before key {0:?}")]
    Gap(Bytes),
    #[error("range {0} has start >= end")]
    Empty(RangeId),
}

/// Ranges ordered by start key. Within one map ranges never overlap; a
/// cluster-wide map (the router cache) also covers the whole key space.
#[derive(Debug, Clone, Default)]
pub struct RangeMap {
    by_start: BTreeMap<Bytes, RangeDescriptor>,
    start_of: HashMap<RangeId, Bytes>,
}

impl RangeMap {
    /// An empty map.
    pub fn new() -> Self {
        RangeMap::default()
    }

    /// A map holding one range.
    pub fn with_range(range: RangeDescriptor) -> Result<Self, RangeMapError> {
        let mut map = RangeMap::new();
        map.insert(range)?;
        Ok(map)
    }

    /// Number of ranges.
    pub fn len(&self) -> usize {
        self.by_start.len()
    }

    /// No ranges at all.
    pub fn is_empty(&self) -> bool {
        self.by_start.is_empty()
    }

    /// The range holding `key`, in O(log n).
    pub fn locate(&self, key: &[u8]) -> Option<&RangeDescriptor> {
        let (_, range) = self
            .by_start
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()?;
        range.contains_key(key).then_some(range)
    }

    /// The range with `id`.
    pub fn get(&self, id: RangeId) -> Option<&RangeDescriptor> {
        self.by_start.get(self.start_of.get(&id)?)
    }

    /// Ranges in key order.
    pub fn iter(&self) -> impl Iterator<Item = &RangeDescriptor> {
        self.by_start.values()
    }

    /// The ranges a scan of `[start, end)` crosses, in key order (an empty
    /// `end` means "to the end of the key space").
    pub fn overlapping<'a>(
        &'a self,
        start: &'a [u8],
        end: &'a [u8],
    ) -> impl Iterator<Item = &'a RangeDescriptor> + 'a {
        let first_start = self
            .locate(start)
            .map(|r| r.start.clone())
            .unwrap_or_else(|| Bytes::copy_from_slice(start));
        self.by_start
            .range(first_start..)
            .map(|(_, r)| r)
            .take_while(move |r| end.is_empty() || &r.start[..] < end)
            .filter(move |r| r.end.is_empty() || &r.end[..] > start)
    }

    /// Add a range that overlaps none in the map.
    pub fn insert(&mut self, range: RangeDescriptor) -> Result<(), RangeMapError> {
        if self.start_of.contains_key(&range.id) {
            return Err(RangeMapError::DuplicateRange(range.id));
        }
        if !range.end.is_empty() && range.start >= range.end {
            return Err(RangeMapError::Empty(range.id));
        }
        if let Some(existing) = self.overlapping(&range.start, &range.end).next() {
            return Err(RangeMapError::Overlap {
                new: range.id,
                existing: existing.id,
            });
        }
        self.start_of.insert(range.id, range.start.clone());
        self.by_start.insert(range.start.clone(), range);
        Ok(())
    }

    /// Remove a range (its replica was destroyed here).
    pub fn remove(&mut self, id: RangeId) -> Option<RangeDescriptor> {
        let start = self.start_of.remove(&id)?;
        self.by_start.remove(&start)
    }

    fn current(&self, id: RangeId) -> Result<&RangeDescriptor, RangeMapError> {
        self.get(id).ok_or(RangeMapError::UnknownRange(id))
    }

    fn require_newer(
        current: &RangeDescriptor,
        offered: &RangeDescriptor,
    ) -> Result<(), RangeMapError> {
        let newer = offered.epoch.version >= current.epoch.version
            && offered.epoch.conf_version >= current.epoch.conf_version
            && offered.epoch != current.epoch;
        if newer {
            Ok(())
        } else {
            Err(RangeMapError::StaleEpoch {
                range: current.id,
                offered: offered.epoch,
                current: current.epoch,
            })
        }
    }

    /// Replace a range's descriptor after a membership change (same keys,
    /// newer epoch).
    pub fn update(&mut self, range: RangeDescriptor) -> Result<(), RangeMapError> {
        let current = self.current(range.id)?;
        Self::require_newer(current, &range)?;
        if current.start != range.start || current.end != range.end {
            return Err(RangeMapError::BadSplit {
                range: range.id,
                reason: "a membership update must not change the key span".into(),
            });
        }
        self.by_start.insert(range.start.clone(), range);
        Ok(())
    }

    /// Apply a split: `left` keeps the old range's id and start, `right` is
    /// new and ends where the old one ended; both carry a newer epoch.
    pub fn apply_split(
        &mut self,
        left: RangeDescriptor,
        right: RangeDescriptor,
    ) -> Result<(), RangeMapError> {
        let current = self.current(left.id)?;
        Self::require_newer(current, &left)?;
        let bad = |reason: &str| RangeMapError::BadSplit {
            range: left.id,
            reason: reason.to_string(),
        };
        if left.start != current.start {
            return Err(bad("left half must keep the start key"));
        }
        if right.end != current.end {
            return Err(bad("right half must keep the end key"));
        }
        if left.end != right.start {
            return Err(bad("halves must meet at the split key"));
        }
        if left.end.is_empty()
            || left.end <= left.start
            || (!right.end.is_empty() && right.start >= right.end)
        {
            return Err(bad("split key must lie strictly inside the range"));
        }
        if self.start_of.contains_key(&right.id) {
            return Err(RangeMapError::DuplicateRange(right.id));
        }
        self.start_of.insert(right.id, right.start.clone());
        self.by_start.insert(left.start.clone(), left);
        self.by_start.insert(right.start.clone(), right);
        Ok(())
    }

    /// Apply a merge: `target` (widened, newer epoch) absorbs its right
    /// neighbour `source`, which disappears.
    pub fn apply_merge(
        &mut self,
        target: RangeDescriptor,
        source: RangeId,
    ) -> Result<(), RangeMapError> {
        let current = self.current(target.id)?;
        Self::require_newer(current, &target)?;
        let source_range = self.current(source)?;
        let bad = |reason: &str| RangeMapError::BadMerge {
            target: target.id,
            source_range: source,
            reason: reason.to_string(),
        };
        if current.end != source_range.start {
            return Err(bad("ranges are not adjacent (source must follow target)"));
        }
        if target.start != current.start || target.end != source_range.end {
            return Err(bad("widened target must span both ranges exactly"));
        }
        self.remove(source);
        self.by_start.insert(target.start.clone(), target);
        Ok(())
    }

    /// Check that no two ranges overlap, and, when `covering`, that they
    /// cover the whole key space without gaps.
    pub fn check(&self, covering: bool) -> Result<(), RangeMapError> {
        let mut expected_start: Option<&Bytes> = None;
        let mut reached_end = false;
        for range in self.by_start.values() {
            if reached_end {
                return Err(RangeMapError::Overlap {
                    new: range.id,
                    existing: 0,
                });
            }
            if !range.end.is_empty() && range.start >= range.end {
                return Err(RangeMapError::Empty(range.id));
            }
            match expected_start {
                None if covering && !range.start.is_empty() => {
                    return Err(RangeMapError::Gap(range.start.clone()));
                }
                Some(end) if range.start < *end => {
                    return Err(RangeMapError::Overlap {
                        new: range.id,
                        existing: 0,
                    });
                }
                Some(end) if covering && range.start != *end => {
                    return Err(RangeMapError::Gap(range.start.clone()));
                }
                _ => {}
            }
            expected_start = Some(&range.end);
            reached_end = range.end.is_empty();
        }
        if covering && !reached_end {
            return Err(RangeMapError::Gap(
                expected_start.cloned().unwrap_or_default(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::descriptor::RangeEpoch;
    use super::*;

    fn range(id: RangeId, start: &str, end: &str, version: u64) -> RangeDescriptor {
        RangeDescriptor {
            id,
            start: Bytes::copy_from_slice(start.as_bytes()),
            end: Bytes::copy_from_slice(end.as_bytes()),
            epoch: RangeEpoch {
                version,
                conf_version: 1,
            },
            replicas: vec![],
        }
    }

    #[test]
    fn split_then_merge_keeps_cover_and_refuses_stale_epochs() {
        let mut map = RangeMap::with_range(range(1, "", "", 1)).unwrap();
        map.apply_split(range(1, "", "m", 2), range(2, "m", "", 2))
            .unwrap();
        map.check(true).unwrap();
        assert_eq!(map.locate(b"a").unwrap().id, 1);
        assert_eq!(map.locate(b"m").unwrap().id, 2);
        assert_eq!(map.locate(b"zzz").unwrap().id, 2);
        // Replaying the same split (same epoch) is stale.
        assert!(matches!(
            map.apply_split(range(1, "", "m", 2), range(3, "m", "", 2)),
            Err(RangeMapError::StaleEpoch { .. })
        ));
        map.apply_merge(range(1, "", "", 3), 2).unwrap();
        map.check(true).unwrap();
        assert_eq!(map.len(), 1);
        assert!(map.get(2).is_none());
    }

    #[test]
    fn overlapping_lists_the_ranges_a_scan_crosses() {
        let mut map = RangeMap::with_range(range(1, "", "", 1)).unwrap();
        map.apply_split(range(1, "", "d", 2), range(2, "d", "", 2))
            .unwrap();
        map.apply_split(range(2, "d", "k", 3), range(3, "k", "", 3))
            .unwrap();
        let ids = |s: &str, e: &str| {
            map.overlapping(s.as_bytes(), e.as_bytes())
                .map(|r| r.id)
                .collect::<Vec<_>>()
        };
        assert_eq!(ids("a", "c"), vec![1]);
        assert_eq!(ids("c", "e"), vec![1, 2]);
        assert_eq!(ids("d", "k"), vec![2]);
        assert_eq!(ids("", ""), vec![1, 2, 3]);
        assert_eq!(ids("x", ""), vec![3]);
    }

    #[test]
    fn bad_updates_are_refused() {
        let mut map = RangeMap::with_range(range(1, "", "", 1)).unwrap();
        assert!(matches!(
            map.insert(range(2, "a", "b", 1)),
            Err(RangeMapError::Overlap { .. })
        ));
        assert!(matches!(
            map.apply_split(range(1, "", "", 2), range(2, "", "", 2)),
            Err(RangeMapError::BadSplit { .. })
        ));
        map.apply_split(range(1, "", "m", 2), range(2, "m", "", 2))
            .unwrap();
        assert!(matches!(
            map.apply_merge(range(2, "m", "", 3), 1),
            Err(RangeMapError::BadMerge { .. })
        ));
        assert!(matches!(map.check(true), Ok(())));
        map.remove(1);
        assert!(matches!(map.check(true), Err(RangeMapError::Gap(_))));
        map.check(false).unwrap();
    }

    proptest::proptest! {
        /// Random splits and merges against a model (a sorted list of split
        /// points): the map always covers the key space and locates every
        /// probe key in the same range as the model.
        #[test]
        fn random_splits_and_merges_match_a_model(ops in proptest::collection::vec((proptest::bool::ANY, 0u8..200), 1..200)) {
            let mut map = RangeMap::with_range(range(1, "", "", 1)).unwrap();
            let mut next_id = 2;
            let mut version = 1;
            for (split, at) in ops {
                version += 1;
                let key = Bytes::from(vec![at]);
                let current = map.locate(&key).unwrap().clone();
                if split {
                    if current.start == key {
                        continue;
                    }
                    let mut left = current.clone();
                    left.end = key.clone();
                    left.epoch.version = version;
                    let mut right = current.clone();
                    right.id = next_id;
                    right.start = key.clone();
                    right.epoch.version = version;
                    next_id += 1;
                    map.apply_split(left, right).unwrap();
                } else if !current.end.is_empty() {
                    let source = map.locate(&current.end).unwrap().clone();
                    let mut target = current.clone();
                    target.end = source.end.clone();
                    target.epoch.version = version;
                    map.apply_merge(target, source.id).unwrap();
                }
                map.check(true).unwrap();
            }
            for probe in 0u8..=255 {
                let r = map.locate(&[probe]).unwrap();
                proptest::prop_assert!(r.contains_key(&[probe]));
            }
        }
    }
}
