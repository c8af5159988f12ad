//! Reads: linearizable (ReadIndex, or the lease when configured) and stale
//! point reads and multi-range scans, served once the local replica has
//! applied what the read must see.

use super::*;

impl Node {
    pub(super) fn start_get(
        &mut self,
        key: Bytes,
        consistency: Consistency,
        reply: oneshot::Sender<Result<Option<Bytes>, Error>>,
    ) {
        let range_id = match self.peer_for_key(&key) {
            Ok(id) => id,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let waiter = ReadWaiter::Get { key, reply };
        self.start_read(range_id, consistency, waiter);
    }

    pub(super) fn start_scan(
        &mut self,
        start: Bytes,
        end: Bytes,
        limit: usize,
        consistency: Consistency,
        reply: oneshot::Sender<Result<Vec<(Bytes, Bytes)>, Error>>,
    ) {
        if !end.is_empty() && start >= end {
            let _ = reply.send(Ok(Vec::new()));
            return;
        }
        let ranges: Vec<RangeId> = self
            .router
            .read()
            .map()
            .overlapping(&start, &end)
            .map(|r| r.id)
            .collect();
        if let Some(missing) = ranges.iter().find(|id| !self.on_node(**id)) {
            let _ = reply.send(Err(Error::RangeNotFound(format!(
                "range {missing} has no replica here"
            ))));
            return;
        }
        // One more than the ranges: the job cannot finish while its parts
        // are still being handed out.
        let job = Arc::new(ScanJob {
            start,
            end,
            limit,
            waiting: std::sync::atomic::AtomicUsize::new(ranges.len() + 1),
            reply: parking_lot::Mutex::new(Some(reply)),
        });
        for range_id in ranges {
            let waiter = ReadWaiter::Scan { job: job.clone() };
            let part = Msg::ScanPart {
                range_id,
                consistency,
                job: job.clone(),
            };
            match self.whereabouts(range_id) {
                Whereabouts::Elsewhere(owner) => self.forward(owner, part),
                Whereabouts::Arriving(_) => self.park(vec![range_id], part),
                Whereabouts::Here => self.start_read(range_id, consistency, waiter),
            }
        }
        self.scan_part_done(&job);
    }

    /// Route a read: stale reads and lease reads are served when applied
    /// allows; others wait for a ReadIndex answer.
    pub(super) fn start_read(
        &mut self,
        range_id: RangeId,
        consistency: Consistency,
        waiter: ReadWaiter,
    ) {
        if let Some(owner) = self.owner_elsewhere(range_id) {
            // Moved to another loop meanwhile.
            if let ReadWaiter::Scan { job } = waiter {
                let msg = Msg::ScanPart {
                    range_id,
                    consistency,
                    job,
                };
                self.forward(owner, msg);
            } else {
                self.read_failed(
                    waiter,
                    Error::Busy(format!(
                        "range {range_id} is moving between raft loops; retry"
                    )),
                );
            }
            return;
        }
        let Some(peer) = self.peers.get_mut(&range_id) else {
            let error = match &waiter {
                // The scan listed this range, which a merge has since
                // absorbed: its keys are now another range's.
                ReadWaiter::Scan { job } => Error::EpochMismatch {
                    range_id,
                    current: self
                        .router
                        .read()
                        .map()
                        .overlapping(&job.start, &job.end)
                        .cloned()
                        .collect(),
                },
                ReadWaiter::Get { .. } => Error::RangeNotFound(range_id.to_string()),
            };
            self.read_failed(waiter, error);
            return;
        };
        if consistency == Consistency::Stale {
            self.serve_read(waiter);
            return;
        }
        if !peer.group.is_leader() {
            let error = peer.not_leader();
            self.read_failed(waiter, error);
            return;
        }
        if let ReadWaiter::Get { key, .. } = &waiter {
            self.auto.note(range_id, key, 0);
        }
        if self.config.read_mode == ReadMode::Lease && self.lease_clock_ok() {
            let Some(peer) = self.peers.get_mut(&range_id) else {
                return;
            };
            if let Some(index) = peer.group.lease_read_index() {
                peer.reads_confirmed.push((index, waiter));
                self.serve_confirmed_reads(range_id);
                return;
            }
        }
        let context = self.next_context();
        let Some(peer) = self.peers.get_mut(&range_id) else {
            return;
        };
        match peer
            .group
            .read_index(Bytes::copy_from_slice(&context.to_le_bytes()))
        {
            Ok(()) => {
                peer.reads_unconfirmed.insert(context, waiter);
            }
            Err(e) => self.read_failed(waiter, e.into()),
        }
    }

    /// Leases are counted in Raft ticks, which stand still while this
    /// process does (SIGSTOP, a VM pause, a stalled loop) while the other
    /// nodes' clocks run on and elect a new leader. After a gap of more
    /// than two ticks, no lease is trusted for an election timeout of real
    /// time: by then every lease granted before the gap has expired on the
    /// voters' clocks too, and reads go through ReadIndex meanwhile.
    pub(super) fn lease_clock_ok(&mut self) -> bool {
        let now = Instant::now();
        self.note_tick_gap(now);
        self.lease_blocked_until.is_none_or(|until| now >= until)
    }

    /// Start a lease blackout if the loop has not ticked for too long.
    pub(super) fn note_tick_gap(&mut self, now: Instant) {
        if now.duration_since(self.last_tick_at) > self.config.tick * 2 {
            let blackout = self.config.tick * self.config.raft.ticks_election_max;
            self.lease_blocked_until = Some(now + blackout);
        }
    }

    pub(super) fn read_failed(&mut self, waiter: ReadWaiter, error: Error) {
        match waiter {
            ReadWaiter::Get { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            ReadWaiter::Scan { job } => job.fail(error),
        }
    }

    pub(super) fn serve_read(&mut self, waiter: ReadWaiter) {
        match waiter {
            ReadWaiter::Get { key, reply } => {
                self.stats.reads += 1;
                let _ = reply.send(self.store.get(&key).map_err(Error::from));
            }
            ReadWaiter::Scan { job } => self.scan_part_done(&job),
        }
    }

    /// One range of a scan may be read: the last one runs the scan (in
    /// whichever loop that is; the state store is shared).
    pub(super) fn scan_part_done(&mut self, job: &ScanJob) {
        if job
            .waiting
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel)
            != 1
        {
            return;
        }
        let Some(reply) = job.reply.lock().take() else {
            return; // Failed already.
        };
        self.stats.scans += 1;
        let result = self
            .store
            .scan(&job.start, &job.end, job.limit)
            .map_err(Error::from);
        let _ = reply.send(result);
    }

    pub(super) fn serve_confirmed_reads(&mut self, range_id: RangeId) {
        let Some(peer) = self.peers.get_mut(&range_id) else {
            return;
        };
        let applied = peer.applied.0;
        if peer.reads_confirmed.iter().all(|(i, _)| *i > applied) {
            return;
        }
        let (ready, waiting): (Vec<_>, Vec<_>) = peer
            .reads_confirmed
            .drain(..)
            .partition(|(i, _)| *i <= applied);
        peer.reads_confirmed = waiting;
        for (_, waiter) in ready {
            self.serve_read(waiter);
        }
    }
}
