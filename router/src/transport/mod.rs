//! Node-to-node transport (being built).
