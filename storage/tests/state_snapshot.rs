//! Range snapshots: round trip, bounds, corruption, memory bounds, and
//! recovery of an interrupted apply (in-process variant; the SIGKILL variant
//! is in `state_crash.rs`).

use bytes::Bytes;
use flotilla_storage::state::{
    SnapshotChunk, SnapshotHeader, SnapshotTrailer, StateConfig, StateError, StateStore,
    ENTRY_OVERHEAD_BYTES,
};
use proptest::prelude::*;
use std::time::Instant;

const RANGE: u64 = 5;

fn open_with(dir: &std::path::Path, config: StateConfig) -> StateStore {
    StateStore::open(dir, config).expect("open state store")
}

fn small_chunks() -> StateConfig {
    StateConfig {
        snapshot_chunk_bytes: 16 * 1024,
        snapshot_apply_batch_bytes: 64 * 1024,
        ..StateConfig::default()
    }
}

/// Deterministic value of key `i`: sizes vary from 0 to ~1.5 KiB so chunk
/// boundaries fall at odd places.
fn value_of(i: u64, size_max: u64) -> Vec<u8> {
    let len = (i.wrapping_mul(2654435761) % size_max) as usize;
    (0..len).map(|b| (i as usize + b) as u8).collect()
}

/// Fills `source` with range 5 = [m/, n/) plus neighbours outside it.
fn fill_source(source: &StateStore, keys: u64, size_max: u64) {
    let mut batch = source.apply_batch();
    batch.put(4, b"l/outside-left", b"no");
    batch.put(6, b"n/outside-right", b"no");
    batch.set_applied(4, 1, 1);
    batch.set_applied(6, 1, 1);
    batch.commit().unwrap();
    let mut index = 0;
    for start in (0..keys).step_by(1000) {
        let mut batch = source.apply_batch();
        for i in start..(start + 1000).min(keys) {
            batch.put(
                RANGE,
                format!("m/{i:08}").as_bytes(),
                &value_of(i, size_max),
            );
        }
        index += 1;
        batch.set_descriptor(RANGE, b"descriptor v7");
        batch.set_applied(RANGE, index, 2);
        batch.commit().unwrap();
    }
}

fn stream(
    reader: &mut flotilla_storage::state::SnapshotReader,
) -> (Vec<SnapshotChunk>, SnapshotTrailer) {
    let mut chunks = Vec::new();
    while let Some(chunk) = reader.next_chunk().unwrap() {
        chunks.push(chunk);
    }
    (
        chunks,
        reader.trailer().expect("trailer after the last chunk"),
    )
}

#[test]
fn state_snapshot_round_trip_many_chunks() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let source = open_with(a.path(), small_chunks());
    let target = open_with(b.path(), small_chunks());
    fill_source(&source, 20_000, 1500);

    // The receiver has stale data in the range and neighbours outside it.
    let mut batch = target.apply_batch();
    batch.put(RANGE, b"m/stale", b"old");
    batch.put(RANGE, b"m/00000001", b"old");
    batch.put(4, b"l/zzz", b"keep-left");
    batch.put(6, b"n/", b"keep-right");
    batch.set_applied(RANGE, 1, 1);
    batch.set_applied(4, 3, 1);
    batch.set_applied(6, 3, 1);
    batch.commit().unwrap();

    let mut reader = source.snapshot_reader(RANGE, b"m/", b"n/").unwrap();
    let header = reader.header().clone();
    assert_eq!(header.index_applied, 20);
    assert_eq!(&header.descriptor[..], b"descriptor v7");
    // Writes after the reader was created are not in the snapshot.
    let mut batch = source.apply_batch();
    batch.put(RANGE, b"m/late", b"late");
    batch.set_applied(RANGE, 21, 2);
    batch.commit().unwrap();

    let (chunks, trailer) = stream(&mut reader);
    assert!(chunks.len() > 100, "only {} chunks", chunks.len());
    assert_eq!(trailer.entry_count, 20_000);

    // Over the wire and back.
    let header = SnapshotHeader::decode(&header.encode()).unwrap();
    let trailer = SnapshotTrailer::decode(&trailer.encode()).unwrap();
    let mut writer = target.snapshot_writer(header).unwrap();
    for chunk in &chunks {
        writer
            .write_chunk(&SnapshotChunk::decode(&chunk.encode()).unwrap())
            .unwrap();
    }
    assert!(
        writer.batch_bytes_max() < 64 * 1024 + 2 * 16 * 1024,
        "write batch grew to {}",
        writer.batch_bytes_max()
    );
    writer.finish(&trailer).unwrap();

    let want: Vec<_> = (0..20_000u64)
        .map(|i| {
            (
                Bytes::from(format!("m/{i:08}")),
                Bytes::from(value_of(i, 1500)),
            )
        })
        .collect();
    assert_eq!(target.scan(b"m/", b"n/", usize::MAX).unwrap(), want);
    let state = target.range_state(RANGE).unwrap();
    assert_eq!(state.applied.unwrap().index, 20);
    assert_eq!(state.applied.unwrap().term, 2);
    assert_eq!(state.descriptor.as_deref(), Some(&b"descriptor v7"[..]));
    assert_eq!(state.snapshot_in_progress, None);
    assert_eq!(
        target.get(b"l/zzz").unwrap().as_deref(),
        Some(&b"keep-left"[..])
    );
    assert_eq!(
        target.get(b"n/").unwrap().as_deref(),
        Some(&b"keep-right"[..])
    );
    assert_eq!(target.applied_state(4).unwrap().unwrap().index, 3);

    // Survives reopen.
    drop(target);
    let target = open_with(b.path(), small_chunks());
    assert_eq!(target.scan(b"m/", b"n/", usize::MAX).unwrap().len(), 20_000);
    assert_eq!(target.applied_state(RANGE).unwrap().unwrap().index, 20);
}

#[test]
fn state_reader_and_writer_can_move_to_other_threads() {
    fn assert_send_static<T: Send + 'static>() {}
    assert_send_static::<flotilla_storage::state::SnapshotReader>();
    assert_send_static::<flotilla_storage::state::SnapshotWriter>();
    // And a reader outlives the handle it came from.
    let dir = tempfile::tempdir().unwrap();
    let source = open_with(dir.path(), small_chunks());
    fill_source(&source, 2_000, 100);
    let reader = source.snapshot_reader(RANGE, b"m/", b"n/").unwrap();
    drop(source);
    let count =
        std::thread::spawn(move || reader.map(|c| c.unwrap().entries().count()).sum::<usize>())
            .join()
            .unwrap();
    assert_eq!(count, 2_000);
}

#[test]
fn state_reader_never_holds_more_than_one_bounded_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let source = open_with(dir.path(), small_chunks());
    fill_source(&source, 5_000, 3000);
    let chunk_bytes = 16 * 1024;
    let entry_max = ENTRY_OVERHEAD_BYTES + 10 + 3000;
    let reader = source.snapshot_reader(RANGE, b"m/", b"n/").unwrap();
    let mut total = 0;
    // The caller holds one chunk at a time; the reader builds the next one
    // only when asked, so peak = 2 chunks, each bounded:
    for chunk in reader {
        let chunk = chunk.unwrap();
        assert!(
            chunk.data.len() < chunk_bytes + entry_max,
            "chunk {} has {} bytes",
            chunk.seq,
            chunk.data.len()
        );
        total += chunk.data.len();
    }
    assert!(total > 5_000 * 1000);

    // A value larger than the chunk size travels alone in its chunk.
    let mut batch = source.apply_batch();
    batch.put(RANGE, b"m/zbig", &vec![7u8; 100 * 1024]);
    batch.set_applied(RANGE, 1000, 2);
    batch.commit().unwrap();
    let mut reader = source.snapshot_reader(RANGE, b"m/zb", b"n/").unwrap();
    let chunk = reader.next_chunk().unwrap().unwrap();
    assert_eq!(chunk.entries().count(), 1);
    assert!(reader.next_chunk().unwrap().is_none());
}

#[test]
fn state_corrupted_or_misordered_chunks_are_rejected_clearly() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let source = open_with(a.path(), small_chunks());
    let target = open_with(b.path(), small_chunks());
    fill_source(&source, 3_000, 500);
    let mut reader = source.snapshot_reader(RANGE, b"m/", b"n/").unwrap();
    let header = reader.header().clone();
    let (chunks, trailer) = stream(&mut reader);

    // A flipped bit on the wire.
    let mut wire = chunks[1].encode().to_vec();
    let last = wire.len() - 1;
    wire[last] ^= 0x01;
    let err = SnapshotChunk::decode(&wire).unwrap_err();
    assert!(err.is_corruption());
    assert!(
        err.to_string().contains("chunk 1 checksum mismatch"),
        "{err}"
    );

    let mut writer = target.snapshot_writer(header.clone()).unwrap();
    writer.write_chunk(&chunks[0]).unwrap();
    // Damaged data under the original checksum.
    let mut damaged = chunks[1].clone();
    let mut data = damaged.data.to_vec();
    data[10] ^= 0xff;
    damaged.data = Bytes::from(data);
    assert!(writer.write_chunk(&damaged).unwrap_err().is_corruption());
    // Out of order.
    let err = writer.write_chunk(&chunks[2]).unwrap_err();
    assert!(
        err.to_string()
            .contains("chunk 2 arrived, expected chunk 1"),
        "{err}"
    );
    // A well-formed chunk with a key outside the range.
    let mut data = Vec::new();
    data.extend_from_slice(&3u32.to_le_bytes());
    data.extend_from_slice(&1u32.to_le_bytes());
    data.extend_from_slice(b"zzzv");
    let err = writer
        .write_chunk(&SnapshotChunk::new(1, Bytes::from(data)))
        .unwrap_err();
    assert!(err.to_string().contains("outside the range"), "{err}");
    // A replay of chunk 0's data under the next number overlaps it.
    let err = writer
        .write_chunk(&SnapshotChunk::new(1, chunks[0].data.clone()))
        .unwrap_err();
    assert!(err.to_string().contains("not in ascending order"), "{err}");
    // Rejections changed nothing: the good chunk 1 still fits.
    for chunk in &chunks[1..] {
        writer.write_chunk(chunk).unwrap();
    }
    // A trailer that disagrees (a chunk lost in transit) rolls back.
    let wrong = SnapshotTrailer {
        chunk_count: trailer.chunk_count + 1,
        ..trailer
    };
    let err = writer.finish(&wrong).unwrap_err();
    assert!(err.to_string().contains("trailer says"), "{err}");
    let state = target.range_state(RANGE).unwrap();
    assert_eq!(state.applied, None);
    assert_eq!(
        state.needs_snapshot.map(|n| n.index),
        Some(header.index_applied)
    );
    assert!(target.scan(b"m/", b"n/", 1).unwrap().is_empty());

    // A complete, correct stream then installs and clears needs-snapshot.
    let mut writer = target.snapshot_writer(header).unwrap();
    for chunk in &chunks {
        writer.write_chunk(chunk).unwrap();
    }
    writer.finish(&trailer).unwrap();
    let state = target.range_state(RANGE).unwrap();
    assert_eq!(state.needs_snapshot, None);
    assert_eq!(target.scan(b"m/", b"n/", usize::MAX).unwrap().len(), 3_000);
}

#[test]
fn state_stale_snapshot_and_concurrent_writers_are_refused() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let source = open_with(a.path(), small_chunks());
    let target = open_with(b.path(), small_chunks());
    fill_source(&source, 100, 50);
    let header = source
        .snapshot_reader(RANGE, b"m/", b"n/")
        .unwrap()
        .header()
        .clone();

    let mut batch = target.apply_batch();
    batch.put(RANGE, b"m/x", b"newer");
    batch.set_applied(RANGE, header.index_applied, 9);
    batch.commit().unwrap();
    assert!(matches!(
        target.snapshot_writer(header.clone()),
        Err(StateError::StaleSnapshot { .. })
    ));
    // The refusal left the range usable.
    let mut batch = target.apply_batch();
    batch.put(RANGE, b"m/y", b"v");
    batch.set_applied(RANGE, header.index_applied + 1, 9);
    batch.commit().unwrap();

    let newer = SnapshotHeader {
        index_applied: header.index_applied + 10,
        ..header
    };
    let writer = target.snapshot_writer(newer.clone()).unwrap();
    assert!(matches!(
        target.snapshot_writer(newer.clone()),
        Err(StateError::RangeBusy { .. })
    ));
    let mut batch = target.apply_batch();
    batch.put(RANGE, b"m/z", b"v");
    batch.set_applied(RANGE, header.index_applied + 2, 9);
    assert!(matches!(batch.commit(), Err(StateError::RangeBusy { .. })));
    assert!(matches!(
        target.snapshot_reader(RANGE, b"m/", b"n/"),
        Err(StateError::RangeBusy { .. })
    ));
    writer.abort().unwrap();
    let state = target.range_state(RANGE).unwrap();
    assert!(state.needs_snapshot.is_some() && state.applied.is_none());
    // Log entries are refused until a snapshot arrives.
    let mut batch = target.apply_batch();
    batch.put(RANGE, b"m/z", b"v");
    batch.set_applied(RANGE, 1, 1);
    assert!(matches!(
        batch.commit(),
        Err(StateError::NeedsSnapshot { .. })
    ));
}

#[test]
fn state_interrupted_apply_is_rolled_back_on_reopen() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let source = open_with(a.path(), small_chunks());
    fill_source(&source, 10_000, 1000);
    let mut reader = source.snapshot_reader(RANGE, b"m/", b"").unwrap();
    let header = reader.header().clone();
    let (chunks, trailer) = stream(&mut reader);
    drop(reader);

    for k in [0usize, 1, chunks.len() / 2, chunks.len()] {
        {
            let target = open_with(b.path(), small_chunks());
            let mut batch = target.apply_batch();
            batch.put(RANGE, b"m/old", b"old");
            batch.put(4, b"l/keep", b"keep");
            batch.set_applied(RANGE, 1, 1);
            batch.set_applied(4, 100 + k as u64, 1);
            batch.commit().unwrap();
            let mut writer = target.snapshot_writer(header.clone()).unwrap();
            for chunk in &chunks[..k] {
                writer.write_chunk(chunk).unwrap();
            }
            // "Crash": the writer stops, the store closes without finishing.
            drop(writer);
            let mut batch = target.apply_batch();
            batch.put(RANGE, b"m/late", b"v");
            batch.set_applied(RANGE, 2, 1);
            assert!(matches!(batch.commit(), Err(StateError::RangeBusy { .. })));
        }
        let target = open_with(b.path(), small_chunks());
        let state = target.range_state(RANGE).unwrap();
        assert_eq!(state.snapshot_in_progress, None, "k = {k}");
        assert_eq!(state.applied, None, "k = {k}");
        assert_eq!(state.needs_snapshot.unwrap().index, header.index_applied);
        assert!(target.scan(b"m/", b"", 10).unwrap().is_empty(), "k = {k}");
        assert_eq!(
            target.get(b"l/keep").unwrap().as_deref(),
            Some(&b"keep"[..])
        );
        // Recovery is idempotent.
        assert!(target.recover_interrupted_snapshots().unwrap().is_empty());

        // A fresh snapshot completes.
        let mut writer = target.snapshot_writer(header.clone()).unwrap();
        for chunk in &chunks {
            writer.write_chunk(chunk).unwrap();
        }
        writer.finish(&trailer).unwrap();
        // The range runs to the end of the key space, so it also holds the
        // source's "n/outside-right".
        assert_eq!(
            target.scan(b"m/", b"", usize::MAX).unwrap().len() as u64,
            trailer.entry_count
        );
        assert_eq!(trailer.entry_count, 10_001);
        target.destroy_range(RANGE, b"m/", b"").unwrap();
        assert!(target.scan(b"m/", b"", 1).unwrap().is_empty());
        assert_eq!(
            target.get(b"l/keep").unwrap().as_deref(),
            Some(&b"keep"[..])
        );
    }
}

/// Measures generate and apply throughput on ~100 MB. Run by hand:
/// `cargo test --release -p flotilla-storage --test state_snapshot -- --ignored --nocapture`
#[test]
#[ignore]
fn state_snapshot_throughput_100mb() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let source = open_with(a.path(), StateConfig::default());
    let target = open_with(b.path(), StateConfig::default());
    let keys = 100_000u64;
    let value = vec![0x5au8; 1000];
    let t = Instant::now();
    for start in (0..keys).step_by(1000) {
        let mut batch = source.apply_batch();
        for i in start..start + 1000 {
            let mut v = value.clone();
            v[..8].copy_from_slice(&i.to_le_bytes());
            batch.put(RANGE, format!("m/{i:012}").as_bytes(), &v);
        }
        batch.set_applied(RANGE, start / 1000 + 1, 1);
        batch.commit().unwrap();
    }
    let load = t.elapsed();
    let mut reader = source.snapshot_reader(RANGE, b"m/", b"n/").unwrap();
    let header = reader.header().clone();
    let t = Instant::now();
    let (chunks, trailer) = stream(&mut reader);
    let generate = t.elapsed();
    let mb = trailer.data_bytes as f64 / 1e6;
    let t = Instant::now();
    let mut writer = target.snapshot_writer(header).unwrap();
    for chunk in &chunks {
        writer.write_chunk(chunk).unwrap();
    }
    writer.finish(&trailer).unwrap();
    let apply = t.elapsed();
    println!(
        "{mb:.1} MB in {} chunks: load (apply batches) {:.0} MB/s, generate {:.0} MB/s, apply {:.0} MB/s",
        chunks.len(),
        mb / load.as_secs_f64(),
        mb / generate.as_secs_f64(),
        mb / apply.as_secs_f64()
    );
    assert_eq!(
        target.scan(b"m/", b"n/", usize::MAX).unwrap().len(),
        keys as usize
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn state_decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(chunk) = SnapshotChunk::decode(&bytes) {
            for entry in chunk.entries() {
                let _ = entry;
            }
        }
        let _ = SnapshotHeader::decode(&bytes);
        let _ = SnapshotTrailer::decode(&bytes);
        // Entries of arbitrary data, with a valid checksum.
        let chunk = SnapshotChunk::new(0, Bytes::from(bytes.clone()));
        prop_assert!(chunk.verify().is_ok());
        let parsed: Vec<_> = chunk.entries().collect();
        prop_assert!(parsed.iter().filter(|e| e.is_err()).count() <= 1);
    }

    #[test]
    fn state_decoding_a_damaged_chunk_frame_fails_or_round_trips(
        data in proptest::collection::vec(any::<u8>(), 0..64),
        seq in any::<u64>(),
        flip in any::<prop::sample::Index>(),
    ) {
        let chunk = SnapshotChunk::new(seq, Bytes::from(data));
        let mut wire = chunk.encode().to_vec();
        let at = flip.index(wire.len());
        wire[at] ^= 0x20;
        prop_assert!(SnapshotChunk::decode(&wire).is_err());
        let truncated = &chunk.encode()[..at];
        prop_assert!(SnapshotChunk::decode(truncated).is_err());
    }
}
