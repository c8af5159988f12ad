//! A 256 MiB snapshot under the default 32 MiB/s limit: ~8 s of (virtual)
//! tokio time, bounded buffering, and heartbeats on the high-priority
//! channel of the same link never wait behind more than one snapshot frame.

/// Every test sits under `snapshot::` so `cargo test -p flotilla-router snapshot` selects it.
mod snapshot {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use flotilla_router::snapshot::testing::{
        pseudo_random_chunk, Pair, PseudoRandomSource, RecordingSink,
    };
    use flotilla_router::snapshot::{SnapshotConfig, SnapshotRequest};
    use tokio::time::{Duration, Instant};

    const MIB: u64 = 1 << 20;

    #[tokio::test(start_paused = true)]
    async fn a_256_mib_snapshot_at_32_mib_per_sec_takes_8_virtual_seconds_in_bounded_memory() {
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let config_a = SnapshotConfig::new(dir_a.path());
        assert_eq!(
            config_a.send_bytes_per_sec_max,
            32 * MIB,
            "the default is what this test measures"
        );
        let window = u64::from(config_a.window_chunks);
        let chunk = config_a.chunk_bytes_max as u64;
        // The bound stated in the module docs for one transfer, both ends and
        // the lane together.
        let bound_bytes = (window + 3) * chunk + 64 * 1024;
        // The engine drops staged snapshots once applied; this sink drops at once.
        let pair = Pair::start(
            config_a,
            SnapshotConfig::new(dir_b.path()),
            RecordingSink::discarding(),
            1,
        )
        .unwrap();

        // Heartbeats every 200 ms on the high-priority channel of the same link.
        let transferring = Arc::new(AtomicBool::new(true));
        let heartbeats = {
            let (network, transferring) = (pair.network.clone(), Arc::clone(&transferring));
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(Duration::from_millis(200));
                while transferring.load(Ordering::Acquire) {
                    ticks.tick().await;
                    network.send_heartbeat(1, 2);
                }
            })
        };

        let chunks = 256;
        let request = SnapshotRequest {
            to: 2,
            range_id: 9,
            index: 500,
            term: 4,
            size_hint_bytes: chunks * MIB,
        };
        let real = std::time::Instant::now();
        let started = Instant::now();
        let report = pair
            .a
            .send(request, PseudoRandomSource::new(7, chunks, MIB as usize))
            .await
            .unwrap();
        let virtual_secs = started.elapsed().as_secs_f64();
        transferring.store(false, Ordering::Release);
        heartbeats.await.unwrap();

        let peak = pair.a.buffers().peak_bytes()
            + pair.network.buffers().peak_bytes()
            + pair.b.buffers().peak_bytes();
        let link = pair.network.link_stats(1, 2);
        println!(
            "256 MiB at 32 MiB/s: {virtual_secs:.3} s virtual ({} ms real); peak buffered bytes \
         (sum of per-part peaks) {peak} = a {} + lane {} + b {}, bound {bound_bytes}; {link:?}",
            real.elapsed().as_millis(),
            pair.a.buffers().peak_bytes(),
            pair.network.buffers().peak_bytes(),
            pair.b.buffers().peak_bytes(),
        );

        // 256 MiB + ~7 KiB of frame overhead, with one 1 MiB burst up front.
        assert!(
            (7.9..8.1).contains(&virtual_secs),
            "took {virtual_secs} s of virtual time"
        );
        assert_eq!(report.chunk_count, chunks + 1);
        assert!(report.wire_bytes >= chunks * MIB, "random data is sent raw");
        assert_eq!(pair.sink_b.metas().len(), 1);
        assert!(
            peak <= bound_bytes,
            "peak {peak} above the stated bound {bound_bytes}"
        );
        // Every buffer was released.
        assert_eq!(
            pair.a.buffers().current_bytes() + pair.b.buffers().current_bytes(),
            0
        );

        // The scheduler puts one frame at a time on the lane...
        assert_eq!(link.in_flight_max, 1);
        // ...so a heartbeat never queues behind more than the frame being delivered...
        assert!(link.heartbeat_overtaken_max <= 1, "{link:?}");
        assert_eq!(link.heartbeat_delay_max, Duration::ZERO, "{link:?}");
        // ...and heartbeats kept flowing at their interval all along (40 in 8 s).
        assert!(link.heartbeats_delivered >= 39, "{link:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn two_sends_share_the_node_bandwidth() {
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let pair = Pair::start(
            SnapshotConfig::new(dir_a.path()),
            SnapshotConfig::new(dir_b.path()),
            RecordingSink::discarding(),
            1,
        )
        .unwrap();
        let started = Instant::now();
        let send = |range_id: u64, seed: u64| {
            let request = SnapshotRequest {
                to: 2,
                range_id,
                index: 10,
                term: 1,
                size_hint_bytes: 32 * MIB,
            };
            pair.a
                .send(request, PseudoRandomSource::new(seed, 32, MIB as usize))
        };
        let (one, two) = tokio::join!(send(1, 1), send(2, 2));
        one.unwrap();
        two.unwrap();
        let secs = started.elapsed().as_secs_f64();
        // 64 MiB together at 32 MiB/s: 2 s, not 1 s.
        assert!((1.9..2.1).contains(&secs), "took {secs} s");
        // Sanity: the chunk generator is deterministic.
        assert_eq!(pseudo_random_chunk(1, 0, 64), pseudo_random_chunk(1, 0, 64));
    }
}
