//! `flotilla-router`: the range map and request routing, the node-to-node
//! transport (one connection per peer node, batched frames, coalesced
//! heartbeats) and the chunked snapshot transfer scheduler.
//!
//! It owns how a key finds its range and how bytes cross the network between
//! nodes. It must never apply commands or touch the state store: it moves
//! messages and snapshot chunks, and the engine decides what they mean.
//! Snapshot data reaches it through the small [`snapshot`] source/sink
//! traits, which the engine implements over the storage crate.

pub mod range;
pub mod snapshot;
pub mod transport;
mod types;

pub use types::*;
