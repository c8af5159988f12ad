//! Killed senders and receivers, lost frames, timeouts and restarts: no
//! staging file survives, no slot leaks, and the next attempt succeeds.

/// Every test sits under `snapshot::` so `cargo test -p flotilla-router snapshot` selects it.
mod snapshot {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use bytes::Bytes;
    use flotilla_router::snapshot::testing::{
        staging_files, Pair, PseudoRandomSource, RecordingSink,
    };
    use flotilla_router::snapshot::{FailReason, SnapshotConfig, SnapshotError, SnapshotRequest};
    use tokio::time::{sleep, Duration};

    const MIB: usize = 1 << 20;

    fn request(index: u64) -> SnapshotRequest {
        SnapshotRequest {
            to: 2,
            range_id: 3,
            index,
            term: 2,
            size_hint_bytes: 64 * MIB as u64,
        }
    }

    /// 64 MiB at the default 32 MiB/s: a transfer of ~2 virtual seconds.
    fn slow_source(seed: u64) -> PseudoRandomSource {
        PseudoRandomSource::new(seed, 64, MIB)
    }

    fn pair(dir_a: &std::path::Path, dir_b: &std::path::Path) -> Pair {
        Pair::start(
            SnapshotConfig::new(dir_a),
            SnapshotConfig::new(dir_b),
            RecordingSink::discarding(),
            1,
        )
        .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_sender_killed_mid_snapshot_leaves_nothing_behind() {
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let pair = pair(dir_a.path(), dir_b.path());
        let a = pair.a.clone();
        let send = tokio::spawn(async move { a.send(request(10), slow_source(1)).await });
        sleep(Duration::from_millis(500)).await;
        assert_eq!(
            staging_files(dir_b.path()).len(),
            1,
            "mid-transfer the receiver stages one file"
        );
        send.abort(); // the sending task dies: its future is dropped
        assert!(send.await.unwrap_err().is_cancelled());
        // The dropped send told the receiver (Cancel); nothing waits for a timeout.
        sleep(Duration::from_millis(10)).await;
        assert!(staging_files(dir_b.path()).is_empty());
        assert_eq!((pair.a.sends_active(), pair.b.receives_active()), (0, 0));
        assert_eq!(
            pair.a.buffers().current_bytes() + pair.b.buffers().current_bytes(),
            0
        );

        pair.a.send(request(10), slow_source(1)).await.unwrap();
        assert_eq!(pair.sink_b.metas().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_sender_that_vanishes_silently_is_timed_out_by_the_receiver() {
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let pair = pair(dir_a.path(), dir_b.path());
        // A partition from 1 to 2 once the transfer is under way: even the
        // sender's Cancel is lost, as when its process crashes.
        let partitioned = Arc::new(AtomicBool::new(false));
        let cut = Arc::clone(&partitioned);
        pair.network
            .set_filter(Some(Box::new(move |from, _to, _n, frame: Bytes| {
                if from == 1 && cut.load(Ordering::Acquire) {
                    return None;
                }
                Some(frame)
            })));
        let a = pair.a.clone();
        let send = tokio::spawn(async move { a.send(request(10), slow_source(1)).await });
        sleep(Duration::from_millis(500)).await;
        partitioned.store(true, Ordering::Release);
        send.abort();
        let _ = send.await;
        sleep(Duration::from_secs(5)).await;
        assert_eq!(
            staging_files(dir_b.path()).len(),
            1,
            "still waiting within the idle timeout"
        );
        sleep(Duration::from_secs(30)).await;
        assert!(
            staging_files(dir_b.path()).is_empty(),
            "the idle timeout removed it"
        );
        assert_eq!(pair.b.receives_active(), 0);

        partitioned.store(false, Ordering::Release);
        pair.a.send(request(10), slow_source(1)).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_receiver_that_stops_answering_fails_the_send_by_timeout() {
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let pair = pair(dir_a.path(), dir_b.path());
        let partitioned = Arc::new(AtomicBool::new(false));
        let cut = Arc::clone(&partitioned);
        // Acks from 2 to 1 are lost: the sender's window never reopens.
        pair.network
            .set_filter(Some(Box::new(move |from, _to, _n, frame: Bytes| {
                if from == 2 && cut.load(Ordering::Acquire) {
                    return None;
                }
                Some(frame)
            })));
        let a = pair.a.clone();
        let send = tokio::spawn(async move { a.send(request(10), slow_source(1)).await });
        sleep(Duration::from_millis(500)).await;
        partitioned.store(true, Ordering::Release);
        let error = send.await.unwrap().unwrap_err();
        assert!(matches!(error, SnapshotError::Timeout { .. }), "{error:?}");
        // The sender's Cancel reached the receiver (only 2 → 1 is cut).
        sleep(Duration::from_millis(10)).await;
        assert!(staging_files(dir_b.path()).is_empty());
        assert_eq!((pair.a.sends_active(), pair.b.receives_active()), (0, 0));

        partitioned.store(false, Ordering::Release);
        pair.a.send(request(10), slow_source(1)).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_receiver_killed_mid_snapshot_cleans_up_and_a_restarted_one_accepts_the_retry() {
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut pair = pair(dir_a.path(), dir_b.path());
        let a = pair.a.clone();
        let send = tokio::spawn(async move { a.send(request(10), slow_source(1)).await });
        sleep(Duration::from_millis(500)).await;
        assert_eq!(staging_files(dir_b.path()).len(), 1);
        // Node 2 goes down: its service is dropped, its transfer tasks end.
        pair.restart_b(SnapshotConfig::new(dir_b.path())).unwrap();
        let error = send.await.unwrap().unwrap_err();
        assert!(
            matches!(
                error,
                SnapshotError::Remote {
                    reason: FailReason::Cancelled | FailReason::Unknown,
                    ..
                } | SnapshotError::Lane(_)
                    | SnapshotError::Timeout { .. }
            ),
            "{error:?}"
        );
        sleep(Duration::from_millis(10)).await;
        assert!(staging_files(dir_b.path()).is_empty());

        pair.a.send(request(10), slow_source(1)).await.unwrap();
        assert_eq!(pair.sink_b.metas().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_restart_removes_stale_staging_files_and_only_those() {
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        // What a crash (kill -9) mid-transfer leaves behind.
        std::fs::write(
            dir_b.path().join("r3-n1-t99-1.snapstage"),
            b"half a snapshot",
        )
        .unwrap();
        std::fs::write(dir_b.path().join("r4-n1-t9a-2.snapstage"), b"").unwrap();
        std::fs::write(dir_b.path().join("not-ours.txt"), b"keep me").unwrap();
        let pair = pair(dir_a.path(), dir_b.path());
        assert_eq!(pair.b.stale_files_removed(), 2);
        assert!(staging_files(dir_b.path()).is_empty());
        assert!(dir_b.path().join("not-ours.txt").exists());
        pair.a
            .send(request(10), PseudoRandomSource::new(1, 2, MIB))
            .await
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_sender_retrying_while_its_old_transfer_lingers_supersedes_it() {
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut config_b = SnapshotConfig::new(dir_b.path());
        config_b.receives_concurrent_max = 1;
        let pair = Pair::start(
            SnapshotConfig::new(dir_a.path()),
            config_b,
            RecordingSink::discarding(),
            1,
        )
        .unwrap();
        // Lose everything from 1 to 2 after the first transfer started, so its
        // Cancel never arrives and the receiver still holds its only slot...
        let partitioned = Arc::new(AtomicBool::new(false));
        let cut = Arc::clone(&partitioned);
        pair.network
            .set_filter(Some(Box::new(move |from, _to, _n, frame: Bytes| {
                if from == 1 && cut.load(Ordering::Acquire) {
                    return None;
                }
                Some(frame)
            })));
        let a = pair.a.clone();
        let send = tokio::spawn(async move { a.send(request(10), slow_source(1)).await });
        sleep(Duration::from_millis(500)).await;
        partitioned.store(true, Ordering::Release);
        send.abort();
        let _ = send.await;
        partitioned.store(false, Ordering::Release);
        assert_eq!(pair.b.receives_active(), 1);
        // ...yet the retry of the same range by the same sender takes it over.
        pair.a.send(request(11), slow_source(2)).await.unwrap();
        sleep(Duration::from_millis(10)).await;
        assert!(staging_files(dir_b.path()).is_empty());
        assert_eq!(pair.b.receives_active(), 0);
        assert_eq!(
            pair.sink_b
                .metas()
                .iter()
                .map(|m| m.index)
                .collect::<Vec<_>>(),
            [11]
        );
    }
}
