//! Split and merge latency on an embedded node: splits of a range holding
//! no keys and of one holding `SPLIT_BENCH_KEYS` keys (1,000,000 by
//! default), measured in the same run. A split is metadata only, so the
//! two must be about equal. Then the same ranges merged back.
//!
//! `cargo run --release --bin bench-split` (with the workspace's target dir).

use std::time::Instant;

use bytes::Bytes;
use flotilla::{Engine, EngineConfig, WriteOp};
use hdrhistogram::Histogram;

const SPLITS: usize = 200;

fn key(prefix: &str, i: usize) -> Bytes {
    Bytes::from(format!("{prefix}{i:010}"))
}

fn summary(name: &str, h: &Histogram<u64>) {
    println!(
        "{name:<28} n={:<5} p50 {:>8.3} ms  p99 {:>8.3} ms  max {:>8.3} ms",
        h.len(),
        h.value_at_quantile(0.5) as f64 / 1e3,
        h.value_at_quantile(0.99) as f64 / 1e3,
        h.max() as f64 / 1e3
    );
}

/// Split the range holding `prefix` keys at `SPLITS` evenly spaced keys of
/// `0..span`, always splitting the last (right-hand) range; returns the
/// latencies and the new range ids, left to right.
async fn split_all(engine: &Engine, prefix: &str, span: usize) -> (Histogram<u64>, Vec<u64>) {
    let mut h = Histogram::new(3).expect("histogram");
    let mut ids = Vec::new();
    let step = (span / (SPLITS + 1)).max(1);
    for i in 1..=SPLITS {
        let at = key(prefix, i * step);
        let t = Instant::now();
        let id = engine.split(at).await.expect("split");
        h.record(t.elapsed().as_micros() as u64).expect("record");
        ids.push(id);
    }
    (h, ids)
}

fn main() {
    let keys: usize = std::env::var("SPLIT_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    rt.block_on(async {
        let config = EngineConfig::new(dir.path().join("node"));
        let engine = Engine::open(config).expect("open");
        // Range "a…" gets the keys; "z…" stays empty. Split them apart first.
        engine.split("m").await.expect("split at m");
        let t = Instant::now();
        let value = Bytes::from(vec![b'v'; 100]);
        for batch in 0..keys.div_ceil(1000) {
            let ops = (batch * 1000..((batch + 1) * 1000).min(keys))
                .map(|i| WriteOp::Put {
                    key: key("a", i),
                    value: value.clone(),
                })
                .collect();
            engine.write_batch(ops).await.expect("load");
        }
        let load = t.elapsed();
        println!(
            "# bench-split: embedded node, {keys} keys of 11 B + 100 B loaded in {:.1} s; {SPLITS} splits per case",
            load.as_secs_f64()
        );
        let (full, full_ids) = split_all(&engine, "a", keys).await;
        let (empty, empty_ids) = split_all(&engine, "z", keys).await;
        summary(&format!("split, range of {keys} keys"), &full);
        summary("split, empty range", &empty);
        // Merge back, right to left: each merge absorbs the last range.
        let mut merges = Histogram::<u64>::new(3).expect("histogram");
        for ids in [&full_ids, &empty_ids] {
            for &right in ids.iter().rev() {
                // The left neighbour changes as ranges merge: look it up.
                let ranges = engine.ranges().await.expect("ranges");
                let pos = ranges
                    .iter()
                    .position(|r| r.descriptor.id == right)
                    .expect("range");
                let left = ranges[pos - 1].descriptor.id;
                let t = Instant::now();
                engine.merge(left, right).await.expect("merge");
                merges
                    .record(t.elapsed().as_micros() as u64)
                    .expect("record");
            }
        }
        summary("merge (both cases)", &merges);
        let left = engine.ranges().await.expect("ranges").len();
        println!("ranges left after merging back: {left}");
        let got = engine
            .get(key("a", keys / 2))
            .await
            .expect("get")
            .map(|v| v.len());
        println!("key a{:010} after all: {got:?} bytes", keys / 2);
        engine.close().await.expect("close");
    });
}
