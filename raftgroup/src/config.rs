//! Settings of one Raft group, with the defaults of DESIGN.md and a
//! validation that names the field at fault.

use crate::types::{Index, ReplicaId, NO_REPLICA};

/// Settings of one replica of one group. Time is counted in ticks: the
/// engine calls `tick()` every `tick` (100 ms by default); the core never
/// reads a clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// This replica's id (never 0, never reused within a range).
    pub id: ReplicaId,
    /// Lower bound of the randomized election timeout (inclusive).
    pub ticks_election_min: u32,
    /// Upper bound of the randomized election timeout (exclusive).
    pub ticks_election_max: u32,
    /// A leader sends heartbeats this often.
    pub ticks_heartbeat: u32,
    /// A leadership transfer that has not completed after this many ticks
    /// is abandoned and proposals are accepted again.
    pub ticks_transfer_max: u32,
    /// Leader lease margin for clock-rate differences between nodes: the
    /// lease lasts `ticks_election_min - 1 - ticks_lease_drift` of the
    /// leader's ticks from the tick at which the heartbeat round that
    /// confirmed it started (see [`Config::lease_ticks`] for the exact
    /// real-time condition; 0 ticks means no lease).
    pub ticks_lease_drift: u32,
    /// A quiesced leader repeats its quiesce heartbeat this often (ticks
    /// still arrive while quiesced; see [`crate::RaftGroup::tick`]), and a
    /// quiesced follower that hears nothing from its leader for twice as
    /// long wakes up and asks the leader to wake: a dead leader of an idle
    /// group is noticed without any help from outside.
    pub ticks_quiesced_heartbeat: u32,
    /// Pre-vote (Raft thesis §9.6): a partitioned node that rejoins does not
    /// disrupt a healthy leader by bumping terms.
    pub pre_vote: bool,
    /// Check-quorum: a leader that has not heard from a quorum within an
    /// election timeout steps down, and followers ignore votes while they
    /// hear from a leader. Required for lease reads.
    pub check_quorum: bool,
    /// Most append messages in flight to one follower.
    pub inflight_messages_max: usize,
    /// Most entry bytes in flight to one follower.
    pub inflight_bytes_max: u64,
    /// Most entry bytes in one append message (at least one entry is sent).
    pub message_bytes_max: u64,
    /// Most entry bytes handed to apply in one `Ready`.
    pub committed_bytes_per_ready_max: u64,
    /// Most bytes of proposed but uncommitted entries on a leader; more
    /// proposals are refused with a retryable error (back-pressure).
    pub uncommitted_bytes_max: u64,
    /// Index already applied to the state machine (on restart).
    pub applied: Index,
    /// Refuse votes for `ticks_election_min` ticks after start, as if a
    /// leader had just been heard: a replica that restarts may have
    /// acknowledged a leader's lease before it crashed. Turn it off only for
    /// a group that is new (e.g. the right half of a split), which never
    /// acknowledged any lease.
    pub lease_on_start: bool,
    /// Seed of the randomized election timeout. Fixed seeds make
    /// simulations replayable; the engine derives one per replica.
    pub seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            id: NO_REPLICA,
            ticks_election_min: 10,
            ticks_election_max: 20,
            ticks_heartbeat: 2,
            ticks_transfer_max: 10,
            ticks_lease_drift: 2,
            ticks_quiesced_heartbeat: 100,
            pre_vote: true,
            check_quorum: true,
            inflight_messages_max: 256,
            inflight_bytes_max: 8 << 20,
            message_bytes_max: 1 << 20,
            committed_bytes_per_ready_max: 16 << 20,
            uncommitted_bytes_max: 64 << 20,
            applied: 0,
            lease_on_start: true,
            seed: 0,
        }
    }
}

/// An impossible configuration, naming the field and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid raft config `{field}`: {reason}")]
pub struct ConfigError {
    pub field: &'static str,
    pub reason: String,
}

impl Config {
    /// Defaults with the given replica id.
    pub fn new(id: ReplicaId) -> Self {
        Config {
            id,
            ..Config::default()
        }
    }

    /// How many of its own ticks a leader's lease lasts, counted from the
    /// tick at which the heartbeat round that confirmed it started:
    /// `n = ticks_election_min - 1 - ticks_lease_drift`.
    ///
    /// Why `- 1`: a voter that acknowledged the round reset its election
    /// timer on receipt, and its next tick may follow at once, so it is
    /// only sure to refuse votes for `ticks_election_min - 1` whole tick
    /// intervals of its own. The lease is safe when `n` of the leader's
    /// longest tick intervals last no longer than `ticks_election_min - 1`
    /// of any voter's shortest: with the defaults (10, drift 2), `7 *
    /// P_leader_max <= 9 * P_voter_min`, i.e. the leader's ticks may be up
    /// to 28% slower than the fastest voter's. A leader that stops (a
    /// pause) must be caught outside the core: the engine trusts no lease
    /// for an election timeout after a gap of more than two ticks.
    pub fn lease_ticks(&self) -> u32 {
        (self.ticks_election_min.saturating_sub(1)).saturating_sub(self.ticks_lease_drift)
    }

    /// Refuses impossible combinations with a message naming the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |field, reason: String| Err(ConfigError { field, reason });
        if self.id == NO_REPLICA {
            return fail("id", "replica id 0 is reserved".into());
        }
        if self.ticks_heartbeat == 0 {
            return fail("ticks_heartbeat", "must be at least 1".into());
        }
        if self.ticks_election_min <= self.ticks_heartbeat {
            return fail(
                "ticks_election_min",
                format!(
                    "must be greater than ticks_heartbeat ({}), got {}",
                    self.ticks_heartbeat, self.ticks_election_min
                ),
            );
        }
        if self.ticks_election_max <= self.ticks_election_min {
            return fail(
                "ticks_election_max",
                format!(
                    "must be greater than ticks_election_min ({}), got {}",
                    self.ticks_election_min, self.ticks_election_max
                ),
            );
        }
        if self.ticks_transfer_max == 0 {
            return fail("ticks_transfer_max", "must be at least 1".into());
        }
        if self.ticks_lease_drift >= self.ticks_election_min {
            return fail(
                "ticks_lease_drift",
                format!(
                    "must be less than ticks_election_min ({}), got {}",
                    self.ticks_election_min, self.ticks_lease_drift
                ),
            );
        }
        if self.ticks_quiesced_heartbeat == 0 {
            return fail("ticks_quiesced_heartbeat", "must be at least 1".into());
        }
        if self.inflight_messages_max == 0 {
            return fail("inflight_messages_max", "must be at least 1".into());
        }
        if self.inflight_bytes_max == 0 {
            return fail("inflight_bytes_max", "must be at least 1".into());
        }
        if self.message_bytes_max == 0 {
            return fail("message_bytes_max", "must be at least 1".into());
        }
        if self.committed_bytes_per_ready_max == 0 {
            return fail("committed_bytes_per_ready_max", "must be at least 1".into());
        }
        if self.uncommitted_bytes_max == 0 {
            return fail("uncommitted_bytes_max", "must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::new(1).validate().unwrap();
    }

    #[test]
    fn heartbeat_not_below_election_is_refused_by_name() {
        let config = Config {
            ticks_heartbeat: 10,
            ..Config::new(1)
        };
        let err = config.validate().unwrap_err();
        assert_eq!(err.field, "ticks_election_min");
        assert!(err.to_string().contains("ticks_heartbeat"));
    }

    #[test]
    fn zero_id_is_refused() {
        assert_eq!(Config::default().validate().unwrap_err().field, "id");
    }
}
