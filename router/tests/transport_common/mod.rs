//! Helpers shared by the transport integration tests: a recording inbound
//! handler, message builders and bounded waits on explicit conditions.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use flotilla_raftgroup::{Entry, Message, MessageBody};
use flotilla_router::transport::{Transport, TransportConfig};
use flotilla_router::{InboundHandler, NodeId, RaftEnvelope};
use parking_lot::Mutex;

pub const CLUSTER: u64 = 7;

/// Failure bound of every wait: generous, never what is measured.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Records everything the transport delivers.
#[derive(Default)]
pub struct Recorder {
    pub raft: Mutex<Vec<(NodeId, RaftEnvelope)>>,
    pub raft_calls: AtomicU64,
    pub raft_messages: AtomicU64,
    pub lane: Mutex<Vec<(NodeId, Bytes)>>,
    pub unreachable: Mutex<Vec<NodeId>>,
}

impl InboundHandler for Recorder {
    fn on_raft_messages(&self, from: NodeId, messages: Vec<RaftEnvelope>) {
        self.raft_calls.fetch_add(1, Ordering::SeqCst);
        let count = messages.len() as u64;
        self.raft
            .lock()
            .extend(messages.into_iter().map(|m| (from, m)));
        self.raft_messages.fetch_add(count, Ordering::SeqCst);
    }

    fn on_snapshot_frame(&self, from: NodeId, frame: Bytes) {
        self.lane.lock().push((from, frame));
    }

    fn on_peer_unreachable(&self, node: NodeId) {
        self.unreachable.lock().push(node);
    }
}

impl Recorder {
    pub fn messages(&self) -> u64 {
        self.raft_messages.load(Ordering::SeqCst)
    }

    pub fn unreachable_count(&self, node: NodeId) -> usize {
        self.unreachable
            .lock()
            .iter()
            .filter(|&&n| n == node)
            .count()
    }
}

/// Polls `condition` until it holds; panics with `what` after [`DEADLINE`].
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let polling = async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    if tokio::time::timeout(DEADLINE, polling).await.is_err() {
        panic!("timed out waiting until {what}");
    }
}

/// A config for tests: any port on loopback, fast back-off.
pub fn config(node: NodeId) -> TransportConfig {
    let mut config = TransportConfig::new(CLUSTER, node, "127.0.0.1:0".parse().unwrap());
    config.backoff_min = Duration::from_millis(10);
    config.backoff_max = Duration::from_millis(100);
    config
}

pub async fn start(config: TransportConfig) -> (Transport, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let transport = Transport::start(config, recorder.clone())
        .await
        .expect("transport starts");
    (transport, recorder)
}

/// Makes every pair of `nodes` peers and waits until all are connected.
pub async fn mesh(nodes: &[&Transport]) {
    for a in nodes {
        for b in nodes {
            if a.node_id() != b.node_id() {
                a.add_peer(b.node_id(), b.local_addr()).unwrap();
            }
        }
    }
    wait_until("every pair is connected", || {
        nodes.iter().all(|a| {
            nodes
                .iter()
                .all(|b| a.node_id() == b.node_id() || a.is_connected(b.node_id()))
        })
    })
    .await;
}

pub fn heartbeat(range_id: u64, from: u64, to: u64, seq: u64) -> RaftEnvelope {
    RaftEnvelope {
        range_id,
        message: Message {
            from,
            to,
            term: 3,
            body: MessageBody::Heartbeat {
                commit: 10,
                seq,
                quiesce: false,
            },
        },
    }
}

pub fn heartbeat_response(range_id: u64, from: u64, to: u64, seq: u64) -> RaftEnvelope {
    RaftEnvelope {
        range_id,
        message: Message {
            from,
            to,
            term: 3,
            body: MessageBody::HeartbeatResponse { seq },
        },
    }
}

/// An Append carrying one entry of `payload_bytes`, its index being `seq`.
pub fn append(range_id: u64, from: u64, to: u64, seq: u64, payload_bytes: usize) -> RaftEnvelope {
    RaftEnvelope {
        range_id,
        message: Message {
            from,
            to,
            term: 3,
            body: MessageBody::Append {
                prev_index: seq.saturating_sub(1),
                prev_term: 3,
                entries: vec![Entry::new(
                    3,
                    seq,
                    Bytes::from(vec![seq as u8; payload_bytes]),
                )],
                commit: seq.saturating_sub(1),
            },
        },
    }
}

/// The sequence number a test message carries (heartbeat seq or entry index).
pub fn seq_of(env: &RaftEnvelope) -> u64 {
    match &env.message.body {
        MessageBody::Heartbeat { seq, .. } | MessageBody::HeartbeatResponse { seq } => *seq,
        MessageBody::Append { entries, .. } => entries.first().map_or(0, |e| e.index),
        _ => 0,
    }
}
