//! Opening a node: its storage, the first range of a new cluster, and
//! every local range started in the raft loop that owns it.

use super::*;

impl Node {
    /// Open (or create) the node's storage and start every local range,
    /// each in the loop that owns it: one `Node` per loop of `shards`.
    pub(crate) fn open(
        config: EngineConfig,
        network: Option<Arc<Network>>,
        shards: Shards,
        applied_shared: Arc<RwLock<HashMap<RangeId, u64>>>,
    ) -> Result<Vec<Node>, Error> {
        config.validate()?;
        if config.node_id > 0xFFFF {
            return Err(Error::Config {
                field: "node_id",
                reason: format!("must be below 65536, got {}", config.node_id),
            });
        }
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            Error::Storage(format!("cannot create {}: {e}", config.data_dir.display()))
        })?;
        let store = StateStore::open(config.data_dir.join("state"), config.state.clone())?;
        store.ensure_identity(config.cluster_id, config.node_id)?;
        let wal = Arc::new(Wal::open(config.data_dir.join("wal"), config.wal.clone())?);
        let started = Instant::now();
        let mut nodes: Vec<Node> = (0..shards.count())
            .map(|shard| Node {
                config: config.clone(),
                store: store.clone(),
                wal: wal.clone(),
                peers: BTreeMap::new(),
                shard,
                shards: shards.clone(),
                router: shards.router.clone(),
                parked: Vec::new(),
                fatal: None,
                pulling: HashMap::new(),
                merges: HashMap::new(),
                frozen_since: HashMap::new(),
                auto: AutoSplit::new(started, &config.auto_split),
                holding: false,
                cycle_pending: false,
                membership: HashMap::new(),
                transfers: HashMap::new(),
                unknown_cooldown: HashMap::new(),
                early_votes: HashMap::new(),
                next_context: 1,
                stats: NodeStats::default(),
                started,
                network: network.clone(),
                ticks: 0,
                last_tick_at: started,
                lease_blocked_until: None,
                applied_shared: applied_shared.clone(),
            })
            .collect();
        // The id counter starts at 1: taking id 1 marks the first open.
        if store.allocate_ids(1)? == 1 {
            nodes[0].bootstrap()?;
        }
        let mut metas = Vec::new();
        for range_id in store.range_ids()? {
            let Some(raw) = store.range_descriptor(range_id)? else {
                // A replica being created from a snapshot when the node
                // stopped: the interrupted apply was rolled back and the
                // leader will send the snapshot again.
                tracing::warn!(range_id, "range metadata without a descriptor: not started");
                continue;
            };
            let meta = RangeMeta::decode(&raw)
                .map_err(|e| Error::Storage(format!("range {range_id}: {e}")))?;
            metas.push(meta);
        }
        let placement = shards.placement.clone();
        // A source frozen for a merge starts next to its target.
        for meta in &metas {
            if let Some(frozen) = meta.frozen {
                placement.set(meta.desc.id, placement.shard_of(frozen.target));
            }
        }
        for meta in metas {
            let shard = placement.shard_of(meta.desc.id);
            nodes[shard].start_peer(meta, false, false)?;
        }
        // Logs of ranges this node no longer holds: a crash between
        // retiring a merged range's metadata and dropping its log (they are
        // separate writes) leaves one; it would pin WAL segments forever.
        let orphans: Vec<u64> = wal
            .groups()
            .into_iter()
            .filter(|id| !nodes.iter().any(|n| n.peers.contains_key(id)))
            .collect();
        if !orphans.is_empty() {
            tracing::warn!(
                ?orphans,
                "dropping the logs of ranges this node no longer holds"
            );
            let mut batch = WriteBatch::new();
            for id in orphans {
                batch.remove_group(id);
            }
            wal.write(&batch, true)?;
        }
        tracing::info!(
            node_id = config.node_id,
            ranges = nodes.iter().map(|n| n.peers.len()).sum::<usize>(),
            pollers = nodes.len(),
            "node started"
        );
        Ok(nodes)
    }

    /// A new cluster: the first range covers the key space and lives on
    /// the first three initial members (or all, if fewer). Its id is 1 and
    /// its replica ids are the node ids, so every member derives the same
    /// descriptor without talking to the others; ids allocated later are
    /// at least 2^16 and never collide with these.
    pub(super) fn bootstrap(&mut self) -> Result<(), Error> {
        let mut members = self.config.initial_members.clone();
        if members.is_empty() {
            members.push(self.config.node_id);
        }
        members.sort_unstable();
        members.dedup();
        let hosts: Vec<u64> = members.into_iter().take(3).collect();
        if !hosts.contains(&self.config.node_id) {
            tracing::info!(
                node_id = self.config.node_id,
                "new node: no initial range here"
            );
            return Ok(());
        }
        let range_id = 1;
        let replicas = hosts
            .iter()
            .map(|&node| ReplicaDescriptor {
                replica_id: node,
                node_id: node,
                role: ReplicaRole::Voter,
            })
            .collect();
        let desc = RangeDescriptor::whole_key_space(range_id, replicas);
        let meta = RangeMeta { desc, frozen: None };
        let mut batch = self.store.apply_batch();
        batch.set_descriptor(range_id, &meta.encode());
        batch.set_applied(range_id, BOOTSTRAP_INDEX, BOOTSTRAP_TERM);
        batch.commit()?;
        self.store.sync()?;
        tracing::info!(range_id, ?hosts, "bootstrapped the first range");
        Ok(())
    }

    /// Write the bootstrap state of a new group into the WAL unless it has
    /// some already (a restart after a split that got that far).
    pub(super) fn bootstrap_wal_group(&self, desc: &RangeDescriptor) -> Result<(), Error> {
        let log = self.wal.group(desc.id);
        if log.hard_state().term != 0 || log.truncated_state().0 != 0 {
            return Ok(());
        }
        let voters = desc
            .replicas
            .iter()
            .filter(|r| r.role == ReplicaRole::Voter)
            .map(|r| r.replica_id);
        let mut conf = ConfState::with_voters(voters);
        conf.learners = desc
            .replicas
            .iter()
            .filter(|r| r.role == ReplicaRole::Learner)
            .map(|r| r.replica_id)
            .collect();
        conf.learners.sort_unstable();
        let mut batch = WriteBatch::new();
        batch.install_snapshot(desc.id, BOOTSTRAP_INDEX, BOOTSTRAP_TERM);
        batch.set_conf_state(desc.id, conf);
        batch.set_hard_state(
            desc.id,
            HardState {
                term: BOOTSTRAP_TERM,
                vote: 0,
                commit: BOOTSTRAP_INDEX,
            },
        );
        self.wal.write(&batch, true)?;
        Ok(())
    }

    pub(super) fn start_peer(
        &mut self,
        meta: RangeMeta,
        campaign: bool,
        fresh: bool,
    ) -> Result<(), Error> {
        let range_id = meta.desc.id;
        if meta.frozen.is_some() {
            // Restarted mid-merge: the orphan check settles it if nobody does.
            self.frozen_since.insert(range_id, Instant::now());
        }
        let replica_id: ReplicaId = meta
            .desc
            .replica_on(self.config.node_id)
            .map(|r| r.replica_id)
            .ok_or_else(|| {
                Error::Storage(format!("range {range_id} has no replica on this node"))
            })?;
        self.bootstrap_wal_group(&meta.desc)?;
        // The descriptor is written atomically with the applied index; the
        // WAL's copy of the configuration may lag it after a crash.
        let conf = membership::conf_of(&meta.desc);
        if self.wal.group(range_id).conf_state() != conf {
            let mut batch = WriteBatch::new();
            batch.set_conf_state(range_id, conf);
            self.wal.write(&batch, true)?;
        }
        let applied = self
            .store
            .applied_state(range_id)?
            .map(|s| (s.index, s.term))
            .unwrap_or((BOOTSTRAP_INDEX, BOOTSTRAP_TERM));
        let raft = flotilla_raftgroup::Config {
            id: replica_id,
            applied: applied.0,
            seed: range_id ^ replica_id.rotate_left(17),
            // A range made by a split right now is a new group: no replica
            // of it ever acknowledged a lease, so none needs to sit one out.
            lease_on_start: !fresh,
            ..self.config.raft.clone()
        };
        let mut group = RaftGroup::new(raft, self.wal.group(range_id))?;
        let single_voter = group.conf_state().voters == [replica_id];
        if single_voter || campaign {
            // A single voter elects itself at once; the replica that led
            // the parent of a split campaigns so the new range has a leader
            // without waiting for a timeout.
            let _ = group.campaign();
        }
        // On the node before it is in the map: a loop that finds a range in
        // the map also finds it here (`on_node`).
        self.applied_shared.write().insert(range_id, applied.0);
        // A split's new range is in the map already (its parent's loop put
        // it there; it may not have yet, and then must be the one to).
        if !fresh {
            let mut router = self.router.write();
            if router.map().get(range_id).is_none() {
                router
                    .map_mut()
                    .insert(meta.desc.clone())
                    .map_err(|e| Error::Storage(format!("range map: {e}")))?;
            }
        }
        self.shards.placement.set(range_id, self.shard);
        self.peers.insert(
            range_id,
            Peer {
                meta,
                replica_id,
                group,
                proposals: Default::default(),
                reads_unconfirmed: HashMap::new(),
                reads_confirmed: Vec::new(),
                applied,
                compacted_at: Instant::now(),
                leader_seen: flotilla_raftgroup::NO_REPLICA,
                held: Vec::new(),
                stuck: None,
            },
        );
        // Vote requests that came before the range existed here (a split
        // this node applied after the parent's leader did): a late
        // delivery, which Raft tolerates, instead of an election timeout.
        if let Some(early) = self.early_votes.remove(&range_id) {
            for (from, envelope) in early.messages {
                self.step_messages(from, vec![envelope]);
            }
        }
        Ok(())
    }
}
