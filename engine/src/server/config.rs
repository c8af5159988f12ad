//! The server's TOML config: the node's identity and addresses, the RESP
//! front end's settings, the engine's settings (DESIGN.md defaults) and the
//! cluster's nodes. Unknown fields are refused, so a typo fails at start
//! with the field's name instead of being silently ignored.
//!
//! See `flotilla.example.toml` at the repository root for every field.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config::{EngineConfig, ReadMode};
use crate::error::Error;

/// What a node does with a request for a range another node leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FollowerRequests {
    /// Proxy the command to the leader's RESP server and relay its reply.
    Forward,
    /// Reply `-MOVED <range id> <leader's client address>`.
    Redirect,
}

/// One node of the cluster, as every node's config lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeAddress {
    pub id: u64,
    /// Node-to-node (Raft transport) address.
    pub raft: SocketAddr,
    /// RESP client address (where requests are forwarded).
    pub client: SocketAddr,
}

/// The `[server]` table: the RESP front end.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// RESP listen address. Default 127.0.0.1:6379; with `[[nodes]]` it
    /// defaults to this node's `client` address.
    pub listen: Option<SocketAddr>,
    /// Prometheus endpoint (`GET /metrics`). None: no endpoint.
    pub metrics_listen: Option<SocketAddr>,
    /// When set, clients must `AUTH` (or `HELLO 2 AUTH`) before anything
    /// but PING/QUIT/HELLO/AUTH.
    pub password: Option<String>,
    pub follower_requests: FollowerRequests,
    /// Largest request (and largest bulk string) accepted; more closes the
    /// connection with a protocol error. Keys and values are limited
    /// further by the engine's `key_bytes_max` / `value_bytes_max`.
    pub request_bytes_max: usize,
    /// Most arguments of one command.
    pub args_max: usize,
    /// Most client connections at once; more are refused with an error.
    pub connections_max: usize,
    /// Most rows one `FLOTILLA.SCAN` returns.
    pub scan_rows_max: usize,
    /// How long a forwarded or retried request keeps trying (elections,
    /// leader moves) before giving up.
    pub forward_timeout_ms: u64,
    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish.
    pub shutdown_grace_ms: u64,
    /// Testing only: accept `FLOTILLA.FAULT` (partition this node from
    /// others, lossy links) and `FLOTILLA.LOCALSCAN` (stale local rows).
    pub fault_injection: bool,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: None,
            metrics_listen: None,
            password: None,
            follower_requests: FollowerRequests::Forward,
            request_bytes_max: 32 << 20,
            args_max: 1 << 20,
            connections_max: 10_000,
            scan_rows_max: 100_000,
            forward_timeout_ms: 10_000,
            shutdown_grace_ms: 10_000,
            fault_injection: false,
        }
    }
}

/// The `[engine]` table: [`EngineConfig`] in TOML units.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSettings {
    pub tick_ms: u64,
    pub heartbeat_ticks: u32,
    pub election_ticks_min: u32,
    pub election_ticks_max: u32,
    pub pre_vote: bool,
    pub check_quorum: bool,
    pub log_compact_entries: u64,
    pub log_compact_interval_secs: u64,
    pub proposals_per_range_max: usize,
    pub requests_queued_max: usize,
    /// Raft loop threads (default: one per two cores).
    pub pollers: usize,
    pub key_bytes_max: usize,
    pub value_bytes_max: usize,
    pub request_timeout_ms: u64,
    pub wal_sync: bool,
    /// "read_index" or "lease".
    pub read_mode: String,
    pub replication_factor: usize,
    pub membership_timeout_secs: u64,
    /// Automatic split by size (0: off).
    pub split_size_bytes: u64,
    /// Automatic split by load (0: off).
    pub split_load_qps: u64,
    pub split_load_window_secs: u64,
    /// Automatic merge of small, cold neighbours (off by default).
    pub merge_auto: bool,
    pub merge_size_bytes: u64,
    pub merge_check_interval_secs: u64,
}

impl Default for EngineSettings {
    fn default() -> Self {
        let d = EngineConfig::new("");
        EngineSettings {
            tick_ms: d.tick.as_millis() as u64,
            heartbeat_ticks: d.raft.ticks_heartbeat,
            election_ticks_min: d.raft.ticks_election_min,
            election_ticks_max: d.raft.ticks_election_max,
            pre_vote: d.raft.pre_vote,
            check_quorum: d.raft.check_quorum,
            log_compact_entries: d.log_compact_entries,
            log_compact_interval_secs: d.log_compact_interval.as_secs(),
            proposals_per_range_max: d.proposals_per_range_max,
            requests_queued_max: d.requests_queued_max,
            pollers: d.pollers,
            key_bytes_max: d.key_bytes_max,
            value_bytes_max: d.value_bytes_max,
            request_timeout_ms: d.request_timeout.as_millis() as u64,
            wal_sync: d.wal_sync,
            read_mode: "read_index".into(),
            replication_factor: d.replication_factor,
            membership_timeout_secs: d.membership_timeout.as_secs(),
            split_size_bytes: d.auto_split.split_size_bytes,
            split_load_qps: d.auto_split.split_load_qps,
            split_load_window_secs: d.auto_split.load_window.as_secs(),
            merge_auto: d.auto_split.merge,
            merge_size_bytes: d.auto_split.merge_size_bytes,
            merge_check_interval_secs: d.auto_split.check_interval.as_secs(),
        }
    }
}

/// A whole server config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "one")]
    pub cluster_id: u64,
    #[serde(default = "one")]
    pub node_id: u64,
    pub data_dir: Option<PathBuf>,
    #[serde(default)]
    pub server: ServerSettings,
    #[serde(default)]
    pub engine: EngineSettings,
    /// Every node of the cluster (this one included). Empty: a single node.
    #[serde(default)]
    pub nodes: Vec<NodeAddress>,
}

fn one() -> u64 {
    1
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            cluster_id: 1,
            node_id: 1,
            data_dir: None,
            server: ServerSettings::default(),
            engine: EngineSettings::default(),
            nodes: Vec::new(),
        }
    }
}

fn config_error(field: &'static str, reason: impl Into<String>) -> Error {
    Error::Config {
        field,
        reason: reason.into(),
    }
}

impl ServerConfig {
    /// Parse a TOML document. Errors name the field (and line).
    pub fn from_toml(text: &str) -> Result<ServerConfig, Error> {
        toml::from_str(text).map_err(|e| config_error("config file", e.to_string()))
    }

    /// Read and parse a file.
    pub fn load(path: &Path) -> Result<ServerConfig, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| config_error("config file", format!("{}: {e}", path.display())))?;
        Self::from_toml(&text).map_err(|e| match e {
            Error::Config { field, reason } => Error::Config {
                field,
                reason: format!("{}: {reason}", path.display()),
            },
            other => other,
        })
    }

    /// This node's RESP address.
    pub fn client_listen(&self) -> SocketAddr {
        self.server
            .listen
            .or_else(|| self.node(self.node_id).map(|n| n.client))
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 6379)))
    }

    /// The `[[nodes]]` entry of node `id`.
    pub fn node(&self, id: u64) -> Option<&NodeAddress> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// Client (RESP) addresses of the nodes, by id.
    pub fn client_addresses(&self) -> BTreeMap<u64, SocketAddr> {
        self.nodes.iter().map(|n| (n.id, n.client)).collect()
    }

    /// Check everything and build the engine's config.
    pub fn engine_config(&self) -> Result<EngineConfig, Error> {
        let Some(data_dir) = &self.data_dir else {
            return Err(config_error(
                "data_dir",
                "required (in the file or --data-dir)",
            ));
        };
        let s = &self.server;
        if s.request_bytes_max < 1024 {
            return Err(config_error(
                "server.request_bytes_max",
                format!("must be at least 1024, got {}", s.request_bytes_max),
            ));
        }
        if s.args_max < 3 {
            return Err(config_error(
                "server.args_max",
                format!("must be at least 3, got {}", s.args_max),
            ));
        }
        if s.connections_max == 0 {
            return Err(config_error("server.connections_max", "must be at least 1"));
        }
        if s.scan_rows_max == 0 {
            return Err(config_error("server.scan_rows_max", "must be at least 1"));
        }
        if s.forward_timeout_ms == 0 {
            return Err(config_error(
                "server.forward_timeout_ms",
                "must be positive",
            ));
        }
        let e = &self.engine;
        let mut config = EngineConfig::new(data_dir);
        config.cluster_id = self.cluster_id;
        config.node_id = self.node_id;
        config.tick = Duration::from_millis(e.tick_ms);
        config.raft.ticks_heartbeat = e.heartbeat_ticks;
        config.raft.ticks_election_min = e.election_ticks_min;
        config.raft.ticks_election_max = e.election_ticks_max;
        config.raft.pre_vote = e.pre_vote;
        config.raft.check_quorum = e.check_quorum;
        config.log_compact_entries = e.log_compact_entries;
        config.log_compact_interval = Duration::from_secs(e.log_compact_interval_secs);
        config.proposals_per_range_max = e.proposals_per_range_max;
        config.requests_queued_max = e.requests_queued_max;
        config.pollers = e.pollers;
        config.key_bytes_max = e.key_bytes_max;
        config.value_bytes_max = e.value_bytes_max;
        config.request_timeout = Duration::from_millis(e.request_timeout_ms);
        config.wal_sync = e.wal_sync;
        config.replication_factor = e.replication_factor;
        config.membership_timeout = Duration::from_secs(e.membership_timeout_secs);
        config.auto_split = crate::AutoSplitConfig {
            split_size_bytes: e.split_size_bytes,
            split_load_qps: e.split_load_qps,
            load_window: Duration::from_secs(e.split_load_window_secs),
            merge: e.merge_auto,
            merge_size_bytes: e.merge_size_bytes,
            check_interval: Duration::from_secs(e.merge_check_interval_secs),
        };
        config.read_mode = match e.read_mode.as_str() {
            "read_index" => ReadMode::ReadIndex,
            "lease" => ReadMode::Lease,
            other => {
                return Err(config_error(
                    "engine.read_mode",
                    format!("must be \"read_index\" or \"lease\", got {other:?}"),
                ))
            }
        };
        if e.value_bytes_max.saturating_add(e.key_bytes_max) > s.request_bytes_max {
            return Err(config_error(
                "server.request_bytes_max",
                format!(
                    "must hold the largest key plus value ({} bytes), got {}",
                    e.value_bytes_max + e.key_bytes_max,
                    s.request_bytes_max
                ),
            ));
        }
        if !self.nodes.is_empty() {
            let mut ids: Vec<u64> = self.nodes.iter().map(|n| n.id).collect();
            ids.sort_unstable();
            if ids.windows(2).any(|w| w[0] == w[1]) {
                return Err(config_error(
                    "nodes",
                    format!("duplicate node id in {ids:?}"),
                ));
            }
            let Some(me) = self.node(self.node_id) else {
                return Err(config_error(
                    "nodes",
                    format!("no entry for this node (node_id {})", self.node_id),
                ));
            };
            config.listen = Some(me.raft);
            config.peers = self
                .nodes
                .iter()
                .filter(|n| n.id != self.node_id)
                .map(|n| (n.id, n.raft))
                .collect();
            config.initial_members = ids;
        }
        config.validate().map_err(|e| match e {
            // Name the field as it is spelled in the file.
            Error::Config { field, reason } => Error::Config {
                field: toml_field(field),
                reason,
            },
            other => other,
        })?;
        Ok(config)
    }
}

fn toml_field(engine_field: &'static str) -> &'static str {
    match engine_field {
        "tick" => "engine.tick_ms",
        "raft" => "engine (heartbeat_ticks / election_ticks_min / election_ticks_max)",
        "log_compact_entries" => "engine.log_compact_entries",
        "proposals_per_range_max" => "engine.proposals_per_range_max",
        "requests_queued_max" => "engine.requests_queued_max",
        "pollers" => "engine.pollers",
        "key_bytes_max" => "engine.key_bytes_max",
        "value_bytes_max" => "engine.value_bytes_max",
        "request_timeout" => "engine.request_timeout_ms",
        "replication_factor" => "engine.replication_factor",
        "membership_timeout" => "engine.membership_timeout_secs",
        "auto_split.load_window" => "engine.split_load_window_secs",
        "auto_split.check_interval" => "engine.merge_check_interval_secs",
        "auto_split.merge_size_bytes" => "engine.merge_size_bytes",
        "listen" | "initial_members" => "nodes",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Result<EngineConfig, Error> {
        ServerConfig::from_toml(text)?.engine_config()
    }

    #[test]
    fn defaults_are_design_defaults() {
        let c = config("data_dir = \"/tmp/x\"").unwrap();
        let d = EngineConfig::new("/tmp/x");
        assert_eq!(c.tick, d.tick);
        assert_eq!(c.raft.ticks_heartbeat, 2);
        assert_eq!(c.raft.ticks_election_min, 10);
        assert_eq!(c.log_compact_entries, 10_000);
        assert!(c.listen.is_none());
    }

    #[test]
    fn errors_name_the_field() {
        let e = config("data_dir = \"/x\"\n[engine]\nheartbeat_ticks = 30\n").unwrap_err();
        assert!(e.to_string().contains("heartbeat_ticks"), "{e}");
        let e = config("data_dir = \"/x\"\n[engine]\ntick_ms = 0\n").unwrap_err();
        assert!(e.to_string().contains("engine.tick_ms"), "{e}");
        let e = config("data_dir = \"/x\"\n[engine]\nread_mode = \"fast\"\n").unwrap_err();
        assert!(e.to_string().contains("engine.read_mode"), "{e}");
        let e = config("data_dir = \"/x\"\n[server]\nlisten_typo = 1\n").unwrap_err();
        assert!(e.to_string().contains("listen_typo"), "{e}");
        let e = config("node_id = 4\ndata_dir = \"/x\"\n[[nodes]]\nid = 1\nraft = \"127.0.0.1:1\"\nclient = \"127.0.0.1:2\"\n").unwrap_err();
        assert!(e.to_string().contains("nodes"), "{e}");
        let e = config("").unwrap_err();
        assert!(e.to_string().contains("data_dir"), "{e}");
    }

    #[test]
    fn the_example_config_is_valid_and_holds_the_defaults() {
        let text = include_str!("../../../flotilla.example.toml");
        let server = ServerConfig::from_toml(text).unwrap();
        let c = server.engine_config().unwrap();
        let d = EngineConfig::new("/var/lib/flotilla");
        assert_eq!(c.tick, d.tick);
        assert_eq!(c.raft.ticks_election_max, d.raft.ticks_election_max);
        assert_eq!(c.value_bytes_max, d.value_bytes_max);
        assert_eq!(c.log_compact_interval, d.log_compact_interval);
        let s = ServerSettings::default();
        assert_eq!(server.server.request_bytes_max, s.request_bytes_max);
        assert_eq!(server.server.forward_timeout_ms, s.forward_timeout_ms);
        assert!(
            !server.server.fault_injection,
            "fault injection is off by default"
        );
        // The commented [[nodes]] example parses too.
        let nodes: String = text
            .lines()
            .skip_while(|l| !l.starts_with("# [[nodes]]"))
            .map(|l| format!("{}\n", l.trim_start_matches("# ").trim_start_matches('#')))
            .collect();
        let three = ServerConfig::from_toml(&format!("data_dir = \"/x\"\n{nodes}")).unwrap();
        assert_eq!(
            three.engine_config().unwrap().initial_members,
            vec![1, 2, 3]
        );
    }

    #[test]
    fn nodes_become_listen_peers_and_members() {
        let text = "node_id = 2\ndata_dir = \"/x\"\n\
            [[nodes]]\nid = 1\nraft = \"127.0.0.1:7001\"\nclient = \"127.0.0.1:6001\"\n\
            [[nodes]]\nid = 2\nraft = \"127.0.0.1:7002\"\nclient = \"127.0.0.1:6002\"\n";
        let server = ServerConfig::from_toml(text).unwrap();
        let c = server.engine_config().unwrap();
        assert_eq!(c.listen, Some("127.0.0.1:7002".parse().unwrap()));
        assert_eq!(c.peers.len(), 1);
        assert_eq!(c.initial_members, vec![1, 2]);
        assert_eq!(server.client_listen(), "127.0.0.1:6002".parse().unwrap());
    }
}
