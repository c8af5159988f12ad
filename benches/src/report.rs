//! The result of a run: what the JSON file holds, the table printed at
//! the end, and the markdown summary of several runs.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::runner::RunConfig;
use crate::wal_limit::WalLimit;

/// Version of the JSON layout; bumped when a field changes meaning.
pub const FORMAT_VERSION: u32 = 1;

/// Everything one run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    pub format_version: u32,
    pub tool: String,
    /// `git rev-parse HEAD` where the tool ran (`-dirty` with local
    /// changes outside docs/bench/), or `unknown`.
    pub git_revision: String,
    pub machine: Machine,
    /// Seconds since the Unix epoch when the run started.
    pub started_unix_secs: u64,
    pub config: RunConfig,
    pub presplit: Presplit,
    pub load: Option<Load>,
    pub summary: Summary,
    /// One row per operation kind that ran, then `all`.
    pub ops: Vec<OpStats>,
    /// Failed operations by error kind.
    pub errors: BTreeMap<String, u64>,
    /// Throughput per sampling interval of the measured phase.
    pub timeline: Vec<Sample>,
    /// Latency by percentile, per operation kind (for plots).
    pub latency_curves: Vec<LatencyCurve>,
    /// The WAL's raw group-commit limit (write workloads).
    pub wal_limit: Option<WalLimit>,
    /// End-to-end writes/s divided by the WAL's raw limit.
    pub wal_ratio: Option<f64>,
    /// Counters of the embedded nodes over the measured phase.
    pub nodes: Vec<NodeDelta>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    pub cores: usize,
    pub memory_bytes: u64,
    pub cpu_model: String,
    pub kernel: String,
}

impl Machine {
    /// This machine, from std and /proc (unknown fields stay empty/zero).
    pub fn detect() -> Machine {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Machine {
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0),
            memory_bytes: parse_meminfo_total(&meminfo).unwrap_or(0),
            cpu_model: cpuinfo
                .lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
        }
    }
}

/// `MemTotal` of /proc/meminfo in bytes.
pub fn parse_meminfo_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut parts = line.split_whitespace().skip(1);
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => value.checked_mul(1024),
        Some(_) => None,
    }
}

/// The git revision of the working directory, or `unknown`.
pub fn git_revision() -> String {
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match run(&["rev-parse", "HEAD"]) {
        Some(rev) if !rev.is_empty() => {
            // Benchmark results written by earlier runs of a suite do not
            // make the code dirty.
            let dirty = run(&[
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ":/",
                ":(top,exclude)docs/bench",
            ])
            .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{rev}-dirty")
            } else {
                rev
            }
        }
        _ => "unknown".to_string(),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Presplit {
    pub ranges: u64,
    pub secs: f64,
    /// Splits the target refused (e.g. the key already starts a range).
    pub refused: u64,
    pub first_refusal: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Load {
    pub records: u64,
    pub secs: f64,
    pub records_per_sec: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Length of the measured phase (after warm-up).
    pub secs: f64,
    pub warmup_ops: u64,
    /// Successful operations in the measured phase.
    pub ops: u64,
    pub ops_per_sec: f64,
    /// Successful writes (update, insert, read-modify-write) per second.
    pub writes_per_sec: f64,
    pub errors: u64,
    /// Requests re-sent to another node or after a short wait (routing).
    pub redirects: u64,
    /// Reads of a key that should exist but came back empty.
    pub read_misses: u64,
    pub rows_scanned: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpStats {
    pub op: String,
    pub count: u64,
    pub errors: u64,
    pub ops_per_sec: f64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl OpStats {
    pub fn from_histogram(op: &str, h: &Histogram<u64>, errors: u64, secs: f64) -> OpStats {
        let q = |q: f64| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(q)
            }
        };
        OpStats {
            op: op.to_string(),
            count: h.len(),
            errors,
            ops_per_sec: h.len() as f64 / secs.max(1e-9),
            mean_us: if h.is_empty() { 0.0 } else { h.mean() },
            p50_us: q(0.50),
            p90_us: q(0.90),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: if h.is_empty() { 0 } else { h.max() },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// End of the interval, seconds since the measured phase began.
    pub t_secs: f64,
    pub ops_per_sec: f64,
    pub errors: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyCurve {
    pub op: String,
    /// `(quantile, microseconds)`, quantiles from 0 up to 0.99999.
    pub points: Vec<(f64, u64)>,
}

impl LatencyCurve {
    pub fn from_histogram(op: &str, h: &Histogram<u64>) -> LatencyCurve {
        let mut points = Vec::new();
        if !h.is_empty() {
            // Evenly spaced in -log10(1 - q): 0, 0.1, ... 5 (q = 0.99999).
            for i in 0..=50 {
                let q = 1.0 - 10f64.powf(-(i as f64) / 10.0);
                points.push((q, h.value_at_quantile(q)));
            }
        }
        LatencyCurve {
            op: op.to_string(),
            points,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeDelta {
    pub node: u64,
    pub proposals: u64,
    pub entries_applied: u64,
    pub wal_writes: u64,
    pub wal_fsyncs: u64,
    pub reads: u64,
    pub scans: u64,
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

impl RunResult {
    /// A one-line description of the configuration.
    pub fn headline(&self) -> String {
        let c = &self.config;
        format!(
            "{} ({}) on {}{}: {} clients, {} ranges, {}-byte values, {} records, {:.1} s measured after {:.1} s warm-up, seed {}",
            c.workload.name(),
            c.distribution.name(),
            c.target,
            match c.pollers {
                0 => String::new(),
                n => format!(" ({n} raft loops per node)"),
            },
            c.concurrency,
            c.ranges,
            c.value_bytes,
            c.records,
            self.summary.secs,
            c.warmup_secs,
            c.seed
        )
    }

    /// The table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{}", self.headline());
        if let Some(load) = &self.load {
            let _ = writeln!(
                out,
                "load: {} records in {:.1} s ({:.0} records/s); pre-split into {} ranges in {:.1} s",
                load.records, load.secs, load.records_per_sec, self.presplit.ranges, self.presplit.secs
            );
        }
        let _ = writeln!(
            out,
            "{:<18} {:>10} {:>11} {:>8} {:>8} {:>8} {:>9} {:>9} {:>8}",
            "op", "count", "ops/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "errors"
        );
        for op in &self.ops {
            let _ = writeln!(
                out,
                "{:<18} {:>10} {:>11.1} {:>8} {:>8} {:>8} {:>9} {:>9} {:>8}",
                op.op,
                op.count,
                op.ops_per_sec,
                ms(op.p50_us),
                ms(op.p90_us),
                ms(op.p99_us),
                ms(op.p999_us),
                ms(op.max_us),
                op.errors
            );
        }
        if self.errors.is_empty() {
            let _ = writeln!(out, "errors: none");
        } else {
            let list: Vec<String> = self
                .errors
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            let _ = writeln!(out, "errors: {}", list.join(", "));
        }
        let s = &self.summary;
        let _ = writeln!(
            out,
            "redirects/retries: {}, read misses: {}, rows scanned: {}",
            s.redirects, s.read_misses, s.rows_scanned
        );
        if let Some(w) = &self.wal_limit {
            let _ = writeln!(
                out,
                "WAL raw group-commit limit: {:.0} entries/s ({}-byte entries, {} writers, {:.1} s, {:.1} entries/fsync, same filesystem)",
                w.entries_per_sec, w.entry_bytes, w.writers, w.secs, w.entries_per_fsync
            );
            if let Some(r) = self.wal_ratio {
                let _ = writeln!(
                    out,
                    "end-to-end writes/s {:.0} / WAL limit = {:.2}",
                    s.writes_per_sec, r
                );
            }
        }
        for n in &self.nodes {
            let _ = writeln!(
                out,
                "node {}: {} proposals, {} entries applied, {} WAL writes, {} fsyncs ({:.1} entries applied/fsync), {} reads, {} scans",
                n.node,
                n.proposals,
                n.entries_applied,
                n.wal_writes,
                n.wal_fsyncs,
                n.entries_applied as f64 / n.wal_fsyncs.max(1) as f64,
                n.reads,
                n.scans
            );
        }
        let _ = writeln!(
            out,
            "git {}; {} cores, {:.1} GiB, {}",
            self.git_revision,
            self.machine.cores,
            self.machine.memory_bytes as f64 / (1u64 << 30) as f64,
            self.machine.cpu_model
        );
        out
    }
}

/// A markdown table with one row per run.
pub fn markdown(results: &[RunResult]) -> String {
    let mut out = String::new();
    out.push_str("| target | workload | dist | clients | ranges | value B | ops/s | p50 ms | p99 ms | p99.9 ms | errors | WAL limit entries/s | writes/s ÷ WAL |\n");
    out.push_str("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for r in results {
        let all = r.ops.iter().find(|o| o.op == "all");
        let c = &r.config;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} |",
            c.target,
            c.workload.name(),
            c.distribution.name(),
            c.concurrency,
            c.ranges,
            c.value_bytes,
            r.summary.ops_per_sec,
            all.map(|a| ms(a.p50_us)).unwrap_or_default(),
            all.map(|a| ms(a.p99_us)).unwrap_or_default(),
            all.map(|a| ms(a.p999_us)).unwrap_or_default(),
            r.summary.errors,
            r.wal_limit
                .as_ref()
                .map(|w| format!("{:.0}", w.entries_per_sec))
                .unwrap_or_else(|| "–".into()),
            r.wal_ratio
                .map(|x| format!("{x:.2}"))
                .unwrap_or_else(|| "–".into()),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_is_parsed_in_bytes() {
        let text = "MemTotal:       24582056 kB\nMemFree:         1000 kB\n";
        assert_eq!(parse_meminfo_total(text), Some(24_582_056 * 1024));
        assert_eq!(parse_meminfo_total("nothing"), None);
        assert_eq!(parse_meminfo_total("MemTotal: lots kB"), None);
    }

    #[test]
    fn machine_and_git_never_fail() {
        let m = Machine::detect();
        assert!(m.cores >= 1);
        assert!(!git_revision().is_empty());
    }

    #[test]
    fn stats_from_histogram() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
        for v in 1..=1000u64 {
            h.record(v).expect("record");
        }
        let s = OpStats::from_histogram("read", &h, 2, 2.0);
        assert_eq!(s.count, 1000);
        assert_eq!(s.ops_per_sec, 500.0);
        assert!((499..=501).contains(&s.p50_us));
        assert!((989..=991).contains(&s.p99_us));
        assert_eq!(s.max_us, 1000);
        assert_eq!(s.errors, 2);
        let empty = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
        let e = OpStats::from_histogram("scan", &empty, 0, 1.0);
        assert_eq!((e.count, e.p99_us, e.max_us), (0, 0, 0));
        let curve = LatencyCurve::from_histogram("read", &h);
        assert_eq!(curve.points.len(), 51);
        assert!(curve
            .points
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
    }
}
