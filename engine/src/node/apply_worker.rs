//! The state-store writer thread. The raft thread builds each cycle's
//! apply batch (that is where the checks and the effects are decided) and
//! hands the RocksDB write here; the next cycle's stepping and WAL write
//! run meanwhile on another core. At most one batch is in flight, and the
//! raft thread collects it before it builds the next one, so batches are
//! written in order and every decision sees the state of the one before.

use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, Sender};
use flotilla_storage::state::{ApplyBatch, StateError};

use crate::error::Error;

pub(super) struct ApplyWorker {
    jobs: Option<Sender<ApplyBatch>>,
    done: Receiver<Result<(), StateError>>,
    thread: Option<JoinHandle<()>>,
    in_flight: bool,
}

impl ApplyWorker {
    /// `delay`: a test hook (`EngineConfig::apply_delay`).
    pub fn start(node_id: u64, delay: Duration) -> Result<ApplyWorker, Error> {
        let (jobs, job_rx) = bounded::<ApplyBatch>(1);
        let (done_tx, done) = bounded(1);
        let thread = std::thread::Builder::new()
            .name(format!("flotilla-apply-{node_id}"))
            .spawn(move || {
                for batch in job_rx {
                    if !delay.is_zero() {
                        std::thread::sleep(delay);
                    }
                    if done_tx.send(batch.commit()).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| Error::Storage(format!("cannot start the apply thread: {e}")))?;
        Ok(ApplyWorker {
            jobs: Some(jobs),
            done,
            thread: Some(thread),
            in_flight: false,
        })
    }

    pub fn in_flight(&self) -> bool {
        self.in_flight
    }

    /// Starts writing `batch`. The caller must `wait` before the next.
    pub fn submit(&mut self, batch: ApplyBatch) -> Result<(), Error> {
        debug_assert!(!self.in_flight, "one apply batch in flight at a time");
        let Some(jobs) = self.jobs.as_ref() else {
            return Err(Error::Storage("the apply thread is gone".into()));
        };
        if jobs.send(batch).is_err() {
            return Err(Error::Storage("the apply thread is gone".into()));
        }
        self.in_flight = true;
        Ok(())
    }

    /// The outcome of the batch in flight (`Ok` if there is none).
    pub fn wait(&mut self) -> Result<(), Error> {
        if !self.in_flight {
            return Ok(());
        }
        self.in_flight = false;
        match self.done.recv() {
            Ok(result) => result.map_err(Error::from),
            Err(_) => Err(Error::Storage("the apply thread stopped".into())),
        }
    }
}

impl Drop for ApplyWorker {
    fn drop(&mut self) {
        let _ = self.wait();
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
