//! `flotilla`: the node. The batch system that drives many Raft groups, apply,
//! reads, split/merge/membership admin, the embedding API, the RESP server,
//! the `flotilla` command-line tool and metrics.
//!
//! It is the only crate that wires the others together; nothing but the
//! benchmarks depends on it. It must never reimplement consensus, log
//! storage or transport framing: those belong to `flotilla-raftgroup`,
//! `flotilla-storage` and `flotilla-router`.
//!
//! Status: not built yet (see the engine issue).
