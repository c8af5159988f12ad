//! Group commit under many concurrent writers: every acknowledged synced
//! batch is recovered, and fsyncs are shared between batches.

mod wal_common;

use std::sync::{Arc, Barrier};

use flotilla_raftgroup::{HardState, LogStore};
use flotilla_storage::wal::{Wal, WalConfig, WriteBatch};

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
    let wal = Arc::new(Wal::open(dir.path(), config.clone()).unwrap());
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
    assert!(stats.fsyncs < stats.batches_written, "{stats:?}");
    assert!(
        stats.batches_per_fsync() > 1.0,
        "no group commit happened: {stats:?}"
    );
    eprintln!(
        "group commit: {} batches, {} fsyncs, {:.2} batches/fsync (max {}), {} segments",
        stats.batches_written,
        stats.fsyncs,
        stats.batches_per_fsync(),
        stats.batches_per_fsync_max,
        stats.segments
    );
    drop(wal);

    let wal = Wal::open(dir.path(), config).unwrap();
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
