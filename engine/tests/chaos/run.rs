//! One chaos run: start the cluster, split the key space, run the clients
//! and the nemesis together, heal, read every key, compare every replica,
//! check the history, and keep the evidence when anything is wrong.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::checker::{self, Anomaly, Verdict};
use super::client::{Reply, Resp};
use super::cluster::Cluster;
use super::history::{Call, Op, Ret, FINAL};
use super::nemesis::{self, parse_ranges, Nemesis, Tally};
use super::rng::Rng;

#[derive(Debug, Clone)]
pub struct Config {
    /// Names the run's folder (two runs of one process must differ).
    pub name: &'static str,
    pub seed: u64,
    /// How long clients and nemesis run.
    pub seconds: u64,
    /// 3 or 5 (the first range lives on nodes 1..=3).
    pub nodes: u64,
    pub clients: usize,
    pub keys: usize,
    /// Disruption kinds the nemesis deals from (see `nemesis::schedule`).
    pub disruptions: Vec<u8>,
    /// Self-test: clients read with `FLOTILLA.LOCALSCAN` (stale, local)
    /// instead of `GET`, which the checker must catch.
    pub stale_reads: bool,
    /// `CHAOS_KEEP=1`: keep the folder (history, schedule, logs) of a
    /// clean run too.
    pub keep: bool,
    /// `CHAOS_READ_MODE=lease`: the engine's lease reads instead of
    /// ReadIndex.
    pub read_mode: String,
    /// Hold a second, network fault together with 30% of the steps
    /// (`CHAOS_COMPOSE=0` turns it off).
    pub compose: bool,
}

impl Config {
    /// `CHAOS_SEED`, `CHAOS_SECONDS`, `CHAOS_NODES`, `CHAOS_CLIENTS`
    /// override the defaults; without `CHAOS_SEED` the seed comes from the
    /// clock (and is printed).
    pub fn from_env(default_seconds: u64) -> Config {
        let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        let seed = var("CHAOS_SEED").unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64 % 1_000_000_007)
                .unwrap_or(1)
        });
        Config {
            name: "run",
            seed,
            seconds: var("CHAOS_SECONDS").unwrap_or(default_seconds),
            nodes: var("CHAOS_NODES").unwrap_or(3).clamp(3, 7),
            clients: var("CHAOS_CLIENTS").unwrap_or(6).max(1) as usize,
            keys: 8,
            disruptions: disruptions_from_env(),
            stale_reads: false,
            keep: var("CHAOS_KEEP").is_some_and(|v| v != 0),
            compose: var("CHAOS_COMPOSE") != Some(0),
            read_mode: std::env::var("CHAOS_READ_MODE").unwrap_or_else(|_| "read_index".into()),
        }
    }

    pub fn replay_command(&self) -> String {
        format!(
            "CHAOS_SEED={} CHAOS_SECONDS={} CHAOS_NODES={} CHAOS_CLIENTS={} CHAOS_READ_MODE={} \
             CHAOS_COMPOSE={} {}cargo test --release --workspace --test chaos -- --nocapture chaos_run",
            self.seed,
            self.seconds,
            self.nodes,
            self.clients,
            self.read_mode,
            self.compose as u8,
            std::env::var("CHAOS_FAULTS")
                .map(|f| format!("CHAOS_FAULTS={f} "))
                .unwrap_or_default()
        )
    }
}

/// `CHAOS_FAULTS=pause,kill,...` picks disruption kinds by name (kill,
/// pause, partition, isolate, one-way, lossy, kill-all); all by default.
fn disruptions_from_env() -> Vec<u8> {
    const NAMES: [&str; 7] = [
        "kill",
        "pause",
        "partition",
        "isolate",
        "one-way",
        "lossy",
        "kill-all",
    ];
    let Ok(list) = std::env::var("CHAOS_FAULTS") else {
        return (0..7).collect();
    };
    let kinds: Vec<u8> = list
        .split(',')
        .map(|name| {
            let found = NAMES.iter().position(|n| *n == name.trim());
            match found {
                Some(i) => i as u8,
                None => panic!("CHAOS_FAULTS: unknown kind {name:?}; known: {NAMES:?}"),
            }
        })
        .collect();
    assert!(!kinds.is_empty(), "CHAOS_FAULTS lists no kind");
    kinds
}

/// A client gives up on a request after this long (the servers give up
/// sooner: forward and request timeouts are 2.5 s).
const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// Healing, final reads and convergence each get this long.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Report {
    pub dir: PathBuf,
    pub ops: usize,
    pub ops_by_outcome: BTreeMap<&'static str, usize>,
    pub verdict: Verdict,
    pub faults: BTreeMap<&'static str, Tally>,
    pub elapsed: Duration,
    /// Set when the run could not be completed (a node would not start...).
    pub error: Option<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.verdict.is_valid()
    }

    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} operations in {:.1} s ({:?}); {} checked for linearizability\nfaults:\n",
            self.ops,
            self.elapsed.as_secs_f64(),
            self.ops_by_outcome,
            self.verdict.ops_checked
        );
        for (kind, t) in &self.faults {
            s.push_str(&format!(
                "  {kind:<18} applied {:>3}  refused {:>3}  no answer {:>3}\n",
                t.applied, t.refused, t.failed
            ));
        }
        if let Some(e) = &self.error {
            s.push_str(&format!("RUN ERROR: {e}\n"));
        }
        if !self.verdict.keys_unknown.is_empty() {
            s.push_str(&format!(
                "search budget exhausted (unknown) for keys {:?}\n",
                self.verdict.keys_unknown
            ));
        }
        for a in &self.verdict.anomalies {
            s.push_str(&format!("ANOMALY {} on {}: {}\n", a.kind, a.key, a.detail));
        }
        s
    }
}

fn key_name(i: usize) -> String {
    format!("k{i}")
}

/// Run the whole thing. The run folder is removed when everything checks
/// out and kept (with history, schedule, report and logs) otherwise.
pub fn run(config: &Config) -> Report {
    let dir = std::env::temp_dir().join(format!(
        "flotilla-chaos-{}-seed{}-pid{}",
        config.name,
        config.seed,
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        panic!("cannot create {}: {e}", dir.display());
    }
    let t0 = Instant::now();
    let keys: Vec<String> = (0..config.keys).map(key_name).collect();
    // Odd keys are where the nemesis may split further.
    let nemesis_splits: Vec<String> = (1..config.keys).step_by(2).map(key_name).collect();
    let schedule = nemesis::schedule(
        config.seed,
        config.nodes,
        config.seconds,
        &nemesis_splits,
        &config.disruptions,
        config.compose,
    );
    let mut history: Vec<Op> = Vec::new();
    let mut nemesis_log: Vec<String> = Vec::new();
    let mut faults = BTreeMap::new();
    let mut convergence = Vec::new();

    let error = {
        let mut state = RunState {
            config,
            t0,
            keys: &keys,
            history: &mut history,
            nemesis_log: &mut nemesis_log,
            faults: &mut faults,
            convergence: &mut convergence,
        };
        state.go(&dir, &schedule).err()
        // The cluster (and every process) is gone here.
    };

    let mut verdict = checker::check(&history);
    verdict.anomalies.extend(convergence);
    let mut ops_by_outcome = BTreeMap::new();
    for op in &history {
        let kind = match op.ret {
            Ret::Ok | Ret::ReadOk(_) => "ok",
            Ret::Fail(_) => "fail",
            Ret::Info(_) => "info",
        };
        *ops_by_outcome.entry(kind).or_default() += 1;
    }
    let report = Report {
        dir: dir.clone(),
        ops: history.len(),
        ops_by_outcome,
        verdict,
        faults,
        elapsed: t0.elapsed(),
        error,
    };
    if (report.ok() || config.stale_reads) && !config.keep {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        history.sort_by_key(|op| (op.invoke_ns, op.complete_ns));
        let lines: Vec<String> = history.iter().map(|op| op.to_string()).collect();
        let _ = std::fs::write(
            dir.join("history.txt"),
            format!(
                "# invoke_s complete_s client node key call -> outcome (info: unknown)\n{}\n",
                lines.join("\n")
            ),
        );
        let plan: Vec<String> = schedule.iter().map(|s| s.to_string()).collect();
        let _ = std::fs::write(
            dir.join("nemesis.txt"),
            format!(
                "# schedule (seed {})\n{}\n\n# what happened\n{}\n",
                config.seed,
                plan.join("\n"),
                nemesis_log.join("\n")
            ),
        );
        let _ = std::fs::write(
            dir.join("report.txt"),
            format!(
                "{}\nreplay: {}\n",
                report.summary(),
                config.replay_command()
            ),
        );
    }
    report
}

struct RunState<'a> {
    config: &'a Config,
    t0: Instant,
    keys: &'a [String],
    history: &'a mut Vec<Op>,
    nemesis_log: &'a mut Vec<String>,
    faults: &'a mut BTreeMap<&'static str, Tally>,
    convergence: &'a mut Vec<Anomaly>,
}

impl RunState<'_> {
    fn now_ns(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }

    fn go(&mut self, dir: &std::path::Path, schedule: &[nemesis::Step]) -> Result<(), String> {
        let mut cluster = Cluster::start(dir, self.config.nodes, &self.config.read_mode)?;
        println!(
            "chaos: {} nodes up in {:.1} s; folder {}",
            self.config.nodes,
            self.t0.elapsed().as_secs_f64(),
            dir.display()
        );
        // Spread the keys over several ranges before the clients start.
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        for at in (2..self.keys.len()).step_by(2) {
            let key = key_name(at);
            retry_until(deadline, &format!("split at {key}"), || {
                match cluster.call(
                    1 + at as u64 % self.config.nodes.min(3),
                    &["FLOTILLA.SPLIT", &key],
                    OP_TIMEOUT,
                ) {
                    Ok(Reply::Int(_)) => Ok(()),
                    Ok(other) => Err(other.text()),
                    Err(e) => Err(e),
                }
            })?;
        }
        let addrs: Vec<(u64, SocketAddr)> = cluster.nodes.iter().map(|n| (n.id, n.resp)).collect();
        let stop = Instant::now() + Duration::from_secs(self.config.seconds);
        let t0 = self.t0;
        let config = self.config;
        let keys = self.keys;
        let (client_ops, played) = std::thread::scope(|scope| {
            let clients: Vec<_> = (0..config.clients)
                .map(|c| {
                    let addrs = addrs.clone();
                    scope.spawn(move || client(c, config, &addrs, keys, t0, stop))
                })
                .collect();
            let mut nemesis = Nemesis {
                cluster: &mut cluster,
                t0,
                log: Vec::new(),
                tally: BTreeMap::new(),
            };
            let played = nemesis.play(schedule, stop);
            let log = std::mem::take(&mut nemesis.log);
            let tally = std::mem::take(&mut nemesis.tally);
            let mut ops = Vec::new();
            for c in clients {
                match c.join() {
                    Ok(o) => ops.extend(o),
                    Err(_) => return (ops, Err("a client thread panicked".to_string())),
                }
            }
            *self.nemesis_log = log;
            *self.faults = tally;
            (ops, played)
        });
        self.history.extend(client_ops);
        played?;
        println!(
            "chaos: workload over after {:.1} s: {} operations; healing",
            self.t0.elapsed().as_secs_f64(),
            self.history.len()
        );

        // Heal everything.
        cluster.revive_all()?;
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        for id in cluster.ids() {
            retry_until(
                deadline,
                &format!("clear faults on n{id}"),
                || match cluster.call(id, &["FLOTILLA.FAULT", "CLEAR"], OP_TIMEOUT) {
                    Ok(Reply::Simple(_)) => Ok(()),
                    Ok(other) => Err(other.text()),
                    Err(e) => Err(e),
                },
            )?;
        }

        // Final linearizable reads, part of the history.
        let mut finals: BTreeMap<String, Option<String>> = BTreeMap::new();
        let ids = cluster.ids();
        for (i, key) in self.keys.iter().enumerate() {
            let deadline = Instant::now() + SETTLE_TIMEOUT;
            let mut attempt = 0;
            loop {
                let node = ids[(i + attempt) % ids.len()];
                attempt += 1;
                let invoke_ns = self.now_ns();
                let reply = cluster.call(node, &["GET", key], OP_TIMEOUT);
                let ret = match reply {
                    Ok(Reply::Bulk(v)) => {
                        Ret::ReadOk(v.map(|b| String::from_utf8_lossy(&b).into_owned()))
                    }
                    Ok(other) => Ret::Info(other.text()),
                    Err(e) => Ret::Info(e),
                };
                let done = matches!(ret, Ret::ReadOk(_));
                if let Ret::ReadOk(v) = &ret {
                    finals.insert(key.clone(), v.clone());
                }
                let give_up = !done && Instant::now() >= deadline;
                if done || give_up || attempt % 10 == 0 {
                    self.history.push(Op {
                        process: FINAL,
                        node,
                        key: key.clone(),
                        call: Call::Read,
                        invoke_ns,
                        complete_ns: self.now_ns(),
                        ret,
                    });
                }
                if done || give_up {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }

        // Every replica converges to what the final reads returned.
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let (replicas, holders) = local_views(&cluster, self.keys);
            let anomalies = checker::check_convergence(&finals, &replicas, &holders);
            if anomalies.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                *self.convergence = anomalies;
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        println!(
            "chaos: healed, read and compared after {:.1} s",
            self.t0.elapsed().as_secs_f64()
        );
        Ok(())
    }
}

fn retry_until(
    deadline: Instant,
    what: &str,
    mut attempt: impl FnMut() -> Result<(), String>,
) -> Result<(), String> {
    loop {
        match attempt() {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(format!("{what}: {e}")),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Each node's own rows (`FLOTILLA.LOCALSCAN`) and which nodes hold a
/// replica of each key's range (`FLOTILLA.RANGES` of each node).
#[allow(clippy::type_complexity)]
fn local_views(
    cluster: &Cluster,
    keys: &[String],
) -> (
    BTreeMap<u64, BTreeMap<String, String>>,
    BTreeMap<String, Vec<u64>>,
) {
    let mut replicas = BTreeMap::new();
    let mut holders: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for id in cluster.ids() {
        let Ok(reply) = cluster.call(id, &["FLOTILLA.RANGES"], OP_TIMEOUT) else {
            continue;
        };
        let ranges = parse_ranges(&reply).unwrap_or_default();
        for key in keys {
            let held = ranges.iter().any(|r| {
                r.start.as_str() <= key.as_str()
                    && (r.end.is_empty() || key.as_str() < r.end.as_str())
            });
            if held {
                holders.entry(key.clone()).or_default().push(id);
            }
        }
        let rows = match cluster.call(id, &["FLOTILLA.LOCALSCAN", "", ""], OP_TIMEOUT) {
            Ok(Reply::Array(Some(items))) => items
                .chunks(2)
                .filter_map(|kv| match kv {
                    [k, v] => Some((k.text(), v.text())),
                    _ => None,
                })
                .collect(),
            _ => BTreeMap::new(),
        };
        replicas.insert(id, rows);
    }
    (replicas, holders)
}

/// One client: random reads and writes of random keys through random
/// nodes until `stop`, every write with a value of its own.
fn client(
    c: usize,
    config: &Config,
    addrs: &[(u64, SocketAddr)],
    keys: &[String],
    t0: Instant,
    stop: Instant,
) -> Vec<Op> {
    let mut rng = Rng::new(config.seed.wrapping_mul(31).wrapping_add(c as u64 + 1));
    let stale_end: Vec<String> = keys.iter().map(|k| format!("{k}\0")).collect();
    let mut conns: BTreeMap<u64, Resp> = BTreeMap::new();
    let mut ops = Vec::new();
    let mut seq = 0u64;
    let now = || t0.elapsed().as_nanos() as u64;
    while Instant::now() < stop {
        let k = rng.below(keys.len() as u64) as usize;
        let key = keys[k].clone();
        let (node, addr) = addrs[rng.below(addrs.len() as u64) as usize];
        let call = if rng.below(2) == 0 {
            Call::Read
        } else {
            seq += 1;
            Call::Write(format!("c{c}-{seq}"))
        };
        let invoke_ns = now();
        let deadline = Instant::now() + OP_TIMEOUT;
        let conn = match conns.entry(node) {
            std::collections::btree_map::Entry::Occupied(e) => Some(e.into_mut()),
            std::collections::btree_map::Entry::Vacant(e) => {
                Resp::connect(addr, deadline).ok().map(|c| e.insert(c))
            }
        };
        let ret = match conn {
            // Nothing was sent: a definite failure.
            None => Ret::Fail("connect failed".into()),
            Some(conn) => {
                let reply = match &call {
                    Call::Read if config.stale_reads => {
                        let scan = [
                            &b"FLOTILLA.LOCALSCAN"[..],
                            key.as_bytes(),
                            stale_end[k].as_bytes(),
                        ];
                        match conn.call(&scan, deadline) {
                            Ok(Reply::Array(Some(rows))) => Ok(Reply::Bulk(match rows.get(1) {
                                Some(Reply::Bulk(v)) => v.clone(),
                                _ => None,
                            })),
                            other => other,
                        }
                    }
                    Call::Read => conn.call(&[b"GET", key.as_bytes()], deadline),
                    Call::Write(v) => conn.call(&[b"SET", key.as_bytes(), v.as_bytes()], deadline),
                };
                match reply {
                    Ok(Reply::Simple(s)) if s == "OK" && matches!(call, Call::Write(_)) => Ret::Ok,
                    Ok(Reply::Bulk(v)) if call == Call::Read => {
                        Ret::ReadOk(v.map(|b| String::from_utf8_lossy(&b).into_owned()))
                    }
                    Ok(Reply::Error(e)) => {
                        // Refused before anything was proposed. "range not
                        // found": this node holds no replica of the key's
                        // range (and does not forward then).
                        let definite = [
                            "MOVED",
                            "TRYAGAIN",
                            "BUSY",
                            "CROSSRANGE",
                            "ERR range not found",
                        ]
                        .iter()
                        .any(|p| e.starts_with(p));
                        if definite {
                            Ret::Fail(e)
                        } else {
                            Ret::Info(e)
                        }
                    }
                    Ok(other) => Ret::Info(format!("unexpected reply {}", other.text())),
                    Err(e) => {
                        conns.remove(&node);
                        Ret::Info(e.to_string())
                    }
                }
            }
        };
        let failed = !matches!(ret, Ret::Ok | Ret::ReadOk(_));
        ops.push(Op {
            process: c,
            node,
            key,
            call,
            invoke_ns,
            complete_ns: now(),
            ret,
        });
        let pause = if failed { 50 } else { rng.below(10) };
        std::thread::sleep(Duration::from_millis(pause));
    }
    ops
}
