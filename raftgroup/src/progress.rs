//! What a leader knows about each follower's log, and how fast it may send.
//!
//! A follower is in one of three states:
//! - `Probe`: the leader does not know where the logs agree; it sends one
//!   append at a time and waits for the answer (or a heartbeat response).
//! - `Replicate`: the logs agree up to `matched`; the leader streams appends
//!   optimistically, bounded by the inflight window (messages and bytes).
//! - `Snapshot`: the follower needs entries the leader compacted; nothing is
//!   sent until the snapshot is reported done or failed.

use std::collections::VecDeque;

use crate::types::Index;

/// Replication state of one follower as seen by the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressState {
    Probe,
    Replicate,
    Snapshot,
}

/// The bounded window of append messages sent but not yet acknowledged.
#[derive(Debug, Clone)]
pub(crate) struct Inflights {
    /// (last index carried, bytes carried) per message, oldest first.
    window: VecDeque<(Index, u64)>,
    bytes: u64,
    messages_max: usize,
    bytes_max: u64,
}

impl Inflights {
    pub(crate) fn new(messages_max: usize, bytes_max: u64) -> Self {
        Inflights {
            window: VecDeque::new(),
            bytes: 0,
            messages_max,
            bytes_max,
        }
    }

    pub(crate) fn add(&mut self, last: Index, bytes: u64) {
        debug_assert!(
            self.window.len() < self.messages_max,
            "inflight window overflow: {} messages in flight, at most {}",
            self.window.len(),
            self.messages_max
        );
        debug_assert!(
            self.window.back().is_none_or(|&(prev, _)| prev < last),
            "inflight appends out of order: {last} sent after {:?}",
            self.window.back()
        );
        self.window.push_back((last, bytes));
        self.bytes += bytes;
    }

    /// Forget every message whose entries are all acknowledged.
    pub(crate) fn free_to(&mut self, acked: Index) {
        while let Some(&(last, bytes)) = self.window.front() {
            if last > acked {
                break;
            }
            self.window.pop_front();
            self.bytes -= bytes;
        }
    }

    /// Forget the oldest message: a heartbeat answer shows the follower is
    /// alive, and a window full of lost messages must not stall it forever.
    pub(crate) fn free_first(&mut self) {
        if let Some((_, bytes)) = self.window.pop_front() {
            self.bytes -= bytes;
        }
    }

    pub(crate) fn is_full(&self) -> bool {
        self.window.len() >= self.messages_max || self.bytes >= self.bytes_max
    }

    pub(crate) fn reset(&mut self) {
        self.window.clear();
        self.bytes = 0;
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.window.len()
    }
}

/// The leader's view of one member.
#[derive(Debug, Clone)]
pub(crate) struct Progress {
    /// Highest index known to be in the follower's log (persisted there).
    pub(crate) matched: Index,
    /// Next index to send.
    pub(crate) next: Index,
    pub(crate) state: ProgressState,
    /// In `Snapshot`: the index of the snapshot being sent.
    pub(crate) pending_snapshot: Index,
    /// In `Probe`: an append was sent and its answer is awaited.
    pub(crate) probe_sent: bool,
    pub(crate) inflights: Inflights,
    /// Heard from since the last check-quorum round.
    pub(crate) recent_active: bool,
    /// Heard from in the round before (so "recently" never means "in the
    /// last instant" right after a round ends).
    pub(crate) was_active: bool,
    /// Highest heartbeat round the member acknowledged (this term).
    pub(crate) acked_seq: u64,
    pub(crate) is_learner: bool,
}

impl Progress {
    pub(crate) fn new(next: Index, inflights: Inflights, is_learner: bool) -> Self {
        Progress {
            matched: 0,
            next,
            state: ProgressState::Probe,
            pending_snapshot: 0,
            probe_sent: false,
            inflights,
            recent_active: true,
            was_active: true,
            acked_seq: 0,
            is_learner,
        }
    }

    fn reset_state(&mut self, state: ProgressState) {
        self.state = state;
        self.probe_sent = false;
        self.pending_snapshot = 0;
        self.inflights.reset();
    }

    pub(crate) fn become_probe(&mut self) {
        if self.state == ProgressState::Snapshot {
            // The snapshot may have arrived: probe just past it.
            let after_snapshot = self.pending_snapshot + 1;
            self.reset_state(ProgressState::Probe);
            self.next = (self.matched + 1).max(after_snapshot);
        } else {
            self.reset_state(ProgressState::Probe);
            self.next = self.matched + 1;
        }
    }

    pub(crate) fn become_replicate(&mut self) {
        self.reset_state(ProgressState::Replicate);
        self.next = self.matched + 1;
    }

    pub(crate) fn become_snapshot(&mut self, snapshot_index: Index) {
        self.reset_state(ProgressState::Snapshot);
        self.pending_snapshot = snapshot_index;
    }

    /// The follower acknowledged `index`. Returns whether `matched` moved.
    pub(crate) fn maybe_update(&mut self, index: Index) -> bool {
        let updated = self.matched < index;
        if updated {
            self.matched = index;
            self.probe_sent = false;
        }
        self.next = self.next.max(index + 1);
        debug_assert!(
            self.matched < self.next,
            "progress: matched {} must stay below next {}",
            self.matched,
            self.next
        );
        updated
    }

    /// The follower rejected an append at `rejected`; `probe_hint` is the
    /// highest index at which the logs may agree. Returns false when the
    /// rejection is stale (answers an older message) and must be ignored.
    pub(crate) fn maybe_decrease_to(&mut self, rejected: Index, probe_hint: Index) -> bool {
        if self.state == ProgressState::Replicate {
            if rejected <= self.matched {
                return false;
            }
            self.next = self.matched + 1;
            return true;
        }
        if self.next == 0 || self.next - 1 != rejected {
            return false;
        }
        self.next = (rejected.min(probe_hint + 1)).max(self.matched + 1);
        self.probe_sent = false;
        true
    }

    /// Whether the leader must hold off sending appends.
    pub(crate) fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.is_full(),
            ProgressState::Snapshot => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress() -> Progress {
        Progress::new(11, Inflights::new(2, 1000), false)
    }

    #[test]
    fn stale_rejections_are_ignored() {
        let mut pr = progress();
        pr.matched = 5;
        pr.become_replicate();
        pr.next = 9;
        assert!(!pr.maybe_decrease_to(4, 0), "below matched: stale");
        assert!(pr.maybe_decrease_to(7, 0));
        assert_eq!(pr.next, 6);
        pr.become_probe();
        assert!(!pr.maybe_decrease_to(8, 6), "not next - 1: stale");
        assert!(pr.maybe_decrease_to(5, 3));
        assert_eq!(pr.next, 6, "never below matched + 1");
    }

    #[test]
    fn inflight_window_pauses_and_frees() {
        let mut pr = progress();
        pr.become_replicate();
        pr.inflights.add(12, 10);
        assert!(!pr.is_paused());
        pr.inflights.add(14, 10);
        assert!(pr.is_paused());
        pr.inflights.free_to(12);
        assert!(!pr.is_paused());
        assert_eq!(pr.inflights.len(), 1);
    }

    #[test]
    fn probe_after_snapshot_starts_past_it() {
        let mut pr = progress();
        pr.become_snapshot(40);
        assert!(pr.is_paused());
        pr.become_probe();
        assert_eq!(pr.next, 41);
    }
}
