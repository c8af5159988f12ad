//! Identifiers and envelopes shared by the range map, the transport and the
//! snapshot scheduler.

use bytes::Bytes;
use flotilla_raftgroup::Message;

/// A node (process) of the cluster. Never 0.
pub type NodeId = u64;
/// A range (one Raft group). Never 0.
pub type RangeId = u64;
/// Identifies a cluster; nodes of different clusters refuse each other.
pub type ClusterId = u64;

/// A Raft message addressed to one range's replica on another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftEnvelope {
    pub range_id: RangeId,
    pub message: Message,
}

/// What the transport delivers to the node, from its reader tasks. The
/// implementation must not block for long: it runs on the transport's
/// runtime (hand the work to the engine's mailboxes).
pub trait InboundHandler: Send + Sync + 'static {
    /// Raft messages from `from` (one frame's worth, in order).
    fn on_raft_messages(&self, from: NodeId, messages: Vec<RaftEnvelope>);
    /// A frame of the low-priority snapshot lane from `from`.
    fn on_snapshot_frame(&self, from: NodeId, frame: Bytes);
    /// The connection to `node` failed and could not be re-established
    /// (node-level liveness: hibernated groups led from there must wake).
    fn on_peer_unreachable(&self, node: NodeId);
}

/// The low-priority lane snapshots travel on. The transport implements it
/// over the same connection as Raft traffic: a heartbeat never waits behind
/// more than one frame of this lane. Tests implement it in memory.
pub trait SnapshotLane: Send + Sync + 'static {
    /// Queue one frame for `to`; waits while the lane to `to` is full
    /// (back-pressure for the sender of a snapshot, never for Raft traffic).
    fn send_frame(
        &self,
        to: NodeId,
        frame: Bytes,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), LaneError>> + Send + '_>>;
}

/// Why a lane frame could not be queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LaneError {
    #[error("node {0} is unknown to the transport")]
    UnknownPeer(NodeId),
    #[error("the connection to node {0} is down")]
    PeerDown(NodeId),
    #[error("the transport is shut down")]
    Shutdown,
    #[error("a lane frame of {len} bytes exceeds the frame limit of {max} bytes")]
    FrameTooLarge { len: usize, max: usize },
}
