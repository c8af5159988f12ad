//! The cluster under test: N `flotilla server` processes on free loopback
//! ports, each with its own data directory and config (fault injection
//! on), which the nemesis kills with SIGKILL and restarts, or pauses with
//! SIGSTOP and resumes with SIGCONT. Each incarnation of a node logs to
//! its own file (`node2.run1.stderr`), so a failure keeps every log.
//!
//! Dropping the cluster resumes and kills every process (also while a
//! panic unwinds); the run folder itself is removed by the caller, and
//! only after a clean run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::client::{Reply, Resp};
use crate::server_support::{free_port, ServerProcess};

pub struct Node {
    pub id: u64,
    pub resp: SocketAddr,
    config: PathBuf,
    process: Option<ServerProcess>,
    paused: bool,
    runs: u32,
}

impl Node {
    pub fn is_up(&self) -> bool {
        self.process.is_some() && !self.paused
    }
}

pub struct Cluster {
    pub dir: PathBuf,
    pub nodes: Vec<Node>,
}

/// Settings every node gets: fast ticks, and server-side timeouts well
/// below the clients' deadline.
const NODE_SETTINGS: &str = "fault_injection = true\nforward_timeout_ms = 2500\n";
/// Two raft loops per node, whatever the machine: the faults also hit
/// ranges moving between loops.
const ENGINE_SETTINGS: &str =
    "tick_ms = 50\nrequest_timeout_ms = 2500\nreplication_factor = 2\npollers = 2\n";

impl Cluster {
    /// Start `n` nodes in `dir`; the first range lives on nodes 1..=3.
    /// `read_mode` is the engine's `read_mode` ("read_index" or "lease").
    pub fn start(dir: &Path, n: u64, read_mode: &str) -> Result<Cluster, String> {
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let mut nodes_toml = String::new();
        for (i, (raft, client)) in ports.iter().enumerate() {
            nodes_toml.push_str(&format!(
                "[[nodes]]\nid = {}\nraft = \"127.0.0.1:{raft}\"\nclient = \"127.0.0.1:{client}\"\n\n",
                i + 1
            ));
        }
        let mut cluster = Cluster {
            dir: dir.to_path_buf(),
            nodes: Vec::new(),
        };
        for id in 1..=n {
            let text = format!(
                "cluster_id = 9\nnode_id = {id}\ndata_dir = \"{}\"\n\n[server]\n{NODE_SETTINGS}\n\
                 [engine]\n{ENGINE_SETTINGS}read_mode = \"{read_mode}\"\n\n{nodes_toml}",
                dir.join(format!("node{id}.data")).display(),
            );
            let config = dir.join(format!("node{id}.toml"));
            std::fs::write(&config, text).map_err(|e| format!("{}: {e}", config.display()))?;
            cluster.nodes.push(Node {
                id,
                resp: SocketAddr::from(([127, 0, 0, 1], ports[(id - 1) as usize].1)),
                config,
                process: None,
                paused: false,
                runs: 0,
            });
        }
        for id in 1..=n {
            cluster.start_node(id)?;
        }
        Ok(cluster)
    }

    pub fn node(&self, id: u64) -> &Node {
        &self.nodes[(id - 1) as usize]
    }

    fn node_mut(&mut self, id: u64) -> &mut Node {
        &mut self.nodes[(id - 1) as usize]
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// Start (or restart) node `id` and wait for its ready line.
    pub fn start_node(&mut self, id: u64) -> Result<Duration, String> {
        let dir = self.dir.clone();
        let node = self.node_mut(id);
        let args = vec![
            "--config".to_string(),
            node.config.display().to_string(),
            "--log-level".into(),
            "info".into(),
        ];
        let name = format!("node{id}.run{}", node.runs);
        node.runs += 1;
        let started = Instant::now();
        let process = ServerProcess::try_start(&args, &dir, &name)
            .map_err(|e| format!("node {id} did not start: {e}"))?;
        node.process = Some(process);
        node.paused = false;
        Ok(started.elapsed())
    }

    /// SIGKILL node `id` (no flush, no goodbye).
    pub fn kill(&mut self, id: u64) {
        let node = self.node_mut(id);
        if let Some(mut process) = node.process.take() {
            let _ = process.child.kill();
            let _ = process.child.wait();
        }
        node.paused = false;
    }

    fn signal(&mut self, id: u64, signal: &str) -> Result<(), String> {
        let node = self.node_mut(id);
        let Some(process) = &node.process else {
            return Err(format!("node {id} is not running"));
        };
        let status = Command::new("kill")
            .args([signal, &process.pid().to_string()])
            .status()
            .map_err(|e| format!("kill {signal}: {e}"))?;
        if !status.success() {
            return Err(format!("kill {signal} node {id}: {status}"));
        }
        node.paused = signal == "-STOP";
        Ok(())
    }

    pub fn pause(&mut self, id: u64) -> Result<(), String> {
        self.signal(id, "-STOP")
    }

    pub fn resume(&mut self, id: u64) -> Result<(), String> {
        self.signal(id, "-CONT")
    }

    /// Resume paused nodes and restart killed ones.
    pub fn revive_all(&mut self) -> Result<(), String> {
        for id in self.ids() {
            if self.node(id).paused {
                self.resume(id)?;
            }
            if self.node(id).process.is_none() {
                self.start_node(id)?;
            }
        }
        Ok(())
    }

    /// Send one command to node `id` on a fresh connection.
    pub fn call(&self, id: u64, args: &[&str], timeout: Duration) -> Result<Reply, String> {
        let deadline = Instant::now() + timeout;
        let mut conn =
            Resp::connect(self.node(id).resp, deadline).map_err(|e| format!("node {id}: {e}"))?;
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        conn.call(&args, deadline)
            .map_err(|e| format!("node {id}: {e}"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for id in self.ids() {
            if self.node(id).paused {
                let _ = self.resume(id);
            }
            self.kill(id);
        }
    }
}
