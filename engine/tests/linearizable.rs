//! Reads and writes on a three-node cluster stay linearizable while the
//! leader's node is stopped and restarted. The history of every key is
//! checked by a Wing–Gong search with memoisation (as in Lowe's and
//! Porcupine's checkers), not by eye.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use flotilla::{Cluster, Error};
use parking_lot::Mutex;

mod common;
use common::runtime;

#[derive(Debug, Clone)]
enum Op {
    Write(u64),
    Read(Option<u64>),
}

#[derive(Debug, Clone)]
struct Event {
    op: Op,
    invoked: u64,
    /// `None`: indeterminate (may or may not have taken effect).
    completed: Option<u64>,
}

/// Is there an order of the events, consistent with real time, in which
/// every read returns the latest write before it? Indeterminate writes may
/// be placed anywhere after their invocation, or left out.
fn linearizable(events: &[Event]) -> bool {
    let n = events.len();
    assert!(n <= 128, "history too long for the checker");
    let mut memo: HashSet<(u128, Option<u64>)> = HashSet::new();
    fn search(
        events: &[Event],
        done: u128,
        value: Option<u64>,
        memo: &mut HashSet<(u128, Option<u64>)>,
    ) -> bool {
        // Finished when every determinate event is linearized.
        let pending: Vec<usize> = (0..events.len())
            .filter(|&i| done & (1 << i) == 0)
            .collect();
        if pending.iter().all(|&i| events[i].completed.is_none()) {
            return true;
        }
        if !memo.insert((done, value)) {
            return false;
        }
        // Only events invoked before the earliest pending completion may go next.
        let horizon = pending
            .iter()
            .filter_map(|&i| events[i].completed)
            .min()
            .unwrap_or(u64::MAX);
        for &i in &pending {
            let e = &events[i];
            if e.invoked > horizon {
                continue;
            }
            let next = match e.op {
                Op::Write(v) => Some(v),
                Op::Read(seen) => {
                    if seen != value {
                        continue;
                    }
                    value
                }
            };
            if search(events, done | (1 << i), next, memo) {
                return true;
            }
        }
        false
    }
    search(events, 0, None, &mut memo)
}

#[test]
fn checker_rejects_a_stale_read() {
    let ok = [
        Event {
            op: Op::Write(1),
            invoked: 0,
            completed: Some(10),
        },
        Event {
            op: Op::Read(Some(1)),
            invoked: 11,
            completed: Some(12),
        },
    ];
    assert!(linearizable(&ok));
    let stale = [
        Event {
            op: Op::Write(1),
            invoked: 0,
            completed: Some(10),
        },
        Event {
            op: Op::Write(2),
            invoked: 11,
            completed: Some(20),
        },
        Event {
            op: Op::Read(Some(1)),
            invoked: 21,
            completed: Some(22),
        },
    ];
    assert!(!linearizable(&stale));
    let lost_write_maybe = [
        Event {
            op: Op::Write(1),
            invoked: 0,
            completed: None,
        },
        Event {
            op: Op::Read(None),
            invoked: 5,
            completed: Some(6),
        },
        Event {
            op: Op::Read(Some(1)),
            invoked: 7,
            completed: Some(8),
        },
    ];
    assert!(linearizable(&lost_write_maybe));
    let never_written = [Event {
        op: Op::Read(Some(9)),
        invoked: 0,
        completed: Some(1),
    }];
    assert!(!linearizable(&never_written));
}

/// A definite failure: the operation certainly did not take effect.
fn definitely_failed(e: &Error) -> bool {
    matches!(
        e,
        Error::NotLeader { .. }
            | Error::Busy(_)
            | Error::RangeNotFound(_)
            | Error::EpochMismatch { .. }
    )
}

#[test]
fn reads_and_writes_stay_linearizable_across_leader_changes() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let cluster = Arc::new(tokio::sync::RwLock::new(
            Cluster::start(3, dir.path(), Duration::from_millis(10)).unwrap(),
        ));
        cluster.read().await.put("warmup", "x").await.unwrap();
        let epoch = Instant::now();
        let now = move || epoch.elapsed().as_nanos() as u64;
        let history: Arc<Mutex<HashMap<usize, Vec<Event>>>> = Arc::default();
        let keys = 3usize;
        let mut clients = Vec::new();
        for client in 0..4u64 {
            let (cluster, history) = (cluster.clone(), history.clone());
            clients.push(tokio::spawn(async move {
                for op_no in 0..30u64 {
                    let key = ((client + op_no) % keys as u64) as usize;
                    let name = Bytes::from(format!("lin{key}"));
                    let guard = cluster.read().await;
                    let Some(leader) = guard.leader_of(&name).await else {
                        drop(guard);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    let Some(engine) = guard.node_handle(leader) else {
                        continue;
                    };
                    drop(guard);
                    let invoked = now();
                    let event = if op_no % 2 == 0 {
                        let value = client * 1_000 + op_no;
                        match engine.put(name.clone(), value.to_string()).await {
                            Ok(()) => Some(Event {
                                op: Op::Write(value),
                                invoked,
                                completed: Some(now()),
                            }),
                            Err(e) if definitely_failed(&e) => None,
                            Err(_) => Some(Event {
                                op: Op::Write(value),
                                invoked,
                                completed: None,
                            }),
                        }
                    } else {
                        match engine.get(name.clone()).await {
                            Ok(v) => {
                                let seen = v.map(|b| {
                                    String::from_utf8_lossy(&b)
                                        .parse::<u64>()
                                        .expect("a value we wrote")
                                });
                                Some(Event {
                                    op: Op::Read(seen),
                                    invoked,
                                    completed: Some(now()),
                                })
                            }
                            Err(_) => None, // A failed read observed nothing.
                        }
                    };
                    if let Some(event) = event {
                        history.lock().entry(key).or_default().push(event);
                    }
                }
            }));
        }
        // Meanwhile: stop the leader's node, let the others take over,
        // bring it back.
        tokio::time::sleep(Duration::from_millis(150)).await;
        let leader = cluster.read().await.leader_of(b"lin0").await;
        if let Some(leader) = leader {
            cluster.write().await.stop(leader).await.unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            cluster.write().await.restart(leader).unwrap();
        }
        for c in clients {
            c.await.unwrap();
        }
        let history = history.lock().clone();
        let mut checked = 0;
        for (key, events) in &history {
            assert!(
                linearizable(events),
                "key lin{key}: history is not linearizable: {events:#?}"
            );
            checked += events.len();
        }
        assert!(
            checked >= 40,
            "too few operations completed to mean anything: {checked}"
        );
        cluster.write().await.close().await.unwrap();
    });
}
