//! Errors of the consensus core. They separate "retry elsewhere or later"
//! (not leader, transfer in progress, too much uncommitted data) from
//! "your request is wrong" (bad configuration change) from "storage broke".

use crate::config::ConfigError;
use crate::store::StoreError;
use crate::types::{ConfChangeError, Index, ReplicaId};

/// What went wrong in a call into a Raft group.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Only the leader accepts this; `leader` is the known leader or 0.
    #[error("not the leader (leader hint: replica {leader})")]
    NotLeader { leader: ReplicaId },
    /// No leader is known, so a follower cannot forward the request.
    #[error("no leader known")]
    NoLeader,
    /// A leadership transfer is under way; proposals wait until it ends.
    #[error("leadership transfer to replica {target} in progress")]
    TransferInProgress { target: ReplicaId },
    /// Too many proposed but uncommitted bytes: back off and retry.
    #[error("too many uncommitted bytes ({uncommitted_bytes} >= {limit})")]
    Busy { uncommitted_bytes: u64, limit: u64 },
    /// A new leader must commit an entry of its own term before it changes
    /// membership (the single-server change bug) or serves reads.
    #[error("leader has not yet committed an entry of its own term")]
    LeaderNotReady,
    /// At most one configuration change may be pending per group.
    #[error("a configuration change is still pending (proposed at index {index})")]
    ConfChangePending { index: Index },
    /// The configuration change itself is wrong.
    #[error("invalid configuration change: {0}")]
    ConfChange(#[from] ConfChangeError),
    /// Transfer target or message sender is not a member of the group.
    #[error("replica {0} is not a member of this group")]
    NotMember(ReplicaId),
    /// Leadership cannot be transferred to a learner or to oneself.
    #[error("cannot transfer leadership to replica {0}")]
    InvalidTransferTarget(ReplicaId),
    /// A message was addressed to another replica.
    #[error("message for replica {to} delivered to replica {me}")]
    WrongRecipient { to: ReplicaId, me: ReplicaId },
    /// Compaction would drop entries the state machine has not applied.
    #[error("cannot compact the log to index {index}: only {applied} is applied")]
    CompactBeyondApplied { index: Index, applied: Index },
    /// Compaction to `index` would need the configuration as of `index`,
    /// but a change applied since (at `conf_index`) replaced it.
    #[error("cannot compact the log to index {index}: the configuration changed at index {conf_index} since")]
    CompactAcrossConfChange { index: Index, conf_index: Index },
    /// Reading the persisted log failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The configuration is impossible.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

impl Error {
    /// True when the same request may succeed later or on another replica.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::NotLeader { .. }
                | Error::NoLeader
                | Error::TransferInProgress { .. }
                | Error::Busy { .. }
                | Error::LeaderNotReady
                | Error::ConfChangePending { .. }
                | Error::Store(StoreError::SnapshotTemporarilyUnavailable)
        )
    }
}
