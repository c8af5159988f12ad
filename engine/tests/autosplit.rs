//! Automatic split by size and by load, and the optional automatic merge,
//! on an embedded node with small thresholds. The checker runs on the
//! node's ticks (about once a second), so waits are bounded polls.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{eventually, runtime};
use flotilla::{AutoSplitConfig, Engine, EngineConfig, WriteOp};

fn open(dir: &std::path::Path, auto: AutoSplitConfig) -> Engine {
    let mut config = EngineConfig::new(dir.join("node"));
    config.tick = Duration::from_millis(20);
    config.auto_split = auto;
    Engine::open(config).expect("open")
}

async fn range_count(engine: &Engine) -> usize {
    engine.ranges().await.map(|r| r.len()).unwrap_or(0)
}

#[test]
fn a_range_over_the_size_limit_splits_at_its_middle() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let engine = open(
            dir.path(),
            AutoSplitConfig {
                split_size_bytes: 1 << 20,
                split_load_qps: 0,
                ..AutoSplitConfig::default()
            },
        );
        // 3 MiB in 48 values of 64 KiB: the first range must split, and
        // its halves again, until every range is under 1 MiB.
        let value = Bytes::from(vec![7u8; 64 << 10]);
        for i in 0..48 {
            engine.put(format!("k{i:03}"), value.clone()).await.unwrap();
        }
        eventually(
            "split down to ranges under 1 MiB",
            Duration::from_secs(30),
            || async { range_count(&engine).await >= 4 },
        )
        .await;
        for i in 0..48 {
            let got = engine.get(format!("k{i:03}")).await.unwrap();
            assert_eq!(got.as_deref(), Some(value.as_ref()), "k{i:03}");
        }
        let stats = engine.stats().await.unwrap();
        assert!(stats.auto_splits >= 3, "{stats:?}");
        assert_eq!(stats.auto_merges, 0, "merges are off by default");
        engine.close().await.unwrap();
    });
}

#[test]
fn a_busy_range_splits_at_the_median_of_its_requests() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let engine = open(
            dir.path(),
            AutoSplitConfig {
                split_size_bytes: 0,
                split_load_qps: 200,
                load_window: Duration::from_secs(1),
                ..AutoSplitConfig::default()
            },
        );
        // Traffic on keys c… and x…: the median of the samples lies in one
        // of them, so the split separates part of the load.
        let mut i = 0u64;
        eventually("a load split", Duration::from_secs(30), || {
            i += 1;
            let engine = &engine;
            let n = i;
            async move {
                for j in 0..50 {
                    let key = if (n + j) % 2 == 0 { "c" } else { "x" };
                    let key = format!("{key}{:04}", (n * 50 + j) % 1000);
                    let _ = engine.get(key.clone()).await;
                    let _ = engine.put(key, "v").await;
                }
                range_count(engine).await >= 2
            }
        })
        .await;
        let ranges = engine.ranges().await.unwrap();
        let boundary = ranges
            .iter()
            .map(|r| r.descriptor.end.clone())
            .find(|e| !e.is_empty())
            .unwrap();
        assert!(
            boundary.as_ref() > b"c".as_ref() && boundary.as_ref() <= b"x9999".as_ref(),
            "split at {boundary:?}"
        );
        assert!(engine.stats().await.unwrap().auto_splits >= 1);
        engine.close().await.unwrap();
    });
}

#[test]
fn small_cold_neighbours_merge_when_enabled() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let engine = open(
            dir.path(),
            AutoSplitConfig {
                merge: true,
                merge_size_bytes: 1 << 20,
                split_size_bytes: 4 << 20,
                check_interval: Duration::from_secs(1),
                load_window: Duration::from_secs(1),
                ..AutoSplitConfig::default()
            },
        );
        let ops = ["a", "f", "k", "p", "u"]
            .iter()
            .map(|k| WriteOp::Put {
                key: Bytes::from(k.to_string()),
                value: Bytes::from_static(b"small"),
            })
            .collect::<Vec<_>>();
        for op in ops {
            engine.write_batch(vec![op]).await.unwrap();
        }
        for key in ["f", "k", "p", "u"] {
            engine.split(key).await.unwrap();
        }
        assert_eq!(range_count(&engine).await, 5);
        eventually(
            "merged back to one range",
            Duration::from_secs(60),
            || async { range_count(&engine).await == 1 },
        )
        .await;
        for key in ["a", "f", "k", "p", "u"] {
            assert_eq!(
                engine.get(key).await.unwrap().as_deref(),
                Some(&b"small"[..])
            );
        }
        assert!(engine.stats().await.unwrap().auto_merges >= 4);
        engine.close().await.unwrap();
    });
}

#[test]
fn impossible_auto_split_settings_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = EngineConfig::new(dir.path());
    config.auto_split.merge = true;
    config.auto_split.merge_size_bytes = config.auto_split.split_size_bytes;
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains("auto_split.merge_size_bytes"), "{err}");
    let mut config = EngineConfig::new(dir.path());
    config.auto_split.load_window = Duration::ZERO;
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains("auto_split.load_window"), "{err}");
}
