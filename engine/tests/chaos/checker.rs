//! The checker: per-key linearizability of a read/write register with the
//! Wing–Gong search as improved by Lowe (just-in-time linearization over a
//! linked list of call/return events, memoising every (set of linearized
//! operations, register state) pair already explored — the algorithm of
//! Knossos' `wgl` and of Porcupine), plus the direct checks Jepsen reports
//! next to it: no value read that no write wrote, no value read from a
//! write the server said failed, no acknowledged write lost at the end, and
//! every replica holding the same data after the faults stopped.
//!
//! Operations whose outcome is unknown (`Ret::Info`) are given an infinite
//! completion time: they may take effect at any point after their
//! invocation, or never (for a register, "never" is the same as "after
//! everything"). An indeterminate write whose value nobody read can always
//! be put last, so it is dropped before the search — which keeps the search
//! cheap when many writes time out. Failed reads say nothing and are
//! dropped; failed writes (refused before being proposed) are dropped too,
//! but a read of their value is an anomaly of its own.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::history::{Call, Op, Ret, FINAL};

/// Something the checker refuses, with enough context to look it up in the
/// history file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anomaly {
    pub kind: &'static str,
    pub key: String,
    pub detail: String,
}

#[derive(Debug, Default)]
pub struct Verdict {
    /// Operations that took part in the linearizability search.
    pub ops_checked: usize,
    /// Keys whose search gave up on its step budget (neither proved nor
    /// refuted).
    pub keys_unknown: Vec<String>,
    pub anomalies: Vec<Anomaly>,
}

impl Verdict {
    pub fn is_valid(&self) -> bool {
        self.anomalies.is_empty() && self.keys_unknown.is_empty()
    }
}

/// Search steps allowed per key before giving up as "unknown".
pub const STEP_BUDGET: u64 = 50_000_000;

/// Check a whole history, key by key.
pub fn check(history: &[Op]) -> Verdict {
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in history {
        by_key.entry(&op.key).or_default().push(op);
    }
    let mut verdict = Verdict::default();
    for (key, ops) in by_key {
        check_key(key, &ops, STEP_BUDGET, &mut verdict);
        check_final(key, &ops, &mut verdict);
    }
    verdict
}

/// The operation the search works on: an interned register operation with
/// its real-time interval.
#[derive(Debug, Clone, Copy)]
struct RegOp {
    /// Index into the key's op list (for messages).
    source: usize,
    write: bool,
    /// For a write: the value written. For a read: the value read
    /// (`None`: absent).
    value: Option<u32>,
    invoke: u64,
    /// `u64::MAX` for indeterminate operations.
    complete: u64,
}

pub enum Search {
    Linearizable,
    /// The operation that could not be linearized, and how far the best
    /// attempt got.
    NotLinearizable {
        blocked: usize,
        longest_prefix: Vec<usize>,
    },
    Unknown,
}

fn check_key(key: &str, ops: &[&Op], budget: u64, verdict: &mut Verdict) {
    let mut values: HashMap<&str, u32> = HashMap::new();
    let mut failed: HashSet<&str> = HashSet::new();
    for op in ops {
        if let Call::Write(v) = &op.call {
            match op.ret {
                Ret::Ok | Ret::Info(_) => {
                    let next = values.len() as u32;
                    if values.insert(v, next).is_some() {
                        verdict.anomalies.push(Anomaly {
                            kind: "duplicate-write-value",
                            key: key.into(),
                            detail: format!("value {v} written twice (harness bug)"),
                        });
                    }
                }
                Ret::Fail(_) => {
                    failed.insert(v);
                }
                Ret::ReadOk(_) => {}
            }
        }
    }
    let mut read_values: HashSet<u32> = HashSet::new();
    let mut bad = false;
    for op in ops {
        if let (Call::Read, Ret::ReadOk(Some(v))) = (&op.call, &op.ret) {
            match values.get(v.as_str()) {
                Some(id) => {
                    read_values.insert(*id);
                }
                None => {
                    bad = true;
                    let kind = if failed.contains(v.as_str()) {
                        "read-of-failed-write"
                    } else {
                        "read-of-unwritten-value"
                    };
                    verdict.anomalies.push(Anomaly {
                        kind,
                        key: key.into(),
                        detail: format!("{op}"),
                    });
                }
            }
        }
    }
    if bad {
        return;
    }
    let mut reg = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let entry = match (&op.call, &op.ret) {
            (Call::Write(v), Ret::Ok) => Some((true, Some(values[v.as_str()]), op.complete_ns)),
            (Call::Write(v), Ret::Info(_)) => {
                let id = values[v.as_str()];
                // Never read: it can always go last, so leave it out.
                read_values
                    .contains(&id)
                    .then_some((true, Some(id), u64::MAX))
            }
            (Call::Read, Ret::ReadOk(v)) => Some((
                false,
                v.as_ref().map(|v| values[v.as_str()]),
                op.complete_ns,
            )),
            _ => None,
        };
        if let Some((write, value, complete)) = entry {
            reg.push(RegOp {
                source: i,
                write,
                value,
                invoke: op.invoke_ns,
                complete,
            });
        }
    }
    verdict.ops_checked += reg.len();
    match linearize(&reg, budget) {
        Search::Linearizable => {}
        Search::Unknown => verdict.keys_unknown.push(key.into()),
        Search::NotLinearizable {
            blocked,
            longest_prefix,
        } => {
            let shown: Vec<String> = longest_prefix
                .iter()
                .rev()
                .take(8)
                .rev()
                .map(|&i| format!("    {}", ops[reg[i].source]))
                .collect();
            verdict.anomalies.push(Anomaly {
                kind: "not-linearizable",
                key: key.into(),
                detail: format!(
                    "no linearization of {} ops; the longest valid order found has {} ops \
                     and cannot place\n    {}\n  its last linearized ops:\n{}",
                    reg.len(),
                    longest_prefix.len(),
                    ops[reg[blocked].source],
                    shown.join("\n")
                ),
            });
        }
    }
}

/// Lowe's just-in-time Wing–Gong search with memoisation.
pub fn linearize_ops(ops: &[(bool, Option<u32>, u64, u64)], budget: u64) -> Search {
    let reg: Vec<RegOp> = ops
        .iter()
        .enumerate()
        .map(|(i, &(write, value, invoke, complete))| RegOp {
            source: i,
            write,
            value,
            invoke,
            complete,
        })
        .collect();
    linearize(&reg, budget)
}

fn linearize(ops: &[RegOp], budget: u64) -> Search {
    const NIL: usize = usize::MAX;
    let n = ops.len();
    if n == 0 {
        return Search::Linearizable;
    }
    // Events: 2i = call of op i, 2i+1 = its return. Sorted by time, calls
    // before returns at equal times (touching intervals overlap).
    let mut events: Vec<usize> = (0..2 * n).collect();
    let time = |e: usize| {
        let op = &ops[e / 2];
        if e % 2 == 0 {
            (op.invoke, 0u8)
        } else {
            (op.complete, 1u8)
        }
    };
    events.sort_by_key(|&e| (time(e), e));
    // A doubly linked list over event ids, with a head sentinel 2n.
    let head = 2 * n;
    let mut next = vec![NIL; 2 * n + 1];
    let mut prev = vec![NIL; 2 * n + 1];
    let mut last = head;
    for &e in &events {
        next[last] = e;
        prev[e] = last;
        last = e;
    }
    let unlink = |e: usize, next: &mut [usize], prev: &mut [usize]| {
        let (p, nx) = (prev[e], next[e]);
        next[p] = nx;
        if nx != NIL {
            prev[nx] = p;
        }
    };
    let relink = |e: usize, next: &mut [usize], prev: &mut [usize]| {
        let (p, nx) = (prev[e], next[e]);
        next[p] = e;
        if nx != NIL {
            prev[nx] = e;
        }
    };

    let words = n.div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut state: Option<u32> = None;
    let mut cache: HashSet<(Vec<u64>, Option<u32>)> = HashSet::new();
    let mut stack: Vec<(usize, Option<u32>)> = Vec::new();
    let mut longest: Vec<usize> = Vec::new();
    let mut blocked = 0;
    let mut steps = 0u64;
    let mut entry = next[head];
    while next[head] != NIL {
        steps += 1;
        if steps > budget {
            return Search::Unknown;
        }
        if entry % 2 == 0 {
            let i = entry / 2;
            let op = &ops[i];
            let (legal, after) = if op.write {
                (true, op.value)
            } else {
                (op.value == state, state)
            };
            if legal {
                linearized[i / 64] |= 1 << (i % 64);
                if cache.insert((linearized.clone(), after)) {
                    stack.push((entry, state));
                    state = after;
                    // Lift the call and its return out of the list.
                    unlink(entry, &mut next, &mut prev);
                    unlink(entry + 1, &mut next, &mut prev);
                    entry = next[head];
                    continue;
                }
                linearized[i / 64] &= !(1 << (i % 64));
            }
            entry = next[entry];
        } else {
            // A return whose call is not linearized yet: back up.
            if stack.len() >= longest.len() {
                longest = stack.iter().map(|(e, _)| e / 2).collect();
                blocked = entry / 2;
            }
            let Some((call, before)) = stack.pop() else {
                return Search::NotLinearizable {
                    blocked,
                    longest_prefix: longest,
                };
            };
            let i = call / 2;
            linearized[i / 64] &= !(1 << (i % 64));
            state = before;
            relink(call + 1, &mut next, &mut prev);
            relink(call, &mut next, &mut prev);
            entry = next[call];
        }
    }
    Search::Linearizable
}

/// No acknowledged write lost: the final read of a key (after every fault
/// was healed) returns a write that no acknowledged write follows in real
/// time, and a key that had an acknowledged write is not absent.
fn check_final(key: &str, ops: &[&Op], verdict: &mut Verdict) {
    let finals: Vec<&&Op> = ops
        .iter()
        .filter(|op| op.process == FINAL && matches!(op.ret, Ret::ReadOk(_)))
        .collect();
    let Some(last) = finals.iter().max_by_key(|op| op.invoke_ns) else {
        if ops.iter().any(|op| op.process == FINAL) {
            verdict.anomalies.push(Anomaly {
                kind: "no-final-read",
                key: key.into(),
                detail: "the key could not be read after the faults stopped".into(),
            });
        }
        return;
    };
    let acked: Vec<&&Op> = ops
        .iter()
        .filter(|op| op.is_write() && op.ret == Ret::Ok)
        .collect();
    let Ret::ReadOk(value) = &last.ret else {
        return;
    };
    let lost = match value {
        None => acked.first().map(|w| (**w).clone()),
        Some(v) => {
            let source = ops
                .iter()
                .find(|op| op.call == Call::Write(v.clone()))
                .map(|op| match op.ret {
                    Ret::Ok => op.complete_ns,
                    _ => u64::MAX,
                })
                .unwrap_or(u64::MAX);
            acked
                .iter()
                .find(|w| w.invoke_ns > source)
                .map(|w| (**w).clone())
        }
    };
    if let Some(w) = lost {
        verdict.anomalies.push(Anomaly {
            kind: "lost-acknowledged-write",
            key: key.into(),
            detail: format!("final read {last}\n  does not reflect {w}"),
        });
    }
}

/// Every replica holds what the final reads returned: `replicas[node]` is
/// the node's own rows (stale local scan) for the keys it holds a replica
/// of, `holders[key]` the nodes holding one.
pub fn check_convergence(
    finals: &BTreeMap<String, Option<String>>,
    replicas: &BTreeMap<u64, BTreeMap<String, String>>,
    holders: &BTreeMap<String, Vec<u64>>,
) -> Vec<Anomaly> {
    let mut anomalies = Vec::new();
    for (key, expected) in finals {
        for node in holders.get(key).into_iter().flatten() {
            let got = replicas.get(node).and_then(|rows| rows.get(key));
            if got != expected.as_ref() {
                anomalies.push(Anomaly {
                    kind: "replicas-diverge",
                    key: key.clone(),
                    detail: format!(
                        "node {node} holds {got:?}, the final linearizable read returned {expected:?}"
                    ),
                });
            }
        }
    }
    anomalies
}
