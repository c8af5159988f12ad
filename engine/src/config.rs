//! The engine's settings: DESIGN.md's defaults in one typed config, built
//! with a builder and validated at start with a message naming the field.

use std::path::PathBuf;
use std::time::Duration;

use flotilla_storage::state::StateConfig;
use flotilla_storage::wal::WalConfig;

use crate::error::Error;

/// How a linearizable read is confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// ReadIndex: a heartbeat round confirms leadership (batched).
    ReadIndex,
    /// Leader lease: no round trip while the lease holds (falls back to
    /// ReadIndex otherwise). Safe while the leader's ticks are at most
    /// `(ticks_election_min - 1) / lease_ticks` times slower than any
    /// voter's (28% with the defaults; `raft::Config::lease_ticks`) and
    /// the tick-gap detector catches every longer stall.
    Lease,
}

/// Automatic splits and merges, decided by each range's leader.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoSplitConfig {
    /// Split a range once its data (keys + values) exceeds this. 128 MiB:
    /// a new or lagging replica's snapshot then takes about 4 s at the
    /// default 32 MiB/s send cap, and 10,000 ranges hold 1.25 TiB. A size
    /// check runs after every eighth of this written to the range. 0: off.
    pub split_size_bytes: u64,
    /// Split a range serving more requests per second than this over
    /// `load_window`, at the median of the keys sampled meanwhile. 3,000
    /// (about a tenth of what one range's leader serves here). 0: off.
    pub split_load_qps: u64,
    /// The window over which load is measured. 10 s.
    pub load_window: Duration,
    /// Merge a range into its left neighbour when both are smaller than
    /// `merge_size_bytes` and both served under a tenth of
    /// `split_load_qps` in the last window. Off: a merge briefly blocks
    /// writes to the absorbed range, which an operator should choose.
    pub merge: bool,
    /// "Small" for automatic merges. 16 MiB (an eighth of the split size,
    /// so a merged range is far from splitting again).
    pub merge_size_bytes: u64,
    /// With `merge` on, how often a leader re-measures a range that no
    /// write triggered a check for. 5 min.
    pub check_interval: Duration,
}

impl Default for AutoSplitConfig {
    fn default() -> Self {
        AutoSplitConfig {
            split_size_bytes: 128 << 20,
            split_load_qps: 3_000,
            load_window: Duration::from_secs(10),
            merge: false,
            merge_size_bytes: 16 << 20,
            check_interval: Duration::from_secs(300),
        }
    }
}

/// Most raft loop threads a node may run.
pub const POLLERS_MAX: usize = 64;

/// One loop per two cores, at most 16. The other half runs the callers,
/// the transport and RocksDB's background work. Measured on 2 cores (see
/// docs/bench/engine-matrix.md): two loops made 2.5x the fsyncs with
/// smaller batches and wrote no faster than one, so one it is there.
fn default_pollers() -> usize {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    (cores / 2).clamp(1, 16)
}

/// Settings of one node.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Where the WAL (`wal/`) and the state store (`state/`) live.
    pub data_dir: PathBuf,
    pub cluster_id: u64,
    pub node_id: u64,
    /// One Raft tick. 100 ms.
    pub tick: Duration,
    /// Raft settings in ticks (the `id`, `applied` and `seed` fields are
    /// set per replica by the engine).
    pub raft: flotilla_raftgroup::Config,
    /// Compact a range's log once this many applied entries are in it. 10,000.
    pub log_compact_entries: u64,
    /// ... or once this long has passed since the last compaction. 5 min.
    pub log_compact_interval: Duration,
    /// Most proposals waiting per range before `Busy`. 4,096.
    pub proposals_per_range_max: usize,
    /// Most requests queued for the node before `Busy`. 65,536.
    pub requests_queued_max: usize,
    /// Raft loop threads ("pollers"). Each owns a share of the local
    /// ranges; all share the node's WAL (so their writes group-commit) and
    /// state store. Default: one per two cores (at least 1, at most 16).
    pub pollers: usize,
    /// Largest key. 8 KiB.
    pub key_bytes_max: usize,
    /// Largest value. 8 MiB.
    pub value_bytes_max: usize,
    /// How long a request may wait before `Timeout`. 10 s.
    pub request_timeout: Duration,
    /// fsync the WAL on every write batch. On: turning it off trades the
    /// durability of acknowledged writes for speed.
    pub wal_sync: bool,
    pub read_mode: ReadMode,
    pub wal: WalConfig,
    pub state: StateConfig,
    /// Where the node listens for other nodes (`None`: a single node with
    /// no transport). Port 0 picks a free port ([`crate::Engine::local_addr`]).
    pub listen: Option<std::net::SocketAddr>,
    /// Addresses of the other nodes (more can be added at run time).
    pub peers: std::collections::BTreeMap<u64, std::net::SocketAddr>,
    /// The nodes of a new cluster. The first range covers the key space and
    /// lives on the first three of them (by id), or all if fewer. Empty:
    /// this node alone.
    pub initial_members: Vec<u64>,
    /// Voters a range should keep. Removing a voter below this many is
    /// refused (add the replacement first: a move is add, then remove). 3.
    pub replication_factor: usize,
    /// How long an added replica may take to catch up (as a learner)
    /// before the addition is rolled back. 10 min: about what 10 GiB take
    /// at the default snapshot rate.
    pub membership_timeout: Duration,
    /// Automatic split by size and load; optional automatic merge.
    pub auto_split: AutoSplitConfig,
}

impl EngineConfig {
    /// Defaults for a single node with its data in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        EngineConfig {
            data_dir: data_dir.into(),
            cluster_id: 1,
            node_id: 1,
            tick: Duration::from_millis(100),
            raft: flotilla_raftgroup::Config::default(),
            log_compact_entries: 10_000,
            log_compact_interval: Duration::from_secs(300),
            proposals_per_range_max: 4_096,
            requests_queued_max: 65_536,
            pollers: default_pollers(),
            key_bytes_max: 8 << 10,
            value_bytes_max: 8 << 20,
            request_timeout: Duration::from_secs(10),
            wal_sync: true,
            read_mode: ReadMode::ReadIndex,
            wal: WalConfig::default(),
            state: StateConfig::default(),
            listen: None,
            peers: Default::default(),
            initial_members: Vec::new(),
            replication_factor: 3,
            membership_timeout: Duration::from_secs(600),
            auto_split: AutoSplitConfig::default(),
        }
    }

    /// Start a builder.
    pub fn builder(data_dir: impl Into<PathBuf>) -> EngineConfigBuilder {
        EngineConfigBuilder {
            config: EngineConfig::new(data_dir),
        }
    }

    /// Refuses impossible settings, naming the field.
    pub fn validate(&self) -> Result<(), Error> {
        let fail = |field: &'static str, reason: String| Err(Error::Config { field, reason });
        if self.node_id == 0 {
            return fail("node_id", "must not be 0".into());
        }
        if self.cluster_id == 0 {
            return fail("cluster_id", "must not be 0".into());
        }
        if self.tick.is_zero() {
            return fail("tick", "must be positive".into());
        }
        let mut raft = self.raft.clone();
        raft.id = 1;
        if let Err(e) = raft.validate() {
            return fail("raft", e.to_string());
        }
        if self.log_compact_entries == 0 {
            return fail("log_compact_entries", "must be at least 1".into());
        }
        if self.proposals_per_range_max == 0 {
            return fail("proposals_per_range_max", "must be at least 1".into());
        }
        if self.pollers == 0 || self.pollers > POLLERS_MAX {
            return fail(
                "pollers",
                format!("must be in 1..={POLLERS_MAX}, got {}", self.pollers),
            );
        }
        if self.requests_queued_max == 0 {
            return fail("requests_queued_max", "must be at least 1".into());
        }
        if self.key_bytes_max == 0 || self.key_bytes_max > 64 << 10 {
            return fail(
                "key_bytes_max",
                format!("must be in 1..=65536, got {}", self.key_bytes_max),
            );
        }
        if self.value_bytes_max == 0 || self.value_bytes_max as u64 >= self.wal.batch_bytes_max {
            return fail(
                "value_bytes_max",
                format!(
                    "must be positive and below wal.batch_bytes_max ({}), got {}",
                    self.wal.batch_bytes_max, self.value_bytes_max
                ),
            );
        }
        if !self.initial_members.is_empty() && !self.initial_members.contains(&self.node_id) {
            return fail(
                "initial_members",
                format!(
                    "must include this node ({}), got {:?}",
                    self.node_id, self.initial_members
                ),
            );
        }
        if self.initial_members.len() > 1 && self.listen.is_none() {
            return fail(
                "listen",
                "a multi-node cluster needs a listen address".into(),
            );
        }
        if self.request_timeout.is_zero() {
            return fail("request_timeout", "must be positive".into());
        }
        if self.replication_factor == 0 {
            return fail("replication_factor", "must be at least 1".into());
        }
        if self.membership_timeout.is_zero() {
            return fail("membership_timeout", "must be positive".into());
        }
        let auto = &self.auto_split;
        if auto.load_window.is_zero() {
            return fail("auto_split.load_window", "must be positive".into());
        }
        if auto.check_interval.is_zero() {
            return fail("auto_split.check_interval", "must be positive".into());
        }
        if auto.merge
            && auto.split_size_bytes > 0
            && auto.merge_size_bytes * 2 > auto.split_size_bytes
        {
            return fail(
                "auto_split.merge_size_bytes",
                format!(
                    "must be at most half of auto_split.split_size_bytes ({}), or two merged \
                     ranges could split again at once; got {}",
                    auto.split_size_bytes, auto.merge_size_bytes
                ),
            );
        }
        Ok(())
    }
}

/// Builds an [`EngineConfig`]; [`EngineConfigBuilder::build`] validates.
///
/// ```
/// use std::time::Duration;
/// let config = flotilla::EngineConfig::builder("/tmp/flotilla-doc")
///     .tick(Duration::from_millis(50))
///     .build()
///     .unwrap();
/// assert_eq!(config.tick, Duration::from_millis(50));
/// let bad = flotilla::EngineConfig::builder("/tmp/x").heartbeat_ticks(30).build();
/// assert!(bad.unwrap_err().to_string().contains("raft"));
/// ```
#[derive(Debug, Clone)]
pub struct EngineConfigBuilder {
    config: EngineConfig,
}

impl EngineConfigBuilder {
    pub fn node_id(mut self, id: u64) -> Self {
        self.config.node_id = id;
        self
    }
    pub fn cluster_id(mut self, id: u64) -> Self {
        self.config.cluster_id = id;
        self
    }
    pub fn tick(mut self, tick: Duration) -> Self {
        self.config.tick = tick;
        self
    }
    pub fn heartbeat_ticks(mut self, ticks: u32) -> Self {
        self.config.raft.ticks_heartbeat = ticks;
        self
    }
    pub fn election_ticks(mut self, min: u32, max: u32) -> Self {
        self.config.raft.ticks_election_min = min;
        self.config.raft.ticks_election_max = max;
        self
    }
    pub fn log_compact_entries(mut self, entries: u64) -> Self {
        self.config.log_compact_entries = entries;
        self
    }
    /// Raft loop threads (default: one per two cores).
    pub fn pollers(mut self, pollers: usize) -> Self {
        self.config.pollers = pollers;
        self
    }
    pub fn wal_sync(mut self, sync: bool) -> Self {
        self.config.wal_sync = sync;
        self
    }
    pub fn read_mode(mut self, mode: ReadMode) -> Self {
        self.config.read_mode = mode;
        self
    }
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.config.request_timeout = timeout;
        self
    }
    pub fn wal_config(mut self, wal: WalConfig) -> Self {
        self.config.wal = wal;
        self
    }
    pub fn listen(mut self, addr: std::net::SocketAddr) -> Self {
        self.config.listen = Some(addr);
        self
    }
    pub fn peer(mut self, node: u64, addr: std::net::SocketAddr) -> Self {
        self.config.peers.insert(node, addr);
        self
    }
    pub fn initial_members(mut self, members: Vec<u64>) -> Self {
        self.config.initial_members = members;
        self
    }
    pub fn replication_factor(mut self, voters: usize) -> Self {
        self.config.replication_factor = voters;
        self
    }
    pub fn membership_timeout(mut self, timeout: Duration) -> Self {
        self.config.membership_timeout = timeout;
        self
    }
    /// Validate and return the config.
    pub fn build(self) -> Result<EngineConfig, Error> {
        self.config.validate()?;
        Ok(self.config)
    }
}
