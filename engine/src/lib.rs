//! `flotilla`: the node. The raft loop that drives many Raft groups, apply,
//! reads, split/merge admin, the embedding API and the `flotilla`
//! command-line tool.
//!
//! It is the only crate that wires the others together; nothing but the
//! benchmarks depends on it. It must never reimplement consensus, log
//! storage or transport framing: those belong to `flotilla-raftgroup`,
//! `flotilla-storage` and `flotilla-router`.
//!
//! Status: a single node (one process, any number of ranges) with the WAL,
//! the state store, linearizable reads, split and merge. Multi-node
//! clusters over the transport come with the rest of the engine issue.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use flotilla::{Engine, EngineConfig};
//! let dir = tempfile::tempdir().unwrap();
//! let engine = Engine::open(EngineConfig::new(dir.path())).unwrap();
//! engine.put("k", "v").await.unwrap();
//! assert_eq!(engine.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
//! engine.close().await.unwrap();
//! # });
//! ```

mod apply;
mod cluster;
mod command;
mod config;
mod engine;
mod error;
mod failpoint;
mod meta;
mod network;
mod node;
mod peer;
pub mod server;
mod snapshot;
mod stats;

pub use cluster::Cluster;
pub use command::WriteOp;
pub use config::{AutoSplitConfig, EngineConfig, EngineConfigBuilder, ReadMode};
pub use engine::Engine;
pub use error::Error;
pub use node::{Consistency, RangeInfo};
pub use stats::NodeStats;

/// The README's examples, compiled and run as doc-tests.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
