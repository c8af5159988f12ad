//! Fault injection that tests drive at runtime: drop, delay, duplicate and
//! partition (also one-way) per link, deterministic for a given seed.
//!
//! Outbound faults act in `Transport::send` — before the queue — so that
//! they hit individual Raft messages the way a lossy network would, and so
//! that a seeded run makes the same decisions for the same sequence of
//! sends. Inbound blocking acts in the reader, per frame. Partitions also
//! stop snapshot lane frames; drop/delay/duplicate do not touch the lane
//! (a lane frame is a chunk of a stream, not a retransmitted message).
//!
//! When no fault is configured the check is one relaxed atomic load.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use crate::NodeId;

/// Faults of one outbound link (this node → one peer).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkFaults {
    /// Percent of messages dropped (0..=100).
    pub drop_percent: u8,
    /// Percent of messages sent twice (0..=100).
    pub duplicate_percent: u8,
    /// Every message is held back this long before it is queued.
    pub delay: Duration,
    /// Each message gets a further random delay in `[0, delay_jitter]`,
    /// which reorders messages.
    pub delay_jitter: Duration,
}

impl LinkFaults {
    fn is_clean(&self) -> bool {
        *self == LinkFaults::default()
    }
}

/// What to do with one outbound message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Queue it `copies` times (1 or 2), after `delay` if set.
    Send { copies: u8, delay: Option<Duration> },
    /// The link is partitioned.
    Partitioned,
    /// Randomly dropped.
    Dropped,
}

const CLEAN: Verdict = Verdict::Send {
    copies: 1,
    delay: None,
};

/// The fault layer of one transport. Get it with `Transport::faults()`.
///
/// ```no_run
/// # async fn demo(transport: flotilla_router::transport::Transport) {
/// use std::time::Duration;
/// use flotilla_router::transport::LinkFaults;
///
/// let faults = transport.faults();
/// faults.seed(42);
/// faults.set_link(2, LinkFaults { drop_percent: 10, delay: Duration::from_millis(5), ..Default::default() });
/// faults.partition_one_way(3); // this node's messages to node 3 are lost
/// faults.block_inbound_from(3); // ...and now node 3's to us too
/// faults.heal(3);
/// # }
/// ```
#[derive(Debug)]
pub struct Faults {
    active: AtomicBool,
    state: Mutex<FaultState>,
}

#[derive(Debug)]
struct FaultState {
    rng: SplitMix64,
    all_links: LinkFaults,
    links: HashMap<NodeId, LinkFaults>,
    partitioned_to: HashSet<NodeId>,
    blocked_from: HashSet<NodeId>,
}

impl FaultState {
    fn is_clean(&self) -> bool {
        self.all_links.is_clean()
            && self.links.is_empty()
            && self.partitioned_to.is_empty()
            && self.blocked_from.is_empty()
    }
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            active: AtomicBool::new(false),
            state: Mutex::new(FaultState {
                rng: SplitMix64::new(0),
                all_links: LinkFaults::default(),
                links: HashMap::new(),
                partitioned_to: HashSet::new(),
                blocked_from: HashSet::new(),
            }),
        }
    }
}

impl Faults {
    fn update(&self, change: impl FnOnce(&mut FaultState)) {
        let mut state = self.state.lock();
        change(&mut state);
        self.active.store(!state.is_clean(), Ordering::Release);
    }

    /// Restarts the random decisions from `seed`.
    pub fn seed(&self, seed: u64) {
        self.state.lock().rng = SplitMix64::new(seed);
    }

    /// Faults of the link to `to` (overrides [`Faults::set_all_links`]).
    pub fn set_link(&self, to: NodeId, faults: LinkFaults) {
        self.update(|s| {
            if faults.is_clean() {
                s.links.remove(&to);
            } else {
                s.links.insert(to, faults);
            }
        });
    }

    /// Faults of every link without its own setting.
    pub fn set_all_links(&self, faults: LinkFaults) {
        self.update(|s| s.all_links = faults);
    }

    /// Messages (and lane frames) this node sends to `to` are lost; traffic
    /// from `to` still arrives.
    pub fn partition_one_way(&self, to: NodeId) {
        self.update(|s| {
            s.partitioned_to.insert(to);
        });
    }

    /// Frames arriving from `from` are discarded; traffic to it still flows.
    pub fn block_inbound_from(&self, from: NodeId) {
        self.update(|s| {
            s.blocked_from.insert(from);
        });
    }

    /// Both directions between this node and `node`.
    pub fn partition(&self, node: NodeId) {
        self.update(|s| {
            s.partitioned_to.insert(node);
            s.blocked_from.insert(node);
        });
    }

    /// Lifts partitions and inbound blocks involving `node` (both ways).
    pub fn heal(&self, node: NodeId) {
        self.update(|s| {
            s.partitioned_to.remove(&node);
            s.blocked_from.remove(&node);
        });
    }

    /// Removes every fault.
    pub fn clear(&self) {
        self.update(|s| {
            s.all_links = LinkFaults::default();
            s.links.clear();
            s.partitioned_to.clear();
            s.blocked_from.clear();
        });
    }

    pub(crate) fn outbound(&self, to: NodeId) -> Verdict {
        if !self.active.load(Ordering::Acquire) {
            return CLEAN;
        }
        let mut state = self.state.lock();
        if state.partitioned_to.contains(&to) {
            return Verdict::Partitioned;
        }
        let link = state.links.get(&to).copied().unwrap_or(state.all_links);
        if link.is_clean() {
            return CLEAN;
        }
        if state.rng.percent_hit(link.drop_percent) {
            return Verdict::Dropped;
        }
        let copies = if state.rng.percent_hit(link.duplicate_percent) {
            2
        } else {
            1
        };
        let jitter_ms = link.delay_jitter.as_millis() as u64;
        let jitter = if jitter_ms > 0 {
            Duration::from_millis(state.rng.next_u64() % (jitter_ms + 1))
        } else {
            Duration::ZERO
        };
        let delay = link.delay + jitter;
        Verdict::Send {
            copies,
            delay: (!delay.is_zero()).then_some(delay),
        }
    }

    pub(crate) fn lane_blocked(&self, to: NodeId) -> bool {
        self.active.load(Ordering::Acquire) && self.state.lock().partitioned_to.contains(&to)
    }

    pub(crate) fn inbound_blocked(&self, from: NodeId) -> bool {
        self.active.load(Ordering::Acquire) && self.state.lock().blocked_from.contains(&from)
    }
}

/// SplitMix64, kept here rather than taken from a crate so that a seed
/// replays the same decisions across dependency upgrades.
#[derive(Debug, Clone)]
struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn percent_hit(&mut self, percent: u8) -> bool {
        match percent {
            0 => false,
            p if p >= 100 => true,
            p => self.next_u64() % 100 < u64::from(p),
        }
    }
}
