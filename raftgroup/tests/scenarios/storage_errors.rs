//! A log store that fails (m4): the core never guesses past a storage
//! error. It keeps the first one for `store_error()` and acts as if the
//! step had not happened, to be retried.

use std::cell::Cell;
use std::rc::Rc;

use crate::net::*;
use flotilla_raftgroup::{ConfState, Snapshot, StoreError};

/// A [`MemStore`] whose reads fail while `broken` is set.
struct FlakyStore {
    inner: MemStore,
    broken: Rc<Cell<bool>>,
}

impl FlakyStore {
    fn check(&self) -> Result<(), StoreError> {
        if self.broken.get() {
            Err(StoreError::Other("injected read failure".into()))
        } else {
            Ok(())
        }
    }
}

impl LogStore for FlakyStore {
    fn initial_state(&self) -> Result<(HardState, ConfState), StoreError> {
        self.inner.initial_state()
    }
    fn entries(&self, low: Index, high: Index, max_bytes: u64) -> Result<Vec<Entry>, StoreError> {
        self.check()?;
        self.inner.entries(low, high, max_bytes)
    }
    fn term(&self, index: Index) -> Result<Term, StoreError> {
        self.check()?;
        self.inner.term(index)
    }
    fn first_index(&self) -> Result<Index, StoreError> {
        self.check()?;
        self.inner.first_index()
    }
    fn last_index(&self) -> Result<Index, StoreError> {
        self.check()?;
        self.inner.last_index()
    }
    fn snapshot(&self, request_index: Index) -> Result<Snapshot, StoreError> {
        self.check()?;
        self.inner.snapshot(request_index)
    }
}

/// m4: a single voter whose store fails as it wins its election does not
/// lead with a guessed last index (it used to put its no-op at index 1,
/// under the bootstrap snapshot, telling storage to overwrite the log from
/// there). It stays a candidate, reports the error, and leads properly on
/// the next try.
#[test]
fn storage_m4_no_leadership_on_an_unknown_last_index() {
    let broken = Rc::new(Cell::new(false));
    let store = FlakyStore {
        inner: MemStore::new_with_voters([1]),
        broken: broken.clone(),
    };
    let config = Config {
        pre_vote: false,
        ..Config::new(1)
    };
    let mut g = RaftGroup::new(config, store).unwrap();
    broken.set(true);
    g.campaign().unwrap();
    assert!(!g.is_leader(), "no leadership on a failed read");
    assert!(matches!(g.store_error(), Some(StoreError::Other(_))));
    broken.set(false);
    let mut ticks = 0;
    while !g.is_leader() {
        g.tick();
        ticks += 1;
        assert!(ticks < 100, "never leads once the store works");
    }
    let ready = g.ready();
    assert_eq!(
        ready.entries.first().map(|e| e.index),
        Some(BOOTSTRAP_INDEX + 1),
        "the no-op follows the log"
    );
}
