//! The node's link to other nodes: the transport on a small runtime of its
//! own, and the inbound handler that turns what arrives into mailbox
//! messages of the raft loop.

use std::sync::Arc;

use bytes::Bytes;
use std::collections::HashMap;
use std::sync::OnceLock;

use flotilla_router::snapshot::{SnapshotConfig, SnapshotService};
use flotilla_router::transport::{Transport, TransportConfig};
use flotilla_router::{InboundHandler, NodeId, RaftEnvelope, RangeId, SnapshotLane};
use parking_lot::RwLock;

use crate::snapshot::EngineSink;

use crate::config::EngineConfig;
use crate::error::Error;
use crate::node::{Msg, Shards};

/// The transport and the runtime its tasks run on.
pub(crate) struct Network {
    pub transport: Transport,
    pub snapshots: Arc<SnapshotService>,
    runtime: parking_lot::Mutex<Option<tokio::runtime::Runtime>>,
}

struct Inbound {
    shards: Shards,
    snapshots: Arc<OnceLock<Arc<SnapshotService>>>,
}

impl InboundHandler for Inbound {
    fn on_raft_messages(&self, from: NodeId, messages: Vec<RaftEnvelope>) {
        // Never blocks the transport: a full mailbox drops the frame and
        // Raft retransmits.
        self.shards.inbound_raft(from, messages);
    }

    fn on_snapshot_frame(&self, from: NodeId, frame: Bytes) {
        if let Some(service) = self.snapshots.get() {
            service.on_frame(from, frame);
        }
    }

    fn on_peer_unreachable(&self, node: NodeId) {
        for inbox in &self.shards.inboxes {
            let _ = inbox.try_send(Msg::PeerDown(node));
        }
    }
}

impl Network {
    /// Start the transport when the config has a listen address.
    pub(crate) fn start(
        config: &EngineConfig,
        shards: &Shards,
        applied: Arc<RwLock<HashMap<RangeId, u64>>>,
    ) -> Result<Option<Network>, Error> {
        let Some(listen) = config.listen else {
            return Ok(None);
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("flotilla-net-{}", config.node_id))
            .enable_all()
            .build()
            .map_err(|e| Error::Storage(format!("cannot start the network runtime: {e}")))?;
        let transport_config = TransportConfig::new(config.cluster_id, config.node_id, listen);
        let slot = Arc::new(OnceLock::new());
        let handler: Arc<dyn InboundHandler> = Arc::new(Inbound {
            shards: shards.clone(),
            snapshots: slot.clone(),
        });
        // Start on the network runtime and wait from here: `Engine::open`
        // may itself run inside another runtime, where `block_on` panics.
        let (tx, rx) = std::sync::mpsc::channel();
        runtime.spawn(async move {
            let _ = tx.send(Transport::start(transport_config, handler).await);
        });
        let transport = rx
            .recv()
            .map_err(|_| Error::Storage("network runtime stopped".into()))?
            .map_err(|e| Error::Config {
                field: "listen",
                reason: e.to_string(),
            })?;
        for (&node, &addr) in &config.peers {
            if node != config.node_id {
                transport.add_peer(node, addr).map_err(|e| Error::Config {
                    field: "peers",
                    reason: e.to_string(),
                })?;
            }
        }
        let lane: Arc<dyn SnapshotLane> = Arc::new(transport.clone());
        let sink = Arc::new(EngineSink {
            applied,
            shards: shards.clone(),
        });
        let staging = config.data_dir.join("snapshot-staging");
        let (tx, rx) = std::sync::mpsc::channel();
        runtime.spawn(async move {
            let _ = tx.send(SnapshotService::start(
                SnapshotConfig::new(staging),
                lane,
                sink,
            ));
        });
        let snapshots = Arc::new(
            rx.recv()
                .map_err(|_| Error::Storage("network runtime stopped".into()))?
                .map_err(|e| Error::Storage(format!("snapshot service: {e}")))?,
        );
        let _ = slot.set(snapshots.clone());
        Ok(Some(Network {
            transport,
            snapshots,
            runtime: parking_lot::Mutex::new(Some(runtime)),
        }))
    }

    /// Run a task on the network runtime.
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        if let Some(runtime) = self.runtime.lock().as_ref() {
            runtime.spawn(task);
        }
    }

    /// Close connections and stop the runtime.
    pub(crate) fn shutdown(&self) {
        let runtime = self.runtime.lock().take();
        if let Some(runtime) = runtime {
            let transport = self.transport.clone();
            let (tx, rx) = std::sync::mpsc::channel();
            runtime.spawn(async move {
                transport.shutdown().await;
                let _ = tx.send(());
            });
            let _ = rx.recv_timeout(std::time::Duration::from_secs(5));
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.shutdown();
    }
}
