//! `flotilla-raftgroup`: the consensus state machine of one Raft group (in progress).
mod config;
mod error;
mod store;
mod types;

pub use config::{Config, ConfigError};
pub use error::Error;
pub use store::{LogStore, MemStore, StoreError};
pub use types::*;
