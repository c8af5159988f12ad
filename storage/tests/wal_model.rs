//! Property test: the WAL against a simple in-memory model under random
//! appends, overwrites of an uncommitted suffix, compactions, snapshot
//! installs, purges (with rewrites of lagging groups), group removals and
//! reopenings. `WAL_PROPTEST_CASES` sets the number of cases (default 200).

mod wal_common;

use std::collections::BTreeMap;

use flotilla_raftgroup::{ConfState, Entry, HardState, LogStore, StoreError};
use flotilla_storage::wal::{Wal, WalConfig, WalError, WriteBatch};
use proptest::prelude::*;
use wal_common::{dump, fast_tempdir, GroupDump};

#[derive(Debug, Clone, Default)]
struct ModelGroup {
    truncated: (u64, u64),
    entries: Vec<Entry>,
    hard_state: HardState,
    conf_state: ConfState,
}

impl ModelGroup {
    fn last(&self) -> u64 {
        self.truncated.0 + self.entries.len() as u64
    }
    fn last_term(&self) -> u64 {
        self.entries.last().map_or(self.truncated.1, |e| e.term)
    }
    fn term(&self, index: u64) -> u64 {
        if index == self.truncated.0 {
            self.truncated.1
        } else {
            self.entries[(index - self.truncated.0 - 1) as usize].term
        }
    }
    fn dump(&self) -> GroupDump {
        GroupDump {
            first: self.truncated.0 + 1,
            last: self.last(),
            truncated: self.truncated,
            hard_state: self.hard_state,
            conf_state: self.conf_state.clone(),
            entries: self.entries.clone(),
        }
    }
}

type Model = BTreeMap<u64, ModelGroup>;

#[derive(Debug, Clone)]
enum BatchOp {
    /// Append `count` entries, overwriting the last `back` ones.
    Append {
        group: u64,
        back: u8,
        count: u8,
        size: u16,
        bump: bool,
    },
    HardState {
        group: u64,
        commit: u8,
    },
    ConfState {
        group: u64,
        voters: u8,
    },
    /// Compact to a fraction of the live range.
    Compact {
        group: u64,
        frac: u8,
    },
    Snapshot {
        group: u64,
        ahead: u8,
        term: u8,
    },
    Remove {
        group: u64,
    },
    /// An invalid append (gap): the whole batch must be refused.
    Gap {
        group: u64,
    },
}

#[derive(Debug, Clone)]
enum Action {
    Batch(Vec<BatchOp>),
    CompactTo {
        group: u64,
        frac: u8,
    },
    RemoveGroup(u64),
    Purge,
    Reopen,
    Read {
        group: u64,
        a: u8,
        b: u8,
        budget: u16,
    },
}

fn batch_op() -> impl Strategy<Value = BatchOp> {
    let group = 0u64..6;
    prop_oneof![
        6 => (group.clone(), 0u8..4, 1u8..8, 0u16..700, any::<bool>())
            .prop_map(|(group, back, count, size, bump)| BatchOp::Append { group, back, count, size, bump }),
        2 => (group.clone(), any::<u8>()).prop_map(|(group, commit)| BatchOp::HardState { group, commit }),
        1 => (group.clone(), 1u8..5).prop_map(|(group, voters)| BatchOp::ConfState { group, voters }),
        2 => (group.clone(), any::<u8>()).prop_map(|(group, frac)| BatchOp::Compact { group, frac }),
        1 => (group.clone(), 0u8..4, 1u8..9).prop_map(|(group, ahead, term)| BatchOp::Snapshot { group, ahead, term }),
        1 => group.clone().prop_map(|group| BatchOp::Remove { group }),
        1 => group.prop_map(|group| BatchOp::Gap { group }),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        12 => prop::collection::vec(batch_op(), 1..5).prop_map(Action::Batch),
        2 => (0u64..6, any::<u8>()).prop_map(|(group, frac)| Action::CompactTo { group, frac }),
        1 => (0u64..6).prop_map(Action::RemoveGroup),
        2 => Just(Action::Purge),
        1 => Just(Action::Reopen),
        3 => (0u64..6, any::<u8>(), any::<u8>(), any::<u16>()).prop_map(|(group, a, b, budget)| Action::Read { group, a, b, budget }),
    ]
}

/// Builds the WAL batch for `ops` and applies it to `model`; `Err(batch)`
/// if the WAL must refuse it (the model is then to be discarded).
fn build(ops: &[BatchOp], model: &mut Model, salt: &mut u64) -> Result<WriteBatch, WriteBatch> {
    let mut batch = WriteBatch::new();
    for op in ops {
        match *op {
            BatchOp::Append {
                group,
                back,
                count,
                size,
                bump,
            } => {
                let g = model.entry(group).or_default();
                let keep = g.entries.len().saturating_sub(back as usize);
                let first = g.truncated.0 + keep as u64 + 1;
                let term = g
                    .entries
                    .get(keep.wrapping_sub(1))
                    .map_or(g.truncated.1, |e| e.term)
                    .max(1)
                    + u64::from(bump);
                *salt += 1;
                let new = wal_common::entries(first, u64::from(count), term, size as usize, *salt);
                batch.append(group, &new).unwrap();
                g.entries.truncate(keep);
                g.entries.extend(new);
            }
            BatchOp::HardState { group, commit } => {
                let g = model.entry(group).or_default();
                let state = HardState {
                    term: g.last_term(),
                    vote: 1,
                    commit: u64::from(commit),
                };
                g.hard_state = state;
                batch.set_hard_state(group, state);
            }
            BatchOp::ConfState { group, voters } => {
                let state = ConfState::with_voters(1..=u64::from(voters));
                model.entry(group).or_default().conf_state = state.clone();
                batch.set_conf_state(group, state);
            }
            BatchOp::Compact { group, frac } => {
                let g = model.entry(group).or_default();
                let span = g.last() - g.truncated.0;
                let index = g.truncated.0 + span * u64::from(frac) / 255;
                let term = g.term(index);
                batch.compact(group, index, term);
                if index > g.truncated.0 {
                    g.entries.drain(..(index - g.truncated.0) as usize);
                    g.truncated = (index, term);
                }
            }
            BatchOp::Snapshot { group, ahead, term } => {
                let g = model.entry(group).or_default();
                let index = g.last() + u64::from(ahead);
                batch.install_snapshot(group, index, u64::from(term));
                if index > g.truncated.0 {
                    g.entries.clear();
                    g.truncated = (index, u64::from(term));
                }
            }
            BatchOp::Remove { group } => {
                model.remove(&group);
                batch.remove_group(group);
            }
            BatchOp::Gap { group } => {
                let g = model.entry(group).or_default();
                let new = wal_common::entries(g.last() + 2, 1, 1, 8, 0);
                batch.append(group, &new).unwrap();
                return Err(batch);
            }
        }
    }
    Ok(batch)
}

fn config(rewrite_small: bool) -> WalConfig {
    WalConfig {
        segment_bytes_target: 8 << 10,
        cache_bytes_max: 4 << 10,
        purge_keep_segments: 1,
        rewrite_group_bytes_max: if rewrite_small { 1 << 10 } else { 64 << 10 },
        ..WalConfig::small_for_tests()
    }
}

fn check(wal: &Wal, model: &Model) {
    let expected: BTreeMap<u64, GroupDump> = model.iter().map(|(id, g)| (*id, g.dump())).collect();
    assert_eq!(dump(wal), expected);
}

fn run(actions: Vec<Action>, rewrite_small: bool) {
    let dir = fast_tempdir();
    let config = config(rewrite_small);
    let mut wal = Wal::open(dir.path(), config.clone()).unwrap();
    let mut model = Model::new();
    let mut salt = 0;
    for action in actions {
        match action {
            Action::Batch(ops) => {
                let mut next = model.clone();
                match build(&ops, &mut next, &mut salt) {
                    Ok(batch) => {
                        wal.write(&batch, salt % 3 == 0).unwrap();
                        model = next;
                    }
                    Err(batch) => {
                        let err = wal.write(&batch, true).unwrap_err();
                        assert!(matches!(err, WalError::InvalidBatch { .. }), "{err}");
                    }
                }
            }
            Action::CompactTo { group, frac } => match model.get_mut(&group) {
                None => assert!(wal.compact_to(group, 1).is_err()),
                Some(g) => {
                    let span = g.last() - g.truncated.0;
                    let index = g.truncated.0 + span * u64::from(frac) / 255;
                    wal.compact_to(group, index).unwrap();
                    if index > g.truncated.0 {
                        let term = g.term(index);
                        g.entries.drain(..(index - g.truncated.0) as usize);
                        g.truncated = (index, term);
                    }
                }
            },
            Action::RemoveGroup(group) => {
                wal.remove_group(group).unwrap();
                model.remove(&group);
            }
            Action::Purge => {
                let report = wal.purge().unwrap();
                let stats = wal.stats();
                if report.groups_to_compact.is_empty() {
                    // Disk bound (see purge.rs): kept sealed segments within
                    // max(keep × target, 2 × live), the active segment (one
                    // batch may overshoot its target) and the rewrite output.
                    let target = config.segment_bytes_target;
                    let budget =
                        (config.purge_keep_segments * target).max(2 * stats.live_bytes_estimate);
                    let bound = budget
                        + 2 * (target + config.batch_bytes_max.min(64 << 10))
                        + 2 * report.bytes_rewritten;
                    assert!(
                        stats.disk_bytes <= bound,
                        "{} bytes on disk > bound {bound}: {report:?} {stats:?}",
                        stats.disk_bytes
                    );
                } else {
                    assert!(rewrite_small);
                }
            }
            Action::Reopen => {
                drop(wal);
                wal = Wal::open(dir.path(), config.clone()).unwrap();
            }
            Action::Read {
                group,
                a,
                b,
                budget,
            } => {
                let log = wal.group(group);
                let g = model.get(&group).cloned().unwrap_or_default();
                let (first, last) = (g.truncated.0 + 1, g.last());
                let low = first.saturating_sub(1) + u64::from(a) % (last + 3 - first);
                let high = low + u64::from(b) % 12;
                let got = log.entries(low, high, u64::from(budget));
                if low < first {
                    assert_eq!(got, Err(StoreError::Compacted));
                } else if high > last + 1 {
                    assert_eq!(got, Err(StoreError::Unavailable));
                } else {
                    let got = got.unwrap();
                    let mut want = Vec::new();
                    let mut used = 0;
                    for e in &g.entries[(low - first) as usize..(high - first) as usize] {
                        used += e.size_bytes();
                        if !want.is_empty() && used > u64::from(budget) {
                            break;
                        }
                        want.push(e.clone());
                    }
                    assert_eq!(got, want);
                }
                if g.truncated.0 > 0 {
                    assert_eq!(log.term(g.truncated.0 - 1), Err(StoreError::Compacted));
                }
            }
        }
        check(&wal, &model);
    }
    drop(wal);
    let wal = Wal::open(dir.path(), config).unwrap();
    check(&wal, &model);
}

fn cases() -> u32 {
    std::env::var("WAL_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn wal_matches_model(actions in prop::collection::vec(action(), 1..120), rewrite_small in any::<bool>()) {
        run(actions, rewrite_small);
    }
}
