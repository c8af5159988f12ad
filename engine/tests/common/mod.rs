//! Helpers shared by the in-process cluster tests: a small runtime and a
//! bounded poll on observable state (never a sleep that hopes).

#![allow(dead_code)] // each test binary uses its own subset

use std::time::Duration;

/// How often `eventually` looks again.
pub const POLL: Duration = Duration::from_millis(10);

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Poll `check` until it holds; panic naming `what` after `deadline`.
pub async fn eventually<F, Fut>(what: &str, deadline: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + deadline;
    while tokio::time::Instant::now() < end {
        if check().await {
            return;
        }
        tokio::time::sleep(POLL).await;
    }
    panic!("not reached within {deadline:?}: {what}");
}

/// The node whose replica leads range `range_id`, if any node says so.
pub async fn leader_of_range(cluster: &flotilla::Cluster, range_id: u64) -> Option<u64> {
    for id in 1..=cluster.len() as u64 {
        let Some(engine) = cluster.node(id) else {
            continue;
        };
        let ranges = engine.ranges().await.unwrap_or_default();
        if ranges
            .iter()
            .any(|r| r.descriptor.id == range_id && r.role == flotilla_raftgroup::Role::Leader)
        {
            return Some(id);
        }
    }
    None
}
