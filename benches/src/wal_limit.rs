//! The shared WAL's raw group-commit limit: `writers` threads each append
//! one entry of `entry_bytes` per synced write to their own group, as fast
//! as group commit allows, in a directory on the same filesystem as the
//! benchmark's data. Every end-to-end write goes through this WAL, so
//! writes/s divided by this number says how much of the disk's group
//! commit the engine turns into acknowledged writes.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flotilla_raftgroup::Entry;
use flotilla_storage::wal::{Wal, WalConfig, WriteBatch};
use serde::{Deserialize, Serialize};

use crate::rng::Rng;

/// What the WAL alone sustained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WalLimit {
    pub entries_per_sec: f64,
    pub entry_bytes: usize,
    pub writers: usize,
    pub secs: f64,
    pub fsyncs: u64,
    /// Entries made durable per fsync (group commit's batching).
    pub entries_per_fsync: f64,
    pub errors: u64,
}

/// Run the WAL alone for `secs` in a fresh directory under `parent`.
pub fn measure(
    parent: &Path,
    entry_bytes: usize,
    writers: usize,
    secs: f64,
) -> Result<WalLimit, String> {
    let dir = tempfile::Builder::new()
        .prefix("flotilla-bench-wal-")
        .tempdir_in(parent)
        .map_err(|e| format!("cannot create a directory in {}: {e}", parent.display()))?;
    let wal = Arc::new(
        Wal::open(dir.path(), WalConfig::default()).map_err(|e| format!("wal open: {e}"))?,
    );
    let mut payload = vec![0u8; entry_bytes.max(1)];
    Rng::new(0x5EED).fill_alphanumeric(&mut payload);
    let payload = Bytes::from(payload);
    let writers = writers.max(1);
    let stop = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(writers + 1));
    let before = wal.stats();
    let mut threads = Vec::with_capacity(writers);
    for w in 0..writers {
        let (wal, stop_w, barrier, payload) =
            (wal.clone(), stop.clone(), barrier.clone(), payload.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("wal-limit-{w}"))
            .stack_size(256 << 10)
            .spawn(move || {
                barrier.wait();
                let (mut ok, mut errors) = (0u64, 0u64);
                let mut index = 1;
                while !stop_w.load(Ordering::Relaxed) {
                    let mut batch = WriteBatch::new();
                    if batch
                        .append(w as u64 + 1, &[Entry::new(1, index, payload.clone())])
                        .is_err()
                    {
                        errors += 1;
                        break;
                    }
                    match wal.write(&batch, true) {
                        Ok(()) => {
                            ok += 1;
                            index += 1;
                        }
                        Err(_) => {
                            errors += 1;
                            break;
                        }
                    }
                }
                (ok, errors)
            });
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => {
                // Release the ones already waiting, then give up.
                stop.store(true, Ordering::Relaxed);
                return Err(format!("cannot start WAL writer thread {w}: {e}"));
            }
        }
    }
    barrier.wait();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    let (mut entries, mut errors) = (0u64, 0u64);
    for t in threads {
        let (ok, err) = t.join().unwrap_or((0, 1));
        entries += ok;
        errors += err;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let fsyncs = wal.stats().fsyncs.saturating_sub(before.fsyncs);
    Ok(WalLimit {
        entries_per_sec: entries as f64 / elapsed,
        entry_bytes,
        writers,
        secs: elapsed,
        fsyncs,
        entries_per_fsync: entries as f64 / fsyncs.max(1) as f64,
        errors,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_wal_alone_writes_and_syncs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let limit = super::measure(dir.path(), 64, 4, 0.3).expect("measure");
        assert!(limit.entries_per_sec > 0.0);
        assert!(limit.fsyncs > 0);
        assert_eq!(limit.errors, 0);
        assert!(limit.entries_per_fsync >= 1.0);
    }
}
