//! Zero-fill ahead of the append position.
//!
//! A preallocated segment (`set_len`) is a hole: the first write to each
//! block allocates it, and the `fdatasync` that follows must commit that
//! allocation through the filesystem journal. On ext4 here that made a
//! group commit's sync ~200 µs idle and ~430 µs with busy CPUs (the
//! journal thread has to be scheduled), against ~130 µs for overwriting
//! blocks that already hold data.
//!
//! So a background thread keeps a window of zeros written (and synced)
//! ahead of where the group commit appends in the active segment. Appends
//! then overwrite allocated, initialised blocks and their sync flushes
//! data only. The zeros cost a second write of every segment byte; set
//! `WalConfig::zero_fill_ahead_bytes` to 0 to trade that back.
//!
//! Safety: the thread only ever writes at or above the append position it
//! was told, below the segment's allocated length, and never while the
//! writer appends into the range it claimed (the writer waits). Zeros past
//! the last record are what a preallocated segment holds anyway, so
//! recovery reads them as the end of the log. Zero-filling is only an
//! optimisation: if it fails, appends go on into holes as before.
//!
//! The thread opens the segment on its own. Linux reports a writeback
//! error once per open file: had its `fdatasync` shared the writer's open
//! file, it could take the error for pages of an appended batch and the
//! writer's next sync would succeed, acknowledging a lost write.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};

/// Bytes written per step: the writer waits at most for one step.
const CHUNK_BYTES: u64 = 1 << 20;

/// The zero-fill thread of one WAL and what it shares with the writer.
pub(crate) struct Prefill {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    ahead: u64,
}

#[derive(Default)]
struct State {
    /// The active segment, or `None` while it is being replaced.
    file: Option<Arc<File>>,
    /// Allocated length: nothing is written at or past it.
    end: u64,
    /// Where the writer's next append goes; nothing below is ever zeroed.
    appended: u64,
    /// Zeros are written (or appends made) up to here.
    filled: u64,
    /// The range a step is writing now.
    claimed: Option<(u64, u64)>,
    stop: bool,
    /// Counters for `WalStats`.
    zeroed_bytes: u64,
    appends_into_holes: u64,
}

impl Prefill {
    /// Starts the thread; `ahead` bytes are kept filled past the append
    /// position.
    pub fn start(ahead: u64) -> std::io::Result<Prefill> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            ahead,
        });
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name("wal-zero-fill".into())
            .spawn(move || worker.run())?;
        Ok(Prefill {
            shared,
            thread: Some(thread),
        })
    }

    /// Points the thread at a new active segment whose appends start at
    /// `appended`, or at none (`path = None`, before the old one is
    /// sealed). Waits for a step in progress to finish first. If the
    /// segment cannot be opened, this one is not zero-filled.
    pub fn retarget(&self, path: Option<&Path>, appended: u64, end: u64) {
        let file = path.and_then(|path| {
            OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|err| {
                    tracing::warn!(path = %path.display(), error = %err, "wal zero-fill cannot open the segment");
                })
                .ok()
                .map(Arc::new)
        });
        let mut state = self.shared.state.lock();
        while state.claimed.is_some() {
            self.shared.changed.wait(&mut state);
        }
        // No step is in flight (waited above), so none can finish on the
        // old segment and move the new one's marks.
        state.file = file;
        state.appended = appended;
        state.filled = appended;
        state.end = end;
        self.shared.changed.notify_all();
    }

    /// Called before appending `[from, to)`: waits if a step is writing
    /// into that range, then moves the floor so no later step goes there.
    pub fn before_append(&self, from: u64, to: u64) {
        let mut state = self.shared.state.lock();
        while state.claimed.is_some_and(|(start, _)| start < to) {
            self.shared.changed.wait(&mut state);
        }
        if state.filled < to {
            // Caught up with the zeros (or none yet): this append allocates.
            if state.file.is_some() && from < state.end {
                state.appends_into_holes += 1;
                metrics::counter!("flotilla_wal_appends_into_holes_total").increment(1);
            }
            state.filled = to;
        }
        state.appended = to;
        if self.shared.next_step(&state).is_some() {
            self.shared.changed.notify_all();
        }
    }

    /// `(bytes zeroed, appends that found no zeros ahead)` so far.
    pub fn counters(&self) -> (u64, u64) {
        let state = self.shared.state.lock();
        (state.zeroed_bytes, state.appends_into_holes)
    }

    /// Blocks until the window ahead of the append position is full (or
    /// the segment's end is reached). For tests.
    pub fn wait_filled(&self) {
        let mut state = self.shared.state.lock();
        while state.claimed.is_some() || self.shared.next_step(&state).is_some() {
            self.shared.changed.wait(&mut state);
        }
    }
}

impl Drop for Prefill {
    fn drop(&mut self) {
        self.shared.state.lock().stop = true;
        self.shared.changed.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Shared {
    /// The range the next step should fill, if the window has room for a
    /// whole step (small steps would cost a sync per group commit) or the
    /// rest of the segment is smaller than one.
    fn next_step(&self, state: &State) -> Option<(u64, u64)> {
        state.file.as_ref()?;
        let from = state.filled.max(state.appended);
        let limit = state.end.min(state.appended.saturating_add(self.ahead));
        let step = CHUNK_BYTES.min(self.ahead);
        (from < limit && (limit - from >= step || limit == state.end))
            .then(|| (from, limit.min(from + step)))
    }

    fn run(&self) {
        let zeros = vec![0u8; CHUNK_BYTES as usize];
        loop {
            let (file, from, to) = {
                let mut state = self.state.lock();
                loop {
                    if state.stop {
                        return;
                    }
                    match (self.next_step(&state), &state.file) {
                        (Some((from, to)), Some(file)) => {
                            let file = file.clone();
                            state.claimed = Some((from, to));
                            break (file, from, to);
                        }
                        _ => self.changed.wait(&mut state),
                    }
                }
            };
            let written = file.write_all_at(&zeros[..(to - from) as usize], from);
            {
                let mut state = self.state.lock();
                state.claimed = None;
                match &written {
                    Ok(()) => {
                        state.filled = state.filled.max(to);
                        state.zeroed_bytes += to - from;
                        metrics::counter!("flotilla_wal_zero_filled_bytes_total")
                            .increment(to - from);
                    }
                    // Give up on this segment; appends go into holes.
                    Err(_) => state.filled = state.end,
                }
                self.changed.notify_all();
            }
            match written {
                // Allocate the blocks now, in this thread, rather than in
                // the next group commit's sync.
                Ok(()) => {
                    if let Err(err) = file.sync_data() {
                        tracing::warn!(error = %err, "wal zero-fill sync failed");
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "wal zero-fill write failed; appends go into unallocated blocks")
                }
            }
        }
    }
}
