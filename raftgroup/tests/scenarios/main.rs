//! Scenario tests that walk the Raft paper (and the thesis' extensions)
//! case by case, each asserting concrete outcomes: roles, terms, commit
//! indexes, log contents and applied payloads.
//!
//! Two harnesses are used:
//! - [`Net`], in `net`: replicas wired by an in-memory network where
//!   the test decides the fate of every message (deliver, drop, or hold
//!   for later) and delivery is instantaneous. It is for scenarios that
//!   must be scripted message by message (Figure 8, fast backtracking,
//!   read batching, leader transfer).
//! - `Sim` from `tests/common`, the seeded simulator, whose invariant
//!   checks run after every step; used for the longer scenarios
//!   (membership, pre-vote, check-quorum, snapshots).
//!
//! Every initial replica starts from the bootstrap snapshot at index 5,
//! term 5 ([`BOOTSTRAP_INDEX`]): the first leader is elected in term 6
//! and its no-op is at index 6.
//!
//! One module per topic; the harness is in `net`.

#[path = "../common/mod.rs"]
mod common;
mod net;

mod election;
mod idle_catch_up;
mod lease;
mod membership;
mod prevote_check_quorum;
mod quiescence;
mod read_index;
mod replication;
mod safety;
mod snapshots;
mod storage_errors;
mod transfer;
