//! WAL append benchmark: Flotilla's shared WAL against raft-engine (TiKV's
//! multi-Raft log engine) configured the same way, plus the raw disk limit
//! (pwrite + fdatasync into a preallocated file at the batch size the WAL
//! achieved).
//!
//! Every writer thread loops: one 256-byte entry for its next group, one
//! write with fsync. Writers own disjoint groups; when there are fewer
//! groups than writers, writers sharing a group take turns (a group's
//! appends are ordered, as in Raft). Both engines see the same workload,
//! same disk, same run; each cell's time is cut into slices that alternate
//! between the engines, so a slow spell of the machine hits both.
//!
//! Both run at their defaults apart from the shared settings (4 KiB
//! compression threshold, 128 MiB files). Ours then zero-fills ahead of
//! its appends (`WalConfig::zero_fill_ahead_bytes`), so its fsyncs need no
//! journal commit; raft-engine's counterpart, `prefill-for-recycle`, is
//! off by default and only applies from its second file on (the first is
//! always a fresh, fallocated one).
//!
//! ```text
//! make bench-wal                                # every cell, 10 s per engine per cell
//! WAL_BENCH_SHORT=1 ...                         # 2 s per cell
//! WAL_BENCH_DIR=/path WAL_BENCH_SECS=5 ...
//! WAL_BENCH_CELL=10000x256 ...                  # one cell
//! WAL_BENCH_ONLY=flotilla|raft-engine ...       # one engine (for perf)
//! WAL_BENCH_ZERO_FILL_AHEAD=0 ...               # our zero-fill off
//! WAL_BENCH_RE_PREFILL=1 ...                    # raft-engine prefills 512 MiB to recycle
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
/// Alternating slices per engine in each cell (see `run_cell`).
///
/// Ten one-second slices rather than four longer ones: where both engines
/// run at the disk's fsync rate (one group), the ratio is decided by how
/// that rate wanders on a shared VM, and finer alternation averages it.
const SLICES: u32 = 10;

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
        self.0.write_owned(batch, true).expect("wal write");
    }

    fn fsync_stats(&self) -> Option<(u64, u64, u64)> {
        let stats = self.0.stats();
        Some((stats.fsyncs, stats.batches_synced, stats.bytes_written))
    }
}

struct RaftEngine(raft_engine::Engine);

impl Appender for RaftEngine {
    fn append(&self, group: u64, index: u64, data: &[u8]) {
        let entry = raft_proto::eraftpb::Entry {
            term: 1,
            index,
            data: data.to_vec().into(),
            ..Default::default()
        };
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

/// What one engine did in one cell, summed over its slices.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    seconds: f64,
    fsyncs: u64,
    batches: u64,
    bytes: u64,
}

impl Tally {
    fn result(mut self) -> CellResult {
        self.latencies_us.sort_unstable();
        let n = self.latencies_us.len();
        let at = |q: usize| {
            self.latencies_us
                .get((n * q / 100).min(n.saturating_sub(1)))
        };
        let per_fsync = |x: u64| (self.fsyncs > 0).then(|| x as f64 / self.fsyncs as f64);
        CellResult {
            entries_per_sec: n as f64 / self.seconds.max(1e-9),
            mib_per_sec: n as f64 * ENTRY_BYTES as f64 / self.seconds.max(1e-9) / (1 << 20) as f64,
            p50_us: at(50).copied().unwrap_or(0),
            p99_us: at(99).copied().unwrap_or(0),
            batches_per_fsync: per_fsync(self.batches),
            bytes_per_fsync: per_fsync(self.bytes),
        }
    }
}

/// Runs `writers` threads against one engine for `duration`, adding what
/// they did to `tally`. `next` holds each group's next index, kept across
/// slices so the engine sees one contiguous log per group.
fn run_slice(
    appender: &Arc<dyn Appender>,
    next: &Arc<Vec<Mutex<u64>>>,
    writers: u64,
    duration: Duration,
    tally: &mut Tally,
) {
    let groups = next.len() as u64;
    let stop = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(writers as usize + 1));
    let before = appender.fsync_stats();
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let (appender, locks, stop, barrier) = (
                appender.clone(),
                next.clone(),
                stop.clone(),
                barrier.clone(),
            );
            std::thread::spawn(move || {
                // Writers sharing a group take turns: a group's appends are
                // ordered, as in Raft.
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
    for handle in handles {
        tally
            .latencies_us
            .extend(handle.join().expect("writer thread"));
    }
    tally.seconds += started.elapsed().as_secs_f64();
    if let (Some((f0, b0, y0)), Some((f1, b1, y1))) = (before, appender.fsync_stats()) {
        tally.fsyncs += f1 - f0;
        tally.batches += b1 - b0;
        tally.bytes += y1 - y0;
    }
}

/// Both engines on one cell. The time is cut into `SLICES` slices run
/// alternately (ours, theirs, ours, ...), so a slow spell of the machine
/// (this is a shared VM) falls on both rather than on whichever ran then.
fn run_cell(
    ours: Arc<dyn Appender>,
    theirs: Arc<dyn Appender>,
    groups: u64,
    writers: u64,
    duration: Duration,
) -> (CellResult, CellResult) {
    let slice = duration / SLICES;
    let next_ours = Arc::new((0..groups).map(|_| Mutex::new(1)).collect());
    let next_theirs = Arc::new((0..groups).map(|_| Mutex::new(1)).collect());
    // WAL_BENCH_ONLY=flotilla|raft-engine runs one engine (for perf stat).
    let only = std::env::var("WAL_BENCH_ONLY").ok();
    let (run_ours, run_theirs) = match only.as_deref() {
        Some("flotilla") => (true, false),
        Some("raft-engine") => (false, true),
        _ => (true, true),
    };
    let (mut a, mut b) = (Tally::default(), Tally::default());
    for round in 0..SLICES {
        let mut ours_slice = || {
            if run_ours {
                run_slice(&ours, &next_ours, writers, slice, &mut a);
            }
        };
        let mut theirs_slice = || {
            if run_theirs {
                run_slice(&theirs, &next_theirs, writers, slice, &mut b);
            }
        };
        // Alternate who goes first, too.
        if round % 2 == 0 {
            ours_slice();
            theirs_slice();
        } else {
            theirs_slice();
            ours_slice();
        }
    }
    (a.result(), b.result())
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
    println!("# wal_bench: {ENTRY_BYTES}-byte entries, one entry per write, fsync per write, {secs} s per engine per cell in {SLICES} alternating slices, dir {base}");
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
            let mut wal_config = WalConfig::default();
            if let Some(bytes) = std::env::var("WAL_BENCH_ZERO_FILL_AHEAD")
                .ok()
                .and_then(|v| v.parse().ok())
            {
                wal_config.zero_fill_ahead_bytes = bytes;
            }
            let re_prefill = std::env::var("WAL_BENCH_RE_PREFILL").is_ok();
            let wal = Wal::open(wal_dir.path(), wal_config).expect("open wal");
            let re_dir = tempfile::tempdir_in(&base).expect("tempdir");
            let config = raft_engine::Config {
                dir: re_dir.path().to_str().expect("utf-8 path").to_owned(),
                // Same settings as ours: 4 KiB compression threshold, 128 MiB files.
                batch_compression_threshold: raft_engine::ReadableSize::kb(4),
                target_file_size: raft_engine::ReadableSize::mb(128),
                // Its counterpart of our zero-fill: zeroed files to recycle.
                prefill_for_recycle: re_prefill,
                prefill_limit: re_prefill.then(|| raft_engine::ReadableSize::mb(512)),
                ..raft_engine::Config::default()
            };
            let engine = raft_engine::Engine::open(config).expect("open raft-engine");
            let wal_handle = wal.clone();
            let (ours, theirs) = run_cell(
                Arc::new(FlotillaWal(wal)),
                Arc::new(RaftEngine(engine)),
                groups,
                writers,
                duration,
            );
            let stats = wal_handle.stats();
            eprintln!(
                "# {groups}x{writers}: ours zero-filled {} MiB ahead of its appends; {} appends found none",
                stats.zero_filled_bytes >> 20,
                stats.appends_into_holes
            );
            drop((wal_dir, re_dir));

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
