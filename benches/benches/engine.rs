//! End-to-end write throughput and latency of the engine, next to the
//! shared WAL's raw group-commit limit measured in the same run (the peer
//! every write has to go through), plus the cost of idle hibernated ranges.
//!
//! `BENCH_SECONDS` (default 3) per configuration; `BENCH_IDLE_RANGES`
//! (default 10,000) and `BENCH_IDLE_SECONDS` (default 30) for the idle
//! measurement; `BENCH_QUICK=1` runs a reduced matrix, `BENCH_ONLY_IDLE=1`
//! only the idle measurement (`BENCH_POLLERS` sets its raft loops). A plain binary (`bench-engine`), like
//! `bench-transport`: `cargo bench` would compile a second RocksDB variant.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use flotilla::{Cluster, Engine, EngineConfig, Error};
use flotilla_raftgroup::Entry;
use flotilla_storage::wal::{Wal, WalConfig, WriteBatch};
use hdrhistogram::Histogram;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Outcome {
    ops: u64,
    secs: f64,
    latency: Histogram<u64>,
    errors: u64,
}

/// `writers` tasks writing 256-byte values to random keys for `secs`.
async fn drive(engine: Arc<Engine>, writers: u64, secs: f64) -> Outcome {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let engine = engine.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
            let mut x = w.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let value = Bytes::from(vec![b'v'; 256]);
            let (mut ops, mut errors) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let key = format!("k{:08}", x % 100_000_000);
                let t = Instant::now();
                match engine.put(key, value.clone()).await {
                    Ok(()) => {
                        ops += 1;
                        let _ = hist.record(t.elapsed().as_micros().max(1) as u64);
                    }
                    Err(_) => errors += 1,
                }
            }
            (ops, errors, hist)
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut outcome = Outcome {
        ops: 0,
        secs: 0.0,
        latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram"),
        errors: 0,
    };
    for task in tasks {
        if let Ok((ops, errors, hist)) = task.await {
            outcome.ops += ops;
            outcome.errors += errors;
            let _ = outcome.latency.add(&hist);
        }
    }
    outcome.secs = started.elapsed().as_secs_f64();
    outcome
}

async fn presplit(engine: &Engine, ranges: u64) -> Result<(), Error> {
    for i in 1..ranges {
        let key = format!("k{:08}", i * (100_000_000 / ranges));
        // A new range elects its leader after the split applies on a
        // majority; retry the next split on it until it has one.
        let mut attempts = 0;
        loop {
            match engine.split(key.clone()).await {
                Ok(_) => break,
                Err(e) if e.is_retryable() && attempts < 500 => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// The WAL alone: `writers` threads each appending one 256-byte entry per
/// synced batch, as fast as group commit allows.
fn wal_limit(writers: u64, secs: f64) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = Arc::new(Wal::open(dir.path(), WalConfig::default()).expect("wal"));
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for w in 0..writers {
        let (wal, stop) = (wal.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let mut index = 1;
            let mut ops = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mut batch = WriteBatch::new();
                let _ = batch.append(w + 1, &[Entry::new(1, index, vec![7u8; 256])]);
                if wal.write(&batch, true).is_ok() {
                    ops += 1;
                }
                index += 1;
            }
            ops
        }));
    }
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    let ops: u64 = threads.into_iter().map(|t| t.join().unwrap_or(0)).sum();
    ops as f64 / secs
}

fn row(label: &str, ranges: u64, writers: u64, o: &Outcome, fsyncs: u64, wal_ops: f64) {
    let ops_s = o.ops as f64 / o.secs;
    println!(
        "{label:<10} {ranges:>6} {writers:>7} {ops_s:>10.0} {:>8.2} {:>8.2} {:>9.1} {:>10.0} {:>6.2} {:>6}",
        o.latency.value_at_quantile(0.50) as f64 / 1e3,
        o.latency.value_at_quantile(0.99) as f64 / 1e3,
        o.ops as f64 / fsyncs.max(1) as f64,
        wal_ops,
        ops_s / wal_ops,
        o.errors
    );
}

/// CPU seconds (user + system) this process used so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
    ticks / 100.0
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        * 4096
}

fn main() {
    let secs = env_u64("BENCH_SECONDS", 3) as f64;
    let quick = std::env::var("BENCH_QUICK").is_ok();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // BENCH_ONLY_IDLE=1: only the idle measurement (the throughput matrix is
    // also `benches/engine-matrix.sh`, through flotilla-bench).
    let only_idle = std::env::var("BENCH_ONLY_IDLE").is_ok_and(|v| v == "1");
    let ranges_set: &[u64] = if only_idle {
        &[]
    } else if quick {
        &[64]
    } else {
        &[1, 64, 1024]
    };
    let writers_set: &[u64] = if quick { &[256] } else { &[1, 64, 256] };

    println!("engine write throughput, 256-byte values, fsync on, {secs} s per row");
    println!("peer: the shared WAL alone (group commit, one 256-byte entry per synced batch per writer), same disk, same run");
    println!(
        "{:<10} {:>6} {:>7} {:>10} {:>8} {:>8} {:>9} {:>10} {:>6} {:>6}",
        "target",
        "ranges",
        "writers",
        "ops/s",
        "p50 ms",
        "p99 ms",
        "ops/fsync",
        "wal ops/s",
        "ratio",
        "errors"
    );
    let mut wal_cache = std::collections::HashMap::new();
    for &ranges in ranges_set {
        // Single embedded node.
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = Arc::new(Engine::open(EngineConfig::new(dir.path())).expect("open"));
        runtime
            .block_on(presplit(&engine, ranges))
            .expect("presplit");
        for &writers in writers_set {
            let wal_ops = *wal_cache
                .entry(writers)
                .or_insert_with(|| wal_limit(writers, secs.min(3.0)));
            let before = runtime.block_on(engine.stats()).expect("stats");
            let o = runtime.block_on(drive(engine.clone(), writers, secs));
            let after = runtime.block_on(engine.stats()).expect("stats");
            row(
                "1 node",
                ranges,
                writers,
                &o,
                after.wal_fsyncs - before.wal_fsyncs,
                wal_ops,
            );
        }
        runtime.block_on(engine.close()).expect("close");
        drop(engine);

        // Three nodes in this process over loopback TCP.
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cluster =
            Cluster::start(3, dir.path(), Duration::from_millis(50)).expect("cluster");
        runtime
            .block_on(cluster.put("warmup", "x"))
            .expect("warmup");
        let leader = runtime
            .block_on(cluster.leader_of(b"warmup"))
            .expect("leader");
        let engine = cluster.node(leader).expect("leader node");
        runtime
            .block_on(presplit(engine, ranges))
            .expect("presplit");
        for &writers in writers_set {
            let wal_ops = wal_cache[&writers];
            let shared = cluster.node_handle(leader).expect("leader node");
            let before = runtime.block_on(shared.stats()).expect("stats");
            let o = runtime.block_on(drive(shared.clone(), writers, secs));
            let after = runtime.block_on(shared.stats()).expect("stats");
            row(
                "3 nodes",
                ranges,
                writers,
                &o,
                after.wal_fsyncs - before.wal_fsyncs,
                wal_ops,
            );
        }
        runtime.block_on(cluster.close()).expect("close");
    }

    // Idle cost of hibernated ranges.
    let idle_ranges = env_u64("BENCH_IDLE_RANGES", if quick { 1_000 } else { 10_000 });
    let idle_secs = env_u64("BENCH_IDLE_SECONDS", if quick { 5 } else { 30 });
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = EngineConfig::new(dir.path());
    // BENCH_POLLERS: raft loops of the idle node (0: the default).
    match env_u64("BENCH_POLLERS", 0) {
        0 => {}
        n => config.pollers = n as usize,
    }
    let pollers = config.pollers;
    let engine = Engine::open(config).expect("open");
    let rss_before = rss_bytes();
    let t = Instant::now();
    runtime
        .block_on(presplit(&engine, idle_ranges))
        .expect("presplit");
    let split_secs = t.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(60);
    while runtime
        .block_on(engine.stats())
        .expect("stats")
        .ranges_hibernating
        < idle_ranges
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let hibernating = runtime
        .block_on(engine.stats())
        .expect("stats")
        .ranges_hibernating;
    let rss_after = rss_bytes();
    let cpu_before = cpu_seconds();
    std::thread::sleep(Duration::from_secs(idle_secs));
    let cpu = cpu_seconds() - cpu_before;
    println!(
        "idle: {idle_ranges} ranges ({hibernating} hibernating, {pollers} raft loops) made by {} splits in {split_secs:.1} s; CPU over {idle_secs} s: {:.2}% of one core; memory {:.1} KiB per range",
        idle_ranges - 1,
        cpu / idle_secs as f64 * 100.0,
        rss_after.saturating_sub(rss_before) as f64 / idle_ranges as f64 / 1024.0
    );
    runtime.block_on(engine.close()).expect("close");
}
