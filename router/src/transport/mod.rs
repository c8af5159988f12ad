//! Node-to-node transport: one TCP connection per peer node pair carrying
//! batched, checksummed frames of Raft messages (heartbeats of all groups
//! coalesced into one compact item) and, below them in priority, the
//! snapshot lane.
//!
//! - [`Transport::send`] never blocks or awaits: it puts the message in the
//!   peer's bounded queue (or drops and counts it when the queue is full —
//!   Raft retransmits). [`Transport::flush`], called once per poller round,
//!   hands each peer's queue to its connection writer as one frame.
//! - The writer always drains Raft frames first and writes at most one
//!   snapshot lane frame between two looks at the Raft queue.
//! - Connections are set up with a handshake (cluster id, node id, protocol
//!   version) and re-established with exponential back-off; a peer that
//!   stays away is reported once per outage through
//!   [`InboundHandler::on_peer_unreachable`].
//! - [`Faults`] injects drops, delays, duplicates and (one-way) partitions,
//!   deterministically for a seed.
//!
//! Files: [`frame`] (framing + CRC), [`codec`] (Raft message encoding),
//! [`handshake`], `peer` (queues and connection tasks), `faults`, `config`,
//! `error`, `stats`.
//!
//! ```
//! use std::sync::Arc;
//! use bytes::Bytes;
//! use flotilla_raftgroup::{Message, MessageBody};
//! use flotilla_router::transport::{Transport, TransportConfig};
//! use flotilla_router::{InboundHandler, NodeId, RaftEnvelope};
//!
//! struct Print;
//! impl InboundHandler for Print {
//!     fn on_raft_messages(&self, from: NodeId, messages: Vec<RaftEnvelope>) {
//!         println!("{} messages from node {from}", messages.len());
//!     }
//!     fn on_snapshot_frame(&self, _from: NodeId, _frame: Bytes) {}
//!     fn on_peer_unreachable(&self, _node: NodeId) {}
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let any_port = "127.0.0.1:0".parse()?;
//! let a = Transport::start(TransportConfig::new(7, 1, any_port), Arc::new(Print)).await?;
//! let b = Transport::start(TransportConfig::new(7, 2, any_port), Arc::new(Print)).await?;
//! a.add_peer(2, b.local_addr())?;
//! b.add_peer(1, a.local_addr())?;
//! // (wait until a.is_connected(2), then:)
//! let heartbeat = MessageBody::Heartbeat { commit: 5, seq: 1, quiesce: false };
//! a.send(2, RaftEnvelope { range_id: 10, message: Message { from: 1, to: 2, term: 3, body: heartbeat } });
//! a.flush();
//! a.shutdown().await;
//! b.shutdown().await;
//! # Ok(())
//! # }
//! ```

pub mod codec;
mod config;
mod error;
mod faults;
pub mod frame;
pub mod handshake;
mod peer;
mod stats;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{info, warn};

pub use config::TransportConfig;
pub use error::{CodecError, FrameError, HandshakeError, TransportError};
pub use faults::{Faults, LinkFaults};
pub use stats::{DropReason, TransportStats};

use faults::Verdict;
use handshake::Identity;
use peer::{stopped, LaneItem, Peer};
use stats::{add, Counters};

use crate::{InboundHandler, LaneError, NodeId, RaftEnvelope, SnapshotLane};

/// State shared by the handle and every task of one transport.
pub(crate) struct Shared {
    pub config: TransportConfig,
    pub handler: Arc<dyn InboundHandler>,
    pub faults: Faults,
    pub stats: Counters,
    pub runtime: Handle,
    peers: RwLock<HashMap<NodeId, PeerEntry>>,
    shut_down: AtomicBool,
    stop: watch::Sender<bool>,
}

struct PeerEntry {
    peer: Arc<Peer>,
    task: JoinHandle<()>,
}

impl Shared {
    fn peer(&self, node: NodeId) -> Option<Arc<Peer>> {
        self.peers.read().get(&node).map(|entry| entry.peer.clone())
    }
}

/// One node's transport. Cheap to clone (a handle); all clones share the
/// connections.
#[derive(Clone)]
pub struct Transport {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    accept_task: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("node_id", &self.shared.config.node_id)
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// Validates `config`, binds `config.listen` and starts accepting
    /// peers. Must be called inside a tokio runtime; the transport's tasks
    /// run on it. Inbound traffic goes to `handler`.
    ///
    /// See the [module example](self).
    pub async fn start(
        config: TransportConfig,
        handler: Arc<dyn InboundHandler>,
    ) -> Result<Transport, TransportError> {
        config.validate()?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| TransportError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| TransportError::Bind {
                addr: config.listen,
                source,
            })?;
        info!(node = config.node_id, cluster = config.cluster_id, %local_addr, "transport listening");
        let shared = Arc::new(Shared {
            config,
            handler,
            faults: Faults::default(),
            stats: Counters::default(),
            runtime: Handle::current(),
            peers: RwLock::new(HashMap::new()),
            shut_down: AtomicBool::new(false),
            stop: watch::channel(false).0,
        });
        let accept_task = tokio::spawn(accept_loop(shared.clone(), listener));
        Ok(Transport {
            shared,
            local_addr,
            accept_task: Arc::new(Mutex::new(Some(accept_task))),
        })
    }

    /// The address the listener is bound to (the real port when the config
    /// asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.shared.config.node_id
    }

    /// Makes `node` a peer reachable at `addr` (or updates its address).
    /// Only peers may connect: the handshake refuses unknown node ids. Of
    /// two peers, the one with the lower id dials the other.
    ///
    /// ```no_run
    /// # fn demo(transport: flotilla_router::transport::Transport) -> Result<(), flotilla_router::transport::TransportError> {
    /// transport.add_peer(2, "10.0.0.2:7400".parse().unwrap())?;
    /// # Ok(()) }
    /// ```
    pub fn add_peer(&self, node: NodeId, addr: SocketAddr) -> Result<(), TransportError> {
        let me = self.shared.config.node_id;
        if node == 0 {
            return Err(TransportError::ZeroNodeId);
        }
        if node == me {
            return Err(TransportError::SelfPeer(node));
        }
        if self.shared.shut_down.load(Ordering::Acquire) {
            return Err(TransportError::Shutdown);
        }
        let mut peers = self.shared.peers.write();
        if let Some(entry) = peers.get(&node) {
            *entry.peer.addr.lock() = addr;
            return Ok(());
        }
        let peer = Arc::new(Peer::new(
            node,
            addr,
            me < node,
            self.shared.config.lane_frames_max,
        ));
        let task = self
            .shared
            .runtime
            .spawn(peer::run(self.shared.clone(), peer.clone()));
        peers.insert(node, PeerEntry { peer, task });
        Ok(())
    }

    /// Forgets `node`: closes its connection and drops what is queued for
    /// it. Returns whether it was a peer.
    pub fn remove_peer(&self, node: NodeId) -> bool {
        let entry = self.shared.peers.write().remove(&node);
        match entry {
            Some(entry) => {
                entry.peer.stop.send_replace(true);
                // The task finishes on its own; it holds the last references.
                drop(entry.task);
                true
            }
            None => false,
        }
    }

    /// Queues `env` for node `to`. Never blocks and never awaits: when the
    /// peer's queue is full, the peer is down or unknown, the message is
    /// dropped and counted (`flotilla_transport_dropped_total{reason}` and
    /// [`TransportStats`]); Raft retransmits what matters. Nothing leaves
    /// before the next [`Transport::flush`].
    pub fn send(&self, to: NodeId, env: RaftEnvelope) {
        let shared = &self.shared;
        let Some(peer) = shared.peer(to) else {
            shared.stats.dropped(stats::DropReason::UnknownPeer, 1);
            return;
        };
        if !peer.connected.load(Ordering::Acquire) {
            shared.stats.dropped(stats::DropReason::PeerDown, 1);
            return;
        }
        match shared.faults.outbound(to) {
            Verdict::Send {
                copies: 1,
                delay: None,
            } => peer.enqueue(shared, env),
            Verdict::Send {
                copies,
                delay: None,
            } => {
                for _ in 1..copies {
                    peer.enqueue(shared, env.clone());
                }
                peer.enqueue(shared, env);
            }
            Verdict::Send {
                copies,
                delay: Some(delay),
            } => peer::enqueue_later(shared.clone(), peer, env, copies, delay),
            Verdict::Partitioned | Verdict::Dropped => {
                shared.stats.dropped(stats::DropReason::Fault, 1)
            }
        }
    }

    /// Sends everything queued since the last flush: per peer, one frame
    /// (more only if it would exceed the frame size limit). Never blocks.
    pub fn flush(&self) {
        let peers: Vec<Arc<Peer>> = self
            .shared
            .peers
            .read()
            .values()
            .map(|e| e.peer.clone())
            .collect();
        for peer in peers {
            peer.flush(&self.shared);
        }
    }

    /// The fault-injection layer of this node (tests).
    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// A copy of the counters.
    pub fn stats(&self) -> TransportStats {
        self.shared.stats.snapshot()
    }

    /// Is `node` a known peer (added with [`Transport::add_peer`])?
    pub fn has_peer(&self, node: NodeId) -> bool {
        self.shared.peer(node).is_some()
    }

    /// Is there an established connection to `node` right now?
    pub fn is_connected(&self, node: NodeId) -> bool {
        self.shared
            .peer(node)
            .is_some_and(|peer| peer.connected.load(Ordering::Acquire))
    }

    /// Raft messages queued for `node` and not yet written (0 if unknown).
    pub fn queued_messages(&self, node: NodeId) -> usize {
        self.shared
            .peer(node)
            .map_or(0, |peer| peer.queued_messages())
    }

    /// Closes every connection and waits for the transport's tasks to end.
    /// Later sends are dropped; later lane sends fail with
    /// [`LaneError::Shutdown`].
    pub async fn shutdown(&self) {
        self.shared.shut_down.store(true, Ordering::Release);
        self.shared.stop.send_replace(true);
        let entries: Vec<PeerEntry> = self.shared.peers.write().drain().map(|(_, e)| e).collect();
        for entry in &entries {
            entry.peer.stop.send_replace(true);
        }
        for entry in entries {
            let _ = entry.task.await;
        }
        let accept = self.accept_task.lock().take();
        if let Some(task) = accept {
            let _ = task.await;
        }
        info!(node = self.shared.config.node_id, "transport shut down");
    }
}

/// Accepts connections, runs each handshake in its own task (a slow
/// stranger must not hold up the others) and hands accepted connections
/// to their peer's task.
async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let mut stop = shared.stop.subscribe();
    let mut handshakes = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    handshakes.spawn(accept_one(shared.clone(), stream, remote));
                }
                Err(e) => {
                    // Typically out of file descriptors: back off briefly.
                    warn!(node = shared.config.node_id, error = %e, "accept failed");
                    tokio::time::sleep(shared.config.backoff_min).await;
                }
            },
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => {}
            _ = stopped(&mut stop) => break,
        }
    }
    handshakes.shutdown().await;
}

async fn accept_one(shared: Arc<Shared>, mut stream: TcpStream, remote: SocketAddr) {
    let me = Identity {
        cluster_id: shared.config.cluster_id,
        node_id: shared.config.node_id,
    };
    let is_known_dialer = |node: NodeId| match shared.peer(node) {
        None => Err(HandshakeError::UnknownNode(node)),
        // We dial that one ourselves; a second connection would break the
        // one-connection-per-pair rule.
        Some(peer) if peer.dials => Err(HandshakeError::WrongDirection(node)),
        Some(_) => Ok(()),
    };
    let outcome = tokio::time::timeout(
        shared.config.connect_timeout,
        handshake::accept(&mut stream, me, is_known_dialer),
    )
    .await
    .unwrap_or(Err(HandshakeError::Timeout));
    match outcome {
        Ok(node) => match shared.peer(node) {
            Some(peer) => {
                if peer.inbound_tx.try_send(stream).is_err() {
                    warn!(node = me.node_id, peer = node, %remote, "too many pending connections from peer; closing");
                }
            }
            None => {
                warn!(node = me.node_id, peer = node, %remote, "peer removed during the handshake; closing")
            }
        },
        Err(reason) => {
            add(&shared.stats.handshakes_refused, 1);
            metrics::counter!("flotilla_transport_handshakes_refused_total").increment(1);
            warn!(node = me.node_id, %remote, %reason, "refused connection");
        }
    }
}

impl SnapshotLane for Transport {
    /// Queues one lane frame for `to`, waiting while the peer's small lane
    /// queue is full. Fails fast when the connection is down: a snapshot
    /// stream does not survive a reconnect (frames queued for a closed
    /// connection are discarded, not sent on the next one).
    fn send_frame(
        &self,
        to: NodeId,
        frame: Bytes,
    ) -> Pin<Box<dyn Future<Output = Result<(), LaneError>> + Send + '_>> {
        Box::pin(async move {
            let shared = &self.shared;
            if shared.shut_down.load(Ordering::Acquire) {
                return Err(LaneError::Shutdown);
            }
            let peer = shared.peer(to).ok_or(LaneError::UnknownPeer(to))?;
            let len = frame::FRAME_HEADER_BYTES + frame.len();
            if len > shared.config.frame_bytes_max {
                return Err(LaneError::FrameTooLarge {
                    len,
                    max: shared.config.frame_bytes_max,
                });
            }
            if !peer.connected.load(Ordering::Acquire) {
                return Err(LaneError::PeerDown(to));
            }
            if shared.faults.lane_blocked(to) {
                // Lost in the (injected) network, like any frame would be.
                shared.stats.lane_dropped(stats::DropReason::Fault, 1);
                return Ok(());
            }
            let mut peer_stop = peer.stop.subscribe();
            let mut stop = shared.stop.subscribe();
            let permit = tokio::select! {
                permit = peer.lane_tx.reserve() => permit.map_err(|_| LaneError::PeerDown(to))?,
                _ = stopped(&mut peer_stop) => return Err(LaneError::UnknownPeer(to)),
                _ = stopped(&mut stop) => return Err(LaneError::Shutdown),
            };
            if !peer.connected.load(Ordering::Acquire) {
                return Err(LaneError::PeerDown(to));
            }
            peer.lane_queued.fetch_add(1, Ordering::AcqRel);
            permit.send(LaneItem {
                generation: peer.generation.load(Ordering::Acquire),
                frame,
            });
            Ok(())
        })
    }
}
