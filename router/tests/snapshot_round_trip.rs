//! A multi-chunk snapshot crosses the in-memory lane intact; a corrupted
//! chunk fails the transfer cleanly, leaving no staging file.

/// Every test sits under `snapshot::` so `cargo test -p flotilla-router snapshot` selects it.
mod snapshot {
    use std::time::Duration;

    use bytes::Bytes;
    use flotilla_router::snapshot::testing::{
        pseudo_random_chunk, staging_files, Pair, PseudoRandomSource, RecordingSink,
    };
    use flotilla_router::snapshot::{
        FailReason, SnapshotConfig, SnapshotError, SnapshotRequest, StagedSnapshot,
    };

    const MIB: usize = 1 << 20;

    fn request(range_id: u64, index: u64, chunks: u64) -> SnapshotRequest {
        SnapshotRequest {
            to: 2,
            range_id,
            index,
            term: 3,
            size_hint_bytes: chunks * MIB as u64,
        }
    }

    fn fast(dir: &std::path::Path) -> SnapshotConfig {
        let mut config = SnapshotConfig::new(dir);
        config.send_bytes_per_sec_max = 1 << 40; // unthrottled: measure the pipeline
        config
    }

    /// Reads every chunk back and compares with the source's.
    fn assert_matches_source(staged: &StagedSnapshot, seed: u64, chunks: u64, chunk_bytes: usize) {
        let mut reader = staged.reader().expect("open staged");
        assert_eq!(
            reader.header().expect("header"),
            PseudoRandomSource::header_for(seed)
        );
        for i in 0..chunks {
            let chunk = reader
                .next_chunk()
                .expect("chunk")
                .expect("not the end yet");
            assert_eq!(
                chunk,
                pseudo_random_chunk(seed, i, chunk_bytes),
                "chunk {i}"
            );
        }
        // `None` only comes after the whole checksum verified again.
        assert_eq!(reader.next_chunk().expect("whole checksum verifies"), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sixty_four_random_chunks_round_trip() {
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let pair = Pair::start(
            fast(dir_a.path()),
            fast(dir_b.path()),
            RecordingSink::new(),
            2,
        )
        .unwrap();
        let started = std::time::Instant::now();
        let report = pair
            .a
            .send(request(7, 100, 64), PseudoRandomSource::new(42, 64, MIB))
            .await
            .unwrap();
        let elapsed = started.elapsed();
        assert_eq!(report.chunk_count, 65); // header + 64
        assert_eq!(
            report.raw_bytes,
            64 * MIB as u64 + PseudoRandomSource::header_for(42).len() as u64
        );
        let staged = pair.sink_b.take();
        assert_eq!(staged.len(), 1);
        let meta = *staged[0].meta();
        assert_eq!(
            (
                meta.from,
                meta.range_id,
                meta.index,
                meta.term,
                meta.chunk_count
            ),
            (1, 7, 100, 3, 65)
        );
        assert_matches_source(&staged[0], 42, 64, MIB);
        println!(
            "64 MiB round trip: {:.0} MB/s real ({} ms), peak buffered a={} b={} lane={}",
            64.0 * MIB as f64 / 1e6 / elapsed.as_secs_f64(),
            elapsed.as_millis(),
            pair.a.buffers().peak_bytes(),
            pair.b.buffers().peak_bytes(),
            pair.network.buffers().peak_bytes()
        );
        let path = staged[0].path().to_path_buf();
        assert!(path.exists());
        drop(staged);
        assert!(
            !path.exists(),
            "dropping the staged snapshot removes its file"
        );
        assert_eq!(pair.b.receives_active(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn compressible_chunks_are_compressed_and_restored() {
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let pair = Pair::start(
            fast(dir_a.path()),
            fast(dir_b.path()),
            RecordingSink::new(),
            2,
        )
        .unwrap();
        let chunks: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i; MIB]).collect();
        let source =
            flotilla_router::snapshot::testing::VecSource::new(b"h".to_vec(), chunks.clone());
        let report = pair.a.send(request(7, 100, 8), source).await.unwrap();
        assert!(
            report.wire_bytes < report.raw_bytes / 50,
            "lz4 shrinks constant chunks: {report:?}"
        );
        let staged = pair.sink_b.take();
        let mut reader = staged[0].reader().unwrap();
        assert_eq!(reader.header().unwrap(), Bytes::from_static(b"h"));
        for chunk in &chunks {
            assert_eq!(
                reader.next_chunk().unwrap().unwrap(),
                Bytes::from(chunk.clone())
            );
        }
        assert_eq!(reader.next_chunk().unwrap(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_flipped_bit_in_a_chunk_fails_cleanly_then_a_retry_succeeds() {
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let pair = Pair::start(
            fast(dir_a.path()),
            fast(dir_b.path()),
            RecordingSink::new(),
            2,
        )
        .unwrap();
        // Frame 0 on the link is the reservation, 1 the header, 11 data chunk 10.
        pair.network
            .set_filter(Some(Box::new(|from, _to, n, frame: Bytes| {
                if from == 1 && n == 11 {
                    let mut bytes = frame.to_vec();
                    let middle = bytes.len() / 2;
                    bytes[middle] ^= 0x10;
                    return Some(Bytes::from(bytes));
                }
                Some(frame)
            })));
        let error = pair
            .a
            .send(request(7, 100, 16), PseudoRandomSource::new(1, 16, MIB))
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                SnapshotError::Remote {
                    reason: FailReason::Corrupt,
                    ..
                }
            ),
            "unexpected error {error:?}"
        );
        // The receiver removed its file before answering.
        assert!(staging_files(dir_b.path()).is_empty());
        assert_eq!(pair.b.receives_active(), 0);
        assert!(pair.sink_b.take().is_empty());

        pair.network.set_filter(None);
        pair.a
            .send(request(7, 100, 16), PseudoRandomSource::new(1, 16, MIB))
            .await
            .unwrap();
        let staged = pair.sink_b.take();
        assert_matches_source(&staged[0], 1, 16, MIB);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wrong_whole_checksum_fails_cleanly() {
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let pair = Pair::start(
            fast(dir_a.path()),
            fast(dir_b.path()),
            RecordingSink::new(),
            2,
        )
        .unwrap();
        // Corrupt only the last 4 bytes of the Finish frame: the checksum.
        pair.network
            .set_filter(Some(Box::new(|from, _to, _n, frame: Bytes| {
                let is_finish = frame.len() == 10 + 8 + 8 + 4 && frame.get(1) == Some(&6);
                if from == 1 && is_finish {
                    let mut bytes = frame.to_vec();
                    let last = bytes.len() - 1;
                    bytes[last] ^= 0x01;
                    return Some(Bytes::from(bytes));
                }
                Some(frame)
            })));
        let error = pair
            .a
            .send(request(7, 100, 4), PseudoRandomSource::new(1, 4, MIB))
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                SnapshotError::Remote {
                    reason: FailReason::Corrupt,
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(staging_files(dir_b.path()).is_empty());
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(pair.b.receives_active(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_rejecting_engine_fails_the_send_and_removes_the_file() {
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let pair = Pair::start(
            fast(dir_a.path()),
            fast(dir_b.path()),
            RecordingSink::new(),
            2,
        )
        .unwrap();
        pair.sink_b.reject_all(true);
        let error = pair
            .a
            .send(request(7, 100, 4), PseudoRandomSource::new(1, 4, MIB))
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                SnapshotError::Remote {
                    reason: FailReason::Rejected,
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(staging_files(dir_b.path()).is_empty());
        assert_eq!(pair.b.receives_active(), 0);
    }
}
