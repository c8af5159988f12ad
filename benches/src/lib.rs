//! `flotilla-bench`: the load benchmark tool (YCSB A–F, write-only and
//! read-only workloads against an embedded node, an in-process cluster or
//! remote RESP servers) and the criterion micro-benchmarks in `benches/`.
//!
//! The binary (`src/bin/flotilla-bench.rs`) parses the command line into a
//! [`runner::RunConfig`] and calls [`runner::run`]; tests drive the same
//! function.

pub mod keys;
pub mod plot;
pub mod report;
pub mod resp;
pub mod rng;
pub mod runner;
pub mod target;
pub mod wal_limit;
pub mod workload;
