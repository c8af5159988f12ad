//! The nemesis: a schedule of faults drawn from the seed, then played
//! against the running cluster. Each step holds one disruption (kill -9
//! and restart, SIGSTOP/SIGCONT, a two-way partition of a node pair, a
//! node isolated from all others, a one-way partition, lossy links) for a
//! while, and may run one topology change in the middle of it (split,
//! merge, leader transfer, membership change). Disruption kinds and
//! topology kinds are dealt from shuffled decks so that even a short run
//! sees every kind.
//!
//! The schedule is a pure function of (seed, nodes, duration), so a seed
//! replays the same faults in the same order with the same pauses; the
//! interleaving with the clients' requests is up to the OS scheduler and
//! differs between runs. Every timeout is a deadline on the test's
//! monotonic clock; no node's clock is read.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use super::client::Reply;
use super::cluster::Cluster;
use super::rng::Rng;

/// In a schedule, "the node leading some range", chosen when the step
/// starts (leaders are the interesting victims).
pub const LEADER: u64 = 0;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disruption {
    /// SIGKILL the node; restart it at the end of the step.
    Kill(u64),
    /// SIGSTOP the node; SIGCONT at the end of the step.
    Pause(u64),
    /// Drop traffic both ways between two nodes.
    Partition(u64, u64),
    /// Drop traffic both ways between a node and every other node.
    Isolate(u64),
    /// Messages from the first node to the second are lost; the other
    /// direction still works.
    OneWay(u64, u64),
    /// Every link drops 20%, duplicates 10% and delays 5–25 ms.
    LossyLinks,
    /// SIGKILL every node at once (a power cut of the whole cluster):
    /// only what was fsynced survives; restart them all.
    KillAll,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topology {
    Split(String),
    /// Merge a random pair of adjacent ranges.
    Merge,
    /// Move a random range's leadership to a random replica.
    TransferLeader,
    /// Remove a replica and add it back (or add one on a node that has
    /// none and remove another) at the end of the step.
    Membership,
}

#[derive(Debug, Clone)]
pub struct Step {
    pub disruption: Disruption,
    /// A network fault held at the same time (composed faults): applied
    /// before and healed after `disruption`.
    pub also: Option<Disruption>,
    pub topology: Option<Topology>,
    pub hold: Duration,
    pub gap: Duration,
    /// Seeds the choices made at run time from the cluster's state
    /// (which range to merge, which replica to move).
    pub pick: u64,
}

impl Disruption {
    pub fn kind(&self) -> &'static str {
        match self {
            Disruption::Kill(_) => "kill",
            Disruption::Pause(_) => "pause",
            Disruption::Partition(..) => "partition",
            Disruption::Isolate(_) => "isolate",
            Disruption::OneWay(..) => "one-way-partition",
            Disruption::LossyLinks => "lossy-links",
            Disruption::KillAll => "kill-all",
        }
    }
}

impl Topology {
    pub fn kind(&self) -> &'static str {
        match self {
            Topology::Split(_) => "split",
            Topology::Merge => "merge",
            Topology::TransferLeader => "transfer-leader",
            Topology::Membership => "membership",
        }
    }
}

impl fmt::Display for Disruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let node = |n: u64| {
            if n == LEADER {
                "a leader".to_string()
            } else {
                format!("n{n}")
            }
        };
        match *self {
            Disruption::Kill(n) => write!(f, "kill -9 {}", node(n)),
            Disruption::Pause(n) => write!(f, "pause {}", node(n)),
            Disruption::Partition(a, b) => write!(f, "partition n{a} <-/-> n{b}"),
            Disruption::Isolate(n) => write!(f, "isolate {}", node(n)),
            Disruption::OneWay(a, b) => write!(f, "one-way partition n{a} -/-> n{b}"),
            Disruption::LossyLinks => write!(f, "lossy links everywhere"),
            Disruption::KillAll => write!(f, "kill -9 every node"),
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.disruption)?;
        if let Some(also) = &self.also {
            write!(f, " + {also}")?;
        }
        write!(f, " for {} ms", self.hold.as_millis())?;
        if let Some(t) = &self.topology {
            write!(f, ", {t:?} halfway")?;
        }
        write!(f, ", then {} ms quiet", self.gap.as_millis())
    }
}

/// The schedule for `seconds` of faults over `nodes` (ids 1..=nodes).
/// `kinds` lists the disruption kinds to deal from (0 kill, 1 pause,
/// 2 partition, 3 isolate, 4 one-way, 5 lossy links, 6 kill all).
pub fn schedule(
    seed: u64,
    nodes: u64,
    seconds: u64,
    split_keys: &[String],
    kinds: &[u8],
    compose: bool,
) -> Vec<Step> {
    let mut rng = Rng::new(seed ^ 0x006e_656d_6573_6973);
    let mut overlay = Rng::new(seed ^ 0x0063_6f6d_706f_7365);
    let mut disruptions: Vec<u8> = Vec::new();
    let mut topologies: Vec<u8> = Vec::new();
    let mut steps = Vec::new();
    let mut total = Duration::ZERO;
    let budget = Duration::from_secs(seconds);
    while total < budget {
        if disruptions.is_empty() {
            disruptions = kinds.to_vec();
            rng.shuffle(&mut disruptions);
        }
        let victim = |rng: &mut Rng| {
            if rng.below(2) == 0 {
                LEADER
            } else {
                1 + rng.below(nodes)
            }
        };
        let pair = |rng: &mut Rng| {
            let a = 1 + rng.below(nodes);
            let b = 1 + (a + rng.below(nodes - 1)) % nodes;
            (a, b)
        };
        let disruption = match disruptions.pop().unwrap_or(0) {
            0 => Disruption::Kill(victim(&mut rng)),
            1 => Disruption::Pause(victim(&mut rng)),
            2 => {
                let (a, b) = pair(&mut rng);
                Disruption::Partition(a, b)
            }
            3 => Disruption::Isolate(victim(&mut rng)),
            4 => {
                let (a, b) = pair(&mut rng);
                Disruption::OneWay(a, b)
            }
            5 => Disruption::LossyLinks,
            _ => Disruption::KillAll,
        };
        let topology = if rng.below(100) < 70 {
            if topologies.is_empty() {
                topologies = (0..4).collect();
                rng.shuffle(&mut topologies);
            }
            Some(match topologies.pop().unwrap_or(0) {
                0 => {
                    // Half the time between a key and the next (`k2~17`),
                    // so splits go on after every key stands alone.
                    let key = split_keys[rng.below(split_keys.len() as u64) as usize].clone();
                    if rng.below(2) == 0 {
                        Topology::Split(key)
                    } else {
                        Topology::Split(format!("{key}~{}", rng.below(100)))
                    }
                }
                1 => Topology::Merge,
                2 => Topology::TransferLeader,
                _ => Topology::Membership,
            })
        } else {
            None
        };
        // Composed faults come from their own stream, so that turning them
        // off leaves the rest of a seed's schedule as it was.
        let also = if compose && overlay.below(100) < 30 && disruption != Disruption::KillAll {
            let (a, b) = pair(&mut overlay);
            Some(match overlay.below(3) {
                0 => Disruption::Partition(a, b),
                1 => Disruption::OneWay(a, b),
                _ => Disruption::LossyLinks,
            })
            .filter(|d| *d != disruption)
        } else {
            None
        };
        let step = Step {
            disruption,
            also,
            topology,
            hold: Duration::from_millis(1_000 + rng.below(3_000)),
            gap: Duration::from_millis(300 + rng.below(1_500)),
            pick: rng.next_u64(),
        };
        total += step.hold + step.gap;
        steps.push(step);
    }
    steps
}

/// How often each fault kind was tried and how it went.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    /// Took effect.
    pub applied: u64,
    /// The server refused it (an error reply: not supported yet, refused
    /// merge, already split...), so it was skipped.
    pub refused: u64,
    /// No answer in time, or the node to ask was down.
    pub failed: u64,
}

pub struct Nemesis<'a> {
    pub cluster: &'a mut Cluster,
    pub t0: Instant,
    pub log: Vec<String>,
    pub tally: BTreeMap<&'static str, Tally>,
}

const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// One range as `FLOTILLA.RANGES` describes it.
#[derive(Debug, Clone)]
pub struct RangeView {
    pub id: u64,
    pub start: String,
    pub end: String,
    pub replicas: Vec<u64>,
    /// The answering node's replica leads the range.
    pub leader: bool,
}

/// Parse a `FLOTILLA.RANGES` reply.
pub fn parse_ranges(reply: &Reply) -> Option<Vec<RangeView>> {
    let Reply::Array(Some(items)) = reply else {
        return None;
    };
    let mut out = Vec::new();
    for item in items {
        let Reply::Array(Some(fields)) = item else {
            return None;
        };
        let mut range = RangeView {
            id: 0,
            start: String::new(),
            end: String::new(),
            replicas: Vec::new(),
            leader: false,
        };
        for kv in fields.chunks(2) {
            let [k, v] = kv else { return None };
            match (k.text().as_str(), v) {
                ("id", Reply::Int(i)) => range.id = *i as u64,
                ("start", v) => range.start = v.text(),
                ("end", v) => range.end = v.text(),
                ("role", v) => range.leader = v.text() == "leader",
                ("replicas", Reply::Array(Some(r))) => {
                    range.replicas = r
                        .iter()
                        .filter_map(|x| match x {
                            Reply::Int(i) => Some(*i as u64),
                            _ => None,
                        })
                        .collect()
                }
                _ => {}
            }
        }
        out.push(range);
    }
    Some(out)
}

impl Nemesis<'_> {
    fn note(&mut self, text: String) {
        let line = format!("{:>9.3}s {text}", self.t0.elapsed().as_secs_f64());
        println!("nemesis {line}");
        self.log.push(line);
    }

    fn count(&mut self, kind: &'static str, outcome: Result<(), bool>) {
        let t = self.tally.entry(kind).or_default();
        match outcome {
            Ok(()) => t.applied += 1,
            Err(true) => t.refused += 1,
            Err(false) => t.failed += 1,
        }
    }

    fn up(&self) -> Vec<u64> {
        self.cluster
            .nodes
            .iter()
            .filter(|n| n.is_up())
            .map(|n| n.id)
            .collect()
    }

    /// Send a command to node `id`: Ok(reply), Err(true) for an error
    /// reply (refused), Err(false) for no answer.
    fn call(&mut self, id: u64, args: &[&str]) -> Result<Reply, bool> {
        let shown = args.join(" ");
        match self.cluster.call(id, args, ADMIN_TIMEOUT) {
            Ok(Reply::Error(e)) => {
                self.note(format!("  n{id} {shown} -> refused: {e}"));
                Err(true)
            }
            Ok(reply) => {
                let text = match parse_ranges(&reply) {
                    Some(ranges) if args[0] == "FLOTILLA.RANGES" => {
                        let ids: Vec<String> = ranges.iter().map(|r| r.id.to_string()).collect();
                        format!("{} ranges [{}]", ranges.len(), ids.join(" "))
                    }
                    _ => reply.text(),
                };
                self.note(format!("  n{id} {shown} -> {text}"));
                Ok(reply)
            }
            Err(e) => {
                self.note(format!("  n{id} {shown} -> no answer: {e}"));
                Err(false)
            }
        }
    }

    fn fault(&mut self, id: u64, args: &[&str]) -> bool {
        let mut all = vec!["FLOTILLA.FAULT"];
        all.extend_from_slice(args);
        self.call(id, &all).is_ok()
    }

    /// Play `steps` until `until`; every step started is healed.
    pub fn play(&mut self, steps: &[Step], until: Instant) -> Result<(), String> {
        for step in steps {
            if Instant::now() + step.hold > until {
                break;
            }
            self.note(format!("step: {step}"));
            // The network fault first, while every node still answers.
            if let Some(also) = &step.also {
                let applied = self.disrupt(also);
                self.count(also.kind(), if applied { Ok(()) } else { Err(false) });
            }
            let disruption = self.resolve(&step.disruption, step.pick);
            let kind = disruption.kind();
            let applied = self.disrupt(&disruption);
            self.count(kind, if applied { Ok(()) } else { Err(false) });
            std::thread::sleep(step.hold / 2);
            let mut undo = None;
            if let Some(t) = &step.topology {
                undo = self.topology(t, step.pick);
            }
            std::thread::sleep(step.hold / 2);
            self.heal(&disruption)?;
            if let Some(also) = &step.also {
                self.heal(also)?;
            }
            if let Some(args) = undo {
                // Through any live node; the step's disruption is healed.
                let strs: Vec<&str> = args.iter().map(String::as_str).collect();
                let outcome = match self.up().first() {
                    Some(&node) => self.call(node, &strs).map(|_| ()),
                    None => Err(false),
                };
                self.count("membership-undo", outcome);
            }
            std::thread::sleep(step.gap);
        }
        Ok(())
    }

    /// Replace [`LEADER`] by a node that leads some range now (any node
    /// when none answers).
    fn resolve(&mut self, d: &Disruption, pick: u64) -> Disruption {
        let target = match *d {
            Disruption::Kill(LEADER) | Disruption::Pause(LEADER) | Disruption::Isolate(LEADER) => {
                let mut leaders = Vec::new();
                for id in self.up() {
                    if let Ok(reply) = self.cluster.call(id, &["FLOTILLA.RANGES"], ADMIN_TIMEOUT) {
                        let ranges = parse_ranges(&reply).unwrap_or_default();
                        leaders.extend(ranges.iter().filter(|r| r.leader).map(|_| id));
                    }
                }
                let ids = self.cluster.ids();
                let chosen = match leaders.len() {
                    0 => ids[(pick % ids.len() as u64) as usize],
                    n => leaders[(pick % n as u64) as usize],
                };
                self.note(format!("  the victim, a leader of some range: n{chosen}"));
                chosen
            }
            _ => return d.clone(),
        };
        match d {
            Disruption::Kill(_) => Disruption::Kill(target),
            Disruption::Pause(_) => Disruption::Pause(target),
            _ => Disruption::Isolate(target),
        }
    }

    fn disrupt(&mut self, d: &Disruption) -> bool {
        match *d {
            Disruption::Kill(n) => {
                self.cluster.kill(n);
                self.note(format!("  killed n{n} (SIGKILL)"));
                true
            }
            Disruption::Pause(n) => match self.cluster.pause(n) {
                Ok(()) => {
                    self.note(format!("  paused n{n} (SIGSTOP)"));
                    true
                }
                Err(e) => {
                    self.note(format!("  pause n{n} failed: {e}"));
                    false
                }
            },
            Disruption::Partition(a, b) => {
                let one = self.fault(a, &["PARTITION", &b.to_string()]);
                let two = self.fault(b, &["PARTITION", &a.to_string()]);
                one && two
            }
            Disruption::Isolate(n) => {
                let mut ok = true;
                for other in self.cluster.ids() {
                    if other != n {
                        ok &= self.fault(n, &["PARTITION", &other.to_string()]);
                        ok &= self.fault(other, &["PARTITION", &n.to_string()]);
                    }
                }
                ok
            }
            Disruption::OneWay(from, to) => self.fault(from, &["ONEWAY", &to.to_string()]),
            Disruption::LossyLinks => {
                let mut ok = true;
                for id in self.cluster.ids() {
                    ok &= self.fault(id, &["SEED", &id.to_string()]);
                    ok &= self.fault(id, &["LINK", "*", "20", "10", "5", "20"]);
                }
                ok
            }
            Disruption::KillAll => {
                for id in self.cluster.ids() {
                    self.cluster.kill(id);
                }
                self.note("  killed every node (SIGKILL)".into());
                true
            }
        }
    }

    fn heal(&mut self, d: &Disruption) -> Result<(), String> {
        match *d {
            Disruption::Kill(n) => {
                let took = self.cluster.start_node(n)?;
                self.note(format!(
                    "  restarted n{n} (ready in {} ms)",
                    took.as_millis()
                ));
            }
            Disruption::Pause(n) => {
                self.cluster.resume(n)?;
                self.note(format!("  resumed n{n} (SIGCONT)"));
            }
            Disruption::Partition(a, b) => {
                self.fault(a, &["HEAL", &b.to_string()]);
                self.fault(b, &["HEAL", &a.to_string()]);
            }
            Disruption::Isolate(n) => {
                for other in self.cluster.ids() {
                    if other != n {
                        self.fault(n, &["HEAL", &other.to_string()]);
                        self.fault(other, &["HEAL", &n.to_string()]);
                    }
                }
            }
            Disruption::OneWay(from, to) => {
                self.fault(from, &["HEAL", &to.to_string()]);
            }
            Disruption::LossyLinks => {
                for id in self.cluster.ids() {
                    self.fault(id, &["LINK", "*", "0", "0", "0", "0"]);
                }
            }
            Disruption::KillAll => {
                for id in self.cluster.ids() {
                    let took = self.cluster.start_node(id)?;
                    self.note(format!(
                        "  restarted n{id} (ready in {} ms)",
                        took.as_millis()
                    ));
                }
            }
        }
        Ok(())
    }

    /// A topology change through a random live node. Returns the command
    /// that undoes a membership change, to run at the end of the step.
    fn topology(&mut self, t: &Topology, pick: u64) -> Option<Vec<String>> {
        let mut rng = Rng::new(pick);
        let up = self.up();
        if up.is_empty() {
            self.count(t.kind(), Err(false));
            return None;
        }
        let first = rng.below(up.len() as u64) as usize;
        let mut via = up[first];
        let mut ranges = Vec::new();
        if !matches!(t, Topology::Split(_)) {
            // The first live node that holds ranges (with 5 nodes, 4 and 5
            // hold none until a replica is added there).
            for i in 0..up.len() {
                via = up[(first + i) % up.len()];
                if let Ok(reply) = self.call(via, &["FLOTILLA.RANGES"]) {
                    ranges = parse_ranges(&reply).unwrap_or_default();
                }
                if !ranges.is_empty() {
                    break;
                }
            }
        }
        let needs_ranges = !matches!(t, Topology::Split(_));
        if needs_ranges && ranges.is_empty() {
            self.count(t.kind(), Err(false));
            return None;
        }
        let range = ranges
            .get(rng.below(ranges.len().max(1) as u64) as usize)
            .cloned();
        let mut undo = None;
        let outcome = match (t, range) {
            (Topology::Split(key), _) => self.call(via, &["FLOTILLA.SPLIT", key]).map(|_| ()),
            (Topology::Merge, _) if ranges.len() < 2 => Err(true),
            (Topology::Merge, _) => {
                let i = rng.below(ranges.len() as u64 - 1) as usize;
                let (left, right) = (ranges[i].id.to_string(), ranges[i + 1].id.to_string());
                self.call(via, &["FLOTILLA.MERGE", &left, &right])
                    .map(|_| ())
            }
            (Topology::TransferLeader | Topology::Membership, Some(r)) if r.replicas.is_empty() => {
                Err(false)
            }
            (Topology::TransferLeader, Some(r)) => {
                let to = r.replicas[rng.below(r.replicas.len() as u64) as usize];
                self.call(
                    via,
                    &[
                        "FLOTILLA.TRANSFERLEADER",
                        &r.id.to_string(),
                        &to.to_string(),
                    ],
                )
                .map(|_| ())
            }
            (Topology::Membership, Some(r)) => {
                let outside: Vec<u64> = self
                    .cluster
                    .ids()
                    .into_iter()
                    .filter(|id| !r.replicas.contains(id))
                    .collect();
                let (first, then) = if let Some(&add) = outside.first() {
                    let remove = r.replicas[rng.below(r.replicas.len() as u64) as usize];
                    (
                        ("FLOTILLA.ADDREPLICA", add),
                        ("FLOTILLA.REMOVEREPLICA", remove),
                    )
                } else {
                    let node = r.replicas[rng.below(r.replicas.len() as u64) as usize];
                    (
                        ("FLOTILLA.REMOVEREPLICA", node),
                        ("FLOTILLA.ADDREPLICA", node),
                    )
                };
                let id = r.id.to_string();
                let result = self
                    .call(via, &[first.0, &id, &first.1.to_string()])
                    .map(|_| ());
                if result.is_ok() {
                    undo = Some(vec![then.0.to_string(), id.clone(), then.1.to_string()]);
                }
                result
            }
            (_, None) => Err(false),
        };
        self.count(t.kind(), outcome);
        undo
    }
}
