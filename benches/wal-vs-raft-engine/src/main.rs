//! WAL append benchmark: Flotilla's shared WAL against raft-engine (TiKV's
//! multi-Raft log engine) configured the same way, plus the raw disk limit
//! (pwrite + fdatasync into a preallocated file at the batch size the WAL
//! achieved).
//!
//! Every writer thread loops: one 256-byte entry for its next group, one
//! write with fsync. Writers own disjoint groups; when there are fewer
//! groups than writers, writers sharing a group take turns (a group's
//! appends are ordered, as in Raft). Both engines see the same workload,
//! same disk, same run.
//!
//! ```text
//! cargo run --release -p flotilla-bench --bin wal_bench             # 10 s per cell
//! WAL_BENCH_SHORT=1 cargo run --release -p flotilla-bench --bin wal_bench  # 2 s per cell
//! WAL_BENCH_DIR=/path WAL_BENCH_SECS=5 ...
//! ```

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use flotilla_raftgroup::Entry;
use flotilla_storage::wal::{Wal, WalConfig, WriteBatch};

const ENTRY_BYTES: usize = 256;

#[derive(Clone)]
struct RaftEngineMessages;

impl raft_engine::MessageExt for RaftEngineMessages {
    type Entry = raft_proto::eraftpb::Entry;

    fn index(entry: &Self::Entry) -> u64 {
        entry.index
    }
}

/// What one engine must do for the benchmark.
trait Appender: Send + Sync {
    fn append(&self, group: u64, index: u64, data: &[u8]);
    /// `(fsyncs, batches)` if the engine counts them.
    fn fsync_stats(&self) -> Option<(u64, u64, u64)>;
}

struct FlotillaWal(Wal);

impl Appender for FlotillaWal {
    fn append(&self, group: u64, index: u64, data: &[u8]) {
        let mut batch = WriteBatch::new();
        batch
            .append(group, &[Entry::new(1, index, data.to_vec())])
            .expect("contiguous");
        self.0.write(&batch, true).expect("wal write");
    }

    fn fsync_stats(&self) -> Option<(u64, u64, u64)> {
        let stats = self.0.stats();
        Some((stats.fsyncs, stats.batches_synced, stats.bytes_written))
    }
}

struct RaftEngine(raft_engine::Engine);

impl Appender for RaftEngine {
    fn append(&self, group: u64, index: u64, data: &[u8]) {
        let mut entry = raft_proto::eraftpb::Entry::default();
        entry.term = 1;
        entry.index = index;
        entry.data = data.to_vec().into();
        let mut batch = raft_engine::LogBatch::default();
        batch
            .add_entries::<RaftEngineMessages>(group, &[entry])
            .expect("raft-engine batch");
        self.0.write(&mut batch, true).expect("raft-engine write");
    }

    fn fsync_stats(&self) -> Option<(u64, u64, u64)> {
        None
    }
}

struct CellResult {
    entries_per_sec: f64,
    mib_per_sec: f64,
    p50_us: u64,
    p99_us: u64,
    batches_per_fsync: Option<f64>,
    bytes_per_fsync: Option<f64>,
}

fn run_cell(
    appender: Arc<dyn Appender>,
    groups: u64,
    writers: u64,
    duration: Duration,
) -> CellResult {
    // Groups shared by several writers are guarded so appends stay ordered.
    let locks: Arc<Vec<Mutex<u64>>> = Arc::new((0..groups).map(|_| Mutex::new(1)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(writers as usize + 1));
    let before = appender.fsync_stats();
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let (appender, locks, stop, barrier) = (
                appender.clone(),
                locks.clone(),
                stop.clone(),
                barrier.clone(),
            );
            std::thread::spawn(move || {
                let mine: Vec<u64> = if groups >= writers {
                    (w..groups).step_by(writers as usize).collect()
                } else {
                    vec![w % groups]
                };
                let mut data = vec![0u8; ENTRY_BYTES];
                let mut latencies_us = Vec::with_capacity(1 << 16);
                let mut seed = w.wrapping_mul(0x9e3779b97f4a7c15) | 1;
                barrier.wait();
                let mut k = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let group = mine[k % mine.len()];
                    k += 1;
                    // Incompressible payloads.
                    for chunk in data.chunks_mut(8) {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        chunk.copy_from_slice(&seed.to_le_bytes());
                    }
                    let started = Instant::now();
                    {
                        let mut next = locks[group as usize].lock().expect("lock");
                        appender.append(group, *next, &data);
                        *next += 1;
                    }
                    latencies_us.push(started.elapsed().as_micros() as u64);
                }
                latencies_us
            })
        })
        .collect();
    barrier.wait();
    let started = Instant::now();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    let mut latencies: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("writer"))
        .collect();
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let count = latencies.len().max(1);
    let after = appender.fsync_stats();
    let (batches_per_fsync, bytes_per_fsync) = match (before, after) {
        (Some((f0, b0, y0)), Some((f1, b1, y1))) if f1 > f0 => (
            Some((b1 - b0) as f64 / (f1 - f0) as f64),
            Some((y1 - y0) as f64 / (f1 - f0) as f64),
        ),
        _ => (None, None),
    };
    CellResult {
        entries_per_sec: latencies.len() as f64 / elapsed,
        mib_per_sec: latencies.len() as f64 * ENTRY_BYTES as f64 / elapsed / (1 << 20) as f64,
        p50_us: latencies[count / 2 % latencies.len().max(1)],
        p99_us: latencies[(count * 99 / 100).min(latencies.len().saturating_sub(1))],
        batches_per_fsync,
        bytes_per_fsync,
    }
}

/// pwrite + fdatasync of `bytes_per_write` into a preallocated file:
/// what the disk can do at that write size, with no engine at all.
fn raw_limit(dir: &Path, bytes_per_write: usize, duration: Duration) -> f64 {
    let path = dir.join("raw.bin");
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .expect("raw file");
    let size = 256u64 << 20;
    file.set_len(size).expect("preallocate");
    // Touch every block once so the loop measures overwrites of allocated
    // blocks (like a preallocated, already written WAL).
    let zeros = vec![0u8; 1 << 20];
    for offset in (0..size).step_by(zeros.len()) {
        file.write_all_at(&zeros, offset).expect("fill");
    }
    file.sync_all().expect("sync");
    let buf = vec![0x5au8; bytes_per_write.max(1)];
    let started = Instant::now();
    let mut offset = 0u64;
    let mut syncs = 0u64;
    while started.elapsed() < duration {
        if offset + buf.len() as u64 > size {
            offset = 0;
        }
        file.write_all_at(&buf, offset).expect("pwrite");
        file.sync_data().expect("fdatasync");
        offset += buf.len() as u64;
        syncs += 1;
    }
    let _ = std::fs::remove_file(&path);
    syncs as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let short = std::env::var("WAL_BENCH_SHORT").is_ok();
    let secs: f64 = std::env::var("WAL_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if short { 2.0 } else { 10.0 });
    let duration = Duration::from_secs_f64(secs);
    let base = std::env::var("WAL_BENCH_DIR").unwrap_or_else(|_| "/tmp".into());
    let group_counts = [1u64, 100, 10_000];
    let writer_counts = [1u64, 16, 256];
    // WAL_BENCH_CELL=GROUPSxWRITERS runs one cell (for profiling).
    let only: Option<(u64, u64)> = std::env::var("WAL_BENCH_CELL").ok().and_then(|v| {
        let (g, w) = v.split_once('x')?;
        Some((g.parse().ok()?, w.parse().ok()?))
    });
    println!("# wal_bench: {ENTRY_BYTES}-byte entries, one entry per write, fsync per write, {secs} s per cell, dir {base}");
    println!(
        "{:>7} {:>7} | {:>12} {:>8} {:>8} {:>8} {:>8} | {:>12} {:>8} {:>8} | {:>7} | {:>12} {:>12}",
        "groups",
        "writers",
        "wal ent/s",
        "MiB/s",
        "p50 us",
        "p99 us",
        "b/fsync",
        "r-e ent/s",
        "p50 us",
        "p99 us",
        "ratio",
        "raw fsync/s",
        "raw ent/s"
    );
    let mut ratio_min = f64::INFINITY;
    for &groups in &group_counts {
        for &writers in &writer_counts {
            if only.is_some_and(|cell| cell != (groups, writers)) {
                continue;
            }
            let wal_dir = tempfile::tempdir_in(&base).expect("tempdir");
            let wal = Wal::open(wal_dir.path(), WalConfig::default()).expect("open wal");
            let ours = run_cell(Arc::new(FlotillaWal(wal)), groups, writers, duration);
            drop(wal_dir);

            let re_dir = tempfile::tempdir_in(&base).expect("tempdir");
            let config = raft_engine::Config {
                dir: re_dir.path().to_str().expect("utf-8 path").to_owned(),
                // Same settings as ours: 4 KiB compression threshold, 128 MiB files.
                batch_compression_threshold: raft_engine::ReadableSize::kb(4),
                target_file_size: raft_engine::ReadableSize::mb(128),
                ..raft_engine::Config::default()
            };
            let engine = raft_engine::Engine::open(config).expect("open raft-engine");
            let theirs = run_cell(Arc::new(RaftEngine(engine)), groups, writers, duration);
            drop(re_dir);

            let batch_bytes = ours.bytes_per_fsync.unwrap_or(ENTRY_BYTES as f64) as usize;
            let raw_dir = tempfile::tempdir_in(&base).expect("tempdir");
            let raw_fsyncs = raw_limit(
                raw_dir.path(),
                batch_bytes,
                duration.min(Duration::from_secs(3)),
            );
            let raw_entries = raw_fsyncs * ours.batches_per_fsync.unwrap_or(1.0);
            let ratio = ours.entries_per_sec / theirs.entries_per_sec.max(1e-9);
            ratio_min = ratio_min.min(ratio);
            println!(
                "{:>7} {:>7} | {:>12.0} {:>8.2} {:>8} {:>8} {:>8.1} | {:>12.0} {:>8} {:>8} | {:>7.2} | {:>12.0} {:>12.0}",
                groups,
                writers,
                ours.entries_per_sec,
                ours.mib_per_sec,
                ours.p50_us,
                ours.p99_us,
                ours.batches_per_fsync.unwrap_or(0.0),
                theirs.entries_per_sec,
                theirs.p50_us,
                theirs.p99_us,
                ratio,
                raw_fsyncs,
                raw_entries,
            );
        }
    }
    println!("wal_vs_raft_engine_ratio_min={ratio_min:.3}");
}
