//! Shared helpers of the `server_*` tests: `flotilla server` processes on
//! free loopback ports, killed (and their directories removed) on drop,
//! and bounded polling instead of sleeps.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_flotilla");

/// A free port on 127.0.0.1 for a server to bind later. Taken below
/// Linux's ephemeral range (32768+), so an outgoing connection of another
/// node cannot grab it between the check and the server's bind; checked
/// free by binding it, and never handed out twice by this process.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const HIGH: u32 = 32_000;
    // Each process starts at its own place (by pid) and wraps around, so
    // a pid near the top of the window still finds the whole range.
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id() % 1_000 * 12;
    let mut last_error = None;
    for _ in LOW..HIGH {
        let offset = (start + NEXT.fetch_add(1, Ordering::SeqCst)) % (HIGH - LOW);
        let port = (LOW + offset) as u16;
        match TcpListener::bind(("127.0.0.1", port)) {
            Ok(_) => return port,
            Err(err) => last_error = Some(err),
        }
    }
    panic!("no free port in {LOW}..{HIGH}: {last_error:?}");
}

/// Poll `condition` until it holds or `timeout` passes.
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// A running `flotilla server`; killed on drop.
pub struct ServerProcess {
    pub child: Child,
    pub resp: SocketAddr,
    pub metrics: Option<SocketAddr>,
    pub stderr_path: PathBuf,
}

impl ServerProcess {
    /// Start `flotilla server ARGS` and wait for its ready line.
    pub fn start(args: &[String], log_dir: &Path, name: &str) -> ServerProcess {
        match Self::try_start(args, log_dir, name) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        }
    }

    /// Like [`ServerProcess::start`]; `Err` carries the exit status and
    /// stderr when the server does not become ready.
    pub fn try_start(args: &[String], log_dir: &Path, name: &str) -> Result<ServerProcess, String> {
        let stderr_path = log_dir.join(format!("{name}.stderr"));
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let mut child = Command::new(BIN)
            .arg("server")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn flotilla server");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(line) if line.starts_with("flotilla server ready") => {
                    let field = |k: &str| {
                        line.split_whitespace()
                            .find_map(|f| f.strip_prefix(k))
                            .and_then(|v| v.parse::<SocketAddr>().ok())
                    };
                    return Ok(ServerProcess {
                        child,
                        resp: field("resp=").expect("resp address in ready line"),
                        metrics: field("metrics="),
                        stderr_path,
                    });
                }
                Ok(_) => {}
                Err(_) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                        return Err(format!("server exited with {status}: {stderr}"));
                    }
                    if Instant::now() > deadline {
                        let _ = child.kill();
                        let _ = child.wait();
                        return Err("server not ready within 30 s".into());
                    }
                }
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then wait (bounded) for the exit; returns its success.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            assert!(
                Instant::now() < deadline,
                "server did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn url(&self) -> String {
        format!("redis://{}/", self.resp)
    }

    pub fn redis(&self) -> redis::Connection {
        let client = redis::Client::open(self.url()).expect("redis client");
        let conn = client
            .get_connection_with_timeout(Duration::from_secs(10))
            .expect("connect");
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        conn
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A one-node server on free ports with its data in a temp dir.
pub struct SingleNode {
    pub server: ServerProcess,
    pub dir: tempfile::TempDir,
}

impl SingleNode {
    pub fn start(extra: &[&str]) -> SingleNode {
        let dir = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = vec![
            "--data-dir".into(),
            dir.path().join("data").display().to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--metrics-listen".into(),
            "127.0.0.1:0".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let server = ServerProcess::start(&args, dir.path(), "node");
        SingleNode { server, dir }
    }
}

/// `n` server processes forming one cluster, with config files.
pub struct TestCluster {
    pub nodes: Vec<Option<ServerProcess>>,
    pub configs: Vec<PathBuf>,
    pub dir: tempfile::TempDir,
}

impl TestCluster {
    /// `per_node(id)` adds lines to node `id`'s `[server]` table.
    pub fn start(n: u64, per_node: impl Fn(u64) -> String) -> TestCluster {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16, u16)> = (0..n)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let mut nodes_toml = String::new();
        for (i, (raft, client, _)) in ports.iter().enumerate() {
            nodes_toml.push_str(&format!(
                "[[nodes]]\nid = {}\nraft = \"127.0.0.1:{raft}\"\nclient = \"127.0.0.1:{client}\"\n",
                i + 1
            ));
        }
        let mut configs = Vec::new();
        for id in 1..=n {
            let metrics = ports[(id - 1) as usize].2;
            let text = format!(
                "cluster_id = 7\nnode_id = {id}\ndata_dir = \"{}\"\n\n[server]\n\
                 metrics_listen = \"127.0.0.1:{metrics}\"\n{}\n\n[engine]\ntick_ms = 50\n\n{nodes_toml}",
                dir.path().join(format!("node{id}")).display(),
                per_node(id)
            );
            let path = dir.path().join(format!("node{id}.toml"));
            std::fs::write(&path, text).unwrap();
            configs.push(path);
        }
        let mut cluster = TestCluster {
            nodes: Vec::new(),
            configs,
            dir,
        };
        for id in 1..=n {
            let node = cluster.start_node(id);
            cluster.nodes.push(Some(node));
        }
        cluster
    }

    pub fn start_node(&self, id: u64) -> ServerProcess {
        let args = vec![
            "--config".to_string(),
            self.configs[(id - 1) as usize].display().to_string(),
        ];
        ServerProcess::start(&args, self.dir.path(), &format!("node{id}"))
    }

    pub fn node(&self, id: u64) -> &ServerProcess {
        self.nodes[(id - 1) as usize]
            .as_ref()
            .expect("node running")
    }

    /// The id of the node whose replica leads the range holding `key`,
    /// as the nodes themselves report it.
    pub fn leader_of(&self, key: &str) -> Option<u64> {
        for (i, node) in self.nodes.iter().enumerate() {
            let Some(node) = node else { continue };
            let Ok(ranges) = admin_json(node, &["ranges"]) else {
                continue;
            };
            let leads = ranges.as_array().into_iter().flatten().any(|r| {
                let start = r["start"].as_str().unwrap_or("");
                let end = r["end"].as_str().unwrap_or("");
                r["role"] == "leader" && start <= key && (end.is_empty() || key < end)
            });
            if leads {
                return Some(i as u64 + 1);
            }
        }
        None
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        // Kill every process before the temp dir goes away.
        self.nodes.clear();
    }
}

/// Run `flotilla admin --addr NODE --json ARGS` and parse its output.
pub fn admin_json(node: &ServerProcess, args: &[&str]) -> Result<serde_json::Value, String> {
    let out = admin(node, &[&["--json"], args].concat());
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("bad JSON: {e}"))
}

/// Run `flotilla admin --addr NODE ARGS`.
pub fn admin(node: &ServerProcess, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(["admin", "--addr", &node.resp.to_string()])
        .args(args)
        .output()
        .expect("run flotilla admin")
}

/// Fetch `/metrics` and parse `name{labels} value` lines (labels kept in
/// the name).
pub fn scrape(addr: SocketAddr) -> std::collections::HashMap<String, f64> {
    let mut stream = TcpStream::connect(addr).expect("connect to metrics");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// Is a command-line tool on the PATH?
pub fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}
