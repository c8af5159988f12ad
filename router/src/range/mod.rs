//! The range map and request routing (being built).
