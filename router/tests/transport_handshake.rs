//! Strangers are refused at the handshake: another cluster, an unknown
//! node id, an incompatible protocol version. A refused connection never
//! delivers a message, and the reason reaches the logs of both sides (the
//! acceptor logs it and sends it back in the `HelloAck`).

mod transport_common;

use bytes::BytesMut;
use flotilla_router::transport::handshake::{Hello, HelloAck, PROTOCOL_VERSION};
use flotilla_router::transport::{codec, frame, Transport, TransportConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use transport_common::*;

/// Node 5 knows node 1 (at a dummy address): node 1 may dial it.
async fn acceptor() -> (Transport, std::sync::Arc<Recorder>) {
    let (node, recorder) = start(config(5)).await;
    node.add_peer(1, "127.0.0.1:9".parse().unwrap()).unwrap();
    (node, recorder)
}

async fn assert_dialer_refused(dialer_config: TransportConfig) {
    let (target, target_recorder) = acceptor().await;
    let (dialer, _) = start(dialer_config).await;
    dialer.add_peer(5, target.local_addr()).unwrap();
    wait_until("the target refuses a handshake", || {
        target.stats().handshakes_refused >= 2
    })
    .await;
    wait_until("the dialer counts failed attempts", || {
        dialer.stats().connect_failures >= 2
    })
    .await;
    assert!(!dialer.is_connected(5));
    assert_eq!(dialer.stats().connections_established, 0);
    dialer.send(5, heartbeat(1, 1, 5, 1));
    dialer.flush();
    assert_eq!(dialer.stats().dropped_peer_down, 1);
    assert_eq!(target.stats().raft_frames_received, 0);
    assert_eq!(target_recorder.messages(), 0);
    dialer.shutdown().await;
    target.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_another_cluster_is_refused() {
    let mut foreign = config(1);
    foreign.cluster_id = CLUSTER + 1;
    assert_dialer_refused(foreign).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_node_id_is_refused() {
    // Node 3 of the right cluster, but node 5 never heard of it.
    assert_dialer_refused(config(3)).await;
}

/// Connects raw, sends `hello` and, right behind it, a valid Raft frame.
/// Returns the `HelloAck` and whether the connection was then closed.
async fn raw_attempt(target: &Transport, hello: Hello) -> (HelloAck, bool) {
    let mut socket = TcpStream::connect(target.local_addr()).await.unwrap();
    let mut bytes = hello.encode_frame();
    codec::encode_frames(&[heartbeat(1, 1, 5, 1)], &mut bytes, 1 << 20);
    socket.write_all(&bytes).await.unwrap();
    let mut buf = BytesMut::new();
    let ack = loop {
        if let Some(frame) = frame::decode(&mut buf, 1024).unwrap() {
            let mut whole = BytesMut::new();
            frame::encode(frame.kind, &frame.payload, &mut whole, 1024).unwrap();
            break HelloAck::decode_frame(&whole).unwrap();
        }
        let read = tokio::time::timeout(DEADLINE, socket.read_buf(&mut buf))
            .await
            .expect("an answer");
        assert!(read.unwrap() > 0, "closed without an answer");
    };
    let mut rest = [0u8; 16];
    // Only refusals are tried here: they close at once; DEADLINE bounds a bug.
    let closed = matches!(
        tokio::time::timeout(DEADLINE, socket.read(&mut rest)).await,
        Ok(Ok(0)) | Ok(Err(_))
    );
    (ack, closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incompatible_protocol_version_is_refused_and_delivers_nothing() {
    let (target, recorder) = acceptor().await;
    let hello = Hello {
        protocol_version: PROTOCOL_VERSION + 1,
        cluster_id: CLUSTER,
        node_id: 1,
        target_node_id: 5,
    };
    let (ack, closed) = raw_attempt(&target, hello).await;
    let reason = ack.refusal.expect("refused");
    assert!(reason.contains("protocol version"), "{reason}");
    assert!(closed, "a refused connection must be closed");
    assert_eq!(target.stats().handshakes_refused, 1);
    assert_eq!(target.stats().raft_frames_received, 0);
    assert_eq!(recorder.messages(), 0);

    // The same raw path with a correct Hello does deliver (the refusal
    // above is the handshake's doing, not the test's).
    let hello = Hello {
        protocol_version: PROTOCOL_VERSION,
        cluster_id: CLUSTER,
        node_id: 1,
        target_node_id: 5,
    };
    let mut socket = TcpStream::connect(target.local_addr()).await.unwrap();
    let mut bytes = hello.encode_frame();
    codec::encode_frames(&[heartbeat(1, 1, 5, 1)], &mut bytes, 1 << 20);
    socket.write_all(&bytes).await.unwrap();
    wait_until("an accepted raw peer delivers", || recorder.messages() == 1).await;
    drop(socket);
    target.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusal_reasons_name_the_problem() {
    let (target, recorder) = acceptor().await;
    let cases = [
        (
            Hello {
                protocol_version: PROTOCOL_VERSION,
                cluster_id: 99,
                node_id: 1,
                target_node_id: 5,
            },
            "cluster",
        ),
        (
            Hello {
                protocol_version: PROTOCOL_VERSION,
                cluster_id: CLUSTER,
                node_id: 4,
                target_node_id: 5,
            },
            "not a known peer",
        ),
        (
            Hello {
                protocol_version: PROTOCOL_VERSION,
                cluster_id: CLUSTER,
                node_id: 1,
                target_node_id: 6,
            },
            "expected to reach node 6",
        ),
        (
            Hello {
                protocol_version: 0,
                cluster_id: CLUSTER,
                node_id: 1,
                target_node_id: 5,
            },
            "incompatible",
        ),
    ];
    for (i, (hello, needle)) in cases.into_iter().enumerate() {
        let (ack, closed) = raw_attempt(&target, hello).await;
        let reason = ack.refusal.expect("refused");
        assert!(reason.contains(needle), "case {i}: {reason}");
        assert!(closed, "case {i}: not closed");
    }
    assert_eq!(target.stats().handshakes_refused, 4);
    assert_eq!(recorder.messages(), 0);

    // Garbage instead of a Hello: closed without delivering anything.
    let mut socket = TcpStream::connect(target.local_addr()).await.unwrap();
    socket.write_all(&[0xffu8; 64]).await.unwrap();
    let mut rest = [0u8; 16];
    let read = tokio::time::timeout(DEADLINE, socket.read(&mut rest))
        .await
        .expect("closed");
    assert!(matches!(read, Ok(0) | Err(_)));
    wait_until("garbage is counted as refused", || {
        target.stats().handshakes_refused == 5
    })
    .await;
    assert_eq!(recorder.messages(), 0);
    target.shutdown().await;
}
