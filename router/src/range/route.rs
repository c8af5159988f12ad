//! Routing a key or a request to a range: the typed outcomes a node or a
//! client acts on, and the node-side check that a request was routed with
//! the range's current epoch.

use std::collections::HashMap;

use bytes::Bytes;
use flotilla_raftgroup::ReplicaId;

use super::descriptor::{RangeDescriptor, RangeEpoch, ReplicaDescriptor};
use super::map::{RangeMap, RangeMapError};
use crate::types::{NodeId, RangeId};

/// Why a request cannot be served where it was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// This replica does not lead the range; `leader` is the best guess.
    #[error("range {range_id}: not the leader (hint: {leader:?})")]
    NotLeader {
        range_id: RangeId,
        leader: Option<ReplicaDescriptor>,
    },
    /// The request was routed with an old descriptor; here are the current
    /// ones covering its keys.
    #[error("range {range_id}: epoch changed; {} current descriptor(s) returned", current.len())]
    EpochMismatch {
        range_id: RangeId,
        current: Vec<RangeDescriptor>,
    },
    /// The key lies outside the range the request names.
    #[error("key {key:?} is not in range {range_id}")]
    KeyNotInRange { range_id: RangeId, key: Bytes },
    /// The range is unknown here (never was, or was merged away/removed).
    #[error("range {0} not found")]
    RangeNotFound(RangeId),
    /// No known range holds the key (a router cache with a gap).
    #[error("no range known for key {0:?}")]
    NoRangeForKey(Bytes),
}

impl RouteError {
    /// True when the same request can succeed after following the hint or
    /// refreshing the range cache.
    pub fn is_retryable(&self) -> bool {
        // Every routing error is fixed by going elsewhere or refreshing.
        true
    }
}

/// Where to send a request for a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTarget {
    pub range: RangeDescriptor,
    /// The replica believed to lead, if known.
    pub leader: Option<ReplicaDescriptor>,
}

/// A range map plus what is known about leaders: the node's router, or a
/// client's route cache.
#[derive(Debug, Clone, Default)]
pub struct Router {
    map: RangeMap,
    leaders: HashMap<RangeId, ReplicaId>,
}

impl Router {
    /// A router over `map`.
    pub fn new(map: RangeMap) -> Self {
        Router {
            map,
            leaders: HashMap::new(),
        }
    }

    /// The range map.
    pub fn map(&self) -> &RangeMap {
        &self.map
    }

    /// Mutable access for split/merge/membership updates.
    pub fn map_mut(&mut self) -> &mut RangeMap {
        &mut self.map
    }

    /// Where to send a request for `key`.
    pub fn route(&self, key: &[u8]) -> Result<RouteTarget, RouteError> {
        let range = self
            .map
            .locate(key)
            .ok_or_else(|| RouteError::NoRangeForKey(Bytes::copy_from_slice(key)))?;
        Ok(RouteTarget {
            leader: self.leader_of(range),
            range: range.clone(),
        })
    }

    fn leader_of(&self, range: &RangeDescriptor) -> Option<ReplicaDescriptor> {
        let id = self.leaders.get(&range.id)?;
        range.replica(*id).copied()
    }

    /// Remember that `replica` leads `range`.
    pub fn set_leader(&mut self, range: RangeId, replica: ReplicaId) {
        self.leaders.insert(range, replica);
    }

    /// Forget the leader of `range` (it stepped down or was unreachable).
    pub fn clear_leader(&mut self, range: RangeId) {
        self.leaders.remove(&range);
    }

    /// Node-side check of a request routed to `range_id` with `epoch` for
    /// `keys`: refuses a stale epoch (returning the current descriptors),
    /// an unknown range and keys outside the range.
    pub fn check_request<'a>(
        &'a self,
        range_id: RangeId,
        epoch: RangeEpoch,
        keys: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<&'a RangeDescriptor, RouteError> {
        let range = self
            .map
            .get(range_id)
            .ok_or(RouteError::RangeNotFound(range_id))?;
        let keys: Vec<&[u8]> = keys.into_iter().collect();
        if epoch != range.epoch {
            // Hand back every descriptor the request's keys now fall in.
            let mut current: Vec<RangeDescriptor> = vec![range.clone()];
            for key in &keys {
                if let Some(r) = self.map.locate(key) {
                    if !current.iter().any(|c| c.id == r.id) {
                        current.push(r.clone());
                    }
                }
            }
            return Err(RouteError::EpochMismatch { range_id, current });
        }
        if let Some(key) = keys.iter().find(|k| !range.contains_key(k)) {
            return Err(RouteError::KeyNotInRange {
                range_id,
                key: Bytes::copy_from_slice(key),
            });
        }
        Ok(range)
    }

    /// A client learns newer descriptors (from an `EpochMismatch`): older
    /// overlapping entries of its cache are dropped and the new ones added.
    pub fn learn(&mut self, descriptors: &[RangeDescriptor]) -> Result<(), RangeMapError> {
        for fresh in descriptors {
            if let Some(known) = self.map.get(fresh.id) {
                if !known.epoch.is_stale_against(&fresh.epoch) {
                    continue;
                }
            }
            let stale: Vec<RangeId> = self
                .map
                .overlapping(&fresh.start, &fresh.end)
                .map(|r| r.id)
                .chain(self.map.get(fresh.id).map(|r| r.id))
                .collect();
            for id in stale {
                self.map.remove(id);
                self.leaders.remove(&id);
            }
            self.map.insert(fresh.clone())?;
        }
        Ok(())
    }

    /// The node holding the leader of the range for `key`, if known.
    pub fn leader_node(&self, key: &[u8]) -> Option<NodeId> {
        self.route(key).ok()?.leader.map(|l| l.node_id)
    }
}

#[cfg(test)]
mod tests {
    use super::super::descriptor::ReplicaRole;
    use super::*;

    fn replicas() -> Vec<ReplicaDescriptor> {
        (1..=3)
            .map(|n| ReplicaDescriptor {
                replica_id: n * 10,
                node_id: n,
                role: ReplicaRole::Voter,
            })
            .collect()
    }

    fn split_router() -> Router {
        let whole = RangeDescriptor::whole_key_space(1, replicas());
        let mut router = Router::new(RangeMap::with_range(whole.clone()).unwrap());
        let mut left = whole.clone();
        left.end = Bytes::from_static(b"m");
        left.epoch.version = 2;
        let mut right = whole;
        right.id = 2;
        right.start = Bytes::from_static(b"m");
        right.epoch.version = 2;
        router.map_mut().apply_split(left, right).unwrap();
        router
    }

    #[test]
    fn stale_epoch_returns_current_descriptors() {
        let router = split_router();
        let old = RangeEpoch {
            version: 1,
            conf_version: 1,
        };
        let keys: [&[u8]; 2] = [b"a", b"x"];
        match router.check_request(1, old, keys) {
            Err(RouteError::EpochMismatch { current, .. }) => {
                let ids: Vec<u64> = current.iter().map(|d| d.id).collect();
                assert_eq!(ids, vec![1, 2]);
            }
            other => panic!("expected EpochMismatch, got {other:?}"),
        }
        let now = router.map().get(1).unwrap().epoch;
        let keys: [&[u8]; 1] = [b"x"];
        assert!(matches!(
            router.check_request(1, now, keys),
            Err(RouteError::KeyNotInRange { .. })
        ));
        let none: [&[u8]; 0] = [];
        assert!(matches!(
            router.check_request(9, now, none),
            Err(RouteError::RangeNotFound(9))
        ));
    }

    #[test]
    fn client_cache_learns_a_split_and_leader_hints() {
        let node = split_router();
        let mut client = Router::new(
            RangeMap::with_range(RangeDescriptor::whole_key_space(1, replicas())).unwrap(),
        );
        client.set_leader(1, 20);
        assert_eq!(client.leader_node(b"x"), Some(2));
        let current: Vec<RangeDescriptor> = node.map().iter().cloned().collect();
        client.learn(&current).unwrap();
        client.map().check(true).unwrap();
        assert_eq!(client.route(b"x").unwrap().range.id, 2);
        assert_eq!(
            client.route(b"x").unwrap().leader,
            None,
            "leader of a new range is unknown"
        );
        // Learning the same descriptors again changes nothing.
        client.learn(&current).unwrap();
        assert_eq!(client.map().len(), 2);
    }
}
