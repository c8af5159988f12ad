//! A lossless in-memory group for examples, benchmarks and quick tests:
//! every replica's Ready is handled at once and every message delivered in
//! order. The fault-injecting simulator lives in the crate's `tests/`.

use bytes::Bytes;

use crate::config::Config;
use crate::error::Error;
use crate::group::RaftGroup;
use crate::store::MemStore;
use crate::types::{ConfChange, Entry, EntryKind, Index, Message, ReadState, ReplicaId};

/// Replicas `1..=n` of one group, wired together in memory.
pub struct MemCluster {
    /// `replicas[i]` has id `i + 1`; `None` while stopped.
    pub replicas: Vec<Option<RaftGroup<MemStore>>>,
    /// Payloads applied by each replica, in order.
    pub applied: Vec<Vec<(Index, Bytes)>>,
    /// Reads confirmed at each replica (ReadIndex answers).
    pub reads: Vec<Vec<ReadState>>,
    inbox: Vec<Message>,
    /// Messages delivered so far.
    pub messages_delivered: u64,
}

impl MemCluster {
    /// A group of `voters` replicas with default settings.
    pub fn new(voters: u64) -> Result<MemCluster, Error> {
        let mut replicas = Vec::new();
        for id in 1..=voters {
            let config = Config {
                seed: id,
                ..Config::new(id)
            };
            replicas.push(Some(RaftGroup::new(
                config,
                MemStore::new_with_voters(1..=voters),
            )?));
        }
        Ok(MemCluster {
            applied: vec![Vec::new(); replicas.len()],
            reads: vec![Vec::new(); replicas.len()],
            replicas,
            inbox: Vec::new(),
            messages_delivered: 0,
        })
    }

    /// Replica `id`, if running.
    pub fn replica(&mut self, id: ReplicaId) -> Option<&mut RaftGroup<MemStore>> {
        self.replicas
            .get_mut((id - 1) as usize)
            .and_then(|r| r.as_mut())
    }

    /// The running leader with the highest term.
    pub fn leader(&self) -> Option<ReplicaId> {
        self.replicas
            .iter()
            .flatten()
            .filter(|g| g.is_leader())
            .max_by_key(|g| g.term())
            .map(|g| g.id())
    }

    /// Make `id` campaign and run until it (or another) leads.
    pub fn elect(&mut self, id: ReplicaId) -> Result<ReplicaId, Error> {
        if let Some(group) = self.replica(id) {
            group.campaign()?;
        }
        for _ in 0..1000 {
            self.settle()?;
            if let Some(leader) = self.leader() {
                return Ok(leader);
            }
            self.tick();
        }
        Err(Error::NoLeader)
    }

    /// One tick on every running replica, then settle.
    pub fn tick(&mut self) {
        for group in self.replicas.iter_mut().flatten() {
            group.tick();
        }
    }

    /// Stop a replica (its persisted store survives in memory).
    pub fn stop(&mut self, id: ReplicaId) -> Option<MemStore> {
        let group = self.replicas.get_mut((id - 1) as usize)?.take()?;
        Some(group.store().clone())
    }

    /// Handle every Ready and deliver every message until quiet.
    pub fn settle(&mut self) -> Result<(), Error> {
        loop {
            let mut progressed = false;
            for slot in 0..self.replicas.len() {
                let Some(group) = self.replicas[slot].as_mut() else {
                    continue;
                };
                if !group.has_ready() {
                    continue;
                }
                progressed = true;
                let mut ready = group.ready();
                self.inbox.append(&mut ready.messages);
                if let Some(snapshot) = ready.snapshot.clone() {
                    group.store_mut().apply_snapshot(snapshot)?;
                }
                group.store_mut().append(&ready.entries)?;
                if let Some(hs) = ready.hard_state {
                    group.store_mut().set_hard_state(hs);
                }
                self.inbox.append(&mut ready.messages_after_persist);
                for entry in std::mem::take(&mut ready.committed_entries) {
                    apply(group, &mut self.applied[slot], entry)?;
                }
                self.reads[slot].append(&mut ready.read_states);
                group.advance(ready);
            }
            for message in std::mem::take(&mut self.inbox) {
                progressed = true;
                let to = message.to;
                if let Some(group) = self.replica(to) {
                    group.step(message)?;
                    self.messages_delivered += 1;
                }
            }
            if !progressed {
                return Ok(());
            }
        }
    }
}

fn apply(
    group: &mut RaftGroup<MemStore>,
    applied: &mut Vec<(Index, Bytes)>,
    entry: Entry,
) -> Result<(), Error> {
    match entry.kind {
        EntryKind::ConfChange => {
            let change = ConfChange::decode(&entry.data)?;
            let conf = group.apply_conf_change(&change)?;
            group.store_mut().set_conf_state(conf);
        }
        EntryKind::Normal if !entry.data.is_empty() => applied.push((entry.index, entry.data)),
        EntryKind::Normal => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_replicas_elect_and_replicate() {
        let mut cluster = MemCluster::new(3).unwrap();
        let leader = cluster.elect(1).unwrap();
        let index = cluster
            .replica(leader)
            .unwrap()
            .propose(Bytes::from_static(b"hello"))
            .unwrap();
        cluster.settle().unwrap();
        for applied in &cluster.applied {
            assert_eq!(applied, &vec![(index, Bytes::from_static(b"hello"))]);
        }
    }

    #[test]
    fn compaction_never_drops_unapplied_entries() {
        let mut cluster = MemCluster::new(1).unwrap();
        let leader = cluster.elect(1).unwrap();
        let group = cluster.replica(leader).unwrap();
        let index = group.propose(Bytes::from_static(b"x")).unwrap();
        // Proposed, not yet persisted or applied (the no-op before it is).
        let err = group.compact(index, Bytes::new()).unwrap_err();
        assert_eq!(
            err,
            Error::CompactBeyondApplied {
                index,
                applied: index - 1
            }
        );
        cluster.settle().unwrap();
        let group = cluster.replica(leader).unwrap();
        group.compact(index, Bytes::new()).unwrap();
        assert_eq!(group.first_index(), index + 1);
    }
}
