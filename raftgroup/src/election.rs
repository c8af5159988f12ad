//! Roles, ticks, elections (§5.2) with pre-vote and check-quorum, and the
//! term rules every incoming message goes through before its handler.

use crate::error::Error;
use crate::group::RaftGroup;
use crate::quorum::{vote_result, VoteResult};
use crate::store::LogStore;
use crate::types::{
    ConfChange, Entry, EntryKind, Index, Message, MessageBody, ReplicaId, Role, Term, NO_REPLICA,
};

impl<S: LogStore> RaftGroup<S> {
    /// Advance logical time by one tick. Tick every replica, quiesced ones
    /// included (a quiesced tick only counts): a quiesced leader repeats
    /// its quiesce heartbeat every `ticks_quiesced_heartbeat`, and a
    /// quiesced follower that heard nothing for twice that wakes up, so a
    /// dead leader of an idle group is replaced without outside help.
    pub fn tick(&mut self) {
        self.tick_now += 1;
        self.ticks_since_leader = self.ticks_since_leader.saturating_add(1);
        if self.quiesced {
            self.tick_quiesced();
            return;
        }
        if self.role == Role::Leader {
            self.tick_leader();
        } else {
            self.ticks_election_elapsed += 1;
            if self.is_promotable() && self.ticks_election_elapsed >= self.ticks_election_randomized
            {
                self.ticks_election_elapsed = 0;
                self.start_election(false);
            }
        }
    }

    fn tick_quiesced(&mut self) {
        self.ticks_quiesced_elapsed += 1;
        let period = self.config.ticks_quiesced_heartbeat;
        if self.role == Role::Leader {
            if self.ticks_quiesced_elapsed >= period {
                self.ticks_quiesced_elapsed = 0;
                self.broadcast_heartbeat(true);
            }
        } else if self.ticks_quiesced_elapsed >= period.saturating_mul(2) {
            // Two refreshes missed: the leader may be gone. Wake up (the
            // election timer runs again) and ask the leader to wake too:
            // if it is alive its heartbeats arrive long before the timer
            // fires, so a lost refresh costs no election.
            let leader = self.leader;
            self.wake();
            if leader != NO_REPLICA && leader != self.id {
                self.send(leader, MessageBody::HeartbeatResponse { seq: 0 });
            }
        }
    }

    fn tick_leader(&mut self) {
        // While it leads, a leader refuses votes as its voters do.
        self.ticks_since_leader = 0;
        self.ticks_heartbeat_elapsed += 1;
        self.ticks_election_elapsed += 1;
        if self.ticks_election_elapsed >= self.config.ticks_election_min {
            self.ticks_election_elapsed = 0;
            if self.config.check_quorum && !self.quorum_recently_active() {
                // A leader cut off from a majority steps down so that its
                // clients go find the real one (and its lease cannot lie).
                let term = self.term;
                self.become_follower(term, NO_REPLICA);
                return;
            }
            self.reprobe_silent_followers();
        }
        if self.transfer_target != NO_REPLICA {
            self.ticks_transfer_elapsed += 1;
            if self.ticks_transfer_elapsed >= self.config.ticks_transfer_max {
                self.transfer_target = NO_REPLICA;
            }
        }
        if self.ticks_heartbeat_elapsed >= self.config.ticks_heartbeat {
            self.ticks_heartbeat_elapsed = 0;
            self.broadcast_heartbeat(false);
        }
    }

    /// Were a quorum of voters heard from since the last check? Resets the
    /// marks for the next round.
    fn quorum_recently_active(&mut self) -> bool {
        let id = self.id;
        let mut active = 0;
        for (&member, pr) in self.progress.iter_mut() {
            if pr.is_learner {
                continue;
            }
            if member == id || pr.recent_active {
                active += 1;
            }
            pr.was_active = pr.recent_active;
            pr.recent_active = member == id;
        }
        active > self.conf.voters.len() / 2
    }

    /// Only voters may campaign.
    pub(crate) fn is_promotable(&self) -> bool {
        self.conf.is_voter(self.id)
    }

    /// Start an election now (used to bootstrap and by tests). Goes through
    /// pre-vote when enabled. Refused while a committed configuration
    /// change is not applied yet.
    pub fn campaign(&mut self) -> Result<(), Error> {
        self.wake();
        if !self.is_promotable() {
            return Err(Error::NotMember(self.id));
        }
        if self.role != Role::Leader {
            if let Some(index) = self.unapplied_conf_change() {
                return Err(Error::ConfChangePending { index });
            }
            self.start_election(false);
        }
        Ok(())
    }

    /// The index of a committed configuration change this replica has not
    /// applied yet, if any (or of the first unreadable entry). A replica
    /// campaigns with the configuration it applied: with a committed
    /// change still unapplied it may count votes of the wrong voters and
    /// win without a committed entry (etcd's `hasUnappliedConfChanges`).
    pub(crate) fn unapplied_conf_change(&mut self) -> Option<Index> {
        let (applied, committed) = (self.log.applied, self.log.committed);
        if applied >= committed {
            return None;
        }
        match self.log.entries(applied + 1, committed + 1, u64::MAX) {
            Ok(entries) => entries
                .iter()
                .find(|e| e.kind == EntryKind::ConfChange)
                .map(|e| e.index),
            Err(e) => {
                self.note_store_error(e);
                Some(applied + 1)
            }
        }
    }

    pub(crate) fn start_election(&mut self, transfer: bool) {
        if self.unapplied_conf_change().is_some() {
            return;
        }
        if self.config.pre_vote && !transfer {
            self.become_pre_candidate();
            self.request_votes(true, false);
        } else {
            self.become_candidate();
            self.request_votes(false, transfer);
        }
    }

    fn request_votes(&mut self, pre: bool, transfer: bool) {
        let term = if pre { self.term + 1 } else { self.term };
        // Our own vote counts first; a single voter wins at once.
        self.votes.insert(self.id, true);
        if self.tally() == VoteResult::Won {
            if pre {
                self.become_candidate();
                self.request_votes(false, transfer);
            } else {
                self.become_leader();
            }
            return;
        }
        let (last_index, last_term) = match (self.log.last_index(), self.log.last_term()) {
            (Ok(i), Ok(t)) => (i, t),
            (Err(e), _) | (_, Err(e)) => {
                // Without our last entry no vote can be asked for; the
                // election times out and is retried.
                self.note_store_error(e);
                return;
            }
        };
        let voters: Vec<ReplicaId> = self
            .conf
            .voters
            .iter()
            .copied()
            .filter(|&v| v != self.id)
            .collect();
        for voter in voters {
            self.send_with_term(
                voter,
                term,
                MessageBody::RequestVote {
                    pre,
                    last_index,
                    last_term,
                    transfer,
                },
            );
        }
    }

    fn tally(&self) -> VoteResult {
        let mut granted = 0;
        let mut rejected = 0;
        for voter in &self.conf.voters {
            match self.votes.get(voter) {
                Some(true) => granted += 1,
                Some(false) => rejected += 1,
                None => {}
            }
        }
        vote_result(self.conf.voters.len(), granted, rejected)
    }

    fn reset(&mut self, term: Term) {
        if self.term != term {
            self.term = term;
            self.vote = NO_REPLICA;
        }
        self.leader = NO_REPLICA;
        self.ticks_election_elapsed = 0;
        self.ticks_heartbeat_elapsed = 0;
        self.ticks_election_randomized = self.rng.in_range(
            self.config.ticks_election_min,
            self.config.ticks_election_max,
        );
        self.votes.clear();
        self.transfer_target = NO_REPLICA;
        self.ticks_transfer_elapsed = 0;
        self.lease_revoked = false;
        self.drop_pending_reads();
        self.progress.clear();
        self.broadcast_due = false;
    }

    pub(crate) fn become_follower(&mut self, term: Term, leader: ReplicaId) {
        self.reset(term);
        self.role = Role::Follower;
        self.leader = leader;
    }

    fn become_pre_candidate(&mut self) {
        // A pre-candidate changes neither term nor vote: a node that
        // cannot win never disturbs the others.
        self.votes.clear();
        self.drop_pending_reads();
        self.progress.clear();
        self.transfer_target = NO_REPLICA;
        self.role = Role::PreCandidate;
        self.leader = NO_REPLICA;
        self.election_events.pre_campaigns += 1;
    }

    fn become_candidate(&mut self) {
        let term = self.term + 1;
        self.reset(term);
        self.vote = self.id;
        self.role = Role::Candidate;
        self.election_events.campaigns += 1;
    }

    pub(crate) fn become_leader(&mut self) {
        let last = match self.log.last_index() {
            Ok(last) => last,
            Err(e) => {
                // Leading with a guessed last index would put the no-op
                // (and every proposal) at the wrong place. Stay candidate:
                // the election times out and is retried.
                self.note_store_error(e);
                return;
            }
        };
        let term = self.term;
        self.reset(term);
        self.role = Role::Leader;
        self.leader = self.id;
        self.election_events.won += 1;
        self.uncommitted_bytes = 0;
        self.heartbeat_seq = 0;
        self.heartbeat_seq_ticks.clear();
        let members: Vec<(ReplicaId, bool)> = self
            .conf
            .voters
            .iter()
            .map(|&v| (v, false))
            .chain(self.conf.learners.iter().map(|&l| (l, true)))
            .collect();
        for (member, is_learner) in members {
            let mut pr = self.new_progress(last + 1, is_learner);
            if member == self.id {
                pr.matched = self.log.persisted_index();
                pr.become_replicate();
            }
            self.progress.insert(member, pr);
        }
        // No configuration change until everything before this term is
        // known committed: the new leader may hold an uncommitted one.
        self.pending_conf_index = last;
        // The no-op of the new term commits everything before it (§5.4.2).
        self.log.append(&[Entry {
            term,
            index: last + 1,
            kind: EntryKind::Normal,
            data: bytes::Bytes::new(),
        }]);
        self.broadcast_due = true;
    }

    /// Feed a message from another replica of this group.
    pub fn step(&mut self, message: Message) -> Result<(), Error> {
        if message.to != self.id {
            return Err(Error::WrongRecipient {
                to: message.to,
                me: self.id,
            });
        }
        if matches!(message.body, MessageBody::NotMember) {
            // For the application, not for Raft: no term rules, no wake.
            return Ok(());
        }
        if !matches!(message.body, MessageBody::Heartbeat { quiesce: true, .. }) {
            self.wake();
        }
        if message.term > self.term {
            if !self.accept_higher_term(&message) {
                return Ok(());
            }
        } else if message.term < self.term && !matches!(message.body, MessageBody::ReadIndex { .. })
        {
            self.answer_stale_term(&message);
            return Ok(());
        }
        match &message.body {
            MessageBody::RequestVote { .. } => self.handle_request_vote(&message),
            MessageBody::RequestVoteResponse { pre, reject } => {
                self.handle_vote_response(message.from, *pre, *reject);
                Ok(())
            }
            _ => match self.role {
                Role::Leader => self.step_leader(message),
                Role::Candidate | Role::PreCandidate => self.step_candidate(message),
                Role::Follower => self.step_follower(message),
            },
        }
    }

    /// A message from a higher term. Returns whether to go on handling it.
    fn accept_higher_term(&mut self, message: &Message) -> bool {
        match message.body {
            MessageBody::RequestVote { pre, transfer, .. } => {
                // While we hear from a leader, ignore vote requests: a
                // node that was partitioned must not depose a healthy
                // leader (unless the leader itself asked for the handover).
                // A replica that just (re)started counts as in lease too:
                // it may have acknowledged a leader's lease before the
                // restart and must not help elect another within it.
                let in_lease = self.config.check_quorum
                    && self.ticks_since_leader < self.config.ticks_election_min;
                if in_lease && !transfer {
                    return false;
                }
                if !pre {
                    // A newer term, but the election timer only starts
                    // over if we grant the vote (§5.2): a candidate that
                    // cannot win (its log is behind) and campaigns again
                    // and again must not keep the others from ever timing
                    // out, which a fast clock makes it do.
                    let elapsed = self.ticks_election_elapsed;
                    self.become_follower(message.term, NO_REPLICA);
                    self.ticks_election_elapsed = elapsed;
                }
                true
            }
            MessageBody::RequestVoteResponse {
                pre: true,
                reject: false,
            } => {
                // Granted pre-votes carry the term we would campaign in.
                true
            }
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. } => {
                self.become_follower(message.term, message.from);
                true
            }
            _ => {
                self.become_follower(message.term, NO_REPLICA);
                true
            }
        }
    }

    /// A message from an older term: mostly ignored, but a stale leader is
    /// told the new term (with check-quorum or pre-vote it would otherwise
    /// never learn it from us), and a pre-candidate is told it lost.
    fn answer_stale_term(&mut self, message: &Message) {
        match message.body {
            MessageBody::Append { .. } | MessageBody::Heartbeat { .. }
                if self.config.check_quorum || self.config.pre_vote =>
            {
                self.send_with_term(
                    message.from,
                    self.term,
                    MessageBody::AppendResponse {
                        reject: false,
                        index: 0,
                        hint_index: 0,
                        hint_term: 0,
                    },
                );
            }
            MessageBody::RequestVote { pre: true, .. } => {
                self.send_with_term(
                    message.from,
                    self.term,
                    MessageBody::RequestVoteResponse {
                        pre: true,
                        reject: true,
                    },
                );
            }
            MessageBody::ReadIndexResponse { ref context, .. } => {
                // Our term moved on since we forwarded the read: retry it.
                self.reads_dropped.push(context.clone());
            }
            _ => {}
        }
    }

    fn handle_request_vote(&mut self, message: &Message) -> Result<(), Error> {
        let MessageBody::RequestVote {
            pre,
            last_index,
            last_term,
            ..
        } = message.body
        else {
            return Ok(());
        };
        let can_vote = self.vote == message.from
            || (self.vote == NO_REPLICA && self.leader == NO_REPLICA)
            || (pre && message.term > self.term);
        if can_vote && self.log.is_up_to_date(last_index, last_term)? {
            // Answer with the term asked about, so a pre-candidate can
            // count it and a candidate sees its own term.
            self.send_with_term(
                message.from,
                message.term,
                MessageBody::RequestVoteResponse { pre, reject: false },
            );
            if !pre {
                self.ticks_election_elapsed = 0;
                self.vote = message.from;
            }
        } else {
            self.send_with_term(
                message.from,
                self.term,
                MessageBody::RequestVoteResponse { pre, reject: true },
            );
        }
        Ok(())
    }

    fn handle_vote_response(&mut self, from: ReplicaId, pre: bool, reject: bool) {
        let expected = match self.role {
            Role::PreCandidate => true,
            Role::Candidate => false,
            _ => return,
        };
        if pre != expected {
            return;
        }
        self.votes.insert(from, !reject);
        match self.tally() {
            VoteResult::Won => {
                if pre {
                    self.become_candidate();
                    self.request_votes(false, false);
                } else {
                    self.become_leader();
                }
            }
            VoteResult::Lost => {
                let term = self.term;
                self.become_follower(term, NO_REPLICA);
            }
            VoteResult::Pending => {}
        }
    }

    fn step_candidate(&mut self, message: Message) -> Result<(), Error> {
        match message.body {
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. } => {
                // A leader exists in our term: follow it.
                let term = self.term;
                self.become_follower(term, message.from);
                self.step_follower(message)
            }
            MessageBody::ReadIndex { context } => {
                // No leader to pass it to: the asker retries elsewhere.
                self.send(
                    message.from,
                    MessageBody::ReadIndexResponse { context, index: 0 },
                );
                Ok(())
            }
            MessageBody::ReadIndexResponse { context, .. } => {
                self.reads_dropped.push(context);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn step_follower(&mut self, message: Message) -> Result<(), Error> {
        match message.body {
            MessageBody::Append { .. } => {
                self.heard_leader(message.from);
                self.handle_append(message)
            }
            MessageBody::Heartbeat { .. } => {
                self.heard_leader(message.from);
                self.handle_heartbeat(message)
            }
            MessageBody::InstallSnapshot { .. } => {
                self.heard_leader(message.from);
                self.handle_snapshot(message)
            }
            MessageBody::TimeoutNow => {
                if self.is_promotable() {
                    // The leader hands over: campaign now, skipping pre-vote
                    // and the voters' lease.
                    self.start_election(true);
                }
                Ok(())
            }
            MessageBody::ReadIndex { context } => {
                // A peer asked us thinking we lead; pass it on if we can,
                // or tell it to retry elsewhere.
                if self.leader != NO_REPLICA {
                    let leader = self.leader;
                    self.send(leader, MessageBody::ReadIndex { context });
                } else {
                    self.send(
                        message.from,
                        MessageBody::ReadIndexResponse { context, index: 0 },
                    );
                }
                Ok(())
            }
            MessageBody::ReadIndexResponse { context, index } => {
                self.handle_read_index_response(context, index);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn step_leader(&mut self, message: Message) -> Result<(), Error> {
        match message.body {
            MessageBody::AppendResponse { .. } => self.handle_append_response(message),
            MessageBody::HeartbeatResponse { seq } => {
                self.handle_heartbeat_response(message.from, seq);
                Ok(())
            }
            MessageBody::ReadIndex { context } => {
                self.handle_read_index_request(message.from, context);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// A message from the leader of our term: the election timer and the
    /// voter's lease start over.
    fn heard_leader(&mut self, leader: ReplicaId) {
        self.ticks_election_elapsed = 0;
        self.ticks_since_leader = 0;
        self.leader = leader;
    }

    /// Applies to roles a committed configuration change that names us.
    pub(crate) fn removed_self(&mut self) {
        if self.role == Role::Leader {
            // Hand over to the most caught-up voter so the group does not
            // wait a whole election timeout.
            let best = self
                .progress
                .iter()
                .filter(|(&id, pr)| id != self.id && !pr.is_learner && self.conf.is_voter(id))
                .max_by_key(|(_, pr)| pr.matched)
                .map(|(&id, _)| id);
            // Tell everyone the commit index first: a remaining voter
            // that never learns that the removal committed campaigns under
            // the old configuration, which counts our vote.
            self.broadcast_append();
            if let Some(target) = best {
                self.send(target, MessageBody::TimeoutNow);
            }
        }
        let term = self.term;
        self.become_follower(term, NO_REPLICA);
    }

    /// Used when a change is applied: keeps roles coherent.
    pub(crate) fn after_conf_change(&mut self, change: &ConfChange) {
        if change.replica() == self.id && !self.conf.contains(self.id) {
            self.removed_self();
        }
    }
}
