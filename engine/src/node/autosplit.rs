//! Automatic split by size and by load, and the optional automatic merge
//! of small, cold neighbours. Only leaders decide; every decision goes
//! through the same admin commands an operator uses (split, merge).
//!
//! - Size: writes accepted by a leader are counted per range; after an
//!   eighth of `split_size_bytes` the range is measured off the raft thread
//!   (one measurement at a time per node) and split at its byte-weighted
//!   middle when it is over the limit.
//! - Load: requests per range over `load_window`, with a reservoir sample
//!   of their keys; over `split_load_qps`, split at the sample's median.
//! - Merge (off by default): a measured range under `merge_size_bytes`
//!   absorbs its right neighbour when that one is small too, both are cold
//!   and this node leads both.

use std::collections::HashMap;

use flotilla_storage::state::RangeSize;

use crate::config::AutoSplitConfig;

use super::*;

/// Keys kept per window for the load split's median.
const LOAD_SAMPLES: usize = 64;
/// How often the checker looks at the counters.
const CHECK_EVERY: Duration = Duration::from_secs(1);

use std::time::Duration;

/// One range's counters on its leader.
#[derive(Default)]
pub(super) struct RangeLoad {
    written_since_check: u64,
    window_requests: u64,
    samples: Vec<Bytes>,
    /// Requests per second over the last complete window.
    last_qps: u64,
    /// Bytes at the last measurement, and when.
    last_size: Option<(u64, Instant)>,
    /// Split for size: measure both halves again once the split applies
    /// (a range far over the limit needs several).
    remeasure_halves: bool,
}

/// The node's automatic split/merge state.
pub(super) struct AutoSplit {
    ranges: HashMap<RangeId, RangeLoad>,
    window_started: Instant,
    next_check: Instant,
    measuring: bool,
    rng: u64,
    /// Any automatic split or merge configured.
    enabled: bool,
}

impl AutoSplit {
    pub(super) fn new(now: Instant, config: &AutoSplitConfig) -> AutoSplit {
        AutoSplit {
            enabled: config.split_size_bytes > 0 || config.split_load_qps > 0 || config.merge,
            ranges: HashMap::new(),
            window_started: now,
            next_check: now + CHECK_EVERY,
            measuring: false,
            rng: 0x9e37_79b9_7f4a_7c15,
        }
    }

    /// A request served by this node's leader of `range_id` (nothing to
    /// count when every automatic decision is off: this is the write path).
    pub(super) fn note(&mut self, range_id: RangeId, key: &Bytes, bytes_written: u64) {
        if !self.enabled {
            return;
        }
        let load = self.ranges.entry(range_id).or_default();
        load.written_since_check += bytes_written;
        load.window_requests += 1;
        // Reservoir sampling: every request of the window equally likely.
        if load.samples.len() < LOAD_SAMPLES {
            load.samples.push(key.clone());
        } else {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            let slot = self.rng % load.window_requests;
            if (slot as usize) < LOAD_SAMPLES {
                load.samples[slot as usize] = key.clone();
            }
        }
    }

    pub(super) fn forget(&mut self, range_id: RangeId) {
        self.ranges.remove(&range_id);
    }

    /// Have `range_id` measured at the next check.
    pub(super) fn measure_soon(&mut self, range_id: RangeId) {
        self.ranges.entry(range_id).or_default().written_since_check = u64::MAX / 4;
    }

    /// A split of `left` applied, creating `right`. Returns whether both
    /// halves are to be measured again soon.
    pub(super) fn split_applied(&mut self, left: RangeId, right: RangeId) -> bool {
        let again = self
            .ranges
            .get_mut(&left)
            .is_some_and(|l| std::mem::take(&mut l.remeasure_halves));
        if again {
            for id in [left, right] {
                self.measure_soon(id);
            }
        }
        again
    }
}

/// What a background measurement found.
pub(crate) struct Measured {
    pub range_id: RangeId,
    pub version: u64,
    pub size: Result<RangeSize, String>,
}

impl Node {
    /// Called on every tick; does its work about once a second. Returns
    /// whether it proposed a split.
    pub(super) fn check_auto_split(&mut self, now: Instant) -> bool {
        let config = self.config.auto_split.clone();
        if now < self.auto.next_check {
            return false;
        }
        self.auto.next_check = now + CHECK_EVERY;
        let window_over = now.duration_since(self.auto.window_started) >= config.load_window;
        let window_secs = now
            .duration_since(self.auto.window_started)
            .as_secs_f64()
            .max(1e-3);
        let mut splits = Vec::new();
        let mut measure = Vec::new();
        let ids: Vec<RangeId> = self.auto.ranges.keys().copied().collect();
        for range_id in ids {
            let usable = self.peers.get(&range_id).is_some_and(|p| {
                p.group.is_leader()
                    && p.meta.frozen.is_none()
                    && !self.merges.contains_key(&range_id)
            });
            if !usable {
                self.auto.forget(range_id);
                continue;
            }
            let Some(load) = self.auto.ranges.get_mut(&range_id) else {
                continue;
            };
            if window_over {
                let qps = (load.window_requests as f64 / window_secs) as u64;
                load.last_qps = qps;
                if config.split_load_qps > 0
                    && qps >= config.split_load_qps
                    && load.samples.len() >= 8
                {
                    let mut keys = std::mem::take(&mut load.samples);
                    keys.sort();
                    splits.push((range_id, keys[keys.len() / 2].clone(), "load"));
                }
                load.window_requests = 0;
                load.samples.clear();
            }
            let size_due = config.split_size_bytes > 0
                && load.written_since_check >= (config.split_size_bytes / 8).max(1);
            let merge_due = config.merge
                && load
                    .last_size
                    .is_none_or(|(_, at)| now.duration_since(at) >= config.check_interval);
            if size_due || merge_due {
                measure.push(range_id);
            }
        }
        if window_over {
            self.auto.window_started = now;
        }
        if config.merge {
            // Cold ranges have no counters yet: track every range led here.
            let led: Vec<RangeId> = self
                .peers
                .iter()
                .filter(|(_, p)| p.group.is_leader())
                .map(|(id, _)| *id)
                .collect();
            for range_id in led {
                self.auto.ranges.entry(range_id).or_default();
            }
        }
        let proposed = !splits.is_empty();
        for (range_id, key, why) in splits {
            self.auto_split(range_id, key, why);
        }
        if !self.auto.measuring {
            // The range measured longest ago (or never) first: one at a time.
            let oldest = measure.into_iter().min_by_key(|id| {
                self.auto
                    .ranges
                    .get(id)
                    .and_then(|l| l.last_size)
                    .map(|(_, at)| at)
            });
            if let Some(range_id) = oldest {
                self.start_measure(range_id);
            }
        }
        proposed
    }

    fn auto_split(&mut self, range_id: RangeId, key: Bytes, why: &str) {
        let Some(peer) = self.peers.get(&range_id) else {
            return;
        };
        if !peer.meta.desc.contains_key(&key) || key == peer.meta.desc.start {
            return;
        }
        tracing::info!(range_id, reason = why, key = %crate::error::show_key(&key), "automatic split");
        self.stats.auto_splits += 1;
        let (reply, _ignored) = oneshot::channel();
        self.start_split(key, reply);
        self.auto.forget(range_id);
        if why == "size" {
            self.auto
                .ranges
                .entry(range_id)
                .or_default()
                .remeasure_halves = true;
        }
    }

    /// Measure a range on a helper thread; the answer comes back as
    /// [`Msg::Measured`].
    fn start_measure(&mut self, range_id: RangeId) {
        let Some(peer) = self.peers.get(&range_id) else {
            return;
        };
        if let Some(load) = self.auto.ranges.get_mut(&range_id) {
            load.written_since_check = 0;
        }
        let (start, end) = (peer.meta.desc.start.clone(), peer.meta.desc.end.clone());
        let version = peer.meta.desc.epoch.version;
        let checkpoint = (self.config.auto_split.split_size_bytes / 256).max(64 << 10);
        let store = self.store.clone();
        // Back to this loop, which counts the check as running.
        let mailbox = self.shards.control[self.shard].clone();
        let spawned = std::thread::Builder::new()
            .name("flotilla-measure".into())
            .spawn(move || {
                let size = store
                    .measure(&start, &end, checkpoint)
                    .map_err(|e| e.to_string());
                let _ = mailbox.send(Msg::Measured(Measured {
                    range_id,
                    version,
                    size,
                }));
            });
        match spawned {
            Ok(_) => self.auto.measuring = true,
            Err(e) => tracing::warn!(range_id, error = %e, "cannot start a size check"),
        }
    }

    pub(super) fn measured(&mut self, measured: Measured) {
        self.auto.measuring = false;
        let Measured {
            range_id,
            version,
            size,
        } = measured;
        let size = match size {
            Ok(size) => size,
            Err(e) => {
                tracing::warn!(range_id, error = %e, "size check failed");
                return;
            }
        };
        let config = self.config.auto_split.clone();
        let Some(peer) = self.peers.get(&range_id) else {
            return;
        };
        if !peer.group.is_leader() || peer.meta.desc.epoch.version != version {
            return; // Changed meanwhile: the next check measures again.
        }
        let end = peer.meta.desc.end.clone();
        let right_id = if end.is_empty() {
            None
        } else {
            let router = self.router.read();
            router
                .map()
                .locate(&end)
                .filter(|d| d.start == end)
                .map(|d| d.id)
        }
        .filter(|id| self.on_node(*id));
        // A neighbour in another raft loop is led from here as far as we
        // know; `start_merge` pulls it over and checks.
        let right_neighbour =
            right_id.map(|id| (id, self.peers.get(&id).is_none_or(|p| p.group.is_leader())));
        if let Some(load) = self.auto.ranges.get_mut(&range_id) {
            load.last_size = Some((size.bytes, Instant::now()));
        }
        if config.split_size_bytes > 0 && size.bytes >= config.split_size_bytes {
            if let Some(middle) = size.middle {
                self.auto_split(range_id, middle, "size");
            }
            return;
        }
        if !config.merge || size.bytes >= config.merge_size_bytes {
            return;
        }
        let cold = |load: Option<&RangeLoad>| {
            load.is_some_and(|l| l.last_qps * 10 < config.split_load_qps.max(1))
        };
        let Some((right, right_led_here)) = right_neighbour else {
            return;
        };
        if !self.peers.contains_key(&right) {
            // Measured in another loop: bring it here, where the next
            // check sees both.
            if cold(self.auto.ranges.get(&range_id)) {
                self.pull(right);
            }
            return;
        }
        let right_small = self
            .auto
            .ranges
            .get(&right)
            .and_then(|l| l.last_size)
            .is_some_and(|(bytes, _)| bytes < config.merge_size_bytes);
        if right_led_here
            && right_small
            && cold(self.auto.ranges.get(&range_id))
            && cold(self.auto.ranges.get(&right))
        {
            tracing::info!(range_id, right, "automatic merge of small, cold neighbours");
            self.stats.auto_merges += 1;
            let (reply, _ignored) = oneshot::channel();
            self.start_merge(range_id, right, reply);
            self.auto.forget(right);
        }
    }
}
