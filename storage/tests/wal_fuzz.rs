//! Decoding arbitrary bytes as a segment never panics: open either
//! recovers something or fails with an error. (Record and payload decoders
//! are also fuzzed directly by unit tests in `format.rs` and `batch.rs`.)

mod wal_common;

use flotilla_raftgroup::Entry;
use flotilla_storage::wal::{Wal, WalConfig, WriteBatch};
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("WAL_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

fn open_any(files: &[(u64, Vec<u8>)], salvage: bool) {
    let dir = wal_common::fast_tempdir();
    for (seq, bytes) in files {
        std::fs::write(dir.path().join(format!("{seq:016x}.wal")), bytes).unwrap();
    }
    let config = WalConfig {
        salvage,
        ..WalConfig::small_for_tests()
    };
    if let Ok(wal) = Wal::open(dir.path(), config) {
        // Whatever was recovered must be readable without panicking.
        for id in wal.groups() {
            use flotilla_raftgroup::LogStore;
            let log = wal.group(id);
            let (first, last) = (log.first_index().unwrap(), log.last_index().unwrap());
            let _ = log.entries(first, last + 1, u64::MAX);
        }
    }
}

/// A valid little log, as bytes, to mutate.
fn valid_segments() -> Vec<(u64, Vec<u8>)> {
    let dir = wal_common::fast_tempdir();
    let wal = Wal::open(
        dir.path(),
        WalConfig {
            segment_bytes_target: 4096,
            ..WalConfig::small_for_tests()
        },
    )
    .unwrap();
    for k in 0..20u64 {
        let mut batch = WriteBatch::new();
        let data = if k % 4 == 0 {
            vec![b'z'; 6000]
        } else {
            vec![k as u8; 50]
        };
        batch
            .append(k % 3, &[Entry::new(1, k / 3 + 1, data)])
            .unwrap();
        wal.write(&batch, false).unwrap();
    }
    drop(wal);
    wal_common::segments(dir.path())
        .into_iter()
        .map(|p| {
            let seq =
                u64::from_str_radix(&p.file_name().unwrap().to_str().unwrap()[..16], 16).unwrap();
            (seq, std::fs::read(p).unwrap())
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048), salvage in any::<bool>()) {
        open_any(&[(1, bytes)], salvage);
    }

    #[test]
    fn valid_header_then_arbitrary_bytes_never_panic(tail in prop::collection::vec(any::<u8>(), 0..2048), salvage in any::<bool>()) {
        let mut segment = valid_segments().remove(0).1;
        segment.truncate(32);
        segment.extend(tail);
        open_any(&[(1, segment)], salvage);
    }

    #[test]
    fn mutated_valid_log_never_panics(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<Option<prop::sample::Index>>(),
        salvage in any::<bool>(),
    ) {
        let mut files = valid_segments();
        for (file, at, value) in edits {
            let file = file.index(files.len());
            let bytes = &mut files[file].1;
            if !bytes.is_empty() {
                let at = at.index(bytes.len());
                bytes[at] ^= value;
            }
        }
        if let Some(cut) = cut {
            let last = files.len() - 1;
            let len = files[last].1.len();
            files[last].1.truncate(cut.index(len + 1));
        }
        open_any(&files, salvage);
    }
}
