//! One peer node: its bounded outbound queue, its snapshot lane, and the
//! task that keeps one connection to it alive.
//!
//! Exactly one TCP connection per node pair: the node with the lower id
//! dials, the other only accepts (the listener hands the connection over
//! after the handshake). Both sides use that single connection in both
//! directions. A newer accepted connection replaces the current one: the
//! dialer only dials again when it thinks the old one is dead.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::codec;
use super::frame::{self, FrameKind};
use super::handshake::{self, Identity};
use super::stats::{add, DropReason};
use super::Shared;
use crate::{NodeId, RaftEnvelope};

/// A lane frame and the connection generation it was queued for: a frame
/// queued before a reconnect belongs to a stream that is gone.
pub(crate) struct LaneItem {
    pub generation: u64,
    pub frame: Bytes,
}

/// Messages flushed together: they leave in one frame.
struct ReadyBatch {
    messages: Vec<RaftEnvelope>,
    bytes: usize,
    /// `Peer::lane_written` at flush time, to measure lane priority.
    lane_written_at_flush: u64,
}

/// Raft messages waiting for one peer. Both lists count against the same
/// limits: a slow connection fills it and `send` starts dropping.
#[derive(Default)]
struct Queue {
    pending: Vec<RaftEnvelope>,
    pending_bytes: usize,
    ready: VecDeque<ReadyBatch>,
    messages: usize,
    bytes: usize,
}

pub(crate) struct Peer {
    pub id: NodeId,
    pub addr: Mutex<SocketAddr>,
    /// This node dials (its id is the lower one); otherwise it accepts.
    pub dials: bool,
    queue: Mutex<Queue>,
    wake_writer: Notify,
    pub connected: AtomicBool,
    /// Bumped for every established connection.
    pub generation: AtomicU64,
    pub lane_tx: mpsc::Sender<LaneItem>,
    lane_rx: tokio::sync::Mutex<mpsc::Receiver<LaneItem>>,
    pub lane_queued: AtomicUsize,
    lane_written: AtomicU64,
    /// Accepted, handshaken connections from this peer.
    pub inbound_tx: mpsc::Sender<TcpStream>,
    inbound_rx: tokio::sync::Mutex<mpsc::Receiver<TcpStream>>,
    /// Set by `remove_peer` and `shutdown`.
    pub stop: watch::Sender<bool>,
}

impl Peer {
    pub fn new(id: NodeId, addr: SocketAddr, dials: bool, lane_frames_max: usize) -> Peer {
        let (lane_tx, lane_rx) = mpsc::channel(lane_frames_max);
        // Two slots: a replacement connection may arrive while one waits.
        let (inbound_tx, inbound_rx) = mpsc::channel(2);
        Peer {
            id,
            addr: Mutex::new(addr),
            dials,
            queue: Mutex::new(Queue::default()),
            wake_writer: Notify::new(),
            connected: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            lane_tx,
            lane_rx: tokio::sync::Mutex::new(lane_rx),
            lane_queued: AtomicUsize::new(0),
            lane_written: AtomicU64::new(0),
            inbound_tx,
            inbound_rx: tokio::sync::Mutex::new(inbound_rx),
            stop: watch::channel(false).0,
        }
    }

    /// Queues one message unless the queue is at a limit. Never blocks for
    /// longer than a short uncontended lock.
    pub fn enqueue(&self, shared: &Shared, env: RaftEnvelope) {
        let bytes = codec::estimated_bytes(&env);
        let mut queue = self.queue.lock();
        if queue.messages >= shared.config.queue_messages_max
            || queue.bytes + bytes > shared.config.queue_bytes_max
        {
            drop(queue);
            shared.stats.dropped(DropReason::QueueFull, 1);
            return;
        }
        queue.messages += 1;
        queue.bytes += bytes;
        queue.pending_bytes += bytes;
        queue.pending.push(env);
    }

    /// Hands everything sent since the last flush to the writer as one
    /// batch (one frame).
    pub fn flush(&self, shared: &Shared) {
        let mut queue = self.queue.lock();
        if queue.pending.is_empty() {
            return;
        }
        // The next round is usually as big as this one: start the new
        // list at that size instead of growing it message by message.
        let capacity = queue.pending.len();
        let messages = std::mem::replace(&mut queue.pending, Vec::with_capacity(capacity));
        let bytes = std::mem::take(&mut queue.pending_bytes);
        if !self.connected.load(Ordering::Acquire) {
            // The connection went away after these were accepted by
            // `send`; Raft will retransmit whatever still matters.
            queue.messages -= messages.len();
            queue.bytes -= bytes;
            drop(queue);
            shared
                .stats
                .dropped(DropReason::PeerDown, messages.len() as u64);
            return;
        }
        queue.ready.push_back(ReadyBatch {
            messages,
            bytes,
            lane_written_at_flush: self.lane_written.load(Ordering::Acquire),
        });
        drop(queue);
        self.wake_writer.notify_one();
    }

    fn take_ready(&self) -> VecDeque<ReadyBatch> {
        let mut queue = self.queue.lock();
        let ready = std::mem::take(&mut queue.ready);
        for batch in &ready {
            queue.messages -= batch.messages.len();
            queue.bytes -= batch.bytes;
        }
        ready
    }

    /// Drops everything queued (the connection is gone).
    fn discard_queued(&self, shared: &Shared) {
        let mut queue = self.queue.lock();
        let count = queue.messages;
        *queue = Queue::default();
        drop(queue);
        shared.stats.dropped(DropReason::PeerDown, count as u64);
    }

    /// Test hook: messages currently queued (pending plus ready).
    pub fn queued_messages(&self) -> usize {
        self.queue.lock().messages
    }
}

/// Why a connection ended.
enum ConnectionEnd {
    Closed,
    Replaced(TcpStream),
    Stopped,
}

/// The lifetime of one peer: (re)connect with back-off, run the
/// connection, report the peer unreachable once per outage.
pub(crate) async fn run(shared: Arc<Shared>, peer: Arc<Peer>) {
    let mut stop = peer.stop.subscribe();
    let mut inbound = peer.inbound_rx.lock().await;
    let config = &shared.config;
    let mut backoff = config.backoff_min;
    let mut attempts: u32 = 0;
    let mut down_since = Instant::now();
    let mut reported = false;
    let mut ever_connected = false;
    let mut next_stream: Option<TcpStream> = None;

    loop {
        if *stop.borrow() {
            break;
        }
        let stream = if let Some(stream) = next_stream.take() {
            stream
        } else if peer.dials {
            let addr = *peer.addr.lock();
            let attempt =
                tokio::time::timeout(config.connect_timeout, dial(&shared, peer.id, addr));
            let outcome = tokio::select! {
                outcome = attempt => outcome,
                _ = stopped(&mut stop) => break,
            };
            match outcome {
                Ok(Ok(stream)) => stream,
                failed => {
                    attempts += 1;
                    add(&shared.stats.connect_failures, 1);
                    let reason = match failed {
                        Ok(Err(e)) => e,
                        _ => "connect and handshake timed out".to_string(),
                    };
                    debug!(node = shared.config.node_id, peer = peer.id, %addr, attempts, %reason, "dial failed");
                    if !reported
                        && (attempts >= config.unreachable_after_attempts
                            || down_since.elapsed() >= config.unreachable_after)
                    {
                        report_unreachable(&shared, &peer, attempts);
                        reported = true;
                    }
                    let sleep = tokio::time::sleep(backoff);
                    backoff = (backoff * 2).min(config.backoff_max);
                    tokio::select! {
                        _ = sleep => continue,
                        _ = stopped(&mut stop) => break,
                    }
                }
            }
        } else {
            let deadline = down_since + config.unreachable_after;
            tokio::select! {
                stream = inbound.recv() => match stream {
                    Some(stream) => stream,
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline), if !reported => {
                    report_unreachable(&shared, &peer, 0);
                    reported = true;
                    continue;
                }
                _ = stopped(&mut stop) => break,
            }
        };

        // Connected: the outage (if any) is over.
        add(&shared.stats.connections_established, 1);
        if ever_connected {
            add(&shared.stats.reconnects, 1);
            metrics::counter!("flotilla_transport_reconnects_total").increment(1);
        }
        ever_connected = true;
        attempts = 0;
        backoff = config.backoff_min;
        reported = false;
        info!(node = shared.config.node_id, peer = peer.id, "connected");

        let end = run_connection(&shared, &peer, stream, &mut stop, &mut inbound).await;
        down_since = Instant::now();
        match end {
            ConnectionEnd::Closed => info!(
                node = shared.config.node_id,
                peer = peer.id,
                "connection closed"
            ),
            ConnectionEnd::Replaced(stream) => {
                info!(
                    node = shared.config.node_id,
                    peer = peer.id,
                    "connection replaced by a newer one"
                );
                next_stream = Some(stream);
            }
            ConnectionEnd::Stopped => break,
        }
        if peer.dials && next_stream.is_none() {
            // Do not hammer a peer that accepts and then drops us.
            let sleep = tokio::time::sleep(config.backoff_min);
            tokio::select! {
                _ = sleep => {}
                _ = stopped(&mut stop) => break,
            }
        }
    }
    peer.connected.store(false, Ordering::Release);
    peer.discard_queued(&shared);
}

/// Resolves once `stop` is set (or its sender is gone). The watch guard is
/// dropped inside, so callers' futures stay `Send`.
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

fn report_unreachable(shared: &Shared, peer: &Peer, attempts: u32) {
    warn!(
        node = shared.config.node_id,
        peer = peer.id,
        attempts,
        "peer unreachable"
    );
    add(&shared.stats.unreachable_reports, 1);
    metrics::counter!("flotilla_transport_peer_unreachable_total").increment(1);
    shared.handler.on_peer_unreachable(peer.id);
}

async fn dial(shared: &Shared, target: NodeId, addr: SocketAddr) -> Result<TcpStream, String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let me = Identity {
        cluster_id: shared.config.cluster_id,
        node_id: shared.config.node_id,
    };
    match handshake::dial(&mut stream, me, target).await {
        Ok(()) => Ok(stream),
        Err(e) => {
            warn!(node = me.node_id, peer = target, %addr, reason = %e, "handshake with peer failed; closing");
            Err(e.to_string())
        }
    }
}

async fn run_connection(
    shared: &Arc<Shared>,
    peer: &Arc<Peer>,
    stream: TcpStream,
    stop: &mut watch::Receiver<bool>,
    inbound: &mut mpsc::Receiver<TcpStream>,
) -> ConnectionEnd {
    // Raft frames are latency-bound and already batched by `flush`.
    let _ = stream.set_nodelay(true);
    let generation = peer.generation.fetch_add(1, Ordering::AcqRel) + 1;
    let (read_half, write_half) = stream.into_split();
    peer.connected.store(true, Ordering::Release);
    let mut reader = tokio::spawn(read_loop(shared.clone(), peer.id, read_half));
    let mut writer = tokio::spawn(write_loop(
        shared.clone(),
        peer.clone(),
        write_half,
        generation,
    ));

    // A handle may be polled to completion only once: remember which one
    // ended the connection before stopping the other.
    let (mut reader_done, mut writer_done) = (false, false);
    let end = tokio::select! {
        _ = &mut reader => {
            reader_done = true;
            ConnectionEnd::Closed
        }
        _ = &mut writer => {
            writer_done = true;
            ConnectionEnd::Closed
        }
        _ = stopped(stop) => ConnectionEnd::Stopped,
        newer = inbound.recv(), if !peer.dials => match newer {
            Some(stream) => ConnectionEnd::Replaced(stream),
            None => ConnectionEnd::Stopped,
        },
    };
    peer.connected.store(false, Ordering::Release);
    if !reader_done {
        reader.abort();
        let _ = reader.await;
    }
    if !writer_done {
        writer.abort();
        let _ = writer.await;
    }
    peer.discard_queued(shared);
    end
}

async fn read_loop(shared: Arc<Shared>, from: NodeId, mut read_half: OwnedReadHalf) {
    let max = shared.config.frame_bytes_max;
    let node = shared.config.node_id;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        loop {
            match frame::decode(&mut buf, max) {
                Ok(Some(frame)) => {
                    if let Err(reason) = deliver(&shared, from, frame) {
                        warn!(node, peer = from, %reason, "undecodable frame; closing the connection");
                        add(&shared.stats.protocol_errors, 1);
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    // A stream cannot be resynchronised after a bad frame.
                    warn!(node, peer = from, reason = %e, "bad frame; closing the connection");
                    add(&shared.stats.protocol_errors, 1);
                    return;
                }
            }
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(64 * 1024);
        }
        match read_half.read_buf(&mut buf).await {
            Ok(0) => return,
            Ok(n) => {
                add(&shared.stats.bytes_received, n as u64);
                metrics::counter!("flotilla_transport_bytes_received_total").increment(n as u64);
            }
            Err(e) => {
                debug!(node, peer = from, error = %e, "read failed");
                return;
            }
        }
    }
}

fn deliver(shared: &Shared, from: NodeId, frame: frame::Frame) -> Result<(), String> {
    let stats = &shared.stats;
    match frame.kind {
        FrameKind::Raft => {
            add(&stats.raft_frames_received, 1);
            metrics::counter!("flotilla_transport_frames_received_total", "kind" => "raft")
                .increment(1);
            let batch = codec::decode_batch(frame.payload).map_err(|e| e.to_string())?;
            let count = batch.messages.len() as u64;
            if shared.faults.inbound_blocked(from) {
                stats.dropped(DropReason::InboundBlocked, count);
                return Ok(());
            }
            add(&stats.messages_received, count);
            add(
                &stats.heartbeat_items_received,
                batch.heartbeat_items as u64,
            );
            add(
                &stats.heartbeats_coalesced_received,
                batch.heartbeats_coalesced as u64,
            );
            if count > 0 {
                shared.handler.on_raft_messages(from, batch.messages);
            }
        }
        FrameKind::Lane => {
            add(&stats.lane_frames_received, 1);
            metrics::counter!("flotilla_transport_frames_received_total", "kind" => "lane")
                .increment(1);
            if shared.faults.inbound_blocked(from) {
                stats.lane_dropped(DropReason::InboundBlocked, 1);
                return Ok(());
            }
            shared.handler.on_snapshot_frame(from, frame.payload);
        }
        FrameKind::Hello | FrameKind::HelloAck => {
            return Err("handshake frame after the handshake".to_string())
        }
    }
    Ok(())
}

/// Writes Raft frames first, always: at most one lane frame is written
/// between two checks of the Raft queue, so a heartbeat waits behind at
/// most one lane frame.
async fn write_loop(
    shared: Arc<Shared>,
    peer: Arc<Peer>,
    mut write_half: OwnedWriteHalf,
    generation: u64,
) {
    let node = shared.config.node_id;
    let max = shared.config.frame_bytes_max;
    let stats = &shared.stats;
    let mut lane = peer.lane_rx.lock().await;
    let mut out = BytesMut::with_capacity(64 * 1024);
    loop {
        let ready = peer.take_ready();
        if !ready.is_empty() {
            let lane_written_now = peer.lane_written.load(Ordering::Acquire);
            let lane_pending = peer.lane_queued.load(Ordering::Acquire) > 0;
            let mut frames = 0u64;
            for batch in &ready {
                stats.record_max(
                    &stats.lane_frames_ahead_of_raft_max,
                    lane_written_now.saturating_sub(batch.lane_written_at_flush),
                );
                let summary = codec::encode_frames(&batch.messages, &mut out, max);
                frames += summary.frames as u64;
                add(&stats.messages_sent, summary.messages as u64);
                add(&stats.heartbeat_items_sent, summary.heartbeat_items as u64);
                add(
                    &stats.heartbeats_coalesced_sent,
                    summary.heartbeats_coalesced as u64,
                );
                if summary.dropped_too_large > 0 {
                    warn!(
                        node,
                        peer = peer.id,
                        count = summary.dropped_too_large,
                        "messages larger than a frame dropped"
                    );
                    stats.dropped(DropReason::TooLarge, summary.dropped_too_large as u64);
                }
            }
            drop(ready);
            if write_half.write_all(&out).await.is_err() {
                return;
            }
            add(&stats.raft_frames_sent, frames);
            if lane_pending {
                add(&stats.raft_frames_written_with_lane_pending, frames);
            }
            add(&stats.bytes_sent, out.len() as u64);
            metrics::counter!("flotilla_transport_frames_sent_total", "kind" => "raft")
                .increment(frames);
            metrics::counter!("flotilla_transport_bytes_sent_total").increment(out.len() as u64);
            out.clear();
            if out.capacity() > 4 * max {
                // One huge flush should not pin its buffer forever.
                out = BytesMut::with_capacity(64 * 1024);
            }
            continue;
        }
        let item = match lane.try_recv() {
            Ok(item) => item,
            Err(mpsc::error::TryRecvError::Disconnected) => return,
            Err(mpsc::error::TryRecvError::Empty) => {
                tokio::select! {
                    biased;
                    _ = peer.wake_writer.notified() => continue,
                    item = lane.recv() => match item {
                        Some(item) => item,
                        None => return,
                    },
                }
            }
        };
        peer.lane_queued.fetch_sub(1, Ordering::AcqRel);
        if item.generation != generation {
            stats.lane_dropped(DropReason::PeerDown, 1);
            continue;
        }
        let Ok(head) = frame::header(FrameKind::Lane, &item.frame, max) else {
            // `send_frame` refuses oversized frames; this is a bug guard.
            stats.lane_dropped(DropReason::TooLarge, 1);
            continue;
        };
        if write_half.write_all(&head).await.is_err()
            || write_half.write_all(&item.frame).await.is_err()
        {
            return;
        }
        peer.lane_written.fetch_add(1, Ordering::AcqRel);
        add(&stats.lane_frames_sent, 1);
        let bytes = (head.len() + item.frame.len()) as u64;
        add(&stats.bytes_sent, bytes);
        metrics::counter!("flotilla_transport_frames_sent_total", "kind" => "lane").increment(1);
        metrics::counter!("flotilla_transport_bytes_sent_total").increment(bytes);
    }
}

/// Delayed delivery for the fault layer: queue and flush after `delay`.
pub(crate) fn enqueue_later(
    shared: Arc<Shared>,
    peer: Arc<Peer>,
    env: RaftEnvelope,
    copies: u8,
    delay: Duration,
) {
    let runtime = shared.runtime.clone();
    runtime.spawn(async move {
        tokio::time::sleep(delay).await;
        for _ in 1..copies {
            peer.enqueue(&shared, env.clone());
        }
        peer.enqueue(&shared, env);
        peer.flush(&shared);
    });
}
