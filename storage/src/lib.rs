//! `flotilla-storage`: the shared batched write-ahead log that holds the Raft
//! entries and hard states of every group on a node, and the RocksDB store
//! that holds applied state (user data, range metadata, applied indexes).
//!
//! It owns durability: what it acknowledges as synced survives a crash, and
//! what it recovers is exactly a prefix of what was written. It must never
//! make consensus decisions or talk to the network.

pub mod state;
pub mod wal;
