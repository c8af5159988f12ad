//! The snapshot lane shares the connection with Raft traffic but never
//! delays it by more than one lane frame.

mod transport_common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use flotilla_raftgroup::MessageBody;
use flotilla_router::transport::frame::{self, FrameKind};
use flotilla_router::transport::handshake::{HelloAck, PROTOCOL_VERSION};
use flotilla_router::transport::{codec, TransportConfig};
use flotilla_router::{LaneError, SnapshotLane};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use transport_common::*;

const LANE_FRAME_BYTES: usize = 1 << 20;
const LANE_FRAMES: u64 = 48;

fn lane_frame(i: u64) -> Bytes {
    let mut data = vec![0u8; LANE_FRAME_BYTES];
    data[..8].copy_from_slice(&i.to_le_bytes());
    Bytes::from(data)
}

/// Reads the next frame off a raw socket.
async fn next_frame(socket: &mut TcpStream, buf: &mut BytesMut) -> frame::Frame {
    loop {
        if let Some(frame) = frame::decode(buf, 4 << 20).expect("a valid frame") {
            return frame;
        }
        let read = tokio::time::timeout(DEADLINE, socket.read_buf(buf))
            .await
            .expect("more frames");
        assert!(read.expect("read") > 0, "connection closed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_overtake_a_stream_of_lane_frames() {
    // Node 2 is this test, reading the wire by hand so that it controls
    // when the socket drains: it does not read until the lane is backed up.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut cfg = config(1);
    cfg.lane_frames_max = 4;
    let (a, _) = start(cfg).await;
    a.add_peer(2, listener.local_addr().unwrap()).unwrap();
    let (mut socket, _) = listener.accept().await.unwrap();
    let mut buf = BytesMut::new();
    let hello = next_frame(&mut socket, &mut buf).await;
    assert_eq!(hello.kind, FrameKind::Hello);
    let ack = HelloAck {
        protocol_version: PROTOCOL_VERSION,
        cluster_id: CLUSTER,
        node_id: 2,
        refusal: None,
    };
    socket.write_all(&ack.encode_frame()).await.unwrap();
    wait_until("connected", || a.is_connected(2)).await;

    let queued = Arc::new(AtomicU64::new(0));
    let producer = {
        let (a, queued) = (a.clone(), queued.clone());
        tokio::spawn(async move {
            for i in 0..LANE_FRAMES {
                a.send_frame(2, lane_frame(i))
                    .await
                    .expect("lane frame queued");
                queued.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    // The writer is stuck in one lane frame and the lane queue is full.
    wait_until("the lane is backed up", || {
        queued.load(Ordering::SeqCst) >= a.stats().lane_frames_sent + 5
    })
    .await;

    let mut lane_read = 0u64;
    for round in 1..=5u64 {
        for range in 1..=1000 {
            a.send(2, heartbeat(range, 1, 2, round));
        }
        a.flush();
        // Read after the flush: an upper bound of the lane frames complete
        // at the flush (the counter moves only after a frame is written).
        let lane_written_at_flush = a.stats().lane_frames_sent;
        let heartbeats = loop {
            let frame = next_frame(&mut socket, &mut buf).await;
            match frame.kind {
                FrameKind::Lane => {
                    assert_eq!(
                        frame.payload[..8],
                        lane_read.to_le_bytes(),
                        "lane frames in order"
                    );
                    lane_read += 1;
                }
                FrameKind::Raft => break codec::decode_batch(frame.payload).unwrap(),
                other => panic!("unexpected {other:?}"),
            }
        };
        // Behind the heartbeats on the wire: what was written before the
        // flush, plus at most the one frame being written at that moment.
        assert!(
            lane_read <= lane_written_at_flush + 1,
            "round {round}: heartbeats came after {lane_read} lane frames, {lane_written_at_flush} were written at flush"
        );
        assert_eq!(heartbeats.messages.len(), 1000);
        assert_eq!(heartbeats.heartbeat_items, 1);
        assert!(heartbeats
            .messages
            .iter()
            .all(|m| matches!(m.message.body, MessageBody::Heartbeat { seq, .. } if seq == round)));
    }
    while lane_read < LANE_FRAMES {
        let frame = next_frame(&mut socket, &mut buf).await;
        assert_eq!(frame.kind, FrameKind::Lane);
        assert_eq!(
            frame.payload[..8],
            lane_read.to_le_bytes(),
            "lane frames in order"
        );
        lane_read += 1;
    }
    producer.await.unwrap();
    let stats = a.stats();
    assert!(stats.lane_frames_ahead_of_raft_max <= 1, "{stats:?}");
    assert!(
        stats.raft_frames_written_with_lane_pending >= 1,
        "the test never overlapped: {stats:?}"
    );
    drop(socket);
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lane_frames_reach_the_handler_and_errors_are_typed() {
    let (a, _ra) = start(config(1)).await;
    let (b, rb) = start(config(2)).await;
    mesh(&[&a, &b]).await;
    for i in 0..20u64 {
        a.send_frame(2, Bytes::from(i.to_le_bytes().to_vec()))
            .await
            .unwrap();
    }
    wait_until("lane frames arrive", || rb.lane.lock().len() == 20).await;
    let got: Vec<u64> = rb
        .lane
        .lock()
        .iter()
        .map(|(from, f)| {
            assert_eq!(*from, 1);
            u64::from_le_bytes(f[..8].try_into().unwrap())
        })
        .collect();
    assert_eq!(got, (0..20).collect::<Vec<_>>());

    assert_eq!(
        a.send_frame(9, Bytes::new()).await,
        Err(LaneError::UnknownPeer(9))
    );
    // The default frame limit leaves no room for a frame header.
    let frame_limit =
        TransportConfig::new(CLUSTER, 1, "127.0.0.1:0".parse().unwrap()).frame_bytes_max;
    let too_big = Bytes::from(vec![0u8; frame_limit]);
    assert!(matches!(
        a.send_frame(2, too_big).await,
        Err(LaneError::FrameTooLarge { .. })
    ));

    // A partition swallows lane frames like any other traffic.
    a.faults().partition_one_way(2);
    a.send_frame(2, Bytes::from_static(b"lost")).await.unwrap();
    assert_eq!(a.stats().lane_frames_dropped, 1);
    a.faults().heal(2);

    b.shutdown().await;
    wait_until("node 1 sees node 2 gone", || !a.is_connected(2)).await;
    assert_eq!(
        a.send_frame(2, Bytes::from_static(b"x")).await,
        Err(LaneError::PeerDown(2))
    );
    a.shutdown().await;
    assert_eq!(
        a.send_frame(2, Bytes::from_static(b"x")).await,
        Err(LaneError::Shutdown)
    );
}
