//! [`Engine`]: the embedding API. An async handle to a node whose raft
//! loops run on threads of their own; every call is a message to the loop
//! that owns the range it concerns and a reply on a oneshot channel,
//! bounded by the request timeout.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use bytes::Bytes;
use crossbeam_channel::TrySendError;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::command::WriteOp;
use crate::config::EngineConfig;
use crate::error::Error;
use crate::network::Network;
use crate::node::{Consistency, Msg, Node, RangeInfo, Request, Shards};
use crate::peer::Outcome;
use crate::stats::NodeStats;
use flotilla_router::transport::Transport;

/// Tries of a scan that a concurrent split or merge keeps failing.
const SCAN_ATTEMPTS_MAX: usize = 5;

/// A Flotilla node embedded in this process.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let dir = tempfile::tempdir().unwrap();
/// let engine = flotilla::Engine::open(flotilla::EngineConfig::new(dir.path())).unwrap();
/// engine.put("hello", "world").await.unwrap();
/// assert_eq!(engine.get("hello").await.unwrap().as_deref(), Some(&b"world"[..]));
/// let right = engine.split("m").await.unwrap();
/// assert_eq!(engine.ranges().await.unwrap().len(), 2);
/// let left = engine.ranges().await.unwrap()[0].descriptor.id;
/// engine.merge(left, right).await.unwrap();
/// engine.close().await.unwrap();
/// # });
/// ```
pub struct Engine {
    /// The raft loops' mailboxes and the node's range map.
    shards: Shards,
    network: Option<Arc<Network>>,
    /// Applied index of every local range, whichever loop holds it.
    applied: Arc<parking_lot::RwLock<std::collections::HashMap<u64, u64>>>,
    transport: Option<Transport>,
    config: EngineConfig,
    closed: Arc<AtomicBool>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Engine {
    /// Open (or create) a node over `config.data_dir`. With the defaults
    /// this is a single node holding one range that covers the key space.
    /// Blocks while the WAL is recovered.
    pub fn open(config: EngineConfig) -> Result<Engine, Error> {
        config.validate()?;
        let (shards, mailboxes) = Shards::new(config.pollers, config.requests_queued_max);
        let applied = Arc::new(parking_lot::RwLock::new(std::collections::HashMap::new()));
        let network = Network::start(&config, &shards, applied.clone())?.map(Arc::new);
        let transport = network.as_ref().map(|n| n.transport.clone());
        let nodes = Node::open(
            config.clone(),
            network.clone(),
            shards.clone(),
            applied.clone(),
        )?;
        let closed = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::with_capacity(nodes.len() + 1);
        for (shard, (node, mailbox)) in nodes.into_iter().zip(mailboxes).enumerate() {
            let raft = std::thread::Builder::new()
                .name(format!("flotilla-raft-{}-{shard}", config.node_id))
                .spawn({
                    // Every log line of a raft loop names its node.
                    let span = tracing::info_span!("node", node_id = config.node_id);
                    move || span.in_scope(|| node.run(mailbox))
                })
                .map_err(|e| Error::Storage(format!("cannot start a raft thread: {e}")))?;
            threads.push(raft);
        }
        // One timer for the whole node; ticks reach only awake groups.
        let inboxes = shards.inboxes.clone();
        let ticker_closed = closed.clone();
        let tick = config.tick;
        let ticker = std::thread::Builder::new()
            .name(format!("flotilla-tick-{}", config.node_id))
            .spawn(move || {
                while !ticker_closed.load(Ordering::Acquire) {
                    std::thread::sleep(tick);
                    for inbox in &inboxes {
                        // A full mailbox skips a tick rather than block.
                        let _ = inbox.try_send(Msg::Tick);
                    }
                }
            })
            .map_err(|e| Error::Storage(format!("cannot start the tick thread: {e}")))?;
        threads.push(ticker);
        Ok(Engine {
            shards,
            network,
            applied,
            transport,
            config,
            closed,
            threads: Mutex::new(threads),
        })
    }

    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.transport.as_ref().map(|t| t.local_addr())
    }

    /// Tell this node where another node listens (or moved to).
    pub fn add_peer(&self, node: u64, addr: std::net::SocketAddr) -> Result<(), Error> {
        match &self.transport {
            Some(t) => t
                .add_peer(node, addr)
                .map_err(|e| Error::InvalidRequest(e.to_string())),
            None => Err(Error::InvalidRequest(
                "this node has no listen address".into(),
            )),
        }
    }

    /// The transport's fault-injection layer (tests and the server's
    /// `FLOTILLA.FAULT`); `None` for a node without a listen address.
    pub fn transport_faults(&self) -> Option<&flotilla_router::transport::Faults> {
        self.transport.as_ref().map(|t| t.faults())
    }

    /// This node's id.
    pub fn node_id(&self) -> u64 {
        self.config.node_id
    }

    fn submit(&self, request: Request) -> Result<(), Error> {
        if self.closed.load(Ordering::Acquire) || self.shards.failed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let shard = self.shard_for(&request);
        match self.shards.inboxes[shard].try_send(Msg::Request(request)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(Error::Busy(format!(
                "{} requests queued on the raft loop",
                self.shards.inboxes[shard].capacity().unwrap_or(0)
            ))),
            Err(TrySendError::Disconnected(_)) => Err(Error::Closed),
        }
    }

    /// The raft loop that owns what a request is about (a loop that finds
    /// it moved on forwards it).
    fn shard_for(&self, request: &Request) -> usize {
        let placement = &self.shards.placement;
        match request {
            Request::Write { ops, .. } => ops
                .first()
                .map_or(0, |op| self.shards.shard_for_key(op.key())),
            Request::Get { key, .. } | Request::Split { key, .. } => self.shards.shard_for_key(key),
            Request::Scan { start, .. } => self.shards.shard_for_key(start),
            Request::Merge { left, .. } => placement.shard_of(*left),
            Request::AddReplica { range_id, .. }
            | Request::RemoveReplica { range_id, .. }
            | Request::TransferLeader { range_id, .. } => placement.shard_of(*range_id),
            Request::Ranges { .. } | Request::Stats { .. } => 0,
        }
    }

    /// Ask every raft loop and collect the answers.
    async fn gather<T>(
        &self,
        make: impl Fn(oneshot::Sender<T>) -> Request,
    ) -> Result<Vec<T>, Error> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let mut waiting = Vec::with_capacity(self.shards.count());
        for inbox in &self.shards.inboxes {
            let (reply, rx) = oneshot::channel();
            match inbox.try_send(Msg::Request(make(reply))) {
                Ok(()) => waiting.push(rx),
                Err(TrySendError::Full(_)) => {
                    return Err(Error::Busy("requests queued on the raft loop".into()))
                }
                Err(TrySendError::Disconnected(_)) => return Err(Error::Closed),
            }
        }
        let timeout = self.config.request_timeout;
        let all = futures_join_all(waiting);
        match tokio::time::timeout(timeout, all).await {
            Ok(Ok(answers)) => Ok(answers),
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => Err(Error::Timeout(timeout.as_millis() as u64)),
        }
    }

    async fn wait<T>(&self, rx: oneshot::Receiver<Result<T, Error>>) -> Result<T, Error> {
        self.wait_for(rx, self.config.request_timeout).await
    }

    async fn wait_for<T>(
        &self,
        rx: oneshot::Receiver<Result<T, Error>>,
        timeout: std::time::Duration,
    ) -> Result<T, Error> {
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => Err(Error::Timeout(timeout.as_millis() as u64)),
        }
    }

    fn check_key(&self, key: &[u8]) -> Result<(), Error> {
        if key.is_empty() {
            return Err(Error::InvalidRequest("empty key".into()));
        }
        if key.len() > self.config.key_bytes_max {
            return Err(Error::key_too_large(
                "key",
                key.len(),
                self.config.key_bytes_max,
            ));
        }
        Ok(())
    }

    fn check_value(&self, value: &[u8]) -> Result<(), Error> {
        if value.len() > self.config.value_bytes_max {
            return Err(Error::key_too_large(
                "value",
                value.len(),
                self.config.value_bytes_max,
            ));
        }
        Ok(())
    }

    /// Write one key. Returns once the write is committed and applied.
    pub async fn put(&self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Result<(), Error> {
        let (key, value) = (key.into(), value.into());
        self.write_batch(vec![WriteOp::Put { key, value }]).await
    }

    /// Delete one key (deleting a missing key is not an error).
    pub async fn delete(&self, key: impl Into<Bytes>) -> Result<(), Error> {
        self.write_batch(vec![WriteOp::Delete { key: key.into() }])
            .await
    }

    /// Apply several writes atomically. All keys must lie in one range,
    /// otherwise [`Error::CrossRangeBatch`] and nothing is written.
    pub async fn write_batch(&self, ops: Vec<WriteOp>) -> Result<(), Error> {
        if ops.is_empty() {
            return Ok(());
        }
        for op in &ops {
            self.check_key(op.key())?;
            if let WriteOp::Put { value, .. } = op {
                self.check_value(value)?;
            }
        }
        let (reply, rx) = oneshot::channel();
        self.submit(Request::Write { ops, reply })?;
        self.wait(rx).await.map(|_| ())
    }

    /// Linearizable read of one key.
    pub async fn get(&self, key: impl Into<Bytes>) -> Result<Option<Bytes>, Error> {
        self.get_with(key, Consistency::Linearizable).await
    }

    /// Read one key with an explicit consistency (`Stale` reads whatever
    /// the local replica applied, without contacting the leader).
    pub async fn get_with(
        &self,
        key: impl Into<Bytes>,
        consistency: Consistency,
    ) -> Result<Option<Bytes>, Error> {
        let key = key.into();
        self.check_key(&key)?;
        let (reply, rx) = oneshot::channel();
        self.submit(Request::Get {
            key,
            consistency,
            reply,
        })?;
        self.wait(rx).await
    }

    /// Keys in `range` (an empty end means "to the end"), in key order,
    /// at most `limit`, across ranges. Each range is read linearizably;
    /// the scan as a whole is not one atomic snapshot across ranges.
    pub async fn scan(
        &self,
        range: Range<Bytes>,
        limit: usize,
    ) -> Result<Vec<(Bytes, Bytes)>, Error> {
        self.scan_with(range, limit, Consistency::Linearizable)
            .await
    }

    /// [`Engine::scan`] with an explicit consistency.
    pub async fn scan_with(
        &self,
        range: Range<Bytes>,
        limit: usize,
        consistency: Consistency,
    ) -> Result<Vec<(Bytes, Bytes)>, Error> {
        // A merge or split of a range the scan listed, between the listing
        // and its read, fails the attempt; a read is safe to repeat.
        let mut attempts = 0;
        loop {
            let (reply, rx) = oneshot::channel();
            self.submit(Request::Scan {
                start: range.start.clone(),
                end: range.end.clone(),
                limit,
                consistency,
                reply,
            })?;
            match self.wait(rx).await {
                Err(Error::EpochMismatch { .. }) if attempts < SCAN_ATTEMPTS_MAX => attempts += 1,
                result => return result,
            }
        }
    }

    /// Split the range holding `key` at `key` (metadata only: no data is
    /// copied). Returns the new right-hand range's id.
    pub async fn split(&self, key: impl Into<Bytes>) -> Result<u64, Error> {
        let key = key.into();
        self.check_key(&key)?;
        let (reply, rx) = oneshot::channel();
        self.submit(Request::Split { key, reply })?;
        match self.wait(rx).await? {
            Outcome::Split { new_range_id } => Ok(new_range_id),
            Outcome::Done => Err(Error::AdminRefused(
                "split applied without a new range".into(),
            )),
        }
    }

    /// Merge range `right` into its left neighbour `left` (same replicas
    /// required). `right` is frozen first; on failure it is unfrozen.
    pub async fn merge(&self, left: u64, right: u64) -> Result<(), Error> {
        let (reply, rx) = oneshot::channel();
        self.submit(Request::Merge { left, right, reply })?;
        self.wait(rx).await.map(|_| ())
    }

    /// Add a replica of `range_id` on `node` (run on the range's leader;
    /// elsewhere the error names the leader). It joins as a learner, is
    /// caught up by a snapshot, and is promoted to voter; the call returns
    /// once it is a voter, or fails and rolls back after
    /// `membership_timeout`. Already a voter there: `Ok` at once.
    ///
    /// ```no_run
    /// # async fn f(engine: &flotilla::Engine) -> Result<(), flotilla::Error> {
    /// // Move range 1's replica from node 3 to node 4: add, then remove.
    /// engine.add_replica(1, 4).await?;
    /// engine.remove_replica(1, 3).await?;
    /// # Ok(()) }
    /// ```
    pub async fn add_replica(&self, range_id: u64, node: u64) -> Result<(), Error> {
        let (reply, rx) = oneshot::channel();
        self.submit(Request::AddReplica {
            range_id,
            node,
            reply,
        })?;
        let timeout = self.config.membership_timeout + self.config.request_timeout;
        self.wait_for(rx, timeout).await.map(|_| ())
    }

    /// Remove the replica of `range_id` on `node` (run on the leader).
    /// Refused with [`Error::AdminRefused`] when `node` holds the leader
    /// (transfer leadership first), when fewer than `replication_factor`
    /// voters would remain, or when the remaining voters could not form a
    /// quorum now. The removed node destroys its copy of the range.
    pub async fn remove_replica(&self, range_id: u64, node: u64) -> Result<(), Error> {
        let (reply, rx) = oneshot::channel();
        self.submit(Request::RemoveReplica {
            range_id,
            node,
            reply,
        })?;
        self.wait(rx).await.map(|_| ())
    }

    /// Hand the leadership of `range_id` to its replica on `node` (run on
    /// the current leader). Returns once that replica leads.
    pub async fn transfer_leader(&self, range_id: u64, node: u64) -> Result<(), Error> {
        let (reply, rx) = oneshot::channel();
        self.submit(Request::TransferLeader {
            range_id,
            node,
            reply,
        })?;
        self.wait(rx).await.map(|_| ())
    }

    /// The ranges this node holds, in key order.
    pub async fn ranges(&self) -> Result<Vec<RangeInfo>, Error> {
        // Each loop answers for its own ranges. A range handed between
        // loops while they answer may be in two answers (a range's start
        // never changes, so its copies end up neighbours), or in none:
        // then ask again.
        let mut attempts = 0;
        loop {
            let answers = self.gather(|reply| Request::Ranges { reply }).await?;
            let mut infos: Vec<RangeInfo> = answers.into_iter().flatten().collect();
            infos.sort_by(|a, b| {
                (&a.descriptor.start, a.descriptor.id).cmp(&(&b.descriptor.start, b.descriptor.id))
            });
            infos.dedup_by_key(|info| info.descriptor.id);
            attempts += 1;
            let complete = {
                let ids: std::collections::HashSet<u64> =
                    infos.iter().map(|i| i.descriptor.id).collect();
                self.applied.read().keys().all(|id| ids.contains(id))
            };
            if complete || attempts >= 5 {
                return Ok(infos);
            }
        }
    }

    /// What the node has done so far.
    pub async fn stats(&self) -> Result<NodeStats, Error> {
        let answers = self.gather(|reply| Request::Stats { reply }).await?;
        let mut total = NodeStats::default();
        for stats in &answers {
            total.absorb(stats);
        }
        // Exact even while a range moves between loops (the sum is not).
        total.ranges = self.applied.read().len() as u64;
        Ok(total)
    }

    /// Stop accepting requests, finish what is queued, flush and stop the
    /// node's threads.
    pub async fn close(&self) -> Result<(), Error> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // The control channels are unbounded: shutdown gets through even
        // when the request mailboxes are full.
        let mut waiting = Vec::new();
        for control in &self.shards.control {
            let (reply, rx) = oneshot::channel();
            if control.send(Msg::Shutdown(reply)).is_ok() {
                waiting.push(rx);
            }
        }
        let mut result = Ok(());
        for rx in waiting {
            if let Ok(Err(e)) = rx.await {
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
        self.stop_threads();
        result
    }

    /// Join the loops and the ticker, then stop the transport.
    fn stop_threads(&self) {
        let threads: Vec<JoinHandle<()>> = self.threads.lock().drain(..).collect();
        for thread in threads {
            let _ = thread.join();
        }
        if let Some(network) = self.network.clone() {
            // On a thread of its own: the caller may be inside a tokio
            // runtime, where dropping the network's runtime panics.
            let stopper = std::thread::Builder::new()
                .name("flotilla-net-stop".into())
                .spawn(move || network.shutdown());
            match stopper {
                Ok(thread) => {
                    let _ = thread.join();
                }
                Err(e) => tracing::warn!(error = %e, "cannot stop the network"),
            }
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            for control in &self.shards.control {
                let (reply, _rx) = oneshot::channel();
                let _ = control.send(Msg::Shutdown(reply));
            }
            self.stop_threads();
        }
    }
}

/// Wait for every receiver; the first closed one fails the lot.
async fn futures_join_all<T>(
    receivers: Vec<oneshot::Receiver<T>>,
) -> Result<Vec<T>, oneshot::error::RecvError> {
    let mut answers = Vec::with_capacity(receivers.len());
    for rx in receivers {
        answers.push(rx.await?);
    }
    Ok(answers)
}
