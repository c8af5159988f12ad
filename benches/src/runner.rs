//! A benchmark run: open the target, pre-split, load the records, warm
//! up, drive the workload from `concurrency` client tasks while sampling
//! throughput, then measure the WAL's raw limit and assemble the result.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::keys::{key_name, split_points, Distribution, KeyChooser, KEY_BYTES};
use crate::report::{
    git_revision, LatencyCurve, Load, Machine, NodeDelta, OpStats, Presplit, RunResult, Sample,
    Summary, FORMAT_VERSION,
};
use crate::rng::Rng;
use crate::target::{Client, OpError, Target, TargetSpec};
use crate::wal_limit;
use crate::workload::{OpKind, OpStream, Planned, Workload};

/// Bytes the engine adds around a put's key and value in its log entry
/// (command tag, epoch version, op count, op tag, two lengths).
pub const COMMAND_OVERHEAD_BYTES: usize = 22;

/// When to measure the WAL's raw limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum WalLimitMode {
    /// For workloads where at least half the operations write (A, F,
    /// write-only), against embedded targets (the WAL runs on this
    /// machine's data filesystem; a remote server's disk may differ).
    Auto,
    /// Always (also for remote targets and read-only workloads).
    On,
    Off,
}

/// Everything that defines a run (recorded in the JSON result).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    pub target: String,
    pub workload: Workload,
    pub distribution: Distribution,
    pub records: u64,
    pub value_bytes: usize,
    pub concurrency: usize,
    /// Measured phase length (with `operations` unset).
    pub duration_secs: Option<f64>,
    /// Operations in the measured phase, split evenly over the clients.
    pub operations: Option<u64>,
    pub warmup_secs: f64,
    /// Ranges to pre-split the record key space into (1 = no split).
    pub ranges: u64,
    pub seed: u64,
    /// Longest scan (YCSB E draws 1..=scan_max).
    pub scan_max: u32,
    /// Load the records before the run (off for an already loaded server).
    pub load: bool,
    /// Records per load batch (one atomic write within one range).
    pub load_batch: usize,
    /// Parent directory of the embedded targets' data and the WAL run.
    pub data_dir: PathBuf,
    pub tick_ms: u64,
    /// Raft loops per node of embedded and cluster targets (0: the
    /// engine's default, one per two cores).
    #[serde(default)]
    pub pollers: usize,
    /// Remote requests without a reply after this long fail (`client_timeout`).
    pub request_timeout_ms: u64,
    pub wal_limit: WalLimitMode,
    pub wal_secs: f64,
    pub sample_ms: u64,
}

impl RunConfig {
    /// A small valid configuration (tests, examples).
    pub fn quick(target: &str, workload: Workload) -> RunConfig {
        RunConfig {
            target: target.to_string(),
            workload,
            distribution: workload.default_distribution(),
            records: 1_000,
            value_bytes: 100,
            concurrency: 8,
            duration_secs: None,
            operations: Some(2_000),
            warmup_secs: 0.0,
            ranges: 4,
            seed: 1,
            scan_max: 100,
            load: true,
            load_batch: 100,
            data_dir: std::env::temp_dir(),
            tick_ms: 100,
            pollers: 0,
            request_timeout_ms: 10_000,
            wal_limit: WalLimitMode::Off,
            wal_secs: 1.0,
            sample_ms: 1_000,
        }
    }

    /// Refuse impossible settings, naming the option.
    pub fn validate(&self) -> Result<TargetSpec, String> {
        let spec: TargetSpec = self.target.parse()?;
        if self.records == 0 {
            return Err("--records must be at least 1".into());
        }
        if self.ranges == 0 || self.ranges > self.records {
            return Err(format!(
                "--ranges must be between 1 and --records ({})",
                self.records
            ));
        }
        if self.concurrency == 0 || self.concurrency > 100_000 {
            return Err("--concurrency must be between 1 and 100000".into());
        }
        if self.value_bytes == 0 || self.value_bytes > 8 << 20 {
            return Err("--value-size must be between 1 and 8388608 bytes".into());
        }
        match (self.duration_secs, self.operations) {
            (Some(_), Some(_)) => return Err("give --duration or --operations, not both".into()),
            (Some(d), None) if !(d > 0.0 && d.is_finite()) => {
                return Err("--duration must be positive".into())
            }
            (None, Some(0)) => return Err("--operations must be at least 1".into()),
            (None, None) => return Err("give --duration or --operations".into()),
            _ => {}
        }
        if !(self.warmup_secs >= 0.0 && self.warmup_secs.is_finite()) {
            return Err("--warmup must be zero or positive".into());
        }
        if self.scan_max == 0 {
            return Err("--scan-max must be at least 1".into());
        }
        if self.load_batch == 0 {
            return Err("--load-batch must be at least 1".into());
        }
        if self.tick_ms == 0 || self.sample_ms == 0 {
            return Err("--tick-ms and --sample-ms must be at least 1".into());
        }
        Ok(spec)
    }

    /// Bytes of one write's log entry (the WAL run uses the same size).
    pub fn entry_bytes(&self) -> usize {
        KEY_BYTES + self.value_bytes + COMMAND_OVERHEAD_BYTES
    }
}

/// Where progress goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// A progress bar on a terminal, plain lines every few seconds otherwise.
    Auto,
    Quiet,
}

impl Progress {
    fn say(self, line: &str) {
        if self == Progress::Auto {
            eprintln!("{line}");
        }
    }
}

/// Random values the writes take slices of: incompressible enough that the
/// WAL's lz4 does not flatter the numbers.
struct ValuePool {
    data: Bytes,
    value_bytes: usize,
}

impl ValuePool {
    fn new(seed: u64, value_bytes: usize) -> ValuePool {
        let len = (4usize << 20).max(value_bytes * 16) + value_bytes;
        let mut data = vec![0u8; len];
        Rng::new(seed ^ 0x7661_6C75_6573).fill_alphanumeric(&mut data);
        ValuePool {
            data: Bytes::from(data),
            value_bytes,
        }
    }

    /// Distinct offsets a value may start at.
    fn offsets(&self) -> u64 {
        (self.data.len() - self.value_bytes + 1) as u64
    }

    fn value(&self, offset: u64) -> Bytes {
        let start = (offset % self.offsets()) as usize;
        self.data.slice(start..start + self.value_bytes)
    }
}

const HIST_MAX_US: u64 = 3_600_000_000;

fn new_histogram() -> Histogram<u64> {
    // 1 µs .. 1 h, 3 significant digits.
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).expect("constant histogram bounds are valid")
}

/// Histograms of one shard (client tasks share a few, keeping memory small).
#[derive(Default)]
struct Shard {
    hists: [Option<Histogram<u64>>; 5],
}

struct Shared {
    stop: AtomicBool,
    measure_start: Instant,
    warm_ops: AtomicU64,
    ops: AtomicU64,
    writes: AtomicU64,
    errors: AtomicU64,
    redirects: AtomicU64,
    read_misses: AtomicU64,
    rows_scanned: AtomicU64,
    op_errors: [AtomicU64; 5],
    error_kinds: Mutex<BTreeMap<String, u64>>,
    first_errors: Mutex<Vec<String>>,
    shards: Vec<Mutex<Shard>>,
}

impl Shared {
    fn record(&self, shard: usize, kind: OpKind, micros: u64) {
        let mut s = match self.shards[shard % self.shards.len()].lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        let h = s.hists[kind.index()].get_or_insert_with(new_histogram);
        h.saturating_record(micros.clamp(1, HIST_MAX_US));
    }

    fn error(&self, kind: OpKind, e: &OpError) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.op_errors[kind.index()].fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = self.error_kinds.lock() {
            *m.entry(e.kind.clone()).or_default() += 1;
        }
        if let Ok(mut first) = self.first_errors.lock() {
            if first.len() < 5 {
                first.push(format!("{}: {e}", kind.name()));
            }
        }
    }
}

enum Done {
    Ok,
    Miss,
    Rows(usize),
}

async fn execute(client: &mut Client, plan: &Planned, pool: &ValuePool) -> Result<Done, OpError> {
    let key = key_name(plan.record);
    match plan.kind {
        OpKind::Read => Ok(match client.get(key).await? {
            Some(_) => Done::Ok,
            None => Done::Miss,
        }),
        OpKind::Update | OpKind::Insert => {
            client.put(key, pool.value(plan.value_offset)).await?;
            Ok(Done::Ok)
        }
        OpKind::Scan => {
            let end = key_name(plan.record + plan.scan_len as u64);
            let rows = client.scan(key, end, plan.scan_len as usize).await?;
            Ok(Done::Rows(rows))
        }
        OpKind::ReadModifyWrite => {
            let found = client.get(key.clone()).await?;
            client.put(key, pool.value(plan.value_offset)).await?;
            Ok(if found.is_some() {
                Done::Ok
            } else {
                Done::Miss
            })
        }
    }
}

/// Load records `0..records` in batches that never cross a split point.
async fn load(target: &Target, config: &RunConfig, pool: &Arc<ValuePool>) -> Result<Load, String> {
    let mut bounds = vec![0];
    bounds.extend(split_points(config.records, config.ranges));
    bounds.push(config.records);
    let mut chunks = Vec::new();
    for w in bounds.windows(2) {
        let mut lo = w[0];
        while lo < w[1] {
            let hi = (lo + config.load_batch as u64).min(w[1]);
            chunks.push((lo, hi));
            lo = hi;
        }
    }
    let chunks = Arc::new(chunks);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let loaders = config.concurrency.clamp(1, 32);
    let mut tasks = Vec::new();
    for i in 0..loaders {
        let mut client = target.client(i);
        let (chunks, next, pool) = (chunks.clone(), next.clone(), pool.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(lo, hi)) = chunks.get(n) else {
                    return Ok(());
                };
                let rows: Vec<(Bytes, Bytes)> = (lo..hi)
                    .map(|r| (key_name(r), pool.value(r.wrapping_mul(7919))))
                    .collect();
                // A batch the target refuses as cross-range (a remote server
                // split differently) is written key by key.
                match client.put_batch(rows.clone()).await {
                    Ok(()) => {}
                    Err(e) if e.kind == "cross_range" || e.kind == "crossrange" => {
                        for (k, v) in rows {
                            client.put(k, v).await.map_err(|e| e.to_string())?;
                        }
                    }
                    Err(e) => return Err(format!("loading records {lo}..{hi}: {e}")),
                }
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| format!("loader task: {e}"))??;
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(Load {
        records: config.records,
        secs,
        records_per_sec: config.records as f64 / secs.max(1e-9),
    })
}

fn node_deltas(before: &[flotilla::NodeStats], after: &[flotilla::NodeStats]) -> Vec<NodeDelta> {
    before
        .iter()
        .zip(after)
        .enumerate()
        .map(|(i, (b, a))| NodeDelta {
            node: i as u64 + 1,
            proposals: a.proposals.saturating_sub(b.proposals),
            entries_applied: a.entries_applied.saturating_sub(b.entries_applied),
            wal_writes: a.wal_writes.saturating_sub(b.wal_writes),
            wal_fsyncs: a.wal_fsyncs.saturating_sub(b.wal_fsyncs),
            reads: a.reads.saturating_sub(b.reads),
            scans: a.scans.saturating_sub(b.scans),
        })
        .collect()
}

/// Run the benchmark described by `config`.
pub async fn run(config: &RunConfig, progress: Progress) -> Result<RunResult, String> {
    let spec = config.validate()?;
    let started_unix_secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let tick = Duration::from_millis(config.tick_ms);
    let timeout = Duration::from_millis(config.request_timeout_ms);
    progress.say(&format!("flotilla-bench: opening {spec}"));
    let target = Target::open(&spec, &config.data_dir, tick, config.pollers, timeout).await?;

    // Pre-split at evenly spaced record keys.
    let split_keys: Vec<Bytes> = split_points(config.records, config.ranges)
        .into_iter()
        .map(key_name)
        .collect();
    let t = Instant::now();
    let (refused, first_refusal) = target.presplit(&split_keys).await?;
    let presplit = Presplit {
        ranges: config.ranges,
        secs: t.elapsed().as_secs_f64(),
        refused,
        first_refusal,
    };
    if refused > 0 {
        progress.say(&format!(
            "pre-split: {refused} of {} splits refused (first: {})",
            split_keys.len(),
            presplit.first_refusal.as_deref().unwrap_or("")
        ));
    }

    let pool = Arc::new(ValuePool::new(config.seed, config.value_bytes));
    let load = if config.load {
        progress.say(&format!("loading {} records ...", config.records));
        let l = load(&target, config, &pool).await?;
        progress.say(&format!(
            "loaded {} records in {:.1} s ({:.0} records/s)",
            l.records, l.secs, l.records_per_sec
        ));
        Some(l)
    } else {
        None
    };

    let stats_before = target.node_stats().await;
    let (summary, ops, errors, timeline, curves, first_errors) =
        drive(&target, config, pool, progress).await;
    let stats_after = target.node_stats().await;
    let nodes = node_deltas(&stats_before, &stats_after);
    target.close().await?;
    if !first_errors.is_empty() {
        progress.say(&format!("first errors: {}", first_errors.join(" | ")));
    }

    let embedded = !matches!(spec, TargetSpec::Resp(_));
    let measure_wal = match config.wal_limit {
        WalLimitMode::On => true,
        WalLimitMode::Off => false,
        WalLimitMode::Auto => {
            let mix = config.workload.mix();
            let write_share: f64 = OpKind::ALL
                .iter()
                .filter(|k| k.writes())
                .map(|k| mix.proportion(*k))
                .sum();
            embedded && write_share >= 0.5
        }
    };
    let wal_limit = if measure_wal {
        progress.say(&format!(
            "measuring the WAL's raw group-commit limit ({} writers, {}-byte entries, {:.0} s) ...",
            config.concurrency,
            config.entry_bytes(),
            config.wal_secs
        ));
        let (dir, bytes, writers, secs) = (
            config.data_dir.clone(),
            config.entry_bytes(),
            config.concurrency,
            config.wal_secs,
        );
        let limit =
            tokio::task::spawn_blocking(move || wal_limit::measure(&dir, bytes, writers, secs))
                .await
                .map_err(|e| format!("WAL run: {e}"))??;
        Some(limit)
    } else {
        None
    };
    let wal_ratio = wal_limit
        .as_ref()
        .filter(|w| w.entries_per_sec > 0.0 && summary.writes_per_sec > 0.0)
        .map(|w| summary.writes_per_sec / w.entries_per_sec);

    Ok(RunResult {
        format_version: FORMAT_VERSION,
        tool: format!("flotilla-bench {}", env!("CARGO_PKG_VERSION")),
        git_revision: git_revision(),
        machine: Machine::detect(),
        started_unix_secs,
        config: config.clone(),
        presplit,
        load,
        summary,
        ops,
        errors,
        timeline,
        latency_curves: curves,
        wal_limit,
        wal_ratio,
        nodes,
    })
}

type Driven = (
    Summary,
    Vec<OpStats>,
    BTreeMap<String, u64>,
    Vec<Sample>,
    Vec<LatencyCurve>,
    Vec<String>,
);

/// The warm-up and measured phases.
async fn drive(
    target: &Target,
    config: &RunConfig,
    pool: Arc<ValuePool>,
    progress: Progress,
) -> Driven {
    let clients = config.concurrency;
    let warmup = Duration::from_secs_f64(config.warmup_secs);
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        measure_start: Instant::now() + warmup,
        warm_ops: AtomicU64::new(0),
        ops: AtomicU64::new(0),
        writes: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        redirects: AtomicU64::new(0),
        read_misses: AtomicU64::new(0),
        rows_scanned: AtomicU64::new(0),
        op_errors: Default::default(),
        error_kinds: Mutex::new(BTreeMap::new()),
        first_errors: Mutex::new(Vec::new()),
        shards: (0..16).map(|_| Mutex::new(Shard::default())).collect(),
    });
    let chooser = KeyChooser::new(config.distribution, config.records);
    let mix = config.workload.mix();

    let mut tasks = Vec::with_capacity(clients);
    for c in 0..clients {
        let quota = config
            .operations
            .map(|n| n / clients as u64 + u64::from((c as u64) < n % clients as u64));
        let mut stream = OpStream::new(
            config.seed,
            c as u64,
            clients as u64,
            mix,
            chooser.clone(),
            config.records,
            config.scan_max,
            pool.offsets(),
        );
        let mut client = target.client(c);
        let (shared, pool) = (shared.clone(), pool.clone());
        tasks.push(tokio::spawn(async move {
            let mut measured = 0u64;
            loop {
                if shared.stop.load(Ordering::Relaxed) || quota.is_some_and(|q| measured >= q) {
                    break;
                }
                let plan = stream.next_op();
                let t0 = Instant::now();
                let result = execute(&mut client, &plan, &pool).await;
                let micros = t0.elapsed().as_micros() as u64;
                let redirects = client.take_redirects();
                if t0 < shared.measure_start {
                    shared.warm_ops.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                measured += 1;
                shared.redirects.fetch_add(redirects, Ordering::Relaxed);
                match result {
                    Ok(done) => {
                        shared.record(c, plan.kind, micros);
                        shared.ops.fetch_add(1, Ordering::Relaxed);
                        if plan.kind.writes() {
                            shared.writes.fetch_add(1, Ordering::Relaxed);
                        }
                        match done {
                            Done::Ok => {}
                            Done::Miss => {
                                shared.read_misses.fetch_add(1, Ordering::Relaxed);
                            }
                            Done::Rows(n) => {
                                shared.rows_scanned.fetch_add(n as u64, Ordering::Relaxed);
                            }
                        }
                    }
                    Err(e) => {
                        shared.error(plan.kind, &e);
                        // A broken connection or a stopped node fails
                        // fast: do not spin on it.
                        if matches!(e.kind.as_str(), "io" | "protocol" | "closed") {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            }
        }));
    }

    // Sampler and progress, on this task.
    let total_secs = config.warmup_secs + config.duration_secs.unwrap_or(0.0);
    let bar = match progress {
        Progress::Quiet => ProgressBar::hidden(),
        Progress::Auto => {
            let len = match config.operations {
                Some(n) => n,
                None => (total_secs * 10.0).ceil() as u64,
            };
            let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
            let template = if config.operations.is_some() {
                "{elapsed_precise} [{bar:30}] {pos}/{len} ops  {msg}"
            } else {
                "{elapsed_precise} [{bar:30}] {msg}"
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        }
    };
    let plain = progress == Progress::Auto && bar.is_hidden();
    let interval = Duration::from_millis(config.sample_ms);
    let mut timeline = Vec::new();
    let start = Instant::now();
    let mut last = (shared.measure_start, 0u64, 0u64);
    let mut last_print = start;
    let mut next_sample = shared.measure_start + interval;
    let redraw = Duration::from_millis(200);
    loop {
        // Wake at the next sample boundary or redraw, whichever is first,
        // so samples stay one interval apart however busy the runtime is.
        let wake = next_sample.min(Instant::now() + redraw);
        tokio::time::sleep_until(tokio::time::Instant::from_std(wake)).await;
        let now = Instant::now();
        // (A client task that panicked counts as finished too.)
        if tasks.iter().all(|t| t.is_finished()) {
            break;
        }
        let (ops, errors) = (
            shared.ops.load(Ordering::Relaxed),
            shared.errors.load(Ordering::Relaxed),
        );
        let measuring = now >= shared.measure_start;
        if now >= next_sample {
            next_sample += interval;
            let dt = now.duration_since(last.0).as_secs_f64();
            timeline.push(Sample {
                t_secs: now.duration_since(shared.measure_start).as_secs_f64(),
                ops_per_sec: (ops - last.1) as f64 / dt,
                errors: errors - last.2,
            });
            last = (now, ops, errors);
        }
        let msg = if measuring {
            let rate = timeline.last().map(|s| s.ops_per_sec).unwrap_or(0.0);
            format!("{rate:.0} ops/s, {ops} ops, {errors} errors")
        } else {
            let warm = shared.warm_ops.load(Ordering::Relaxed);
            let rate = warm as f64 / now.duration_since(start).as_secs_f64().max(1e-3);
            format!("warm-up: {rate:.0} ops/s, {warm} ops")
        };
        match config.operations {
            Some(_) => bar.set_position(ops),
            None => bar.set_position((now.duration_since(start).as_secs_f64() * 10.0) as u64),
        }
        bar.set_message(msg.clone());
        if plain && now.duration_since(last_print) >= Duration::from_secs(5) {
            eprintln!(
                "  [{:>5.1} s] {msg}",
                now.duration_since(start).as_secs_f64()
            );
            last_print = now;
        }
        if let Some(d) = config.duration_secs {
            if measuring && now.duration_since(shared.measure_start).as_secs_f64() >= d {
                shared.stop.store(true, Ordering::Relaxed);
            }
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    let end = Instant::now();
    bar.finish_and_clear();
    let secs = end
        .saturating_duration_since(shared.measure_start)
        .as_secs_f64()
        .max(1e-9);
    // The last partial interval, when it is at least half an interval long.
    let (ops, errors) = (
        shared.ops.load(Ordering::Relaxed),
        shared.errors.load(Ordering::Relaxed),
    );
    let dt = end.saturating_duration_since(last.0).as_secs_f64();
    if dt >= interval.as_secs_f64() / 2.0 && ops > last.1 {
        timeline.push(Sample {
            t_secs: secs,
            ops_per_sec: (ops - last.1) as f64 / dt,
            errors: errors - last.2,
        });
    }

    // Merge the shards.
    let mut merged: [Option<Histogram<u64>>; 5] = Default::default();
    for shard in &shared.shards {
        let s = match shard.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        for (i, h) in s.hists.iter().enumerate() {
            if let Some(h) = h {
                let m = merged[i].get_or_insert_with(new_histogram);
                let _ = m.add(h);
            }
        }
    }
    let mut all = new_histogram();
    let mut op_stats = Vec::new();
    let mut curves = Vec::new();
    for kind in OpKind::ALL {
        let errs = shared.op_errors[kind.index()].load(Ordering::Relaxed);
        let h = merged[kind.index()].take();
        if h.is_none() && errs == 0 {
            continue;
        }
        let h = h.unwrap_or_else(new_histogram);
        let _ = all.add(&h);
        op_stats.push(OpStats::from_histogram(kind.name(), &h, errs, secs));
        curves.push(LatencyCurve::from_histogram(kind.name(), &h));
    }
    op_stats.push(OpStats::from_histogram("all", &all, errors, secs));
    let summary = Summary {
        secs,
        warmup_ops: shared.warm_ops.load(Ordering::Relaxed),
        ops,
        ops_per_sec: ops as f64 / secs,
        writes_per_sec: shared.writes.load(Ordering::Relaxed) as f64 / secs,
        errors,
        redirects: shared.redirects.load(Ordering::Relaxed),
        read_misses: shared.read_misses.load(Ordering::Relaxed),
        rows_scanned: shared.rows_scanned.load(Ordering::Relaxed),
    };
    let error_kinds = shared
        .error_kinds
        .lock()
        .map(|m| m.clone())
        .unwrap_or_default();
    let first = shared
        .first_errors
        .lock()
        .map(|f| f.clone())
        .unwrap_or_default();
    (summary, op_stats, error_kinds, timeline, curves, first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validation_names_the_option() {
        let ok = RunConfig::quick("embedded", Workload::A);
        assert!(ok.validate().is_ok());
        let mut c = ok.clone();
        c.ranges = 5_000;
        assert!(c.validate().unwrap_err().contains("--ranges"));
        let mut c = ok.clone();
        c.duration_secs = Some(1.0);
        assert!(c.validate().unwrap_err().contains("not both"));
        let mut c = ok.clone();
        c.target = "nowhere".into();
        assert!(c.validate().unwrap_err().contains("unknown target"));
        let mut c = ok.clone();
        c.concurrency = 0;
        assert!(c.validate().unwrap_err().contains("--concurrency"));
        assert_eq!(ok.entry_bytes(), 16 + 100 + COMMAND_OVERHEAD_BYTES);
    }

    #[test]
    fn values_are_slices_of_the_pool() {
        let pool = ValuePool::new(1, 256);
        let a = pool.value(0);
        let b = pool.value(pool.offsets() - 1);
        assert_eq!((a.len(), b.len()), (256, 256));
        assert_eq!(pool.value(pool.offsets()), a, "offsets wrap");
        assert!(a.iter().all(|c| c.is_ascii_alphanumeric()));
    }
}
