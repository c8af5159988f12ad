//! Counters of one transport: plain atomics that tests read through
//! [`TransportStats`], mirrored into the `metrics` crate for operators.
//!
//! Metric names: `flotilla_transport_frames_sent_total{kind}`,
//! `flotilla_transport_frames_received_total{kind}`,
//! `flotilla_transport_bytes_sent_total`, `flotilla_transport_bytes_received_total`,
//! `flotilla_transport_dropped_total{reason}`, `flotilla_transport_reconnects_total`,
//! `flotilla_transport_handshakes_refused_total`,
//! `flotilla_transport_peer_unreachable_total`.

use std::sync::atomic::{AtomicU64, Ordering};

/// Why a message or lane frame was dropped (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The peer's bounded queue was full.
    QueueFull,
    /// No live connection to the peer (or it closed with messages queued).
    PeerDown,
    /// The destination is not a peer of this transport.
    UnknownPeer,
    /// One message alone exceeds the maximum frame size.
    TooLarge,
    /// Lost to an injected partition or random drop.
    Fault,
    /// An inbound frame from a peer whose traffic is blocked by a fault.
    InboundBlocked,
}

impl DropReason {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::PeerDown => "peer_down",
            DropReason::UnknownPeer => "unknown_peer",
            DropReason::TooLarge => "too_large",
            DropReason::Fault => "fault",
            DropReason::InboundBlocked => "inbound_blocked",
        }
    }
}

/// A point-in-time copy of a transport's counters (all monotonic except
/// `*_max`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportStats {
    pub raft_frames_sent: u64,
    pub raft_frames_received: u64,
    pub lane_frames_sent: u64,
    pub lane_frames_received: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Raft messages written (a coalesced heartbeat counts as one each).
    pub messages_sent: u64,
    pub messages_received: u64,
    /// Coalesced heartbeat items written / read, and how many heartbeats
    /// and heartbeat responses they carried.
    pub heartbeat_items_sent: u64,
    pub heartbeat_items_received: u64,
    pub heartbeats_coalesced_sent: u64,
    pub heartbeats_coalesced_received: u64,
    pub dropped_queue_full: u64,
    pub dropped_peer_down: u64,
    pub dropped_unknown_peer: u64,
    pub dropped_too_large: u64,
    pub dropped_fault: u64,
    pub dropped_inbound_blocked: u64,
    /// Lane frames discarded (partitioned, or their connection closed).
    pub lane_frames_dropped: u64,
    /// Connections that completed the handshake.
    pub connections_established: u64,
    /// Established connections after the first one to the same peer.
    pub reconnects: u64,
    /// Dial attempts that failed (connect, timeout or refused handshake).
    pub connect_failures: u64,
    /// Handshakes this node refused as the acceptor.
    pub handshakes_refused: u64,
    /// Calls of `InboundHandler::on_peer_unreachable`.
    pub unreachable_reports: u64,
    /// Connections closed because of a bad frame or undecodable payload.
    pub protocol_errors: u64,
    /// The most lane frames written between a Raft batch being flushed and
    /// that batch being written. The lane-priority rule keeps it at most 1.
    pub lane_frames_ahead_of_raft_max: u64,
    /// Raft frames written while lane frames were waiting to be written:
    /// they overtook the lane, as they must.
    pub raft_frames_written_with_lane_pending: u64,
}

macro_rules! counters {
    ($($field:ident),* $(,)?) => {
        /// The live counters behind [`TransportStats`].
        #[derive(Debug, Default)]
        pub(crate) struct Counters {
            $(pub(crate) $field: AtomicU64,)*
        }

        impl Counters {
            pub(crate) fn snapshot(&self) -> TransportStats {
                TransportStats {
                    $($field: self.$field.load(Ordering::Relaxed),)*
                }
            }
        }
    };
}

counters!(
    raft_frames_sent,
    raft_frames_received,
    lane_frames_sent,
    lane_frames_received,
    bytes_sent,
    bytes_received,
    messages_sent,
    messages_received,
    heartbeat_items_sent,
    heartbeat_items_received,
    heartbeats_coalesced_sent,
    heartbeats_coalesced_received,
    dropped_queue_full,
    dropped_peer_down,
    dropped_unknown_peer,
    dropped_too_large,
    dropped_fault,
    dropped_inbound_blocked,
    lane_frames_dropped,
    connections_established,
    reconnects,
    connect_failures,
    handshakes_refused,
    unreachable_reports,
    protocol_errors,
    lane_frames_ahead_of_raft_max,
    raft_frames_written_with_lane_pending,
);

pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    /// Counts `n` dropped Raft messages, in the stats and the metric.
    pub(crate) fn dropped(&self, reason: DropReason, n: u64) {
        if n == 0 {
            return;
        }
        let counter = match reason {
            DropReason::QueueFull => &self.dropped_queue_full,
            DropReason::PeerDown => &self.dropped_peer_down,
            DropReason::UnknownPeer => &self.dropped_unknown_peer,
            DropReason::TooLarge => &self.dropped_too_large,
            DropReason::Fault => &self.dropped_fault,
            DropReason::InboundBlocked => &self.dropped_inbound_blocked,
        };
        add(counter, n);
        metrics::counter!("flotilla_transport_dropped_total", "reason" => reason.label())
            .increment(n);
    }

    /// Counts `n` discarded lane frames.
    pub(crate) fn lane_dropped(&self, reason: DropReason, n: u64) {
        if n == 0 {
            return;
        }
        add(&self.lane_frames_dropped, n);
        metrics::counter!("flotilla_transport_dropped_total", "reason" => reason.label())
            .increment(n);
    }

    pub(crate) fn record_max(&self, counter: &AtomicU64, value: u64) {
        counter.fetch_max(value, Ordering::Relaxed);
    }
}
