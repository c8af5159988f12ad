//! Chunked snapshot transfer scheduler (being built).
