//! The invariants the simulator checks, each against history-wide facts
//! kept for the whole run: Raft's five safety properties (Figure 3 of the
//! paper), configurations, and linearizable reads in real time.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;
use flotilla_raftgroup::{ConfState, Entry, Index, MemStore, RaftGroup, ReplicaId, Snapshot, Term};

use super::sm::entry_fingerprint;

/// A broken invariant, with enough context to debug it.
#[derive(Debug)]
pub struct Violation(pub String);

/// (index, term, fingerprint) of one entry of a leader's log.
type LogFact = (Index, Term, Bytes);

#[derive(Default)]
pub struct Checker {
    /// term -> leader seen in that term (Election Safety).
    leaders_by_term: HashMap<Term, ReplicaId>,
    /// (leader, term) -> the leader's log when last seen (Leader
    /// Append-Only; kept across the leader's crashes: a replica that leads
    /// a term twice after forgetting it must not change its log).
    leader_logs: HashMap<(ReplicaId, Term), Vec<LogFact>>,
    /// (index, term) -> (payload, previous entry's term) over all logs
    /// (Log Matching, checked inductively).
    entry_facts: HashMap<(Index, Term), (Bytes, Term)>,
    /// index -> (term, payload) of entries known committed, and the term
    /// of the replica that first saw it committed (≥ the commit's term).
    committed: BTreeMap<Index, (Term, Bytes, Term)>,
    /// index -> payload applied by anyone (State Machine Safety).
    applied: BTreeMap<Index, Bytes>,
    /// index -> configuration after the change at that index applied
    /// (the initial configuration at the bootstrap index).
    confs: BTreeMap<Index, ConfState>,
    /// Indexes of changes refused at apply (a no-op everywhere alike).
    confs_refused: BTreeSet<Index>,
    /// The highest commit index any replica ever held: every read that
    /// begins later must see at least this much.
    pub max_commit: Index,
}

impl Checker {
    pub fn new(initial: ConfState, at: Index) -> Checker {
        let mut checker = Checker::default();
        checker.confs.insert(at, initial);
        checker
    }

    /// A replica's commit index was seen (it only grows worldwide).
    pub fn note_commit(&mut self, commit: Index) {
        self.max_commit = self.max_commit.max(commit);
    }

    /// Log Matching, committed entries, and for a leader Election Safety,
    /// Leader Append-Only and Leader Completeness.
    pub fn check_replica(
        &mut self,
        id: ReplicaId,
        group: &RaftGroup<MemStore>,
    ) -> Result<(), Violation> {
        let first = group.first_index();
        let last = group.last_index();
        let commit = group.commit_index();
        let term = group.term();
        self.note_commit(commit);
        let entries = group
            .log_entries(first, last + 1)
            .map_err(|e| Violation(format!("replica {id}: cannot read its log: {e}")))?;
        let before_first_term = group.log_term(first - 1).unwrap_or(0);
        self.check_log_matching(id, &entries, before_first_term)?;
        self.check_committed(id, &entries, commit, term)?;
        if group.is_leader() {
            self.check_election_safety(id, term)?;
            let log: Vec<LogFact> = entries
                .iter()
                .map(|e| (e.index, e.term, entry_fingerprint(e)))
                .collect();
            self.check_leader_append_only(id, term, first, &log)?;
            self.check_leader_completeness(id, term, first, &log)?;
            self.leader_logs.insert((id, term), log);
        }
        Ok(())
    }

    /// An (index, term) pair always has the same payload and the same
    /// previous term.
    fn check_log_matching(
        &mut self,
        id: ReplicaId,
        entries: &[Entry],
        before_first_term: Term,
    ) -> Result<(), Violation> {
        let mut prev_term = before_first_term;
        for e in entries {
            let fact = (entry_fingerprint(e), prev_term);
            match self.entry_facts.get(&(e.index, e.term)) {
                Some(existing) if *existing != fact => {
                    return Err(Violation(format!(
                        "Log Matching: replica {id} holds a different entry at index {} term {}",
                        e.index, e.term
                    )));
                }
                Some(_) => {}
                None => {
                    self.entry_facts.insert((e.index, e.term), fact);
                }
            }
            prev_term = e.term;
        }
        Ok(())
    }

    /// Committed entries are facts: they never change.
    fn check_committed(
        &mut self,
        id: ReplicaId,
        entries: &[Entry],
        commit: Index,
        term: Term,
    ) -> Result<(), Violation> {
        for e in entries.iter().filter(|e| e.index <= commit) {
            let fact = (e.term, entry_fingerprint(e), term);
            match self.committed.get(&e.index) {
                Some(existing) if (existing.0, &existing.1) != (fact.0, &fact.1) => {
                    return Err(Violation(format!(
                        "replica {id} commits a different entry at index {} (term {} vs {})",
                        e.index, e.term, existing.0
                    )));
                }
                Some(_) => {}
                None => {
                    self.committed.insert(e.index, fact);
                }
            }
        }
        Ok(())
    }

    /// At most one leader per term.
    pub fn check_election_safety(&mut self, id: ReplicaId, term: Term) -> Result<(), Violation> {
        match self.leaders_by_term.get(&term) {
            Some(&other) if other != id => Err(Violation(format!(
                "Election Safety: replicas {other} and {id} both lead term {term}"
            ))),
            Some(_) => Ok(()),
            None => {
                self.leaders_by_term.insert(term, id);
                Ok(())
            }
        }
    }

    /// A leader never overwrites or deletes entries of its log.
    fn check_leader_append_only(
        &self,
        id: ReplicaId,
        term: Term,
        first: Index,
        log: &[LogFact],
    ) -> Result<(), Violation> {
        let Some(before) = self.leader_logs.get(&(id, term)) else {
            return Ok(());
        };
        for (index, t, fp) in before {
            if *index < first {
                continue;
            }
            let now = log.get((*index - first) as usize);
            if now.map(|(_, nt, nfp)| (nt, nfp)) != Some((t, fp)) {
                return Err(Violation(format!(
                    "Leader Append-Only: leader {id} of term {term} changed or lost its entry at index {index}"
                )));
            }
        }
        Ok(())
    }

    /// Every entry committed in an earlier term is in a leader's log.
    fn check_leader_completeness(
        &self,
        id: ReplicaId,
        term: Term,
        first: Index,
        log: &[LogFact],
    ) -> Result<(), Violation> {
        for (&index, (t, fp, seen_in)) in self.committed.range(first..) {
            if *seen_in >= term {
                continue;
            }
            let found = log.get((index - first) as usize);
            if found.map(|(_, nt, nfp)| (nt, nfp)) != Some((t, fp)) {
                return Err(Violation(format!(
                    "Leader Completeness: leader {id} of term {term} lacks committed entry {index} (term {t})"
                )));
            }
        }
        Ok(())
    }

    /// State Machine Safety: one entry per index worldwide.
    pub fn check_apply(&mut self, id: ReplicaId, entry: &Entry) -> Result<(), Violation> {
        let fingerprint = entry_fingerprint(entry);
        match self.applied.get(&entry.index) {
            Some(existing) if *existing != fingerprint => Err(Violation(format!(
                "State Machine Safety: replica {id} applied a different entry at index {}",
                entry.index
            ))),
            Some(_) => Ok(()),
            None => {
                self.applied.insert(entry.index, fingerprint);
                Ok(())
            }
        }
    }

    /// A configuration change at `index` applied as `outcome` (the new
    /// configuration, or `None` when refused): the same everywhere.
    pub fn check_conf_applied(
        &mut self,
        id: ReplicaId,
        index: Index,
        outcome: Option<&ConfState>,
    ) -> Result<(), Violation> {
        match outcome {
            Some(conf) => {
                if self.confs_refused.contains(&index) {
                    return Err(Violation(format!(
                        "replica {id} applied the change at index {index} that others refused"
                    )));
                }
                match self.confs.get(&index) {
                    Some(existing) if existing != conf => Err(Violation(format!(
                        "replica {id}: configuration after index {index} is {conf:?}, elsewhere {existing:?}"
                    ))),
                    Some(_) => Ok(()),
                    None => {
                        self.confs.insert(index, conf.clone());
                        Ok(())
                    }
                }
            }
            None => {
                if self.confs.contains_key(&index) {
                    return Err(Violation(format!(
                        "replica {id} refused the change at index {index} that others applied"
                    )));
                }
                self.confs_refused.insert(index);
                Ok(())
            }
        }
    }

    /// The configuration in effect at `index`, if every change up to it
    /// was seen applied.
    pub fn conf_at(&self, index: Index) -> Option<&ConfState> {
        self.confs.range(..=index).next_back().map(|(_, c)| c)
    }

    /// A snapshot carries the configuration as of its own index.
    pub fn check_snapshot(&self, id: ReplicaId, snapshot: &Snapshot) -> Result<(), Violation> {
        let index = snapshot.meta.index;
        match self.conf_at(index) {
            Some(conf) if *conf != snapshot.meta.conf_state => Err(Violation(format!(
                "replica {id}: snapshot at index {index} carries configuration {:?}, but at that index it was {conf:?}",
                snapshot.meta.conf_state
            ))),
            _ => Ok(()),
        }
    }
}
