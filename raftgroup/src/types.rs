//! The data that crosses the boundary of a Raft group: log entries, the hard
//! state that must be persisted, configurations, snapshots and messages.
//!
//! These types carry no behaviour beyond small helpers; the storage crate
//! persists them and the router crate encodes them for the network.

use bytes::Bytes;

/// Identifies one replica of one group. Never reused within a range: a node
/// that is removed and added again gets a new replica id.
pub type ReplicaId = u64;
/// A Raft term.
pub type Term = u64;
/// A position in the Raft log (the first real entry has index 1).
pub type Index = u64;

/// `0` means "no replica" (no vote cast, no leader known).
pub const NO_REPLICA: ReplicaId = 0;

/// What an entry carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// Opaque application command (may be empty: a new leader's no-op).
    Normal,
    /// A membership change; `data` is a [`ConfChange`] encoded with
    /// [`ConfChange::encode`].
    ConfChange,
}

impl EntryKind {
    /// Stable one-byte code for storage and the wire.
    pub fn to_u8(self) -> u8 {
        match self {
            EntryKind::Normal => 0,
            EntryKind::ConfChange => 1,
        }
    }

    /// Inverse of [`EntryKind::to_u8`]; `None` for an unknown code.
    pub fn from_u8(code: u8) -> Option<Self> {
        match code {
            0 => Some(EntryKind::Normal),
            1 => Some(EntryKind::ConfChange),
            _ => None,
        }
    }
}

/// One Raft log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub term: Term,
    pub index: Index,
    pub kind: EntryKind,
    pub data: Bytes,
}

impl Entry {
    /// A normal entry.
    pub fn new(term: Term, index: Index, data: impl Into<Bytes>) -> Self {
        Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data: data.into(),
        }
    }

    /// Bytes this entry counts for in size budgets (payload plus a fixed
    /// overhead for the header fields).
    pub fn size_bytes(&self) -> u64 {
        self.data.len() as u64 + ENTRY_OVERHEAD_BYTES
    }
}

/// Fixed per-entry overhead used in byte budgets: term, index and kind.
pub const ENTRY_OVERHEAD_BYTES: u64 = 17;

/// The state that must be on stable storage before messages that depend on
/// it are sent (Raft paper, Figure 2: currentTerm, votedFor, plus commit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HardState {
    pub term: Term,
    /// Replica voted for in `term`, or [`NO_REPLICA`].
    pub vote: ReplicaId,
    pub commit: Index,
}

/// The membership of a group: who votes and who only replicates.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfState {
    /// Voting replicas, sorted, no duplicates.
    pub voters: Vec<ReplicaId>,
    /// Non-voting replicas that receive the log, sorted, disjoint from voters.
    pub learners: Vec<ReplicaId>,
}

impl ConfState {
    /// A configuration of the given voters and no learners.
    pub fn with_voters(voters: impl IntoIterator<Item = ReplicaId>) -> Self {
        let mut voters: Vec<ReplicaId> = voters.into_iter().collect();
        voters.sort_unstable();
        voters.dedup();
        ConfState {
            voters,
            learners: Vec::new(),
        }
    }

    /// Is `id` a voter?
    pub fn is_voter(&self, id: ReplicaId) -> bool {
        self.voters.binary_search(&id).is_ok()
    }

    /// Is `id` a learner?
    pub fn is_learner(&self, id: ReplicaId) -> bool {
        self.learners.binary_search(&id).is_ok()
    }

    /// Is `id` a member in any role?
    pub fn contains(&self, id: ReplicaId) -> bool {
        self.is_voter(id) || self.is_learner(id)
    }

    /// Every member, voters first.
    pub fn all(&self) -> impl Iterator<Item = ReplicaId> + '_ {
        self.voters.iter().chain(self.learners.iter()).copied()
    }

    /// The configuration after `change`, or why the change is not allowed.
    /// Only single-server changes exist, so old and new majorities overlap.
    pub fn apply(&self, change: &ConfChange) -> Result<ConfState, ConfChangeError> {
        let mut next = self.clone();
        match *change {
            ConfChange::AddVoter(id) => {
                if id == NO_REPLICA {
                    return Err(ConfChangeError::InvalidReplica);
                }
                if next.is_voter(id) {
                    return Err(ConfChangeError::AlreadyVoter(id));
                }
                next.learners.retain(|&l| l != id);
                insert_sorted(&mut next.voters, id);
            }
            ConfChange::AddLearner(id) => {
                if id == NO_REPLICA {
                    return Err(ConfChangeError::InvalidReplica);
                }
                if next.contains(id) {
                    return Err(ConfChangeError::AlreadyMember(id));
                }
                insert_sorted(&mut next.learners, id);
            }
            ConfChange::Remove(id) => {
                if !next.contains(id) {
                    return Err(ConfChangeError::NotMember(id));
                }
                next.voters.retain(|&v| v != id);
                next.learners.retain(|&l| l != id);
                if next.voters.is_empty() {
                    return Err(ConfChangeError::NoVotersLeft);
                }
            }
        }
        Ok(next)
    }
}

fn insert_sorted(list: &mut Vec<ReplicaId>, id: ReplicaId) {
    if let Err(at) = list.binary_search(&id) {
        list.insert(at, id);
    }
}

/// A single-server membership change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConfChange {
    /// Add a voter, or promote an existing learner to voter.
    AddVoter(ReplicaId),
    /// Add a non-voting learner.
    AddLearner(ReplicaId),
    /// Remove a voter or a learner.
    Remove(ReplicaId),
}

impl ConfChange {
    /// Encodes into the 9-byte payload of an [`EntryKind::ConfChange`] entry.
    pub fn encode(&self) -> Bytes {
        let (code, id) = match *self {
            ConfChange::AddVoter(id) => (0u8, id),
            ConfChange::AddLearner(id) => (1u8, id),
            ConfChange::Remove(id) => (2u8, id),
        };
        let mut buf = Vec::with_capacity(9);
        buf.push(code);
        buf.extend_from_slice(&id.to_le_bytes());
        Bytes::from(buf)
    }

    /// Decodes a payload made by [`ConfChange::encode`].
    pub fn decode(data: &[u8]) -> Result<ConfChange, ConfChangeError> {
        if data.len() != 9 {
            return Err(ConfChangeError::Malformed);
        }
        let mut raw = [0u8; 8];
        raw.copy_from_slice(&data[1..9]);
        let id = u64::from_le_bytes(raw);
        match data[0] {
            0 => Ok(ConfChange::AddVoter(id)),
            1 => Ok(ConfChange::AddLearner(id)),
            2 => Ok(ConfChange::Remove(id)),
            _ => Err(ConfChangeError::Malformed),
        }
    }

    /// Encodes with an application `context` after the 9-byte change (the
    /// engine puts the node that hosts the replica there).
    pub fn encode_with_context(&self, context: &[u8]) -> Bytes {
        let mut buf = Vec::with_capacity(9 + context.len());
        buf.extend_from_slice(&self.encode());
        buf.extend_from_slice(context);
        Bytes::from(buf)
    }

    /// Decodes a payload made by [`ConfChange::encode_with_context`] (or
    /// [`ConfChange::encode`], with an empty context).
    pub fn decode_with_context(data: &[u8]) -> Result<(ConfChange, &[u8]), ConfChangeError> {
        if data.len() < 9 {
            return Err(ConfChangeError::Malformed);
        }
        Ok((ConfChange::decode(&data[..9])?, &data[9..]))
    }

    /// The replica the change is about.
    pub fn replica(&self) -> ReplicaId {
        match *self {
            ConfChange::AddVoter(id) | ConfChange::AddLearner(id) | ConfChange::Remove(id) => id,
        }
    }
}

/// Why a configuration change cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfChangeError {
    #[error("replica id 0 is reserved")]
    InvalidReplica,
    #[error("replica {0} is already a voter")]
    AlreadyVoter(ReplicaId),
    #[error("replica {0} is already a member")]
    AlreadyMember(ReplicaId),
    #[error("replica {0} is not a member")]
    NotMember(ReplicaId),
    #[error("the change would leave no voters")]
    NoVotersLeft,
    #[error("malformed configuration change payload")]
    Malformed,
}

/// Where a snapshot stands in the log and which configuration it carries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SnapshotMeta {
    pub index: Index,
    pub term: Term,
    pub conf_state: ConfState,
}

/// A snapshot as the consensus layer sees it. `data` is opaque: in-memory
/// tests put the state machine in it; the engine leaves it small (a
/// descriptor) and streams the real data through the snapshot scheduler.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    pub meta: SnapshotMeta,
    pub data: Bytes,
}

/// A message between two replicas of the same group. The router adds the
/// range id when it sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub from: ReplicaId,
    pub to: ReplicaId,
    /// The sender's term (0 only for [`MessageBody::ReadIndex`] from a
    /// follower that has none, never otherwise).
    pub term: Term,
    pub body: MessageBody,
}

/// The kinds of messages replicas exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageBody {
    /// Candidate asks for a vote (`pre`: a pre-vote that changes no state).
    /// For a pre-vote, `term` of the message is the term the candidate
    /// would campaign in.
    RequestVote {
        pre: bool,
        last_index: Index,
        last_term: Term,
        /// Set when the leader asked this candidate to take over: voters
        /// then ignore their leader lease.
        transfer: bool,
    },
    /// Answer to [`MessageBody::RequestVote`].
    RequestVoteResponse { pre: bool, reject: bool },
    /// Leader replicates entries following `(prev_index, prev_term)`.
    Append {
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry>,
        commit: Index,
    },
    /// Follower's answer: on success `index` is the last index it now
    /// matches; on rejection `index` is the rejected `prev_index` and
    /// `(hint_index, hint_term)` points the leader at a likely match.
    AppendResponse {
        reject: bool,
        index: Index,
        hint_index: Index,
        hint_term: Term,
    },
    /// Leader's heartbeat. `commit` is capped at what the follower matches.
    /// `seq` numbers the leader's heartbeat rounds in this term: a quorum
    /// of responses echoing `seq` confirms leadership for every read that
    /// began before the round, and starts the leader lease. `quiesce` asks
    /// the follower to stop ticking (the group is idle and caught up).
    Heartbeat {
        commit: Index,
        seq: u64,
        quiesce: bool,
    },
    /// Follower's answer to a heartbeat, echoing `seq`.
    HeartbeatResponse { seq: u64 },
    /// Leader sends a snapshot (metadata; data per [`Snapshot`]).
    InstallSnapshot { snapshot: Snapshot },
    /// Leader tells the transfer target to campaign at once.
    TimeoutNow,
    /// A follower forwards a read request to the leader.
    ReadIndex { context: Bytes },
    /// The leader answers a forwarded read: safe to read once applied up to
    /// `index`. `index == 0` means the leader refused (e.g. it is not yet
    /// able to serve reads); the follower retries later.
    ReadIndexResponse { context: Bytes, index: Index },
    /// For the application, not Raft: the sender's applied configuration
    /// does not include the receiver, which must have been removed without
    /// learning it (it was down or cut off when the removal committed).
    /// Raft ignores it; the application destroys the receiving replica.
    NotMember,
}

impl MessageBody {
    /// A short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            MessageBody::RequestVote { pre: true, .. } => "pre_vote",
            MessageBody::RequestVote { pre: false, .. } => "vote",
            MessageBody::RequestVoteResponse { pre: true, .. } => "pre_vote_response",
            MessageBody::RequestVoteResponse { pre: false, .. } => "vote_response",
            MessageBody::Append { .. } => "append",
            MessageBody::AppendResponse { .. } => "append_response",
            MessageBody::Heartbeat { .. } => "heartbeat",
            MessageBody::HeartbeatResponse { .. } => "heartbeat_response",
            MessageBody::InstallSnapshot { .. } => "snapshot",
            MessageBody::TimeoutNow => "timeout_now",
            MessageBody::NotMember => "not_member",
            MessageBody::ReadIndex { .. } => "read_index",
            MessageBody::ReadIndexResponse { .. } => "read_index_response",
        }
    }
}

/// The role a replica plays in its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

/// Volatile state that the engine wants to observe when it changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoftState {
    pub role: Role,
    /// Known leader, or [`NO_REPLICA`].
    pub leader: ReplicaId,
    pub term: Term,
}

/// Elections this replica took part in since the last [`Ready`], for
/// metrics: role changes can pass between two readies unseen (a single
/// voter goes follower → pre-candidate → candidate → leader in one step).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ElectionEvents {
    /// Pre-vote rounds started (they change no term).
    pub pre_campaigns: u32,
    /// Real elections started (each one a new term).
    pub campaigns: u32,
    /// Elections won.
    pub won: u32,
}

impl ElectionEvents {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// The answer to a ReadIndex request: once the state machine has applied
/// `index`, a read with `context` is linearizable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadState {
    pub index: Index,
    pub context: Bytes,
}
