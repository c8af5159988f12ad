//! RocksDB state machine store and range snapshots (being built).
