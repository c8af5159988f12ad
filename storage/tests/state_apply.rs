//! Apply path of the state store: atomicity, reopen, the exactly-once
//! rules, identity, reads and replica destruction.

use flotilla_storage::state::{IndexTerm, StateConfig, StateError, StateStore};
use std::sync::Arc;

fn open(dir: &std::path::Path) -> StateStore {
    StateStore::open(dir, StateConfig::default()).expect("open state store")
}

#[test]
fn state_data_and_applied_index_persist_together_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        for index in 1..=100u64 {
            let mut batch = store.apply_batch();
            batch.put(1, format!("a/{index:03}").as_bytes(), &index.to_le_bytes());
            if index % 10 == 0 {
                batch.delete(1, format!("a/{:03}", index - 5).as_bytes());
            }
            batch.put(2, format!("b/{index:03}").as_bytes(), b"x");
            batch.set_applied(1, index, 3);
            batch.set_applied(2, index + 1000, 4);
            batch.commit().unwrap();
        }
    }
    let store = open(dir.path());
    assert_eq!(
        store.applied_state(1).unwrap(),
        Some(IndexTerm {
            index: 100,
            term: 3
        })
    );
    assert_eq!(
        store.applied_state(2).unwrap(),
        Some(IndexTerm {
            index: 1100,
            term: 4
        })
    );
    let a = store.scan(b"a/", b"a0", usize::MAX).unwrap();
    assert_eq!(a.len(), 90);
    assert!(store.get(b"a/005").unwrap().is_none());
    assert_eq!(
        store.get(b"a/006").unwrap().as_deref(),
        Some(&6u64.to_le_bytes()[..])
    );
    assert_eq!(store.scan(b"b/", b"b0", 7).unwrap().len(), 7);
    assert_eq!(store.range_ids().unwrap(), vec![1, 2]);
}

#[test]
fn state_a_failed_batch_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut batch = store.apply_batch();
    batch.put(1, b"k", b"v");
    batch.set_applied(1, 5, 1);
    batch.commit().unwrap();

    // Writes range 2 without moving its applied index.
    let mut batch = store.apply_batch();
    batch.put(1, b"k", b"other");
    batch.put(2, b"z", b"v");
    batch.set_applied(1, 6, 1);
    let err = batch.commit().unwrap_err();
    assert!(
        matches!(err, StateError::MissingAppliedIndex { range_id: 2 }),
        "{err}"
    );

    // Re-applies index 5: would apply a command twice.
    let mut batch = store.apply_batch();
    batch.put(1, b"k", b"again");
    batch.set_applied(1, 5, 1);
    let err = batch.commit().unwrap_err();
    assert!(
        matches!(
            err,
            StateError::AppliedIndexRegression {
                range_id: 1,
                current: 5,
                proposed: 5
            }
        ),
        "{err}"
    );

    assert_eq!(store.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
    assert!(store.get(b"z").unwrap().is_none());
    assert_eq!(store.applied_state(1).unwrap().unwrap().index, 5);
}

#[test]
fn state_identity_binds_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        assert_eq!(store.identity().unwrap(), None);
        store.ensure_identity(42, 3).unwrap();
    }
    let store = open(dir.path());
    store.ensure_identity(42, 3).unwrap();
    let err = store.ensure_identity(43, 3).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StateError::IdentityMismatch { .. }));
    assert!(
        text.contains("cluster 42 node 3") && text.contains("cluster 43 node 3"),
        "{text}"
    );
    assert!(matches!(
        store.ensure_identity(42, 4),
        Err(StateError::IdentityMismatch { .. })
    ));
}

#[test]
fn state_read_view_is_point_in_time_and_scan_respects_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut batch = store.apply_batch();
    for k in [&b"a"[..], b"b", b"c", b"d"] {
        batch.put(1, k, b"1");
    }
    batch.set_applied(1, 1, 1);
    batch.commit().unwrap();

    let view = store.read_view();
    let mut batch = store.apply_batch();
    batch.put(1, b"b", b"2");
    batch.delete(1, b"c");
    batch.set_applied(1, 2, 1);
    batch.commit().unwrap();

    let old = view.scan(b"b", b"d", 10).unwrap();
    assert_eq!(old.len(), 2);
    assert_eq!(&old[0].1[..], b"1");
    assert_eq!(view.applied_state(1).unwrap().unwrap().index, 1);
    let new = store.scan(b"b", b"", 10).unwrap();
    assert_eq!(new.len(), 2); // b, d
    assert_eq!(&new[0].1[..], b"2");
    assert_eq!(store.scan(b"a", b"z", 1).unwrap().len(), 1);
    assert!(store.scan(b"c", b"b", 10).unwrap().is_empty());
}

#[test]
fn state_destroy_removes_range_data_and_metadata_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut batch = store.apply_batch();
    batch.put(1, b"a1", b"x");
    batch.put(1, b"a2", b"x");
    batch.put(2, b"b1", b"y");
    batch.set_descriptor(1, b"desc-1");
    batch.set_applied(1, 9, 2);
    batch.set_applied(2, 9, 2);
    batch.commit().unwrap();
    store.set_truncated_state(1, 5, 2).unwrap();
    assert_eq!(
        store.range_descriptor(1).unwrap().as_deref(),
        Some(&b"desc-1"[..])
    );

    store.destroy_range(1, b"a", b"b").unwrap();
    assert_eq!(store.range_state(1).unwrap(), Default::default());
    assert!(store.scan(b"a", b"b", 10).unwrap().is_empty());
    assert_eq!(store.get(b"b1").unwrap().as_deref(), Some(&b"y"[..]));
    assert_eq!(store.range_ids().unwrap(), vec![2]);

    // The last range (empty end) is destroyed up to its largest key.
    store.destroy_range(2, b"b", b"").unwrap();
    assert!(store.scan(b"", b"", 10).unwrap().is_empty());
    assert!(store.range_ids().unwrap().is_empty());
}

#[test]
fn destroying_a_replica_leaves_a_tombstone_that_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        let mut batch = store.apply_batch();
        batch.put(7, b"k1", b"v");
        batch.set_descriptor(7, b"desc-7");
        batch.set_applied(7, 10, 2);
        batch.commit().unwrap();
        assert_eq!(store.tombstone(7).unwrap(), None);
        store.destroy_replica(7, b"k", b"l", 4).unwrap();
        assert_eq!(store.tombstone(7).unwrap(), Some(4));
        assert_eq!(store.range_descriptor(7).unwrap(), None);
        assert_eq!(store.applied_state(7).unwrap(), None);
        assert!(store.scan(b"", b"", 10).unwrap().is_empty());
        // A tombstone alone is not a replica to start.
        assert!(store.range_ids().unwrap().is_empty());
    }
    let store = open(dir.path());
    assert_eq!(store.tombstone(7).unwrap(), Some(4));
    assert!(store.range_ids().unwrap().is_empty());
    // A replica created again later (a new snapshot) is listed again.
    let mut batch = store.apply_batch();
    batch.set_descriptor(7, b"desc-7-again");
    batch.set_applied(7, 20, 3);
    batch.commit().unwrap();
    assert_eq!(store.range_ids().unwrap(), vec![7]);
}

#[test]
fn state_store_is_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<StateStore>();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    let threads: Vec<_> = (1..=4u64)
        .map(|range_id| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for index in 1..=200u64 {
                    let mut batch = store.apply_batch();
                    batch.put(range_id, format!("{range_id}/{index}").as_bytes(), b"v");
                    batch.set_applied(range_id, index, 1);
                    batch.commit().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for range_id in 1..=4u64 {
        assert_eq!(store.applied_state(range_id).unwrap().unwrap().index, 200);
    }
    assert_eq!(store.scan(b"", b"", usize::MAX).unwrap().len(), 800);
}

#[test]
fn state_invalid_config_is_rejected_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let config = StateConfig {
        snapshot_chunk_bytes: 10,
        ..StateConfig::default()
    };
    let err = StateStore::open(dir.path(), config).err().unwrap();
    assert!(err.to_string().contains("snapshot_chunk_bytes"), "{err}");
}

#[test]
fn state_corrupt_metadata_on_disk_is_a_clear_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store.ensure_identity(1, 1).unwrap();
        let mut batch = store.apply_batch();
        batch.put(1, b"k", b"v");
        batch.set_applied(1, 3, 1);
        batch.commit().unwrap();
    }
    {
        // Damage the records underneath the store, as a bad disk would.
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(false);
        let db = rocksdb::DB::open_cf(&opts, dir.path(), ["data", "meta"]).unwrap();
        let meta = db.cf_handle("meta").unwrap();
        let mut applied_key = vec![0x02];
        applied_key.extend_from_slice(&1u64.to_be_bytes());
        applied_key.push(0x01);
        let mut record = db.get_cf(meta, &applied_key).unwrap().unwrap();
        record[3] ^= 0x10;
        db.put_cf(meta, &applied_key, &record).unwrap();
        db.put_cf(meta, [0x01, b'i', b'd'], b"xx").unwrap();
    }
    let store = open(dir.path());
    let err = store.applied_state(1).unwrap_err();
    assert!(err.is_corruption());
    assert!(
        err.to_string()
            .contains("corrupt applied state: checksum mismatch"),
        "{err}"
    );
    let err = store.ensure_identity(1, 1).unwrap_err();
    assert!(err.to_string().contains("corrupt store identity"), "{err}");
    // An apply on top of a corrupt applied index is refused, not guessed.
    let mut batch = store.apply_batch();
    batch.put(1, b"k", b"w");
    batch.set_applied(1, 4, 1);
    assert!(batch.commit().unwrap_err().is_corruption());
    assert_eq!(store.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
}

#[test]
fn state_log_cannot_be_truncated_past_the_applied_index() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut batch = store.apply_batch();
    batch.put(1, b"k", b"v");
    batch.set_applied(1, 10, 2);
    batch.commit().unwrap();
    let err = store.set_truncated_state(1, 11, 2).unwrap_err();
    assert!(
        matches!(
            err,
            StateError::TruncatedBeyondApplied {
                range_id: 1,
                index: 11,
                applied: 10
            }
        ),
        "{err}"
    );
    store.set_truncated_state(1, 10, 2).unwrap();
    assert_eq!(
        store.truncated_state(1).unwrap(),
        Some(IndexTerm { index: 10, term: 2 })
    );
}

/// Apply-path throughput. Run by hand:
/// `cargo test --release -p flotilla-storage --test state_apply -- --ignored --nocapture`
#[test]
#[ignore]
fn state_apply_throughput() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let value = [7u8; 100];
    // Many small batches of one range (a busy single group).
    let batches = 100_000u64;
    let t = std::time::Instant::now();
    for index in 1..=batches {
        let mut batch = store.apply_batch();
        batch.put(1, format!("a/{:08}", index % 10_000).as_bytes(), &value);
        batch.set_applied(1, index, 1);
        batch.commit().unwrap();
    }
    let one = t.elapsed();
    // Few large batches spanning 1000 ranges (a poller round of many groups).
    let rounds = 200u64;
    let t = std::time::Instant::now();
    for round in 1..=rounds {
        let mut batch = store.apply_batch();
        for range_id in 100..1100u64 {
            batch.put(
                range_id,
                format!("r/{range_id}/{}", round % 50).as_bytes(),
                &value,
            );
            batch.set_applied(range_id, round, 1);
        }
        batch.commit().unwrap();
    }
    let many = t.elapsed();
    println!(
        "1 put/batch: {:.0} batches/s ({:.1} us each); 1000 ranges/batch: {:.0} batches/s ({:.0} range-applies/s)",
        batches as f64 / one.as_secs_f64(),
        one.as_secs_f64() * 1e6 / batches as f64,
        rounds as f64 / many.as_secs_f64(),
        (rounds * 1000) as f64 / many.as_secs_f64()
    );
}
