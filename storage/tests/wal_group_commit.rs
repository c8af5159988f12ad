//! Group commit under many concurrent writers: every acknowledged synced
//! batch is recovered, and fsyncs are shared between batches.

mod wal_common;

use std::sync::{Arc, Barrier};

use flotilla_raftgroup::{HardState, LogStore};
use flotilla_storage::wal::{Wal, WalConfig, WalStats, WriteBatch};

const THREADS: u64 = 32;
const BATCHES_PER_THREAD: u64 = 60;

#[test]
fn concurrent_writers_share_fsyncs_and_all_acked_batches_survive() {
    // A real disk (not tmpfs): fsync must cost something for writers to pile up.
    let dir = tempfile::tempdir().unwrap();
    let config = WalConfig {
        segment_bytes_target: 256 << 10,
        ..WalConfig::small_for_tests()
    };
    let stats = write_concurrently_and_reopen(dir.path(), config);
    assert!(stats.fsyncs < stats.batches_written, "{stats:?}");
    assert!(
        stats.batches_per_fsync() > 1.0,
        "no group commit happened: {stats:?}"
    );
}

/// The zero-fill thread writes right behind a claimed floor while the
/// group commit appends: with a 4 KiB window the writers catch up with it
/// all the time. A zero written over a record would lose an acknowledged
/// batch (or fail the reopen).
#[test]
fn zero_fill_racing_the_writers_never_overwrites_a_record() {
    let dir = tempfile::tempdir().unwrap();
    let config = WalConfig {
        segment_bytes_target: 256 << 10,
        zero_fill_ahead_bytes: 4 << 10,
        ..WalConfig::small_for_tests()
    };
    let stats = write_concurrently_and_reopen(dir.path(), config);
    assert!(stats.zero_filled_bytes > 0, "{stats:?}");
}

/// `THREADS` writers append `BATCHES_PER_THREAD` synced batches each; all
/// must be readable at once and after a reopen. Returns the stats before
/// the reopen.
fn write_concurrently_and_reopen(dir: &std::path::Path, config: WalConfig) -> WalStats {
    let wal = Arc::new(Wal::open(dir, config.clone()).unwrap());
    let barrier = Arc::new(Barrier::new(THREADS as usize));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let wal = wal.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                for k in 0..BATCHES_PER_THREAD {
                    let mut batch = WriteBatch::new();
                    // Each thread owns two groups; one batch touches both.
                    for group in [t * 2, t * 2 + 1] {
                        batch
                            .append(group, &wal_common::entries(k * 2 + 1, 2, 1, 100, t))
                            .unwrap();
                        batch.set_hard_state(
                            group,
                            HardState {
                                term: 1,
                                vote: t,
                                commit: k * 2,
                            },
                        );
                    }
                    wal.write(&batch, true).unwrap();
                    // Acknowledged: readable at once.
                    assert_eq!(wal.group(t * 2).last_index().unwrap(), k * 2 + 2);
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    let stats = wal.stats();
    assert_eq!(stats.batches_written, THREADS * BATCHES_PER_THREAD);
    eprintln!(
        "group commit: {} batches, {} fsyncs, {:.2} batches/fsync (max {}), {} segments, {} bytes zero-filled",
        stats.batches_written,
        stats.fsyncs,
        stats.batches_per_fsync(),
        stats.batches_per_fsync_max,
        stats.segments,
        stats.zero_filled_bytes,
    );
    // Read back from disk too (the cache holds only the newest entries).
    check_all_written(&wal);
    drop(wal);
    check_all_written(&Wal::open(dir, config).unwrap());
    stats
}

fn check_all_written(wal: &Wal) {
    for t in 0..THREADS {
        for group in [t * 2, t * 2 + 1] {
            let log = wal.group(group);
            assert_eq!(log.last_index().unwrap(), BATCHES_PER_THREAD * 2);
            let entries = log
                .entries(1, BATCHES_PER_THREAD * 2 + 1, u64::MAX)
                .unwrap();
            let expected: Vec<_> = (0..BATCHES_PER_THREAD)
                .flat_map(|k| wal_common::entries(k * 2 + 1, 2, 1, 100, t))
                .collect();
            assert_eq!(entries, expected);
            assert_eq!(
                log.hard_state(),
                HardState {
                    term: 1,
                    vote: t,
                    commit: (BATCHES_PER_THREAD - 1) * 2
                }
            );
        }
    }
}

/// The point of zero-filling: once the thread has caught up, appends
/// land on blocks the filesystem has already allocated, in every segment.
#[test]
fn appends_land_on_zero_filled_blocks() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    // The window covers a whole segment, so each is filled to its end.
    let config = WalConfig {
        segment_bytes_target: 1 << 20,
        zero_fill_ahead_bytes: 4 << 20,
        ..WalConfig::small_for_tests()
    };
    let wal = Wal::open(dir.path(), config).unwrap();
    // 4 MiB in 4 KiB batches: at least three rotations.
    for index in 1..=1024 {
        let mut batch = WriteBatch::new();
        batch
            .append(1, &wal_common::entries(index, 1, 1, 4000, 0))
            .unwrap();
        wal.write(&batch, true).unwrap();
        wal.wait_zero_filled();
        let (path, _) = wal.write_position();
        let metadata = std::fs::metadata(&path).unwrap();
        assert!(
            metadata.blocks() * 512 >= metadata.len(),
            "{} has holes: {} of {} bytes allocated",
            path.display(),
            metadata.blocks() * 512,
            metadata.len()
        );
    }
    let stats = wal.stats();
    assert!(stats.segments >= 4, "{stats:?}");
    // Only the first append into each new segment can beat the thread.
    assert!(
        stats.appends_into_holes <= stats.segments as u64,
        "{stats:?}"
    );
    assert!(stats.zero_filled_bytes >= 3 << 20, "{stats:?}");
}

#[test]
fn zero_fill_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let config = WalConfig {
        zero_fill_ahead_bytes: 0,
        ..WalConfig::small_for_tests()
    };
    let wal = Wal::open(dir.path(), config).unwrap();
    let mut batch = WriteBatch::new();
    batch
        .append(1, &wal_common::entries(1, 4, 1, 100, 0))
        .unwrap();
    wal.write(&batch, true).unwrap();
    wal.wait_zero_filled();
    let stats = wal.stats();
    assert_eq!((stats.zero_filled_bytes, stats.appends_into_holes), (0, 0));
}

#[test]
fn oversized_batch_is_refused_with_a_clear_error() {
    let dir = wal_common::fast_tempdir();
    let wal = Wal::open(dir.path(), WalConfig::small_for_tests()).unwrap();
    let mut batch = WriteBatch::new();
    batch
        .append(1, &wal_common::entries(1, 3, 1, 400 << 10, 0))
        .unwrap();
    let err = wal.write(&batch, true).unwrap_err();
    assert!(
        matches!(err, flotilla_storage::wal::WalError::BatchTooLarge { .. }),
        "{err}"
    );
    assert_eq!(wal.group(1).last_index().unwrap(), 0);
}
