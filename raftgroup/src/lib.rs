//! `flotilla-raftgroup`: the consensus state machine of one Raft group.
//!
//! It owns the Raft protocol for a single group: elections (with pre-vote
//! and check-quorum), log replication with per-follower flow control,
//! snapshots, single-server membership changes with learners, leadership
//! transfer, ReadIndex and the leader lease, and quiescence for idle groups.
//! It must never do I/O, read a clock, spawn threads or be async: the caller
//! feeds it ticks, messages and proposals, and takes a [`Ready`] of things to
//! persist, send and apply. Given the same inputs it makes the same outputs,
//! which is what lets the simulator in `tests/` replay any failure by seed.
//!
//! ```
//! use flotilla_raftgroup::{Config, MemStore, RaftGroup};
//!
//! // A single-voter group elects itself and commits a proposal.
//! let mut group = RaftGroup::new(Config::new(1), MemStore::new_with_voters([1])).unwrap();
//! group.campaign().unwrap();
//! let mut applied = Vec::new();
//! let mut proposed = false;
//! for _ in 0..10 {
//!     if group.is_leader() && !proposed {
//!         group.propose(bytes::Bytes::from_static(b"x=1")).unwrap();
//!         proposed = true;
//!     }
//!     let ready = group.ready();
//!     if let Some(hs) = ready.hard_state {
//!         group.store_mut().set_hard_state(hs);
//!     }
//!     group.store_mut().append(&ready.entries).unwrap();
//!     applied.extend(ready.committed_entries.iter().filter(|e| !e.data.is_empty()).cloned());
//!     group.advance(ready);
//! }
//! assert_eq!(&applied[0].data[..], b"x=1");
//! ```

mod config;
mod election;
mod error;
mod group;
mod log;
mod membership;
mod progress;
mod quorum;
mod reads;
mod replication;
mod rng;
mod store;
pub mod testkit;
mod types;

pub use config::{Config, ConfigError};
pub use error::Error;
pub use group::{ProgressState, ProgressStatus, RaftGroup, Ready, Status};
pub use store::{LogStore, MemStore, StoreError, BOOTSTRAP_INDEX, BOOTSTRAP_TERM};
pub use types::*;
