//! Scale measurements. The disk-bound churn test runs by default in a short
//! form (`WAL_CHURN_BATCHES` for a long run); the 1 GiB / 10,000-group
//! recovery measurement is `#[ignore]`d:
//!
//! ```text
//! cargo test --release -p flotilla-storage --test wal_scale -- --ignored --nocapture
//! ```

mod wal_common;

use std::time::Instant;

use flotilla_raftgroup::{Entry, LogStore};
use flotilla_storage::wal::{Wal, WalConfig, WriteBatch};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
#[ignore = "writes 1 GiB; run explicitly to measure recovery time"]
fn recovery_of_1gib_wal_with_10k_groups() {
    let total_bytes = env_u64("WAL_SCALE_BYTES", 1 << 30);
    let groups = env_u64("WAL_SCALE_GROUPS", 10_000);
    let groups_per_batch = 200;
    let dir =
        tempfile::tempdir_in(std::env::var("WAL_SCALE_DIR").unwrap_or_else(|_| "/tmp".into()))
            .unwrap();
    let config = WalConfig::default();
    let wal = Wal::open(dir.path(), config.clone()).unwrap();
    let mut next_index = vec![1u64; groups as usize];
    let mut rng = Rng(0x9e3779b97f4a7c15);
    let started = Instant::now();
    let mut batches = 0u64;
    // One 256-byte entry per group per batch: the worst case for the index
    // (one run per entry), and what a busy multi-raft node does.
    let mut bytes = 0u64;
    while bytes < total_bytes {
        let mut batch = WriteBatch::new();
        for _ in 0..groups_per_batch {
            let group = rng.below(groups);
            let index = next_index[group as usize];
            // Random payloads: lz4 must not shrink the log.
            let mut data: Vec<u8> = (0..32).flat_map(|_| rng.next().to_le_bytes()).collect();
            data[..8].copy_from_slice(&(group ^ index).to_le_bytes());
            batch.append(group, &[Entry::new(1, index, data)]).unwrap();
            next_index[group as usize] += 1;
        }
        batches += 1;
        bytes += batch.size_bytes();
        wal.write(&batch, batches % 16 == 0).unwrap();
    }
    wal.write(&WriteBatch::new(), true).unwrap();
    let write_secs = started.elapsed().as_secs_f64();
    let before = wal.stats();
    drop(wal);
    if std::env::var("WAL_SCALE_DROP_CACHES").is_ok() {
        let dropped = std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok();
        eprintln!("page cache dropped: {dropped}");
    }

    let started = Instant::now();
    let wal = Wal::open(dir.path(), config).unwrap();
    let open_secs = started.elapsed().as_secs_f64();
    let stats = wal.stats();
    assert_eq!(stats.indexed_entries, before.indexed_entries);
    assert_eq!(stats.groups as u64, groups);
    // Spot checks: a few groups read back from disk.
    for group in [0, groups / 2, groups - 1] {
        let log = wal.group(group);
        let last = log.last_index().unwrap();
        let got = log.entries(1, last + 1, u64::MAX).unwrap();
        assert_eq!(got.len() as u64, last);
        for entry in got {
            assert_eq!(entry.data[..8], (group ^ entry.index).to_le_bytes());
        }
    }
    eprintln!(
        "wal scale: wrote {:.2} GiB in {} batches, {} groups, {} entries in {write_secs:.1}s ({:.0} MiB/s)",
        stats.disk_bytes as f64 / (1u64 << 30) as f64,
        batches,
        stats.groups,
        stats.indexed_entries,
        before.bytes_written as f64 / (1 << 20) as f64 / write_secs,
    );
    eprintln!(
        "wal scale: recovery {:.3}s (open incl. new segment {open_secs:.3}s) for {} segments, {:.0} MiB/s",
        stats.recovery.duration.as_secs_f64(),
        stats.recovery.segments,
        stats.recovery.bytes_read as f64 / (1 << 20) as f64 / stats.recovery.duration.as_secs_f64(),
    );
    eprintln!(
        "wal scale: index {} bytes for {} entries = {:.1} bytes/entry",
        stats.index_bytes,
        stats.indexed_entries,
        stats.index_bytes as f64 / stats.indexed_entries as f64
    );
}

#[test]
fn disk_use_stays_bounded_under_churn() {
    let batches = env_u64("WAL_CHURN_BATCHES", 6_000);
    let groups = 1_000u64;
    let laggards = 50u64;
    let dir = tempfile::tempdir().unwrap();
    let config = WalConfig {
        segment_bytes_target: 256 << 10,
        cache_bytes_max: 1 << 20,
        purge_keep_segments: 2,
        rewrite_group_bytes_max: 64 << 10,
        ..WalConfig::default()
    };
    let wal = Wal::open(dir.path(), config.clone()).unwrap();
    let mut next_index = vec![1u64; groups as usize];
    let mut rng = Rng(42);
    let (mut max_disk, mut live_at_max, mut max_over_bound) = (0u64, 0u64, i64::MIN);
    let mut rewritten = 0u64;
    let mut written = 0u64;
    for k in 0..batches {
        let mut batch = WriteBatch::new();
        let mut touched = Vec::new();
        for _ in 0..20 {
            // Laggards append rarely and are never compacted by the "engine".
            let group = if rng.below(100) == 0 {
                rng.below(laggards)
            } else {
                laggards + rng.below(groups - laggards)
            };
            if touched.contains(&group) {
                continue;
            }
            touched.push(group);
            let count = 1 + rng.below(3);
            let first = next_index[group as usize];
            // Random payloads: lz4 must not make the disk look smaller than the live data.
            let entries: Vec<Entry> = (first..first + count)
                .map(|index| {
                    Entry::new(
                        1,
                        index,
                        (0..32)
                            .flat_map(|_| rng.next().to_le_bytes())
                            .collect::<Vec<u8>>(),
                    )
                })
                .collect();
            batch.append(group, &entries).unwrap();
            next_index[group as usize] += count;
        }
        written += batch.size_bytes();
        wal.write(&batch, false).unwrap();
        // The engine compacts an active group once 60 entries are applied,
        // keeping the last 20.
        for &group in &touched {
            let log = wal.group(group);
            let (first, last) = (log.first_index().unwrap(), log.last_index().unwrap());
            if group >= laggards && last + 1 - first > 60 {
                wal.compact_to(group, last - 20).unwrap();
            }
        }
        if k % 50 == 49 {
            let report = wal.purge().unwrap();
            rewritten += report.bytes_rewritten;
            // The live data purge sized its budget by: compacting the
            // groups it reported (below) shrinks the estimate but deletes
            // no file until the next purge.
            let live_at_purge = wal.stats().live_bytes_estimate;
            // Segments pinned by reported groups go at the next purge: the
            // bound holds right after purges that reported none.
            let reported = !report.groups_to_compact.is_empty();
            for group in report.groups_to_compact {
                let last = wal.group(group).last_index().unwrap();
                wal.compact_to(group, last).unwrap();
            }
            let stats = wal.stats();
            let budget =
                (config.purge_keep_segments * config.segment_bytes_target).max(2 * live_at_purge);
            let bound = budget + 2 * config.segment_bytes_target + 2 * report.bytes_rewritten;
            max_over_bound = max_over_bound.max(stats.disk_bytes as i64 - bound as i64);
            if stats.disk_bytes > max_disk {
                max_disk = stats.disk_bytes;
                live_at_max = stats.live_bytes_estimate;
            }
            assert!(
                reported || stats.disk_bytes <= bound,
                "disk {} > bound {bound} (live {})",
                stats.disk_bytes,
                stats.live_bytes_estimate
            );
        }
    }
    let stats = wal.stats();
    eprintln!(
        "churn: {batches} batches, {:.1} MiB written, {:.1} MiB rewritten (amplification {:.2}), max disk {:.1} MiB at live {:.1} MiB, final disk {:.1} MiB / live {:.1} MiB, {} segments, max(disk - bound) = {max_over_bound} bytes",
        written as f64 / 1048576.0,
        rewritten as f64 / 1048576.0,
        (written + rewritten) as f64 / written as f64,
        max_disk as f64 / 1048576.0,
        live_at_max as f64 / 1048576.0,
        stats.disk_bytes as f64 / 1048576.0,
        stats.live_bytes_estimate as f64 / 1048576.0,
        stats.segments,
    );
    drop(wal);
    let wal = Wal::open(dir.path(), config).unwrap();
    for group in 0..groups {
        let log = wal.group(group);
        let (first, last) = (log.first_index().unwrap(), log.last_index().unwrap());
        assert_eq!(
            log.entries(first, last + 1, u64::MAX).unwrap().len() as u64,
            last + 1 - first
        );
    }
}
