//! The simulated network: messages in flight with a delivery time in
//! simulated real time, and the links that are cut.
//!
//! Time is counted in units of [`TICK`]`/1000` of a nominal tick, so that
//! replicas can tick at different rates and out of step.

use std::collections::BTreeSet;

use flotilla_raftgroup::{Message, ReplicaId};

use super::rng::Rng;

/// Simulated real time of one nominal tick (the engine's 100 ms).
pub const TICK: u64 = 1_000;

#[derive(Clone, Debug)]
pub struct InFlight {
    pub deliver_at: u64,
    pub message: Message,
}

#[derive(Default)]
pub struct Network {
    in_flight: Vec<InFlight>,
    /// Directed links that drop everything: (from, to).
    pub cut: BTreeSet<(ReplicaId, ReplicaId)>,
}

impl Network {
    pub fn send(&mut self, message: Message, deliver_at: u64) {
        self.in_flight.push(InFlight {
            deliver_at,
            message,
        });
    }

    pub fn is_cut(&self, from: ReplicaId, to: ReplicaId) -> bool {
        self.cut.contains(&(from, to))
    }

    /// The earliest delivery time among messages `ready_to` accepts.
    pub fn next_due(&self, ready_to: impl Fn(ReplicaId) -> bool) -> Option<u64> {
        self.in_flight
            .iter()
            .filter(|f| ready_to(f.message.to))
            .map(|f| f.deliver_at)
            .min()
    }

    /// Takes the messages due by `now` whose receiver `ready_to` accepts,
    /// in random order (messages due at the same instant race).
    pub fn take_due(
        &mut self,
        now: u64,
        ready_to: impl Fn(ReplicaId) -> bool,
        rng: &mut Rng,
    ) -> Vec<Message> {
        let mut due = Vec::new();
        let mut i = 0;
        while i < self.in_flight.len() {
            let f = &self.in_flight[i];
            if f.deliver_at <= now && ready_to(f.message.to) {
                due.push(self.in_flight.swap_remove(i).message);
            } else {
                i += 1;
            }
        }
        for i in (1..due.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            due.swap(i, j);
        }
        due
    }

    /// Removes (and returns) every message addressed to `id`.
    pub fn remove_to(&mut self, id: ReplicaId) -> Vec<Message> {
        let (lost, kept): (Vec<InFlight>, Vec<InFlight>) = std::mem::take(&mut self.in_flight)
            .into_iter()
            .partition(|f| f.message.to == id);
        self.in_flight = kept;
        lost.into_iter().map(|f| f.message).collect()
    }

    pub fn len(&self) -> usize {
        self.in_flight.len()
    }

    /// Split `ids` in two random sides; nothing crosses.
    pub fn partition_random(&mut self, ids: &[ReplicaId], rng: &mut Rng) {
        let side: BTreeSet<ReplicaId> = ids.iter().copied().filter(|_| rng.chance(50)).collect();
        for &a in ids {
            for &b in ids {
                if a != b && side.contains(&a) != side.contains(&b) {
                    self.cut.insert((a, b));
                }
            }
        }
    }

    /// Cut `id` off from every other of `ids`, both ways.
    pub fn isolate(&mut self, id: ReplicaId, ids: &[ReplicaId]) {
        for &other in ids {
            if other != id {
                self.cut.insert((id, other));
                self.cut.insert((other, id));
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }
}
