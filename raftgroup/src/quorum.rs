//! Pure functions answering "what does a majority say?".

use crate::types::Index;

/// The highest index that a majority of `matched` (one value per voter)
/// has reached. `matched` is reordered.
pub(crate) fn majority_index(matched: &mut [Index]) -> Index {
    if matched.is_empty() {
        // No voters: nothing can be committed (a guard, not a real state).
        return 0;
    }
    matched.sort_unstable();
    // With n voters, the value at position n - (n/2 + 1) from the bottom is
    // held by at least n/2 + 1 voters.
    let quorum = matched.len() / 2 + 1;
    matched[matched.len() - quorum]
}

/// Outcome of counting votes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VoteResult {
    Won,
    Lost,
    Pending,
}

/// Tally `granted` and `rejected` votes among `voters` voters.
pub(crate) fn vote_result(voters: usize, granted: usize, rejected: usize) -> VoteResult {
    let quorum = voters / 2 + 1;
    if granted >= quorum {
        VoteResult::Won
    } else if rejected + quorum > voters {
        VoteResult::Lost
    } else {
        VoteResult::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_index_is_held_by_a_majority() {
        assert_eq!(majority_index(&mut [5]), 5);
        assert_eq!(majority_index(&mut [1, 5, 3]), 3);
        assert_eq!(majority_index(&mut [9, 1, 5, 3]), 3);
        assert_eq!(majority_index(&mut [9, 1, 5, 3, 7]), 5);
    }

    #[test]
    fn votes() {
        assert_eq!(vote_result(3, 2, 0), VoteResult::Won);
        assert_eq!(vote_result(3, 1, 1), VoteResult::Pending);
        assert_eq!(vote_result(3, 1, 2), VoteResult::Lost);
        assert_eq!(vote_result(4, 2, 2), VoteResult::Lost);
        assert_eq!(vote_result(4, 2, 1), VoteResult::Pending);
        assert_eq!(vote_result(1, 1, 0), VoteResult::Won);
    }
}
