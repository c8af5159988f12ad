//! In-memory test doubles: a [`MemoryNetwork`] of snapshot lanes with a
//! high-priority heartbeat channel beside each, a recording sink and
//! counting sources. Used by this crate's tests and usable by the engine's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::time::{Duration, Instant};

use super::buffers::{BufferGauge, Held};
use super::config::SnapshotConfig;
use super::error::SnapshotError;
use super::service::SnapshotService;
use super::staging::{StagedMeta, StagedSnapshot};
use super::{SnapshotSink, SnapshotSource, SourceError};
use crate::{LaneError, NodeId, RangeId, SnapshotLane};

/// Rewrites or drops a frame on the link `from → to`; `n` counts the frames
/// sent on that link so far. Return `None` to drop it.
pub type Filter = Box<dyn Fn(NodeId, NodeId, u64, Bytes) -> Option<Bytes> + Send + Sync>;

/// Nodes joined by in-memory lanes. Each ordered pair of nodes gets a link
/// with a bounded snapshot queue and an unbounded heartbeat queue; the link's
/// delivery task always serves heartbeats first, like the real transport
/// puts Raft traffic ahead of the snapshot lane.
#[derive(Clone)]
pub struct MemoryNetwork {
    net: Arc<Net>,
}

struct Net {
    capacity_frames: usize,
    nodes: Mutex<HashMap<NodeId, Weak<SnapshotService>>>,
    links: Mutex<HashMap<(NodeId, NodeId), Arc<Link>>>,
    gauge: Arc<BufferGauge>,
    filter: Mutex<Option<Arc<Filter>>>,
}

struct Link {
    snapshot_tx: mpsc::Sender<(Bytes, Held)>,
    heartbeat_tx: mpsc::UnboundedSender<(u64, Instant)>,
    stats: Arc<LinkCounters>,
}

#[derive(Default)]
struct LinkCounters {
    frames_sent: AtomicU64,
    frames_delivered: AtomicU64,
    in_flight: AtomicU64,
    in_flight_max: AtomicU64,
    heartbeats_delivered: AtomicU64,
    heartbeat_overtaken_max: AtomicU64,
    heartbeat_delay_max_us: AtomicU64,
}

/// What happened on one link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkStats {
    /// Snapshot frames handed to the receiving node.
    pub frames_delivered: u64,
    /// Most `send_frame` calls in progress at once on the link.
    pub in_flight_max: u64,
    pub heartbeats_delivered: u64,
    /// Most snapshot frames delivered between a heartbeat's enqueue and its
    /// delivery: how many frames a heartbeat ever waited behind.
    pub heartbeat_overtaken_max: u64,
    /// Longest heartbeat queueing delay (tokio clock).
    pub heartbeat_delay_max: Duration,
}

impl MemoryNetwork {
    /// A network whose snapshot queues hold `capacity_frames` frames per link.
    pub fn new(capacity_frames: usize) -> MemoryNetwork {
        MemoryNetwork {
            net: Arc::new(Net {
                capacity_frames: capacity_frames.max(1),
                nodes: Mutex::new(HashMap::new()),
                links: Mutex::new(HashMap::new()),
                gauge: BufferGauge::new(),
                filter: Mutex::new(None),
            }),
        }
    }

    /// The lane node `node` sends on.
    pub fn lane(&self, node: NodeId) -> Arc<dyn SnapshotLane> {
        Arc::new(MemoryLane {
            node,
            net: Arc::clone(&self.net),
        })
    }

    /// Delivers frames addressed to `node` to `service` (held weakly: drop
    /// the service to kill the node).
    pub fn attach(&self, node: NodeId, service: &Arc<SnapshotService>) {
        self.net.nodes.lock().insert(node, Arc::downgrade(service));
    }

    /// Frames to `node` fail with `PeerDown` from now on.
    pub fn detach(&self, node: NodeId) {
        self.net.nodes.lock().remove(&node);
    }

    /// Installs a frame filter (corruption, loss) for all links.
    pub fn set_filter(&self, filter: Option<Filter>) {
        *self.net.filter.lock() = filter.map(Arc::new);
    }

    /// Queues a heartbeat on the high-priority channel `from → to`.
    pub fn send_heartbeat(&self, from: NodeId, to: NodeId) {
        let link = self.net.link(from, to);
        let delivered = link.stats.frames_delivered.load(Ordering::Acquire);
        let _ = link.heartbeat_tx.send((delivered, Instant::now()));
    }

    /// Counters of the link `from → to`.
    pub fn link_stats(&self, from: NodeId, to: NodeId) -> LinkStats {
        let s = &self.net.link(from, to).stats;
        LinkStats {
            frames_delivered: s.frames_delivered.load(Ordering::Acquire),
            in_flight_max: s.in_flight_max.load(Ordering::Acquire),
            heartbeats_delivered: s.heartbeats_delivered.load(Ordering::Acquire),
            heartbeat_overtaken_max: s.heartbeat_overtaken_max.load(Ordering::Acquire),
            heartbeat_delay_max: Duration::from_micros(
                s.heartbeat_delay_max_us.load(Ordering::Acquire),
            ),
        }
    }

    /// Bytes held in the lanes' queues (frames sent, not yet delivered).
    pub fn buffers(&self) -> &Arc<BufferGauge> {
        &self.net.gauge
    }
}

impl Net {
    fn link(self: &Arc<Self>, from: NodeId, to: NodeId) -> Arc<Link> {
        let mut links = self.links.lock();
        if let Some(link) = links.get(&(from, to)) {
            return Arc::clone(link);
        }
        let (snapshot_tx, mut snapshot_rx) = mpsc::channel::<(Bytes, Held)>(self.capacity_frames);
        let (heartbeat_tx, mut heartbeat_rx) = mpsc::unbounded_channel::<(u64, Instant)>();
        let stats = Arc::new(LinkCounters::default());
        let link = Arc::new(Link {
            snapshot_tx,
            heartbeat_tx,
            stats: Arc::clone(&stats),
        });
        links.insert((from, to), Arc::clone(&link));
        let net = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    biased;
                    heartbeat = heartbeat_rx.recv() => {
                        let Some((delivered_then, sent_at)) = heartbeat else { break };
                        let overtaken = stats.frames_delivered.load(Ordering::Acquire) - delivered_then;
                        stats.heartbeat_overtaken_max.fetch_max(overtaken, Ordering::AcqRel);
                        let delay = sent_at.elapsed().as_micros() as u64;
                        stats.heartbeat_delay_max_us.fetch_max(delay, Ordering::AcqRel);
                        stats.heartbeats_delivered.fetch_add(1, Ordering::AcqRel);
                    }
                    frame = snapshot_rx.recv() => {
                        let Some((frame, held)) = frame else { break };
                        let Some(net) = net.upgrade() else { break };
                        let node = net.nodes.lock().get(&to).and_then(Weak::upgrade);
                        if let Some(node) = node {
                            node.on_frame(from, frame);
                        }
                        drop(held);
                        stats.frames_delivered.fetch_add(1, Ordering::AcqRel);
                    }
                }
            }
        });
        link
    }
}

struct MemoryLane {
    node: NodeId,
    net: Arc<Net>,
}

impl SnapshotLane for MemoryLane {
    fn send_frame(
        &self,
        to: NodeId,
        frame: Bytes,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), LaneError>> + Send + '_>>
    {
        Box::pin(async move {
            let attached = self
                .net
                .nodes
                .lock()
                .get(&to)
                .is_some_and(|n| n.strong_count() > 0);
            if !attached {
                return Err(LaneError::PeerDown(to));
            }
            let link = self.net.link(self.node, to);
            let n = link.stats.frames_sent.fetch_add(1, Ordering::AcqRel);
            let filter = self.net.filter.lock().clone();
            let frame = match filter {
                Some(filter) => match filter(self.node, to, n, frame) {
                    Some(frame) => frame,
                    None => return Ok(()),
                },
                None => frame,
            };
            let held = self.net.gauge.hold(frame.len());
            let now = link.stats.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
            link.stats.in_flight_max.fetch_max(now, Ordering::AcqRel);
            let sent = link.snapshot_tx.send((frame, held)).await;
            link.stats.in_flight.fetch_sub(1, Ordering::AcqRel);
            sent.map_err(|_| LaneError::PeerDown(to))
        })
    }
}

/// A sink that keeps what it receives and answers `index_known` from a map.
#[derive(Default)]
pub struct RecordingSink {
    staged: Mutex<Vec<StagedSnapshot>>,
    metas: Mutex<Vec<StagedMeta>>,
    known: Mutex<HashMap<RangeId, u64>>,
    reject: AtomicBool,
    discard: AtomicBool,
}

impl RecordingSink {
    pub fn new() -> Arc<RecordingSink> {
        Arc::new(RecordingSink::default())
    }
    /// A sink that records metadata only and drops each staged snapshot at
    /// once (freeing its receive slot), like an engine applying instantly.
    pub fn discarding() -> Arc<RecordingSink> {
        let sink = RecordingSink::default();
        sink.discard.store(true, Ordering::Release);
        Arc::new(sink)
    }
    /// Metadata of every snapshot accepted so far.
    pub fn metas(&self) -> Vec<StagedMeta> {
        self.metas.lock().clone()
    }
    /// Pretends this node has `index` of `range_id`.
    pub fn set_index_known(&self, range_id: RangeId, index: u64) {
        self.known.lock().insert(range_id, index);
    }
    /// Makes `on_staged` fail from now on.
    pub fn reject_all(&self, reject: bool) {
        self.reject.store(reject, Ordering::Release);
    }
    /// Takes the staged snapshots received so far.
    pub fn take(&self) -> Vec<StagedSnapshot> {
        std::mem::take(&mut *self.staged.lock())
    }
}

impl SnapshotSink for RecordingSink {
    fn index_known(&self, range_id: RangeId) -> Option<u64> {
        self.known.lock().get(&range_id).copied()
    }
    fn on_staged(&self, snapshot: StagedSnapshot) -> Result<(), SourceError> {
        if self.reject.load(Ordering::Acquire) {
            return Err("rejected by the test sink".into());
        }
        self.metas.lock().push(*snapshot.meta());
        if !self.discard.load(Ordering::Acquire) {
            self.staged.lock().push(snapshot);
        }
        Ok(())
    }
}

/// Chunks from memory, counting the source calls made.
pub struct VecSource {
    header: Bytes,
    chunks: std::vec::IntoIter<Bytes>,
    reads: Arc<AtomicU64>,
}

impl VecSource {
    pub fn new(header: Vec<u8>, chunks: Vec<Vec<u8>>) -> VecSource {
        VecSource {
            header: Bytes::from(header),
            chunks: chunks
                .into_iter()
                .map(Bytes::from)
                .collect::<Vec<_>>()
                .into_iter(),
            reads: Arc::new(AtomicU64::new(0)),
        }
    }
    /// Counter of `header` + `next_chunk` calls, shared with the source.
    pub fn reads(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.reads)
    }
}

impl SnapshotSource for VecSource {
    fn header(&mut self) -> Result<Bytes, SourceError> {
        self.reads.fetch_add(1, Ordering::AcqRel);
        Ok(self.header.clone())
    }
    fn next_chunk(&mut self) -> Result<Option<Bytes>, SourceError> {
        self.reads.fetch_add(1, Ordering::AcqRel);
        Ok(self.chunks.next())
    }
}

/// `chunk_count` chunks of `chunk_bytes` incompressible pseudo-random bytes,
/// generated lazily (a 256 MiB snapshot never exists whole in memory).
/// [`pseudo_random_chunk`] regenerates any chunk for comparison.
pub struct PseudoRandomSource {
    seed: u64,
    chunk_count: u64,
    chunk_bytes: usize,
    next: u64,
    reads: Arc<AtomicU64>,
}

impl PseudoRandomSource {
    pub fn new(seed: u64, chunk_count: u64, chunk_bytes: usize) -> PseudoRandomSource {
        PseudoRandomSource {
            seed,
            chunk_count,
            chunk_bytes,
            next: 0,
            reads: Arc::new(AtomicU64::new(0)),
        }
    }
    /// Counter of `header` + `next_chunk` calls, shared with the source.
    pub fn reads(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.reads)
    }
    /// The header this source yields.
    pub fn header_for(seed: u64) -> Bytes {
        Bytes::from(format!("pseudo-random snapshot, seed {seed}"))
    }
}

impl SnapshotSource for PseudoRandomSource {
    fn header(&mut self) -> Result<Bytes, SourceError> {
        self.reads.fetch_add(1, Ordering::AcqRel);
        Ok(PseudoRandomSource::header_for(self.seed))
    }
    fn next_chunk(&mut self) -> Result<Option<Bytes>, SourceError> {
        self.reads.fetch_add(1, Ordering::AcqRel);
        if self.next == self.chunk_count {
            return Ok(None);
        }
        self.next += 1;
        Ok(Some(pseudo_random_chunk(
            self.seed,
            self.next - 1,
            self.chunk_bytes,
        )))
    }
}

/// Chunk `index` of the pseudo-random snapshot `seed` (xorshift64*).
pub fn pseudo_random_chunk(seed: u64, index: u64, bytes: usize) -> Bytes {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ index.wrapping_add(1).wrapping_mul(0xD1B5_4A32_D192_ED03);
    let mut out = Vec::with_capacity(bytes + 8);
    while out.len() < bytes {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(bytes);
    Bytes::from(out)
}

/// Two nodes, 1 (`a`, usually the sender) and 2 (`b`), on a [`MemoryNetwork`].
pub struct Pair {
    pub network: MemoryNetwork,
    pub a: Arc<SnapshotService>,
    pub b: Arc<SnapshotService>,
    pub sink_a: Arc<RecordingSink>,
    pub sink_b: Arc<RecordingSink>,
}

impl Pair {
    /// Starts both nodes (inside a tokio runtime) with lane queues of
    /// `capacity_frames` frames.
    pub fn start(
        config_a: SnapshotConfig,
        config_b: SnapshotConfig,
        sink_b: Arc<RecordingSink>,
        capacity_frames: usize,
    ) -> Result<Pair, SnapshotError> {
        let network = MemoryNetwork::new(capacity_frames);
        let sink_a = RecordingSink::new();
        let a = Arc::new(SnapshotService::start(
            config_a,
            network.lane(1),
            sink_a.clone(),
        )?);
        let b = Arc::new(SnapshotService::start(
            config_b,
            network.lane(2),
            sink_b.clone(),
        )?);
        network.attach(1, &a);
        network.attach(2, &b);
        Ok(Pair {
            network,
            a,
            b,
            sink_a,
            sink_b,
        })
    }

    /// Kills node 2 (drops its service) and starts a new one with `config`
    /// (same staging dir = a restart), returning how many stale staging
    /// files the new one removed.
    pub fn restart_b(&mut self, config: SnapshotConfig) -> Result<usize, SnapshotError> {
        self.network.detach(2);
        let fresh = Arc::new(SnapshotService::start(
            config,
            self.network.lane(2),
            self.sink_b.clone(),
        )?);
        self.b = fresh;
        self.network.attach(2, &self.b);
        Ok(self.b.stale_files_removed())
    }
}

/// Files named `*.snapstage` in `dir`.
pub fn staging_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == super::STAGING_SUFFIX))
                .collect()
        })
        .unwrap_or_default()
}
