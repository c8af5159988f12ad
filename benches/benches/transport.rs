//! Transport throughput over loopback, side by side with the physical
//! limit: the same number of bytes written through a plain tokio TCP socket
//! in the same run.
//!
//! For 1, 100 and 10,000 active groups, every poller round each group sends
//! one Append carrying one 128-byte entry to the other node, then the round
//! ends with one `flush` (as the engine does). The sender keeps a bounded
//! number of messages in flight and counts deliveries at the receiver's
//! handler, so the numbers include encode, write, read, CRC, decode and
//! hand-over. Also prints codec encode/decode speed.
//!
//! Run: `cargo bench -p flotilla-bench --bench transport` (under a minute).
//! The last line is `transport_vs_raw_tcp_ratio=<wire MB/s of the transport
//! / MB/s of raw TCP>` for the 10,000-group case, the one the transport's
//! batching is built for.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use flotilla_raftgroup::{Entry, Message, MessageBody};
use flotilla_router::transport::{codec, Transport, TransportConfig};
use flotilla_router::{InboundHandler, NodeId, RaftEnvelope};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PAYLOAD_BYTES: usize = 128;
const RUN_PER_CASE: Duration = Duration::from_millis(2500);
const IN_FLIGHT_MESSAGES_MAX: u64 = 60_000;

#[derive(Default)]
struct Counter {
    messages: AtomicU64,
}

impl InboundHandler for Counter {
    fn on_raft_messages(&self, _from: NodeId, messages: Vec<RaftEnvelope>) {
        self.messages
            .fetch_add(messages.len() as u64, Ordering::Relaxed);
    }
    fn on_snapshot_frame(&self, _from: NodeId, _frame: Bytes) {}
    fn on_peer_unreachable(&self, _node: NodeId) {}
}

fn append(range_id: u64, index: u64, payload: &Bytes) -> RaftEnvelope {
    RaftEnvelope {
        range_id,
        message: Message {
            from: 1,
            to: 2,
            term: 5,
            body: MessageBody::Append {
                prev_index: index - 1,
                prev_term: 5,
                entries: vec![Entry::new(5, index, payload.clone())],
                commit: index - 1,
            },
        },
    }
}

struct Row {
    groups: u64,
    messages: u64,
    seconds: f64,
    wire_bytes: u64,
    raw_seconds: f64,
}

impl Row {
    fn messages_per_sec(&self) -> f64 {
        self.messages as f64 / self.seconds
    }
    fn wire_mb_per_sec(&self) -> f64 {
        self.wire_bytes as f64 / self.seconds / 1e6
    }
    fn payload_mb_per_sec(&self) -> f64 {
        (self.messages * PAYLOAD_BYTES as u64) as f64 / self.seconds / 1e6
    }
    fn raw_mb_per_sec(&self) -> f64 {
        self.wire_bytes as f64 / self.raw_seconds / 1e6
    }
    fn ratio(&self) -> f64 {
        self.wire_mb_per_sec() / self.raw_mb_per_sec()
    }
}

/// Drives `sender` from a plain thread (like an engine poller: it never
/// awaits) for `groups` active groups.
fn transport_case(
    sender: &Transport,
    receiver: &Transport,
    counter: &Counter,
    groups: u64,
) -> (u64, f64, u64) {
    let payload = Bytes::from(vec![0xabu8; PAYLOAD_BYTES]);
    let delivered_before = counter.messages.load(Ordering::Relaxed);
    let dropped_before = sender.stats().dropped_queue_full;
    let bytes_before = receiver.stats().bytes_received;
    let mut sent = 0u64;
    let mut index = 1u64;
    let mut busy = Duration::ZERO;
    let started = Instant::now();
    while started.elapsed() < RUN_PER_CASE {
        let delivered = counter.messages.load(Ordering::Relaxed) - delivered_before;
        if sent - delivered + groups > IN_FLIGHT_MESSAGES_MAX.max(groups) {
            std::thread::sleep(Duration::from_micros(20));
            continue;
        }
        let busy_from = Instant::now();
        for range in 1..=groups {
            sender.send(2, append(range, index, &payload));
        }
        sender.flush();
        busy += busy_from.elapsed();
        sent += groups;
        index += 1;
    }
    while counter.messages.load(Ordering::Relaxed) - delivered_before < sent {
        std::thread::sleep(Duration::from_micros(50));
    }
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "groups {groups}: caller busy {:.0} ns per message (build + send + flush)",
        busy.as_nanos() as f64 / sent as f64
    );
    assert_eq!(
        sender.stats().dropped_queue_full,
        dropped_before,
        "the window keeps the queue from overflowing"
    );
    (
        sent,
        seconds,
        receiver.stats().bytes_received - bytes_before,
    )
}

/// Writes `total` bytes through a plain connected tokio socket pair in
/// 64 KiB writes and reads them on the other side; returns seconds.
async fn raw_tcp(total: u64) -> f64 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let reader = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0u64;
        while got < total {
            let n = socket.read(&mut buf).await.expect("read");
            assert!(n > 0, "raw peer closed early");
            got += n as u64;
        }
    });
    let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
    socket.set_nodelay(true).expect("nodelay");
    let chunk = vec![0x5au8; 64 * 1024];
    let started = Instant::now();
    let mut left = total;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        socket.write_all(&chunk[..n]).await.expect("write");
        left -= n as u64;
    }
    reader.await.expect("reader");
    started.elapsed().as_secs_f64()
}

fn codec_speed() -> (f64, f64, usize) {
    let payload = Bytes::from(vec![0xabu8; PAYLOAD_BYTES]);
    let messages: Vec<RaftEnvelope> = (1..=10_000)
        .map(|range| append(range, 7, &payload))
        .collect();
    let mut out = BytesMut::new();
    codec::encode_frames(&messages, &mut out, 16 << 20);
    let frame_bytes = out.len();

    let mut rounds = 0u64;
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        out.clear();
        codec::encode_frames(&messages, &mut out, 16 << 20);
        rounds += 1;
    }
    let encode_mb = (rounds * frame_bytes as u64) as f64 / started.elapsed().as_secs_f64() / 1e6;

    let payload_bytes = out
        .split_off(flotilla_router::transport::frame::FRAME_HEADER_BYTES)
        .freeze();
    let mut rounds = 0u64;
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        let batch = codec::decode_batch(payload_bytes.clone()).expect("decodes");
        assert_eq!(batch.messages.len(), 10_000);
        rounds += 1;
    }
    let decode_mb = (rounds * frame_bytes as u64) as f64 / started.elapsed().as_secs_f64() / 1e6;
    (encode_mb, decode_mb, frame_bytes)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let counter = Arc::new(Counter::default());
    let (sender, receiver) = runtime.block_on(async {
        let any = "127.0.0.1:0".parse().expect("addr");
        let a = Transport::start(
            TransportConfig::new(1, 1, any),
            Arc::new(Counter::default()),
        )
        .await
        .expect("start");
        let b = Transport::start(TransportConfig::new(1, 2, any), counter.clone())
            .await
            .expect("start");
        a.add_peer(2, b.local_addr()).expect("peer");
        b.add_peer(1, a.local_addr()).expect("peer");
        while !(a.is_connected(2) && b.is_connected(1)) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (a, b)
    });

    let mut rows = Vec::new();
    for groups in [1u64, 100, 10_000] {
        let (messages, seconds, wire_bytes) = transport_case(&sender, &receiver, &counter, groups);
        let raw_seconds = runtime.block_on(raw_tcp(wire_bytes));
        rows.push(Row {
            groups,
            messages,
            seconds,
            wire_bytes,
            raw_seconds,
        });
    }
    runtime.block_on(async {
        sender.shutdown().await;
        receiver.shutdown().await;
    });
    let (encode_mb, decode_mb, frame_bytes) = codec_speed();

    println!("transport over loopback: one 128-byte entry per Append, one flush per round");
    println!(
        "{:>8} {:>12} {:>12} {:>14} {:>13} {:>15} {:>10}",
        "groups", "messages", "msgs/s", "payload MB/s", "wire MB/s", "raw TCP MB/s", "vs raw"
    );
    for row in &rows {
        println!(
            "{:>8} {:>12} {:>12.0} {:>14.1} {:>13.1} {:>15.1} {:>10.3}",
            row.groups,
            row.messages,
            row.messages_per_sec(),
            row.payload_mb_per_sec(),
            row.wire_mb_per_sec(),
            row.raw_mb_per_sec(),
            row.ratio()
        );
    }
    println!(
        "codec (10,000 appends, {frame_bytes} bytes per frame): encode {encode_mb:.0} MB/s, decode {decode_mb:.0} MB/s"
    );
    let last = rows.last().expect("rows");
    println!("transport_vs_raw_tcp_ratio={:.3}", last.ratio());
}
