//! Transport settings, validated once at start.

use std::net::SocketAddr;
use std::time::Duration;

use super::error::TransportError;
use crate::{ClusterId, NodeId};

/// Settings of one node's transport. Every queue and frame has a limit
/// (an unbounded queue is a bug waiting for load).
///
/// ```
/// use flotilla_router::transport::TransportConfig;
///
/// let config = TransportConfig::new(7, 1, "127.0.0.1:0".parse().unwrap());
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Nodes of other clusters are refused at the handshake.
    pub cluster_id: ClusterId,
    /// This node. Never 0.
    pub node_id: NodeId,
    /// Address to listen on (`127.0.0.1:0` in tests: read the bound one
    /// back with `Transport::local_addr`).
    pub listen: SocketAddr,
    /// Largest frame accepted or produced, header included. A longer
    /// length field closes the connection before anything is allocated.
    /// Decoding one frame allocates at most a small constant factor of
    /// this (a coalesced heartbeat of ~7 bytes becomes a full message), so
    /// it also bounds the memory one peer's frame can claim.
    pub frame_bytes_max: usize,
    /// Raft messages queued for one peer (unflushed plus not yet written).
    pub queue_messages_max: usize,
    /// Estimated bytes of Raft messages queued for one peer.
    pub queue_bytes_max: usize,
    /// Snapshot lane frames queued for one peer; `send_frame` waits beyond.
    pub lane_frames_max: usize,
    /// First reconnect delay; doubles per failure up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Give up on one connection attempt (connect plus handshake) after this.
    pub connect_timeout: Duration,
    /// Report a peer unreachable after this many failed attempts in a row...
    pub unreachable_after_attempts: u32,
    /// ...or after it has been disconnected for this long, whichever first.
    pub unreachable_after: Duration,
}

impl TransportConfig {
    /// Defaults for everything but the identity and the address.
    pub fn new(cluster_id: ClusterId, node_id: NodeId, listen: SocketAddr) -> Self {
        TransportConfig {
            cluster_id,
            node_id,
            listen,
            frame_bytes_max: 16 << 20,
            queue_messages_max: 100_000,
            queue_bytes_max: 64 << 20,
            lane_frames_max: 4,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            unreachable_after_attempts: 5,
            unreachable_after: Duration::from_secs(5),
        }
    }

    /// Checks impossible combinations with a message that names the field.
    pub fn validate(&self) -> Result<(), TransportError> {
        let bad = |why: &str| Err(TransportError::InvalidConfig(why.to_string()));
        if self.node_id == 0 {
            return bad("node_id must not be 0");
        }
        if self.frame_bytes_max < super::frame::FRAME_BYTES_MIN {
            return bad("frame_bytes_max is below the 4 KiB minimum");
        }
        if self.frame_bytes_max > u32::MAX as usize {
            return bad("frame_bytes_max must fit in 32 bits");
        }
        if self.queue_messages_max == 0 || self.queue_bytes_max == 0 {
            return bad("queue_messages_max and queue_bytes_max must be positive");
        }
        if self.lane_frames_max == 0 {
            return bad("lane_frames_max must be positive");
        }
        if self.backoff_min.is_zero() || self.backoff_min > self.backoff_max {
            return bad("backoff_min must be positive and not above backoff_max");
        }
        if self.connect_timeout.is_zero() {
            return bad("connect_timeout must be positive");
        }
        if self.unreachable_after_attempts == 0 || self.unreachable_after.is_zero() {
            return bad("unreachable_after_attempts and unreachable_after must be positive");
        }
        Ok(())
    }
}
