//! The embedded single node: CRUD, scans across many ranges, write
//! batches, split and merge with data intact, bad input, reopen, and
//! kill -9 of a writing child process without losing an acknowledged write.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use flotilla::{Consistency, Engine, EngineConfig, Error, WriteOp};

mod common;
use common::runtime;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// A lone writer's put costs one fsync (its entry), not two: the batch
/// that only advances the commit index is written without a sync.
#[test]
fn a_lone_writer_pays_one_fsync_per_write() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let engine = Engine::open(EngineConfig::new(dir.path())).unwrap();
        engine.put("warm-up", "x").await.unwrap();
        let before = engine.stats().await.unwrap();
        for i in 0..200 {
            engine.put(format!("k{i}"), "v").await.unwrap();
        }
        let after = engine.stats().await.unwrap();
        let fsyncs = after.wal_fsyncs - before.wal_fsyncs;
        assert!(
            fsyncs >= 200,
            "every acknowledged write was synced: {fsyncs}"
        );
        assert!(fsyncs <= 220, "one fsync per write, not two: {fsyncs}");
        engine.close().await.unwrap();
    });
    // And what was acknowledged is there after a reopen.
    runtime().block_on(async {
        let engine = Engine::open(EngineConfig::new(dir.path())).unwrap();
        for i in 0..200 {
            assert_eq!(engine.get(format!("k{i}")).await.unwrap(), Some(b("v")));
        }
        engine.close().await.unwrap();
    });
}

#[test]
fn crud_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let engine = Engine::open(EngineConfig::new(dir.path())).unwrap();
        engine.put("a", "1").await.unwrap();
        engine.put("b", "2").await.unwrap();
        engine.put("a", "3").await.unwrap();
        engine.delete("b").await.unwrap();
        engine.delete("never-written").await.unwrap();
        assert_eq!(engine.get("a").await.unwrap(), Some(b("3")));
        assert_eq!(engine.get("b").await.unwrap(), None);
        assert_eq!(
            engine.get_with("a", Consistency::Stale).await.unwrap(),
            Some(b("3"))
        );
        engine.close().await.unwrap();
        assert!(matches!(engine.put("c", "4").await, Err(Error::Closed)));
    });
    runtime().block_on(async {
        let engine = Engine::open(EngineConfig::new(dir.path())).unwrap();
        assert_eq!(engine.get("a").await.unwrap(), Some(b("3")));
        assert_eq!(engine.get("b").await.unwrap(), None);
        engine.close().await.unwrap();
    });
}

#[test]
fn scans_cross_many_ranges_in_key_order() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let engine = Engine::open(EngineConfig::new(dir.path())).unwrap();
        for i in 0..500 {
            engine
                .put(format!("k{i:04}"), format!("v{i}"))
                .await
                .unwrap();
        }
        for split in (25..500).step_by(25) {
            engine.split(format!("k{split:04}")).await.unwrap();
        }
        let ranges = engine.ranges().await.unwrap();
        assert_eq!(ranges.len(), 20);
        for pair in ranges.windows(2) {
            assert_eq!(
                pair[0].descriptor.end, pair[1].descriptor.start,
                "ranges cover the key space"
            );
        }
        let all = engine
            .scan(Bytes::new()..Bytes::new(), usize::MAX)
            .await
            .unwrap();
        assert_eq!(all.len(), 500);
        assert!(all.windows(2).all(|w| w[0].0 < w[1].0), "key order");
        let some = engine.scan(b("k0020")..b("k0130"), 1000).await.unwrap();
        assert_eq!(some.len(), 110);
        assert_eq!(some[0].0, b("k0020"));
        let limited = engine.scan(b("k0020")..b("k0130"), 7).await.unwrap();
        assert_eq!(limited.len(), 7);
        assert!(engine.scan(b("z")..b("a"), 10).await.unwrap().is_empty());
        engine.close().await.unwrap();
    });
}

#[test]
fn write_batches_are_atomic_within_a_range_and_refused_across() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let engine = Engine::open(EngineConfig::new(dir.path())).unwrap();
        engine
            .write_batch(vec![
                WriteOp::Put {
                    key: b("x1"),
                    value: b("1"),
                },
                WriteOp::Put {
                    key: b("x2"),
                    value: b("2"),
                },
                WriteOp::Delete { key: b("x3") },
            ])
            .await
            .unwrap();
        assert_eq!(engine.get("x2").await.unwrap(), Some(b("2")));
        engine.split("x2").await.unwrap();
        let crossing = engine
            .write_batch(vec![
                WriteOp::Put {
                    key: b("x1"),
                    value: b("9"),
                },
                WriteOp::Put {
                    key: b("x2"),
                    value: b("9"),
                },
            ])
            .await;
        assert!(
            matches!(crossing, Err(Error::CrossRangeBatch { .. })),
            "{crossing:?}"
        );
        assert_eq!(
            engine.get("x1").await.unwrap(),
            Some(b("1")),
            "nothing of a refused batch is written"
        );
        assert_eq!(engine.get("x2").await.unwrap(), Some(b("2")));
        engine.close().await.unwrap();
    });
}

#[test]
fn split_and_merge_keep_every_key_and_bump_epochs() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let engine = Engine::open(EngineConfig::new(dir.path())).unwrap();
        for i in 0..200 {
            engine
                .put(format!("m{i:03}"), format!("{i}"))
                .await
                .unwrap();
        }
        let before = engine.ranges().await.unwrap()[0].descriptor.clone();
        let right = engine.split("m100").await.unwrap();
        let ranges = engine.ranges().await.unwrap();
        assert_eq!(ranges.len(), 2);
        assert!(ranges[0].descriptor.epoch.version > before.epoch.version);
        assert_eq!(ranges[1].descriptor.id, right);
        // Writes on both sides after the split.
        engine.put("m050", "left").await.unwrap();
        engine.put("m150", "right").await.unwrap();
        // Splitting at an existing boundary is refused with a reason.
        assert!(matches!(
            engine.split("m100").await,
            Err(Error::AdminRefused(_))
        ));
        // Merging ranges that are not adjacent in that order is refused.
        assert!(matches!(
            engine.merge(right, ranges[0].descriptor.id).await,
            Err(Error::AdminRefused(_))
        ));
        engine.merge(ranges[0].descriptor.id, right).await.unwrap();
        let merged = engine.ranges().await.unwrap();
        assert_eq!(merged.len(), 1);
        assert!(merged[0].descriptor.start.is_empty() && merged[0].descriptor.end.is_empty());
        engine.put("m199", "after-merge").await.unwrap();
        let all = engine
            .scan(Bytes::new()..Bytes::new(), usize::MAX)
            .await
            .unwrap();
        assert_eq!(all.len(), 200);
        assert_eq!(engine.get("m050").await.unwrap(), Some(b("left")));
        assert_eq!(engine.get("m150").await.unwrap(), Some(b("right")));
        engine.close().await.unwrap();
    });
    // The merged layout and the data survive a restart.
    runtime().block_on(async {
        let engine = Engine::open(EngineConfig::new(dir.path())).unwrap();
        assert_eq!(engine.ranges().await.unwrap().len(), 1);
        assert_eq!(engine.get("m199").await.unwrap(), Some(b("after-merge")));
        engine.close().await.unwrap();
    });
}

#[test]
fn bad_input_gets_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let engine = Engine::open(EngineConfig::new(dir.path())).unwrap();
        assert!(matches!(
            engine.put("", "v").await,
            Err(Error::InvalidRequest(_))
        ));
        let huge_key = vec![b'k'; 100_000];
        let err = engine.put(huge_key, "v").await.unwrap_err();
        assert!(err.to_string().contains("exceeds the limit"), "{err}");
        let huge_value = vec![0u8; 9 << 20];
        assert!(matches!(
            engine.put("k", huge_value).await,
            Err(Error::InvalidRequest(_))
        ));
        assert!(matches!(
            engine.merge(1, 2).await,
            Err(Error::RangeNotFound(_))
        ));
        // The node is still fine.
        engine.put("k", "v").await.unwrap();
        engine.close().await.unwrap();
    });
    let err = EngineConfig::builder(dir.path())
        .election_ticks(2, 1)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("raft"), "{err}");
    let mut config = EngineConfig::new(dir.path());
    config.node_id = 0;
    assert!(matches!(
        config.validate(),
        Err(Error::Config {
            field: "node_id",
            ..
        })
    ));
    // A data directory of another node is refused.
    let mut other = EngineConfig::new(dir.path());
    other.node_id = 2;
    assert!(Engine::open(other).is_err());
}

#[test]
fn log_compaction_keeps_data_across_restart() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let config = EngineConfig::builder(dir.path())
            .log_compact_entries(50)
            .build()
            .unwrap();
        let engine = Engine::open(config).unwrap();
        for i in 0..400 {
            engine
                .put(format!("c{i:03}"), format!("{i}"))
                .await
                .unwrap();
        }
        assert!(engine.stats().await.unwrap().compactions >= 5);
        engine.close().await.unwrap();
    });
    runtime().block_on(async {
        let engine = Engine::open(EngineConfig::new(dir.path())).unwrap();
        let all = engine
            .scan(Bytes::new()..Bytes::new(), usize::MAX)
            .await
            .unwrap();
        assert_eq!(all.len(), 400);
        engine.put("c999", "more").await.unwrap();
        engine.close().await.unwrap();
    });
}

const CHILD_ENV: &str = "FLOTILLA_CRASH_CHILD_DIR";

/// The child: write keys forever, printing each acknowledged one.
fn crash_child(dir: &str) {
    let rt = runtime();
    rt.block_on(async {
        // Two raft loops: the killed writer's ranges are shared between them.
        let config = EngineConfig::builder(dir)
            .pollers(2)
            .build()
            .expect("config");
        let engine = Engine::open(config).expect("child opens the engine");
        let start: u64 = std::env::var("FLOTILLA_CRASH_CHILD_START")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut stdout = std::io::stdout();
        let mut i = start;
        loop {
            // Every fourth write is a 3-key batch to check atomicity too.
            if i % 4 == 0 {
                let ops = (0..3)
                    .map(|j| WriteOp::Put {
                        key: Bytes::from(format!("batch{i:08}-{j}")),
                        value: Bytes::from(format!("{i}")),
                    })
                    .collect();
                engine.write_batch(ops).await.expect("child write");
            } else {
                engine
                    .put(format!("key{i:08}"), format!("{i}"))
                    .await
                    .expect("child write");
            }
            writeln!(stdout, "{i}").expect("stdout");
            stdout.flush().expect("stdout");
            i += 1;
            if i % 97 == 0 {
                engine
                    .split(format!("key{i:08}"))
                    .await
                    .expect("child split");
            }
        }
    });
}

#[test]
fn kill_9_never_loses_an_acknowledged_write() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        crash_child(&dir);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked: Vec<u64> = Vec::new();
    let rounds = std::env::var("FLOTILLA_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    for round in 0..rounds {
        let start = acked.last().map(|l| l + 1).unwrap_or(0);
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "kill_9_never_loses_an_acknowledged_write",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_ENV, dir.path())
            .env("FLOTILLA_CRASH_CHILD_START", start.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        // Kill after a varying number of acknowledged writes (not time):
        // the outcome does not depend on how fast the machine is.
        let kill_after = 50 + round * 37;
        let mut seen = 0;
        while let Some(Ok(line)) = lines.next() {
            if let Ok(i) = line.trim().parse::<u64>() {
                acked.push(i);
                seen += 1;
                if seen >= kill_after {
                    break;
                }
            }
        }
        child.kill().unwrap(); // SIGKILL
        let _ = child.wait();
        // Whatever the child printed before dying was acknowledged too.
        for line in lines.map_while(Result::ok) {
            if let Ok(i) = line.trim().parse::<u64>() {
                acked.push(i);
            }
        }
        runtime().block_on(async {
            let engine = Engine::open(EngineConfig::new(dir.path())).unwrap();
            for &i in &acked {
                if i % 4 == 0 {
                    for j in 0..3 {
                        let value = engine.get(format!("batch{i:08}-{j}")).await.unwrap();
                        assert_eq!(
                            value,
                            Some(Bytes::from(format!("{i}"))),
                            "round {round}: batch {i} lost"
                        );
                    }
                } else {
                    let value = engine.get(format!("key{i:08}")).await.unwrap();
                    assert_eq!(
                        value,
                        Some(Bytes::from(format!("{i}"))),
                        "round {round}: write {i} lost"
                    );
                }
            }
            // Exactly the writer's prefix: one sequential writer, so the
            // writes present must be 0..=M with no gap, every batch whole,
            // M at least the last acknowledged and at most one beyond it
            // (the write in flight when the child died).
            let rows = engine
                .scan(Bytes::new()..Bytes::new(), usize::MAX)
                .await
                .unwrap();
            let mut present: std::collections::BTreeMap<u64, usize> = Default::default();
            for (key, value) in &rows {
                let key = std::str::from_utf8(key).unwrap();
                let Some(digits) = key
                    .strip_prefix("key")
                    .or_else(|| key.strip_prefix("batch").map(|k| &k[..8]))
                else {
                    continue;
                };
                let i: u64 = digits.parse().unwrap();
                assert_eq!(value, &Bytes::from(format!("{i}")), "round {round}: {key}");
                *present.entry(i).or_default() += 1;
            }
            let top = *present.keys().last().unwrap();
            assert_eq!(
                present.len() as u64,
                top + 1,
                "round {round}: a gap below {top}"
            );
            for (&i, &n) in &present {
                assert_eq!(
                    n,
                    if i % 4 == 0 { 3 } else { 1 },
                    "round {round}: write {i} torn"
                );
            }
            let last_acked = *acked.iter().max().unwrap();
            assert!(
                top == last_acked || top == last_acked + 1,
                "round {round}: {top} vs {last_acked}"
            );
            let ranges = engine.ranges().await.unwrap();
            for pair in ranges.windows(2) {
                assert_eq!(
                    pair[0].descriptor.end, pair[1].descriptor.start,
                    "ranges cover the key space after a crash"
                );
            }
            engine.close().await.unwrap();
        });
    }
    assert!(acked.len() as u64 >= 6 * 50);
    let _ = Duration::ZERO;
}

#[test]
fn idle_ranges_hibernate_and_wake_on_a_write() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let config = EngineConfig::builder(dir.path())
            .tick(Duration::from_millis(5))
            .build()
            .unwrap();
        let engine = Engine::open(config).unwrap();
        for i in 1..100 {
            engine.split(format!("h{i:03}")).await.unwrap();
        }
        let ranges = engine.ranges().await.unwrap().len() as u64;
        assert_eq!(ranges, 100);
        // Wait (bounded) until the tick loop reports every range asleep.
        let mut asleep = 0;
        for _ in 0..2_000 {
            asleep = engine.stats().await.unwrap().ranges_hibernating;
            if asleep == ranges {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(asleep, ranges, "idle ranges did not all hibernate");
        // A write wakes its range, commits, and the range sleeps again.
        engine.put("h050x", "awake").await.unwrap();
        assert_eq!(engine.get("h050x").await.unwrap(), Some(b("awake")));
        engine.close().await.unwrap();
    });
}

/// Many writers over many ranges: an acknowledged write is already in the
/// state store (a local read right after the answer sees it), reads back
/// linearizably, and survives a reopen.
#[test]
fn acknowledged_writes_are_readable_at_once_under_concurrency() {
    let dir = tempfile::tempdir().unwrap();
    const WRITERS: usize = 64;
    const PUTS: usize = 100;
    runtime().block_on(async {
        let engine = std::sync::Arc::new(Engine::open(EngineConfig::new(dir.path())).unwrap());
        for w in 1..WRITERS {
            engine.split(format!("w{w:03}")).await.unwrap();
        }
        let tasks: Vec<_> = (0..WRITERS)
            .map(|w| {
                let engine = engine.clone();
                tokio::spawn(async move {
                    for i in 0..PUTS {
                        let key = format!("w{w:03}-{i:04}");
                        let value = Bytes::from(format!("{w}:{i}"));
                        engine.put(key.clone(), value.clone()).await.unwrap();
                        // The local read first: it is served at once,
                        // with no raft round that would wait for the write.
                        let stale = engine
                            .get_with(key.clone(), Consistency::Stale)
                            .await
                            .unwrap();
                        assert_eq!(
                            stale,
                            Some(value.clone()),
                            "local read of {key} after its ack"
                        );
                        let read = engine.get(key.clone()).await.unwrap();
                        assert_eq!(read, Some(value), "linearizable read of {key}");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        engine.close().await.unwrap();
        drop(engine);
        let engine = Engine::open(EngineConfig::new(dir.path())).unwrap();
        let rows = engine
            .scan(Bytes::new()..Bytes::new(), usize::MAX)
            .await
            .unwrap();
        assert_eq!(rows.len(), WRITERS * PUTS);
        for (key, value) in rows {
            let key = std::str::from_utf8(&key).unwrap();
            let (w, i) = key[1..].split_once('-').unwrap();
            let expected = format!(
                "{}:{}",
                w.parse::<usize>().unwrap(),
                i.parse::<usize>().unwrap()
            );
            assert_eq!(value, Bytes::from(expected), "{key} after reopen");
        }
        engine.close().await.unwrap();
    });
}
