//! Several raft loops ("pollers") on one node: ranges spread over the
//! loops, writes, reads and scans reach every range wherever it lives,
//! merges pull a source over to its target's loop under concurrent writes
//! without losing an acknowledged write, a data directory reopens with any
//! number of loops, and seeded random splits and merges under writes agree
//! with a model.

mod common;
/// The chaos harness's seeded generator (the tests need no `rand`).
#[path = "chaos/rng.rs"]
#[allow(dead_code)] // this test draws numbers, it shuffles nothing
mod rng;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::runtime;
use flotilla::{Consistency, Engine, EngineConfig, Error};
use rng::Rng;

fn config(dir: &std::path::Path, pollers: usize) -> EngineConfig {
    EngineConfig::builder(dir)
        .pollers(pollers)
        .build()
        .expect("valid config")
}

fn key(i: usize) -> String {
    format!("key{i:04}")
}

/// Range ids in key order.
async fn range_ids(engine: &Engine) -> Vec<u64> {
    engine
        .ranges()
        .await
        .expect("ranges")
        .into_iter()
        .map(|r| r.descriptor.id)
        .collect()
}

/// Writers that put their own keys in a loop until stopped, retrying what
/// fails (a range frozen for a merge, a request racing a hand-over), and
/// return the last acknowledged value of every key.
fn start_writers(
    engine: &Arc<Engine>,
    writers: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<BTreeMap<String, String>>> {
    (0..writers)
        .map(|w| {
            let engine = engine.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut acked = BTreeMap::new();
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    // Keys spread over the whole key space, so over every range.
                    let k = key((i * 37 + w * 101) % 1000);
                    let k = format!("{k}-w{w}");
                    let v = format!("v{i}");
                    match engine.put(k.clone(), v.clone()).await {
                        Ok(()) => {
                            acked.insert(k, v);
                            i += 1;
                        }
                        // Only the refusals a merge causes, retried: never
                        // a lost request (a timeout), a closed loop, or a
                        // range the node holds reported missing.
                        Err(Error::Busy(_) | Error::EpochMismatch { .. }) => {
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                        Err(e) => panic!("write {k}: {e}"),
                    }
                }
                acked
            })
        })
        .collect()
}

#[test]
fn merges_across_raft_loops_under_writes_lose_nothing() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let engine = Arc::new(Engine::open(config(dir.path(), 4)).unwrap());
        for i in (0..1000).step_by(10) {
            engine.put(key(i), format!("base{i}")).await.unwrap();
        }
        // 32 ranges: their homes spread over the four loops.
        for i in 1..32 {
            engine.split(key(i * 31)).await.unwrap();
        }
        assert_eq!(range_ids(&engine).await.len(), 32);
        // Reads and scans reach every range from any loop at once.
        for i in (0..1000).step_by(10) {
            let got = engine.get(key(i)).await.unwrap();
            assert_eq!(got, Some(Bytes::from(format!("base{i}"))), "{}", key(i));
        }
        let all = engine
            .scan(Bytes::new()..Bytes::new(), 10_000)
            .await
            .unwrap();
        assert_eq!(all.len(), 100);
        assert!(all.windows(2).all(|w| w[0].0 < w[1].0), "scan in key order");

        let stop = Arc::new(AtomicBool::new(false));
        let writers = start_writers(&engine, 8, &stop);
        // Merge everything back, left to right; most pairs live in
        // different loops, so most merges hand a range over.
        let mut merges = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            assert!(
                std::time::Instant::now() < deadline,
                "merging back did not finish: {merges} merges"
            );
            let ids = range_ids(&engine).await;
            if ids.len() == 1 {
                break;
            }
            match engine.merge(ids[0], ids[1]).await {
                Ok(()) => merges += 1,
                Err(e) => {
                    let text = e.to_string();
                    // A merge may be refused while its source has a write
                    // in flight; never for a reason that would stay.
                    assert!(
                        !text.contains("not adjacent") && !text.contains("not found"),
                        "{text}"
                    );
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            assert!(merges <= 31, "more merges than ranges");
        }
        stop.store(true, Ordering::Relaxed);
        let mut acked = BTreeMap::new();
        for w in writers {
            acked.extend(w.await.unwrap());
        }
        assert!(!acked.is_empty(), "the writers made progress");
        let stats = engine.stats().await.unwrap();
        assert_eq!(stats.merges, 31, "{stats:?}");
        assert!(stats.handovers > 0, "no merge crossed loops: {stats:?}");
        for (k, v) in &acked {
            let got = engine.get(k.clone()).await.unwrap();
            assert_eq!(got.as_deref(), Some(v.as_bytes()), "{k}");
        }
        let scanned = engine
            .scan(Bytes::new()..Bytes::new(), 100_000)
            .await
            .unwrap();
        assert_eq!(scanned.len(), 100 + acked.len());
        // Split again, then reopen with other loop counts.
        for i in 1..8 {
            engine.split(key(i * 125)).await.unwrap();
        }
        engine.close().await.unwrap();
        drop(engine);
        for pollers in [1, 3] {
            let engine = Engine::open(config(dir.path(), pollers)).unwrap();
            assert_eq!(range_ids(&engine).await.len(), 8, "pollers = {pollers}");
            for (k, v) in &acked {
                let got = engine
                    .get_with(k.clone(), Consistency::Stale)
                    .await
                    .unwrap();
                assert_eq!(
                    got.as_deref(),
                    Some(v.as_bytes()),
                    "{k} with {pollers} loops"
                );
            }
            for i in 0..8 {
                engine
                    .put(key(i * 125 + 1), format!("after-{pollers}"))
                    .await
                    .unwrap();
            }
            let scanned = engine
                .scan(Bytes::new()..Bytes::new(), 100_000)
                .await
                .unwrap();
            assert_eq!(scanned.len(), 100 + acked.len() + 8, "pollers = {pollers}");
            engine.close().await.unwrap();
        }
    });
}

/// A split's new range usually starts in another loop than its parent:
/// it must be there, writable, readable and listed the moment the split
/// returns.
#[test]
fn a_new_range_is_usable_the_moment_its_split_returns() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let engine = Engine::open(config(dir.path(), 4)).unwrap();
        for i in 1..=60 {
            let at = key(i * 10);
            let new_range = engine.split(at.clone()).await.unwrap();
            engine.put(at.clone(), format!("v{i}")).await.unwrap();
            let got = engine.get(at.clone()).await.unwrap();
            assert_eq!(got, Some(Bytes::from(format!("v{i}"))), "{at}");
            let ranges = engine.ranges().await.unwrap();
            assert_eq!(ranges.len(), i + 1, "after split {i}");
            assert!(ranges.iter().any(|r| r.descriptor.id == new_range));
            assert_eq!(engine.stats().await.unwrap().ranges, i as u64 + 1);
        }
        let all = engine
            .scan(Bytes::new()..Bytes::new(), 1_000)
            .await
            .unwrap();
        assert_eq!(all.len(), 60);
        engine.close().await.unwrap();
    });
}

#[test]
fn impossible_poller_counts_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    for bad in [0, 65] {
        let err = EngineConfig::builder(dir.path())
            .pollers(bad)
            .build()
            .expect_err("refused");
        let text = err.to_string();
        assert!(text.contains("pollers"), "{text}");
    }
}

/// `FLOTILLA_POLLERS_SEEDS` seeds (default 3): writers put and delete
/// their own keys while an admin task splits and merges at random over 1
/// to 4 raft loops; every acknowledged state must be what a model says,
/// before and after a reopen with another loop count.
#[test]
fn random_splits_and_merges_under_writes_agree_with_a_model() {
    let seeds: u64 = std::env::var("FLOTILLA_POLLERS_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    for seed in 1..=seeds {
        random_run(seed);
    }
}

fn random_run(seed: u64) {
    let pollers = 1 + (seed % 4) as usize;
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let engine = Arc::new(Engine::open(config(dir.path(), pollers)).unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..4u64)
            .map(|w| {
                let engine = engine.clone();
                tokio::spawn(async move {
                    let mut rng = Rng::new(seed * 1_000 + w + 1);
                    let mut model: BTreeMap<String, Option<String>> = BTreeMap::new();
                    for n in 0..300u64 {
                        let k = format!("k{:03}-w{w}", rng.below(200));
                        let delete = rng.below(5) == 0;
                        // Retried until it succeeds: the model then holds
                        // exactly what the engine must.
                        let deadline = std::time::Instant::now() + Duration::from_secs(30);
                        loop {
                            let result = if delete {
                                engine.delete(k.clone()).await
                            } else {
                                engine.put(k.clone(), format!("{seed}-{w}-{n}")).await
                            };
                            match result {
                                Ok(()) => break,
                                Err(Error::Busy(_) | Error::EpochMismatch { .. }) => {
                                    assert!(std::time::Instant::now() < deadline, "seed {seed}: {k}");
                                    tokio::time::sleep(Duration::from_millis(1)).await;
                                }
                                Err(e) => panic!("seed {seed}: write {k}: {e}"),
                            }
                        }
                        model.insert(k, (!delete).then(|| format!("{seed}-{w}-{n}")));
                    }
                    model
                })
            })
            .collect();
        let admin = {
            let engine = engine.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut rng = Rng::new(seed * 7_919);
                let (mut splits, mut merges) = (0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    let ranges = engine.ranges().await.expect("ranges");
                    if rng.below(2) == 0 || ranges.len() < 2 {
                        let at = format!("k{:03}", rng.below(200));
                        if engine.split(at).await.is_ok() {
                            splits += 1;
                        }
                    } else {
                        let i = rng.below(ranges.len() as u64 - 1) as usize;
                        let (l, r) = (ranges[i].descriptor.id, ranges[i + 1].descriptor.id);
                        match engine.merge(l, r).await {
                            Ok(()) => merges += 1,
                            Err(Error::Busy(_) | Error::AdminRefused(_) | Error::EpochMismatch { .. }) => {}
                            Err(e) => panic!("seed {seed}: merge {l} {r}: {e}"),
                        }
                    }
                    // Scans see every range, wherever it lives, in order.
                    let all = engine
                        .scan(Bytes::new()..Bytes::new(), 100_000)
                        .await
                        .expect("scan");
                    assert!(all.windows(2).all(|p| p[0].0 < p[1].0), "seed {seed}");
                }
                (splits, merges)
            })
        };
        let mut model = BTreeMap::new();
        for w in writers {
            model.extend(w.await.unwrap());
        }
        stop.store(true, Ordering::Relaxed);
        let (splits, merges) = admin.await.unwrap();
        assert!(splits > 0, "seed {seed}: no split");
        let expected: Vec<(Bytes, Bytes)> = model
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| (Bytes::from(k.clone()), Bytes::from(v.clone()))))
            .collect();
        let check = |engine: Arc<Engine>, label: &'static str| {
            let expected = expected.clone();
            let model = model.clone();
            async move {
                for (k, v) in &model {
                    let got = engine.get(k.clone()).await.unwrap();
                    assert_eq!(got.as_deref(), v.as_deref().map(str::as_bytes), "seed {seed} {label}: {k}");
                }
                let all = engine
                    .scan(Bytes::new()..Bytes::new(), 100_000)
                    .await
                    .unwrap();
                assert_eq!(all, expected, "seed {seed} {label}: full scan");
            }
        };
        check(engine.clone(), "live").await;
        let ranges_before = engine.ranges().await.unwrap().len();
        engine.close().await.unwrap();
        drop(engine);
        let reopened = Arc::new(Engine::open(config(dir.path(), 5 - pollers)).unwrap());
        assert_eq!(reopened.ranges().await.unwrap().len(), ranges_before, "seed {seed}");
        check(reopened.clone(), "reopened").await;
        reopened.close().await.unwrap();
        eprintln!("seed {seed}: {pollers} loops, {splits} splits, {merges} merges, {ranges_before} ranges at the end");
    });
}
