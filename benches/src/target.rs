//! What the benchmark drives: an embedded single node, an embedded
//! in-process cluster (real transport on 127.0.0.1), or remote servers
//! over RESP. Each client task gets a [`Client`]; every operation returns
//! either its result or an [`OpError`] with a short kind for the report.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use flotilla::{Cluster, Engine, EngineConfig, Error, NodeStats, WriteOp};
use flotilla_raftgroup::Role;

use crate::resp::{Connection, Reply, RespError};

/// Where the load goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    /// One node in this process (`embedded`), fsync on.
    Embedded,
    /// `n` nodes in this process over loopback TCP (`cluster` = 3 nodes,
    /// `cluster:5`).
    Cluster(u64),
    /// Running servers (`resp://host:port[,host:port...]`); clients are
    /// spread over the addresses round-robin.
    Resp(Vec<String>),
}

impl FromStr for TargetSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "embedded" {
            return Ok(TargetSpec::Embedded);
        }
        if s == "cluster" {
            return Ok(TargetSpec::Cluster(3));
        }
        if let Some(n) = s.strip_prefix("cluster:") {
            let n: u64 = n
                .parse()
                .map_err(|_| format!("`{s}`: the node count after `cluster:` must be a number"))?;
            if !(1..=9).contains(&n) {
                return Err(format!("`{s}`: a cluster of 1 to 9 nodes"));
            }
            return Ok(TargetSpec::Cluster(n));
        }
        if let Some(list) = s.strip_prefix("resp://") {
            let addrs: Vec<String> = list
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(String::from)
                .collect();
            if addrs.is_empty() || addrs.iter().any(|a| !a.contains(':')) {
                return Err(format!("`{s}`: expected resp://host:port[,host:port...]"));
            }
            return Ok(TargetSpec::Resp(addrs));
        }
        Err(format!(
            "unknown target `{s}`: embedded, cluster, cluster:N or resp://host:port[,host:port...]"
        ))
    }
}

impl std::fmt::Display for TargetSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetSpec::Embedded => write!(f, "embedded"),
            TargetSpec::Cluster(n) => write!(f, "cluster:{n}"),
            TargetSpec::Resp(addrs) => write!(f, "resp://{}", addrs.join(",")),
        }
    }
}

/// A failed operation: a short kind (`timeout`, `busy`, `not_leader`,
/// `io`, the RESP error prefix in lower case, ...) and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpError {
    pub kind: String,
    pub message: String,
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

/// The report's name for an engine error.
pub fn engine_error_kind(e: &Error) -> &'static str {
    match e {
        Error::NotLeader { .. } => "not_leader",
        Error::EpochMismatch { .. } => "epoch_mismatch",
        Error::RangeNotFound(_) => "range_not_found",
        Error::Busy(_) => "busy",
        Error::Timeout(_) => "timeout",
        Error::InvalidRequest(_) => "invalid_request",
        Error::CrossRangeBatch { .. } => "cross_range",
        Error::AdminRefused(_) => "admin_refused",
        Error::Closed => "closed",
        Error::Config { .. } => "config",
        Error::Storage(_) => "storage",
    }
}

impl From<Error> for OpError {
    fn from(e: Error) -> Self {
        OpError {
            kind: engine_error_kind(&e).to_string(),
            message: e.to_string(),
        }
    }
}

impl From<RespError> for OpError {
    fn from(e: RespError) -> Self {
        let kind = match e {
            RespError::Io(_) => "io",
            RespError::Protocol(_) => "protocol",
            RespError::Timeout(_) => "client_timeout",
        };
        OpError {
            kind: kind.to_string(),
            message: e.to_string(),
        }
    }
}

/// Routing errors are retried (with a short backoff) up to this many times
/// per operation; the retries are counted as redirects, not errors.
const ROUTE_ATTEMPTS: u32 = 200;

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((1 + attempt as u64).min(20))
}

/// How the target was opened.
pub struct Target {
    kind: TargetKind,
    /// Temporary data of embedded targets, removed on drop.
    _dir: Option<tempfile::TempDir>,
}

enum TargetKind {
    Embedded(Arc<Engine>),
    Cluster {
        cluster: Cluster,
        router: Arc<ClusterRouter>,
    },
    Resp {
        addrs: Vec<String>,
        timeout: Duration,
    },
}

impl Target {
    /// Open the target. Embedded targets live in a fresh temporary
    /// directory under `data_dir`, fsync on, with a Raft tick of `tick`.
    pub async fn open(
        spec: &TargetSpec,
        data_dir: &Path,
        tick: Duration,
        pollers: usize,
        timeout: Duration,
    ) -> Result<Target, String> {
        let pollers_of = move |config: &mut EngineConfig| {
            if pollers > 0 {
                config.pollers = pollers;
            }
        };
        match spec {
            TargetSpec::Embedded => {
                let dir = tempfile::Builder::new()
                    .prefix("flotilla-bench-")
                    .tempdir_in(data_dir)
                    .map_err(|e| {
                        format!("cannot create a directory in {}: {e}", data_dir.display())
                    })?;
                let mut config = EngineConfig::new(dir.path());
                config.tick = tick;
                config.wal_sync = true;
                pin_ranges(&mut config);
                pollers_of(&mut config);
                let engine = Engine::open(config).map_err(|e| format!("open: {e}"))?;
                Ok(Target {
                    kind: TargetKind::Embedded(Arc::new(engine)),
                    _dir: Some(dir),
                })
            }
            TargetSpec::Cluster(n) => {
                let dir = tempfile::Builder::new()
                    .prefix("flotilla-bench-")
                    .tempdir_in(data_dir)
                    .map_err(|e| {
                        format!("cannot create a directory in {}: {e}", data_dir.display())
                    })?;
                let cluster = Cluster::start_with(*n, dir.path(), tick, move |c| {
                    c.wal_sync = true;
                    pin_ranges(c);
                    pollers_of(c);
                })
                .map_err(|e| format!("cluster start: {e}"))?;
                let nodes = (1..=*n).filter_map(|id| cluster.node_handle(id)).collect();
                let router = Arc::new(ClusterRouter::new(nodes));
                router.wait_for_leaders(Duration::from_secs(60)).await?;
                Ok(Target {
                    kind: TargetKind::Cluster { cluster, router },
                    _dir: Some(dir),
                })
            }
            TargetSpec::Resp(addrs) => {
                // Fail early and clearly when nothing listens.
                let mut c = Connection::connect(&addrs[0])
                    .await
                    .map_err(|e| format!("cannot connect to {}: {e}", addrs[0]))?;
                match c.command(&[b"PING"], timeout).await {
                    Ok(Reply::Simple(_)) | Ok(Reply::Bulk(_)) => {}
                    Ok(other) => return Err(format!("{}: PING answered {other:?}", addrs[0])),
                    Err(e) => return Err(format!("{}: {e}", addrs[0])),
                }
                Ok(Target {
                    kind: TargetKind::Resp {
                        addrs: addrs.clone(),
                        timeout,
                    },
                    _dir: None,
                })
            }
        }
    }

    /// The data directory of an embedded target.
    pub fn data_path(&self) -> Option<&Path> {
        self._dir.as_ref().map(|d| d.path())
    }

    /// A client for client task `index`.
    pub fn client(&self, index: usize) -> Client {
        match &self.kind {
            TargetKind::Embedded(engine) => Client::Engine(engine.clone()),
            TargetKind::Cluster { router, .. } => Client::Cluster {
                router: router.clone(),
                redirects: 0,
            },
            TargetKind::Resp { addrs, timeout } => Client::Resp(RespClient {
                home: addrs[index % addrs.len()].clone(),
                conns: HashMap::new(),
                timeout: *timeout,
                redirects: 0,
            }),
        }
    }

    /// Split at each key (keys that are already range starts are
    /// refused by the engine; that is counted, not fatal). Returns the
    /// number of refused splits and the first refusal.
    pub async fn presplit(&self, keys: &[Bytes]) -> Result<(u64, Option<String>), String> {
        let mut refused = 0;
        let mut first = None;
        let mut client = self.client(0);
        // Highest key first: each split then cuts the original range, whose
        // leader stays, instead of the range the previous split just made
        // (which must elect a leader first on a cluster). The new ranges
        // elect their leaders in parallel afterwards.
        for key in keys.iter().rev() {
            if let Err(e) = client.split(key.clone()).await {
                if e.kind == "io"
                    || e.kind == "protocol"
                    || e.kind == "closed"
                    || e.kind == "storage"
                {
                    return Err(format!("split at {:?}: {e}", String::from_utf8_lossy(key)));
                }
                refused += 1;
                first.get_or_insert_with(|| e.to_string());
            }
        }
        if let TargetKind::Cluster { router, .. } = &self.kind {
            router.wait_for_leaders(Duration::from_secs(60)).await?;
        }
        Ok((refused, first))
    }

    /// Counters of the embedded nodes (empty for remote targets).
    pub async fn node_stats(&self) -> Vec<NodeStats> {
        match &self.kind {
            TargetKind::Embedded(engine) => engine.stats().await.into_iter().collect(),
            TargetKind::Cluster { router, .. } => {
                let mut out = Vec::new();
                for node in &router.nodes {
                    out.push(node.stats().await.unwrap_or_default());
                }
                out
            }
            TargetKind::Resp { .. } => Vec::new(),
        }
    }

    /// Close embedded nodes (flushes and joins their threads).
    pub async fn close(self) -> Result<(), String> {
        match self.kind {
            TargetKind::Embedded(engine) => engine.close().await.map_err(|e| e.to_string()),
            TargetKind::Cluster {
                mut cluster,
                router,
            } => {
                drop(router);
                cluster.close().await.map_err(|e| e.to_string())
            }
            TargetKind::Resp { .. } => Ok(()),
        }
    }
}

/// One client task's handle on the target.
pub enum Client {
    Engine(Arc<Engine>),
    Cluster {
        router: Arc<ClusterRouter>,
        redirects: u64,
    },
    Resp(RespClient),
}

impl Client {
    /// Redirects and routing retries since the last call.
    pub fn take_redirects(&mut self) -> u64 {
        match self {
            Client::Engine(_) => 0,
            Client::Cluster { redirects, .. } => std::mem::take(redirects),
            Client::Resp(c) => std::mem::take(&mut c.redirects),
        }
    }

    pub async fn get(&mut self, key: Bytes) -> Result<Option<Bytes>, OpError> {
        match self {
            Client::Engine(e) => Ok(e.get(key).await?),
            Client::Cluster { router, redirects } => {
                let k = key.clone();
                router
                    .with_leader(&key, redirects, move |e| {
                        let k = k.clone();
                        async move { e.get(k).await }
                    })
                    .await
            }
            Client::Resp(c) => match c.call(&[b"GET", &key]).await? {
                Reply::Bulk(v) => Ok(v),
                other => Err(unexpected("GET", &other)),
            },
        }
    }

    pub async fn put(&mut self, key: Bytes, value: Bytes) -> Result<(), OpError> {
        match self {
            Client::Engine(e) => Ok(e.put(key, value).await?),
            Client::Cluster { router, redirects } => {
                let (k, v) = (key.clone(), value);
                router
                    .with_leader(&key, redirects, move |e| {
                        let (k, v) = (k.clone(), v.clone());
                        async move { e.put(k, v).await }
                    })
                    .await
            }
            Client::Resp(c) => match c.call(&[b"SET", &key, &value]).await? {
                Reply::Simple(_) => Ok(()),
                other => Err(unexpected("SET", &other)),
            },
        }
    }

    /// Write `rows` atomically; they must lie in one range.
    pub async fn put_batch(&mut self, rows: Vec<(Bytes, Bytes)>) -> Result<(), OpError> {
        let Some(first) = rows.first().map(|r| r.0.clone()) else {
            return Ok(());
        };
        let ops = move || -> Vec<WriteOp> {
            rows.iter()
                .map(|(key, value)| WriteOp::Put {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect()
        };
        match self {
            Client::Engine(e) => Ok(e.write_batch(ops()).await?),
            Client::Cluster { router, redirects } => {
                let ops = ops();
                router
                    .with_leader(&first, redirects, move |e| {
                        let ops = ops.clone();
                        async move { e.write_batch(ops).await }
                    })
                    .await
            }
            Client::Resp(c) => {
                let ops = ops();
                let mut args: Vec<&[u8]> = Vec::with_capacity(1 + 2 * ops.len());
                args.push(b"MSET");
                for op in &ops {
                    if let WriteOp::Put { key, value } = op {
                        args.push(key);
                        args.push(value);
                    }
                }
                match c.call(&args).await? {
                    Reply::Simple(_) => Ok(()),
                    other => Err(unexpected("MSET", &other)),
                }
            }
        }
    }

    /// Keys in `[start, end)`, at most `limit`; returns how many came back.
    pub async fn scan(&mut self, start: Bytes, end: Bytes, limit: usize) -> Result<usize, OpError> {
        match self {
            Client::Engine(e) => Ok(e.scan(start..end, limit).await?.len()),
            Client::Cluster { router, redirects } => {
                router.scan(start, end, limit, redirects).await
            }
            Client::Resp(c) => {
                let limit_s = limit.to_string();
                match c
                    .call(&[b"FLOTILLA.SCAN", &start, &end, b"LIMIT", limit_s.as_bytes()])
                    .await?
                {
                    Reply::Array(Some(items)) => Ok(items.len() / 2),
                    Reply::Array(None) => Ok(0),
                    other => Err(unexpected("FLOTILLA.SCAN", &other)),
                }
            }
        }
    }

    /// Split the range holding `key` at `key`.
    pub async fn split(&mut self, key: Bytes) -> Result<(), OpError> {
        match self {
            Client::Engine(e) => {
                // A split may be refused while the previous one settles.
                let mut attempt = 0;
                loop {
                    match e.split(key.clone()).await {
                        Ok(_) => return Ok(()),
                        Err(err) if err.is_retryable() && attempt < ROUTE_ATTEMPTS => {
                            attempt += 1;
                            tokio::time::sleep(backoff(attempt)).await;
                        }
                        Err(err) => return Err(err.into()),
                    }
                }
            }
            Client::Cluster { router, redirects } => {
                let k = key.clone();
                router
                    .with_leader(&key, redirects, move |e| {
                        let k = k.clone();
                        async move { e.split(k).await.map(|_| ()) }
                    })
                    .await
            }
            Client::Resp(c) => match c.call(&[b"FLOTILLA.SPLIT", &key]).await? {
                Reply::Integer(_) | Reply::Simple(_) | Reply::Bulk(_) => Ok(()),
                other => Err(unexpected("FLOTILLA.SPLIT", &other)),
            },
        }
    }
}

fn unexpected(command: &str, reply: &Reply) -> OpError {
    match reply {
        Reply::Error(e) => {
            let kind = e
                .split_whitespace()
                .next()
                .unwrap_or("err")
                .to_ascii_lowercase();
            OpError {
                kind,
                message: e.clone(),
            }
        }
        other => OpError {
            kind: "unexpected_reply".into(),
            message: format!("{command} answered {other:?}"),
        },
    }
}

/// A RESP client for one task: a connection to its home server, plus one
/// per server it was redirected to with `-MOVED`.
pub struct RespClient {
    home: String,
    conns: HashMap<String, Connection>,
    timeout: Duration,
    redirects: u64,
}

impl RespClient {
    /// Send a command, following `-MOVED` and waiting out `-TRYAGAIN`.
    /// Other error replies come back as [`Reply::Error`].
    async fn call(&mut self, args: &[&[u8]]) -> Result<Reply, OpError> {
        let mut addr = self.home.clone();
        let mut attempt = 0;
        loop {
            let conn = match self.conns.get_mut(&addr) {
                Some(c) => c,
                None => {
                    let c = Connection::connect(&addr).await?;
                    self.conns.entry(addr.clone()).or_insert(c)
                }
            };
            let reply = match conn.command(args, self.timeout).await {
                Ok(r) => r,
                Err(e) => {
                    // The stream's state is unknown: reconnect next time.
                    self.conns.remove(&addr);
                    return Err(e.into());
                }
            };
            if let Reply::Error(msg) = &reply {
                if attempt < ROUTE_ATTEMPTS {
                    if let Some(rest) = msg.strip_prefix("MOVED ") {
                        if let Some(to) = rest.split_whitespace().nth(1) {
                            attempt += 1;
                            self.redirects += 1;
                            addr = to.to_string();
                            continue;
                        }
                    }
                    if msg.starts_with("TRYAGAIN") {
                        attempt += 1;
                        self.redirects += 1;
                        tokio::time::sleep(backoff(attempt)).await;
                        continue;
                    }
                }
            }
            return Ok(reply);
        }
    }
}

#[derive(Debug, Clone)]
struct Route {
    start: Bytes,
    end: Bytes,
    leader: Option<u64>,
}

/// Routes keys to the node leading their range in an in-process cluster:
/// a cached range table (refreshed from every node's `ranges()` when a
/// request lands on a non-leader) plus the engine's leader hints.
pub struct ClusterRouter {
    nodes: Vec<Arc<Engine>>,
    routes: RwLock<Arc<Vec<Route>>>,
    generation: AtomicU64,
    refreshing: tokio::sync::Mutex<()>,
}

impl ClusterRouter {
    fn new(nodes: Vec<Arc<Engine>>) -> ClusterRouter {
        ClusterRouter {
            nodes,
            routes: RwLock::new(Arc::new(Vec::new())),
            generation: AtomicU64::new(0),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    fn node(&self, id: u64) -> Option<&Arc<Engine>> {
        self.nodes.iter().find(|n| n.node_id() == id)
    }

    fn routes(&self) -> Arc<Vec<Route>> {
        match self.routes.read() {
            Ok(r) => r.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn route_of(routes: &[Route], key: &[u8]) -> Option<Route> {
        let i = routes.partition_point(|r| &r.start[..] <= key);
        let r = routes.get(i.checked_sub(1)?)?;
        (r.end.is_empty() || key < &r.end[..]).then(|| r.clone())
    }

    /// Rebuild the range table unless someone did since `seen`.
    async fn refresh(&self, seen: u64) {
        let _guard = self.refreshing.lock().await;
        if self.generation.load(Ordering::Acquire) != seen {
            return;
        }
        // Range id -> its route and the term of the leader found. A leader's
        // descriptor wins over a follower's (which may predate a split).
        let mut table: HashMap<u64, (Route, u64)> = HashMap::new();
        for node in &self.nodes {
            let Ok(ranges) = node.ranges().await else {
                continue;
            };
            for info in ranges {
                let d = &info.descriptor;
                let route = |leader| Route {
                    start: d.start.clone(),
                    end: d.end.clone(),
                    leader,
                };
                let entry = table.entry(d.id).or_insert_with(|| (route(None), 0));
                let newer = entry.0.leader.is_none() || info.term > entry.1;
                if info.role == Role::Leader && newer {
                    *entry = (route(Some(node.node_id())), info.term);
                }
            }
        }
        let mut routes: Vec<Route> = table.into_values().map(|(r, _)| r).collect();
        routes.sort_by(|a, b| a.start.cmp(&b.start));
        match self.routes.write() {
            Ok(mut r) => *r = Arc::new(routes),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(routes),
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Wait until every range has a leader.
    async fn wait_for_leaders(&self, limit: Duration) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            self.refresh(self.generation.load(Ordering::Acquire)).await;
            let routes = self.routes();
            if !routes.is_empty() && routes.iter().all(|r| r.leader.is_some()) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                let missing = routes.iter().filter(|r| r.leader.is_none()).count();
                return Err(format!(
                    "{missing} of {} ranges still have no leader after {limit:?}",
                    routes.len()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Run `op` on the leader of `key`'s range, following hints and
    /// refreshing the table on routing errors.
    async fn with_leader<T, F, Fut>(
        &self,
        key: &[u8],
        redirects: &mut u64,
        op: F,
    ) -> Result<T, OpError>
    where
        F: Fn(Arc<Engine>) -> Fut,
        Fut: std::future::Future<Output = Result<T, Error>>,
    {
        let mut hint: Option<u64> = None;
        let mut attempt = 0;
        loop {
            let seen = self.generation.load(Ordering::Acquire);
            let target = hint
                .take()
                .or_else(|| Self::route_of(&self.routes(), key).and_then(|r| r.leader))
                .and_then(|id| self.node(id).cloned());
            let error = match target {
                Some(engine) => match op(engine).await {
                    Ok(v) => return Ok(v),
                    Err(Error::NotLeader {
                        leader: Some(l), ..
                    }) if attempt < ROUTE_ATTEMPTS => {
                        hint = Some(l.node_id);
                        None
                    }
                    Err(
                        e @ (Error::NotLeader { .. }
                        | Error::EpochMismatch { .. }
                        | Error::RangeNotFound(_)),
                    ) => Some(e),
                    Err(e) => return Err(e.into()),
                },
                None => Some(Error::NotLeader {
                    range_id: 0,
                    leader: None,
                }),
            };
            attempt += 1;
            *redirects += 1;
            if let Some(e) = error {
                if attempt >= ROUTE_ATTEMPTS {
                    return Err(e.into());
                }
                self.refresh(seen).await;
                tokio::time::sleep(backoff(attempt)).await;
            }
        }
    }

    /// A scan as one sub-scan per range on its leader (what the RESP
    /// server does).
    async fn scan(
        &self,
        start: Bytes,
        end: Bytes,
        limit: usize,
        redirects: &mut u64,
    ) -> Result<usize, OpError> {
        let mut got = 0;
        let mut cursor = start;
        while got < limit && (end.is_empty() || cursor < end) {
            let routes = self.routes();
            let route_end = Self::route_of(&routes, &cursor)
                .map(|r| r.end)
                .unwrap_or_default();
            let sub_end = if route_end.is_empty() || (!end.is_empty() && end < route_end) {
                end.clone()
            } else {
                route_end.clone()
            };
            let (c, e, want) = (cursor.clone(), sub_end.clone(), limit - got);
            let rows = self
                .with_leader(&cursor, redirects, move |engine| {
                    let (c, e) = (c.clone(), e.clone());
                    async move { engine.scan(c..e, want).await }
                })
                .await?;
            got += rows.len();
            if sub_end.is_empty() || sub_end == end {
                break;
            }
            cursor = sub_end;
        }
        Ok(got)
    }
}

/// A run measures the range count it was asked for (`--ranges`): automatic
/// splits would change it mid-run (a hot range passes the load threshold).
fn pin_ranges(config: &mut EngineConfig) {
    config.auto_split.split_load_qps = 0;
    config.auto_split.split_size_bytes = 0;
    config.auto_split.merge = false;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        assert_eq!("embedded".parse::<TargetSpec>(), Ok(TargetSpec::Embedded));
        assert_eq!("cluster".parse::<TargetSpec>(), Ok(TargetSpec::Cluster(3)));
        assert_eq!(
            "cluster:5".parse::<TargetSpec>(),
            Ok(TargetSpec::Cluster(5))
        );
        assert_eq!(
            "resp://127.0.0.1:6379, 127.0.0.1:6380".parse::<TargetSpec>(),
            Ok(TargetSpec::Resp(vec![
                "127.0.0.1:6379".into(),
                "127.0.0.1:6380".into()
            ]))
        );
        assert!("resp://".parse::<TargetSpec>().is_err());
        assert!("cluster:x".parse::<TargetSpec>().is_err());
        assert!("redis://x:1".parse::<TargetSpec>().is_err());
        assert_eq!(
            TargetSpec::Resp(vec!["a:1".into(), "b:2".into()]).to_string(),
            "resp://a:1,b:2"
        );
    }

    #[test]
    fn routes_find_their_range() {
        let r = |s: &'static str, e: &'static str, l| Route {
            start: Bytes::from_static(s.as_bytes()),
            end: Bytes::from_static(e.as_bytes()),
            leader: Some(l),
        };
        let routes = vec![r("", "g", 1), r("g", "p", 2), r("p", "", 3)];
        let at = |k: &[u8]| ClusterRouter::route_of(&routes, k).and_then(|r| r.leader);
        assert_eq!(at(b"a"), Some(1));
        assert_eq!(at(b"g"), Some(2));
        assert_eq!(at(b"oz"), Some(2));
        assert_eq!(at(b"zzz"), Some(3));
    }
}
