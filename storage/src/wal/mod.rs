//! Shared batched write-ahead log (being built).
