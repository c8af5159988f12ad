//! The shared WAL of `flotilla-storage`, compiled on its own for the
//! benchmark (the real crate also builds RocksDB, which this one avoids).

#[path = "../../../storage/src/wal/mod.rs"]
pub mod wal;
