//! A crash at every step of a split and of a merge: a child process runs
//! writes, a split and a merge on an embedded node with one crash point
//! armed (`FLOTILLA_FAIL_POINT`, see `engine/src/failpoint.rs`) and aborts
//! there. The parent reopens the data directory and checks that every
//! acknowledged write is there, that the ranges tile the key space, and
//! that splits and merges still work; then it restarts once more and checks
//! again.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use common::{eventually, runtime};
use flotilla::{Engine, EngineConfig};

const CHILD_ENV: &str = "FLOTILLA_FAULT_POINT_CHILD";

const POINTS: [&str; 6] = [
    "split:persisted",
    "split:applied",
    "merge:freeze-persisted",
    "merge:freeze-applied",
    "merge:commit-persisted",
    "merge:commit-applied",
];

fn key(i: usize) -> String {
    // Spread over the alphabet so both halves of a split at "m" hold keys.
    format!("{}{i:03}", (b'a' + (i % 26) as u8) as char)
}

async fn write(engine: &Engine, from: usize, count: usize) {
    for i in from..from + count {
        engine.put(key(i), format!("v{i}")).await.expect("write");
        println!("ack {i}");
    }
}

/// The child: writes, split at "m", writes, merge back, writes. Prints
/// what was acknowledged.
fn child(dir: &str) {
    runtime().block_on(async {
        // Four raft loops (the check reopens with the default): the
        // split's new range most likely lives in another loop than range 1,
        // so the merge hands it over before freezing it.
        let config = EngineConfig::builder(dir)
            .pollers(4)
            .build()
            .expect("config");
        let engine = Engine::open(config).expect("child opens");
        write(&engine, 0, 40).await;
        let right = engine.split("m").await.expect("split");
        println!("split {right}");
        write(&engine, 40, 40).await;
        engine.merge(1, right).await.expect("merge");
        println!("merged");
        write(&engine, 80, 40).await;
        engine.close().await.expect("close");
        println!("done");
    });
}

/// Reopen `dir` and check it; returns the number of ranges.
fn check(dir: &std::path::Path, acked: &[usize], point: &str) -> usize {
    runtime().block_on(async {
        // A freeze whose driver died is undone after request_timeout.
        let mut config = EngineConfig::new(dir);
        config.request_timeout = Duration::from_secs(1);
        let engine = Engine::open(config).unwrap();
        for &i in acked {
            let got = engine.get(key(i)).await.unwrap();
            assert_eq!(
                got,
                Some(Bytes::from(format!("v{i}"))),
                "{point}: write {i}"
            );
        }
        let ranges = engine.ranges().await.unwrap();
        let mut bounds: Vec<(Bytes, Bytes)> = ranges
            .iter()
            .map(|r| (r.descriptor.start.clone(), r.descriptor.end.clone()))
            .collect();
        bounds.sort();
        assert!(bounds.first().unwrap().0.is_empty(), "{point}: {bounds:?}");
        assert!(bounds.last().unwrap().1.is_empty(), "{point}: {bounds:?}");
        for pair in bounds.windows(2) {
            assert_eq!(pair[0].1, pair[1].0, "{point}: ranges tile the key space");
        }
        eventually(
            &format!("{point}: no range stays frozen"),
            Duration::from_secs(20),
            || async {
                let ranges = engine.ranges().await.unwrap_or_default();
                ranges.iter().all(|r| r.merging_into.is_none())
            },
        )
        .await;
        let count = ranges.len();
        // The key space can still be reshaped.
        let extra = engine.split("t").await.unwrap();
        engine
            .merge(ranges_left_of(&engine, extra).await, extra)
            .await
            .unwrap();
        let mut ids: Vec<u64> = engine
            .ranges()
            .await
            .unwrap()
            .iter()
            .map(|r| r.descriptor.id)
            .collect();
        assert_eq!(ids.len(), count, "{point}");
        engine.close().await.unwrap();
        // The WAL holds the logs of exactly these ranges (a merged range's
        // log is dropped even if the crash came before its removal).
        let wal = flotilla_storage::wal::Wal::open(dir.join("wal"), Default::default()).unwrap();
        let mut groups = wal.groups();
        groups.sort_unstable();
        ids.sort_unstable();
        assert_eq!(groups, ids, "{point}: WAL groups");
        drop(wal);
        count
    })
}

async fn ranges_left_of(engine: &Engine, right: u64) -> u64 {
    let ranges = engine.ranges().await.unwrap();
    let start = ranges
        .iter()
        .find(|r| r.descriptor.id == right)
        .unwrap()
        .descriptor
        .start
        .clone();
    ranges
        .iter()
        .find(|r| r.descriptor.end == start)
        .unwrap()
        .descriptor
        .id
}

#[test]
fn a_crash_at_every_step_of_split_and_merge_recovers() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(&dir);
        return;
    }
    let exe = std::env::current_exe().unwrap();
    for point in POINTS {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(&exe)
            .args([
                "--exact",
                "a_crash_at_every_step_of_split_and_merge_recovers",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_ENV, dir.path())
            .env("FLOTILLA_FAIL_POINT", point)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{point}: the child never reached it");
        assert!(
            stderr.contains(&format!("fail point {point}")),
            "{point}: {stderr}"
        );
        let acked: Vec<usize> = BufReader::new(&out.stdout[..])
            .lines()
            .map_while(Result::ok)
            // The harness's "test … ..." has no newline: the first ack shares its line.
            .filter_map(|l| l.split("ack ").nth(1).and_then(|n| n.trim().parse().ok()))
            .collect();
        assert!(
            acked.len() >= 40,
            "{point}: {} writes acknowledged",
            acked.len()
        );
        let ranges = check(dir.path(), &acked, point);
        // The split either happened or not; the merge likewise: one or two
        // ranges, never a third or an overlap.
        assert!((1..=2).contains(&ranges), "{point}: {ranges} ranges");
        // A second restart finds the same state (recovery finished its work).
        assert_eq!(check(dir.path(), &acked, point), ranges, "{point}");
    }
}
