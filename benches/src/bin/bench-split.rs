//! Split and merge latency on an embedded node: splits of a range holding
//! no keys and of one holding `SPLIT_BENCH_KEYS` keys (1,000,000 by
//! default), measured in the same run. A split is metadata only, so the
//! two must be about equal. Then the same ranges merged back.
//! `SPLIT_BENCH_NODES=3` runs the same on a three-node in-process cluster
//! (real transport on loopback; splits and merges through the leader).
//!
//! `cargo run --release --bin bench-split` (with the workspace's target dir).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use flotilla::{Cluster, Engine, EngineConfig, Error, WriteOp};
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
/// `0..span`, from the right end, so every split is of the same parent range
/// (whose leader is settled; a just-created range may still be electing);
/// returns the latencies and the new range ids.
async fn split_all(engine: &Engine, prefix: &str, span: usize) -> (Histogram<u64>, Vec<u64>) {
    let mut h = Histogram::new(3).expect("histogram");
    let mut ids = Vec::new();
    let step = (span / (SPLITS + 1)).max(1);
    for i in (1..=SPLITS).rev() {
        let at = key(prefix, i * step);
        // Only the attempt that succeeds is timed (on a cluster, the range
        // split off "m" may still be electing its leader at first).
        let (t, id) = loop {
            let t = Instant::now();
            match engine.split(at.clone()).await {
                Ok(id) => break (t, id),
                Err(e) if e.is_retryable() => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(e) => panic!("split: {e}"),
            }
        };
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
    let nodes: u64 = std::env::var("SPLIT_BENCH_NODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    rt.block_on(async {
        let mut cluster = None;
        let engine: Arc<Engine> = if nodes <= 1 {
            Arc::new(Engine::open(EngineConfig::new(dir.path().join("node"))).expect("open"))
        } else {
            let c = Cluster::start(nodes, dir.path(), Duration::from_millis(100)).expect("cluster");
            c.put("warm-up", "x").await.expect("first write");
            let leader = c.leader_of(b"").await.expect("a leader");
            let engine = c.node_handle(leader).expect("leader");
            cluster = Some(c);
            engine
        };
        let target = if nodes <= 1 {
            "embedded node".to_string()
        } else {
            format!("{nodes}-node in-process cluster, through the leader")
        };
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
            "# bench-split: {target}, {keys} keys of 11 B + 100 B loaded in {:.1} s; {SPLITS} splits per case",
            load.as_secs_f64()
        );
        // SPLIT_BENCH_EMPTY_FIRST=1 swaps the order, to tell the range's size
        // apart from the load's aftermath (flushes, compactions) in the tail.
        let empty_first = std::env::var("SPLIT_BENCH_EMPTY_FIRST").is_ok_and(|v| v == "1");
        let ((full, full_ids), (empty, empty_ids)) = if empty_first {
            let empty = split_all(&engine, "z", keys).await;
            (split_all(&engine, "a", keys).await, empty)
        } else {
            let full = split_all(&engine, "a", keys).await;
            (full, split_all(&engine, "z", keys).await)
        };
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
                // A range split off moments ago may still be electing its
                // leader (on this node): wait for it outside the timing.
                let t = loop {
                    let t = Instant::now();
                    match engine.merge(left, right).await {
                        Ok(()) => break t,
                        Err(Error::AdminRefused(m)) if m.contains("led by another") => {}
                        Err(e) if e.is_retryable() => {}
                        Err(e) => panic!("merge of {right} into {left}: {e}"),
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                };
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
        match cluster.as_mut() {
            Some(c) => c.close().await.expect("close"),
            None => engine.close().await.expect("close"),
        }
    });
}
