//! The checker against hand-built histories (it must accept the good ones
//! and refuse the bad ones) and, by property test, against a brute-force
//! search over every order of small random histories.

use proptest::prelude::*;

use super::checker::{self, linearize_ops, Search};
use super::history::{Call, Op, Ret, FINAL};

fn op(process: usize, key: &str, call: Call, invoke: u64, complete: u64, ret: Ret) -> Op {
    Op {
        process,
        node: 1,
        key: key.into(),
        call,
        invoke_ns: invoke,
        complete_ns: complete,
        ret,
    }
}

fn w(p: usize, v: &str, invoke: u64, complete: u64) -> Op {
    op(p, "x", Call::Write(v.into()), invoke, complete, Ret::Ok)
}

fn w_info(p: usize, v: &str, invoke: u64, complete: u64) -> Op {
    op(
        p,
        "x",
        Call::Write(v.into()),
        invoke,
        complete,
        Ret::Info("timeout".into()),
    )
}

fn w_fail(p: usize, v: &str, invoke: u64, complete: u64) -> Op {
    op(
        p,
        "x",
        Call::Write(v.into()),
        invoke,
        complete,
        Ret::Fail("TRYAGAIN".into()),
    )
}

fn r(p: usize, v: Option<&str>, invoke: u64, complete: u64) -> Op {
    op(
        p,
        "x",
        Call::Read,
        invoke,
        complete,
        Ret::ReadOk(v.map(String::from)),
    )
}

fn kinds(history: &[Op]) -> Vec<&'static str> {
    checker::check(history)
        .anomalies
        .iter()
        .map(|a| a.kind)
        .collect()
}

#[test]
fn checker_accepts_linearizable_histories() {
    let good: Vec<Vec<Op>> = vec![
        // Sequential.
        vec![
            r(0, None, 0, 1),
            w(0, "a", 2, 3),
            r(1, Some("a"), 4, 5),
            w(1, "b", 6, 7),
            r(0, Some("b"), 8, 9),
        ],
        // Concurrent writes, reads see them in either order.
        vec![
            w(0, "a", 0, 10),
            w(1, "b", 0, 10),
            r(2, Some("b"), 11, 12),
            r(3, Some("b"), 13, 14),
        ],
        vec![w(0, "a", 0, 10), w(1, "b", 0, 10), r(2, Some("a"), 11, 12)],
        // A read concurrent with a write may see either value.
        vec![
            w(0, "a", 0, 1),
            w(1, "b", 2, 10),
            r(2, Some("a"), 3, 4),
            r(3, Some("b"), 5, 6),
            r(2, Some("b"), 11, 12),
        ],
        // An indeterminate write may take effect long after it gave up...
        vec![
            w_info(0, "a", 0, 5),
            r(1, None, 6, 7),
            r(1, Some("a"), 8, 9),
        ],
        // ...or never.
        vec![w(1, "b", 0, 1), w_info(0, "a", 2, 3), r(1, Some("b"), 8, 9)],
        // Touching intervals count as concurrent.
        vec![w(0, "a", 0, 5), r(1, None, 5, 6)],
    ];
    for (i, h) in good.iter().enumerate() {
        let verdict = checker::check(h);
        assert!(verdict.is_valid(), "history {i}: {:?}", verdict.anomalies);
        assert!(verdict.ops_checked > 0);
    }
}

#[test]
fn checker_refuses_non_linearizable_histories() {
    let bad: Vec<(Vec<Op>, &str)> = vec![
        // Stale read: b was acknowledged before the read started.
        (
            vec![w(0, "a", 0, 1), w(0, "b", 2, 3), r(1, Some("a"), 4, 5)],
            "not-linearizable",
        ),
        // A read of nothing after an acknowledged write.
        (vec![w(0, "a", 0, 1), r(1, None, 2, 3)], "not-linearizable"),
        // New then old: once a is seen, nil cannot come back.
        (
            vec![
                w(0, "a", 0, 100),
                r(1, Some("a"), 10, 20),
                r(2, None, 30, 40),
            ],
            "not-linearizable",
        ),
        // Reads that disagree on the order of two writes.
        (
            vec![
                w(0, "a", 0, 100),
                w(1, "b", 0, 100),
                r(2, Some("a"), 10, 20),
                r(2, Some("b"), 30, 40),
                r(3, Some("b"), 10, 20),
                r(3, Some("a"), 30, 40),
            ],
            "not-linearizable",
        ),
        // A read that sees a write before it was invoked.
        (
            vec![r(1, Some("a"), 0, 1), w_info(0, "a", 2, 3)],
            "not-linearizable",
        ),
        // A value nobody wrote.
        (
            vec![w(0, "a", 0, 1), r(1, Some("zzz"), 2, 3)],
            "read-of-unwritten-value",
        ),
        // A value whose write the server said failed.
        (
            vec![w_fail(0, "a", 0, 1), r(1, Some("a"), 2, 3)],
            "read-of-failed-write",
        ),
    ];
    for (i, (h, kind)) in bad.iter().enumerate() {
        let found = kinds(h);
        assert!(
            found.contains(kind),
            "history {i}: expected {kind}, got {found:?}"
        );
    }
}

#[test]
fn checker_finds_lost_writes_in_final_reads() {
    let fin = r(FINAL, Some("a"), 10, 11);
    // b was acknowledged after a completed, the final read still says a:
    // reported as a lost write (and as a linearizability violation).
    let h = vec![w(0, "a", 0, 1), w(1, "b", 2, 3), fin.clone()];
    assert!(kinds(&h).contains(&"lost-acknowledged-write"));
    let nil = r(FINAL, None, 10, 11);
    assert!(kinds(&[w(0, "a", 0, 1), nil]).contains(&"lost-acknowledged-write"));
    // Concurrent writes: either may win.
    let h = vec![w(0, "a", 0, 5), w(1, "b", 2, 3), fin];
    assert!(checker::check(&h).is_valid());
}

#[test]
fn checker_compares_replicas_with_the_final_reads() {
    use std::collections::BTreeMap;
    let finals = BTreeMap::from([("x".to_string(), Some("a".to_string()))]);
    let holders = BTreeMap::from([("x".to_string(), vec![1, 2])]);
    let mut replicas = BTreeMap::from([
        (1, BTreeMap::from([("x".to_string(), "a".to_string())])),
        (2, BTreeMap::from([("x".to_string(), "a".to_string())])),
    ]);
    assert!(checker::check_convergence(&finals, &replicas, &holders).is_empty());
    replicas.insert(2, BTreeMap::new());
    let found = checker::check_convergence(&finals, &replicas, &holders);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].kind, "replicas-diverge");
}

#[test]
fn checker_handles_thousands_of_concurrent_ops() {
    // 4 writers and 4 readers over 5,000 ops, each read seeing the last
    // write linearized before it: linearizable, must be quick.
    let mut h = Vec::new();
    let mut t = 0u64;
    let mut last: Option<String> = None;
    for i in 0..5_000u64 {
        let p = (i % 8) as usize;
        // Overlapping intervals: each op spans the next three.
        if p < 4 {
            let v = format!("v{i}");
            h.push(w(p, &v, t, t + 35));
            last = Some(v);
        } else {
            h.push(r(p, last.as_deref(), t, t + 35));
        }
        t += 10;
    }
    let started = std::time::Instant::now();
    let verdict = checker::check(&h);
    assert!(verdict.is_valid(), "{:?}", verdict.anomalies.first());
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}

/// Every order of `ops` that respects real time, with indeterminate ops
/// allowed to be left out: does one explain every read?
fn brute_force(ops: &[(bool, Option<u32>, u64, u64)], indeterminate: &[bool]) -> bool {
    fn go(
        ops: &[(bool, Option<u32>, u64, u64)],
        indeterminate: &[bool],
        done: &mut Vec<bool>,
        state: Option<u32>,
    ) -> bool {
        let pending: Vec<usize> = (0..ops.len()).filter(|&i| !done[i]).collect();
        if pending.iter().all(|&i| indeterminate[i]) {
            return true; // the rest never happened
        }
        for &i in &pending {
            // i may go next only if no pending determinate op ended before it began.
            let blocked = pending
                .iter()
                .any(|&j| j != i && !indeterminate[j] && ops[j].3 < ops[i].2);
            if blocked {
                continue;
            }
            let (write, value, ..) = ops[i];
            if !write && value != state {
                continue;
            }
            done[i] = true;
            let ok = go(ops, indeterminate, done, if write { value } else { state });
            done[i] = false;
            if ok {
                return true;
            }
        }
        false
    }
    let mut done = vec![false; ops.len()];
    go(ops, indeterminate, &mut done, None)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Small random histories (writes of values 0..k, reads of any of them
    /// or nil, random overlapping intervals, some writes indeterminate):
    /// the search agrees with brute force on every one.
    #[test]
    fn checker_agrees_with_brute_force(
        raw in prop::collection::vec((any::<bool>(), 0u32..4, 0u64..20, 1u64..8, 0u8..5), 1..7)
    ) {
        let mut ops = Vec::new();
        let mut indeterminate = Vec::new();
        let mut next_value = 0u32;
        for (write, v, start, len, info) in raw {
            if write {
                let info = info == 0;
                ops.push((true, Some(next_value), start, if info { u64::MAX } else { start + len }));
                indeterminate.push(info);
                next_value += 1;
            } else {
                let value = if v == 3 { None } else { Some(v) };
                ops.push((false, value, start, start + len));
                indeterminate.push(false);
            }
        }
        let expected = brute_force(&ops, &indeterminate);
        let got = match linearize_ops(&ops, 1_000_000) {
            Search::Linearizable => true,
            Search::NotLinearizable { .. } => false,
            Search::Unknown => panic!("budget exhausted on a tiny history"),
        };
        prop_assert_eq!(got, expected, "ops {:?} indeterminate {:?}", ops, indeterminate);
    }
}
