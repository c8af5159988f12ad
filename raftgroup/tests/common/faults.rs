//! The fault model: message loss, duplication and delay, crash points
//! inside a Ready, the replicas' clocks (rates within or beyond the lease's
//! drift bound, out of step), and the engine's policies the simulator
//! reproduces (ticking quiesced groups, waking them on a peer failure).

use flotilla_raftgroup::Config;

use super::net::TICK;
use super::rng::Rng;

/// Knobs of the fault schedule, in percent per opportunity; times in
/// simulated real time ([`TICK`] per nominal tick).
#[derive(Clone, Debug)]
pub struct Faults {
    pub drop_percent: u64,
    pub duplicate_percent: u64,
    /// Ordinary delivery delay, uniformly in `[delay_min, delay_max]`.
    pub delay_min: u64,
    pub delay_max: u64,
    /// Some messages are held far longer, up to `long_delay_max` (several
    /// election timeouts: stale terms, stale TimeoutNow, old snapshots).
    pub long_delay_percent: u64,
    pub long_delay_max: u64,
    /// Crash a node while it handles a Ready (at a random [`CrashPoint`]).
    pub crash_mid_ready_percent: u64,
    /// On a crash, the chance that writes not synced (a Ready whose
    /// `must_sync()` was false: a commit index only) are lost.
    pub lose_unsynced_percent: u64,
}

impl Faults {
    /// A perfect network: every message arrives exactly one tick later.
    pub fn none() -> Self {
        Faults {
            drop_percent: 0,
            duplicate_percent: 0,
            delay_min: TICK,
            delay_max: TICK,
            long_delay_percent: 0,
            long_delay_max: TICK,
            crash_mid_ready_percent: 0,
            lose_unsynced_percent: 0,
        }
    }

    /// How long the next message takes.
    pub fn delay(&self, rng: &mut Rng) -> u64 {
        if rng.chance(self.long_delay_percent) {
            rng.between(self.delay_max, self.long_delay_max)
        } else {
            rng.between(self.delay_min, self.delay_max)
        }
    }
}

/// Where in the handling of a Ready a crash strikes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashPoint {
    /// Nothing of the Ready persisted; the leader's early messages left.
    BeforePersist,
    /// Snapshot and entries persisted, the hard state not (the contract
    /// allows any order that writes the hard state last).
    EntriesWithoutHardState,
    /// Everything persisted, `messages_after_persist` not sent.
    PersistedNotSent,
    /// Persisted and sent; committed entries not applied yet.
    SentNotApplied,
}

impl CrashPoint {
    pub fn random(rng: &mut Rng) -> CrashPoint {
        match rng.below(4) {
            0 => CrashPoint::BeforePersist,
            1 => CrashPoint::EntriesWithoutHardState,
            2 => CrashPoint::PersistedNotSent,
            _ => CrashPoint::SentNotApplied,
        }
    }
}

/// One replica's clock: the engine's ticker on that node, whose interval
/// varies within `[interval_min, interval_max]` of real time.
#[derive(Clone, Debug)]
pub struct Clock {
    pub interval_min: u64,
    pub interval_max: u64,
    pub next_tick_at: u64,
    /// When the node's loop last ticked (the engine's tick-gap detector).
    pub last_tick_at: u64,
}

impl Clock {
    /// Every replica ticks at the same instants, once per [`TICK`].
    pub fn lockstep(now: u64) -> Clock {
        Clock {
            interval_min: TICK,
            interval_max: TICK,
            next_tick_at: now + TICK,
            last_tick_at: now,
        }
    }

    /// A clock with its own rate range and a random phase.
    pub fn new(interval_min: u64, interval_max: u64, now: u64, rng: &mut Rng) -> Clock {
        Clock {
            interval_min,
            interval_max,
            next_tick_at: now + rng.between(1, interval_max),
            last_tick_at: now,
        }
    }

    /// The tick due now happened; schedule the next.
    pub fn ticked(&mut self, rng: &mut Rng) {
        self.last_tick_at = self.next_tick_at;
        self.next_tick_at += rng.between(self.interval_min, self.interval_max);
    }

    /// A restart or a resume: the next tick comes within one interval.
    pub fn restart_at(&mut self, now: u64, rng: &mut Rng) {
        self.last_tick_at = now;
        self.next_tick_at = now + rng.between(1, self.interval_max);
    }

    pub fn mean_interval(&self) -> u64 {
        (self.interval_min + self.interval_max) / 2
    }
}

/// The lease's drift bound, as README ("The lease in real time") states
/// it, written out here rather than taken from the core so that the test
/// holds the core to the document: a lease of `n = emin - 1 - drift`
/// leader ticks is safe when `n` of the slowest leader tick intervals last
/// no longer than `emin - 1` of the fastest voter tick intervals. Returns
/// the longest interval allowed for a shortest interval of
/// `interval_min`.
pub fn lease_interval_max(config: &Config, interval_min: u64) -> u64 {
    let emin = u64::from(config.ticks_election_min);
    let n = (emin - 1)
        .saturating_sub(u64::from(config.ticks_lease_drift))
        .max(1);
    interval_min * (emin - 1) / n
}

/// How the simulated engine treats quiesced replicas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineModel {
    /// The engine as it is (engine/src/node/mod.rs `tick`): a quiesced
    /// group gets no ticks; a peer reported down wakes the groups it led,
    /// but the report is lossy; requests to a follower never reach its
    /// Raft group.
    SkipsQuiesced,
    /// The core's contract (`RaftGroup::tick`): every replica is ticked,
    /// quiesced or not, and nothing outside wakes a group: a quiesced
    /// follower must notice a dead leader by itself.
    TicksQuiesced,
}
