//! Concurrency limits and refusals: a third send waits for a send slot; a
//! receiver without a free slot, or holding a newer index, refuses before
//! the sender reads anything from its source.

/// Every test sits under `snapshot::` so `cargo test -p flotilla-router snapshot` selects it.
mod snapshot {
    use std::sync::atomic::Ordering;

    use flotilla_router::snapshot::testing::{Pair, PseudoRandomSource, RecordingSink};
    use flotilla_router::snapshot::{RefuseReason, SnapshotConfig, SnapshotError, SnapshotRequest};
    use tokio::time::{sleep, Duration, Instant};

    const MIB: usize = 1 << 20;

    fn request(range_id: u64, index: u64) -> SnapshotRequest {
        SnapshotRequest {
            to: 2,
            range_id,
            index,
            term: 2,
            size_hint_bytes: 16 * MIB as u64,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_third_concurrent_send_waits_for_a_slot_without_reading_its_source() {
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let config_a = SnapshotConfig::new(dir_a.path());
        assert_eq!(config_a.sends_concurrent_max, 2);
        let pair = Pair::start(
            config_a,
            SnapshotConfig::new(dir_b.path()),
            RecordingSink::discarding(),
            1,
        )
        .unwrap();
        let sources: Vec<PseudoRandomSource> = (0..3)
            .map(|i| PseudoRandomSource::new(i, 16, MIB))
            .collect();
        let reads: Vec<_> = sources.iter().map(|s| s.reads()).collect();
        let started = Instant::now();
        let mut sends = Vec::new();
        for (i, source) in sources.into_iter().enumerate() {
            let a = pair.a.clone();
            sends.push(tokio::spawn(async move {
                let report = a.send(request(i as u64 + 1, 10), source).await;
                (report, Instant::now())
            }));
            // Start them in order, so the third is the one that waits.
            tokio::task::yield_now().await;
        }
        // Two 16 MiB sends share 32 MiB/s: each needs about 1 s.
        sleep(Duration::from_millis(300)).await;
        assert_eq!(pair.a.sends_active(), 2);
        assert!(reads[0].load(Ordering::Acquire) > 0 && reads[1].load(Ordering::Acquire) > 0);
        assert_eq!(
            reads[2].load(Ordering::Acquire),
            0,
            "the waiting send read nothing"
        );
        assert_eq!(pair.b.receives_active(), 2);

        let mut finished = Vec::new();
        for send in sends {
            let (report, at) = send.await.unwrap();
            report.unwrap();
            finished.push(at.duration_since(started).as_secs_f64());
        }
        // The third started only after one of the first two ended.
        assert!(
            finished[2] > finished[0].min(finished[1]) + 0.3,
            "finish times {finished:?}"
        );
        assert_eq!(pair.sink_b.metas().len(), 3);
        assert_eq!(pair.a.sends_active(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_receiver_without_a_free_slot_refuses_before_anything_is_read() {
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut config_b = SnapshotConfig::new(dir_b.path());
        config_b.receives_concurrent_max = 1;
        // This sink keeps the staged snapshot, which keeps its slot taken.
        let pair = Pair::start(
            SnapshotConfig::new(dir_a.path()),
            config_b,
            RecordingSink::new(),
            1,
        )
        .unwrap();
        pair.a
            .send(request(1, 10), PseudoRandomSource::new(1, 2, MIB))
            .await
            .unwrap();
        assert_eq!(pair.b.receives_active(), 1);

        let source = PseudoRandomSource::new(2, 2, MIB);
        let reads = source.reads();
        let error = pair.a.send(request(2, 10), source).await.unwrap_err();
        assert!(
            matches!(
                error,
                SnapshotError::Refused {
                    reason: RefuseReason::NoSlot,
                    range_id: 2,
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(
            reads.load(Ordering::Acquire),
            0,
            "nothing generated for a refused send"
        );

        // The engine applies (drops) the staged snapshot: the slot frees.
        drop(pair.sink_b.take());
        assert_eq!(pair.b.receives_active(), 0);
        pair.a
            .send(request(2, 10), PseudoRandomSource::new(2, 2, MIB))
            .await
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_snapshot_older_than_what_the_receiver_has_is_refused() {
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let pair = Pair::start(
            SnapshotConfig::new(dir_a.path()),
            SnapshotConfig::new(dir_b.path()),
            RecordingSink::discarding(),
            1,
        )
        .unwrap();
        pair.sink_b.set_index_known(5, 100);
        for index in [50, 100] {
            let source = PseudoRandomSource::new(1, 2, MIB);
            let reads = source.reads();
            let error = pair.a.send(request(5, index), source).await.unwrap_err();
            assert!(
                matches!(
                    error,
                    SnapshotError::Refused {
                        reason: RefuseReason::Stale,
                        index_known: 100,
                        ..
                    }
                ),
                "index {index}: {error:?}"
            );
            assert_eq!(reads.load(Ordering::Acquire), 0);
        }
        // Other ranges, and a newer index of this one, are accepted.
        pair.a
            .send(request(6, 50), PseudoRandomSource::new(1, 2, MIB))
            .await
            .unwrap();
        pair.a
            .send(request(5, 101), PseudoRandomSource::new(1, 2, MIB))
            .await
            .unwrap();
        assert_eq!(
            pair.sink_b
                .metas()
                .iter()
                .map(|m| (m.range_id, m.index))
                .collect::<Vec<_>>(),
            [(6, 50), (5, 101)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_absurd_size_is_refused_and_a_second_sender_of_the_same_range_is_busy() {
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let pair = Pair::start(
            SnapshotConfig::new(dir_a.path()),
            SnapshotConfig::new(dir_b.path()),
            RecordingSink::discarding(),
            1,
        )
        .unwrap();
        let mut huge = request(1, 10);
        huge.size_hint_bytes = u64::MAX;
        let error = pair
            .a
            .send(huge, PseudoRandomSource::new(1, 1, MIB))
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                SnapshotError::Refused {
                    reason: RefuseReason::TooLarge,
                    ..
                }
            ),
            "{error:?}"
        );
        // A third node (3) sending range 1 to node 2 while node 1 does is refused.
        let dir_c = tempfile::tempdir().unwrap();
        let c = std::sync::Arc::new(
            flotilla_router::snapshot::SnapshotService::start(
                SnapshotConfig::new(dir_c.path()),
                pair.network.lane(3),
                RecordingSink::new(),
            )
            .unwrap(),
        );
        pair.network.attach(3, &c);
        let a = pair.a.clone();
        let first = tokio::spawn(async move {
            a.send(request(1, 10), PseudoRandomSource::new(1, 32, MIB))
                .await
        });
        sleep(Duration::from_millis(100)).await;
        let error = c
            .send(request(1, 11), PseudoRandomSource::new(2, 1, MIB))
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                SnapshotError::Refused {
                    reason: RefuseReason::Busy,
                    ..
                }
            ),
            "{error:?}"
        );
        first.await.unwrap().unwrap();
    }
}
