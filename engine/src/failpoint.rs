//! Crash points for tests: `FLOTILLA_FAIL_POINT=<name>` makes the process
//! abort (like kill -9: nothing is flushed or closed) the first time the
//! raft loop reaches that point. Unset (always, outside tests) it costs one
//! comparison with a string read once at start.
//!
//! Points, in the order a split or merge passes them (`split:persisted` =
//! the command is in the WAL, its state-store batch not yet written;
//! `…:applied` = that batch is written, its effects on the node not yet
//! carried out):
//! `split:persisted`, `split:applied`, `merge:freeze-persisted`,
//! `merge:freeze-applied`, `merge:commit-persisted`, `merge:commit-applied`.

use std::sync::OnceLock;

static POINT: OnceLock<Option<String>> = OnceLock::new();

/// Abort here if the environment names this point.
pub(crate) fn hit(name: &str) {
    let armed = POINT.get_or_init(|| std::env::var("FLOTILLA_FAIL_POINT").ok());
    if armed.as_deref() == Some(name) {
        eprintln!("fail point {name}: aborting");
        std::process::abort();
    }
}
