//! `flotilla-bench`: load benchmarks for Flotilla. See `--help`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use flotilla_bench::keys::Distribution;
use flotilla_bench::report::{markdown, RunResult};
use flotilla_bench::runner::{self, Progress, RunConfig, WalLimitMode};
use flotilla_bench::workload::Workload;

/// Load benchmark for Flotilla: YCSB A-F, write-only and read-only
/// workloads against an embedded node, an in-process cluster or running
/// servers over RESP; prints throughput and latency percentiles per
/// operation, optionally writes JSON and an SVG plot.
///
/// Examples:
///
///   flotilla-bench --workload write-only --concurrency 256 --ranges 64 --duration 25
///
///   flotilla-bench --target cluster --workload a --duration 20 --json a.json --plot a.svg
///
///   flotilla-bench --target resp://127.0.0.1:6379,127.0.0.1:6380 --workload c
///
///   flotilla-bench summarize results/*.json > results.md
#[derive(Parser, Debug)]
#[command(
    name = "flotilla-bench",
    version,
    args_conflicts_with_subcommands = true,
    verbatim_doc_comment
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a benchmark (the default when no subcommand is given).
    Run(RunArgs),
    /// Print a markdown table of results written with --json.
    Summarize {
        /// JSON result files, one table row each, in the order given.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Draw the SVG plot of a result written with --json.
    Plot {
        /// The JSON result file.
        json: PathBuf,
        /// The SVG file to write.
        out: PathBuf,
    },
}

#[derive(Args, Debug)]
struct RunArgs {
    /// What to drive: `embedded` (one node in this process, fsync on),
    /// `cluster` or `cluster:N` (N nodes in this process over loopback
    /// TCP, default 3), or `resp://host:port[,host:port...]` (running
    /// servers; clients are spread over the addresses).
    #[arg(long, short = 't', default_value = "embedded")]
    target: String,

    /// The workload: a (50% read / 50% update), b (95/5), c (100% read),
    /// d (95% read latest / 5% insert), e (95% scan / 5% insert),
    /// f (50% read / 50% read-modify-write), write-only, read-only.
    #[arg(long, short = 'w', value_enum, default_value = "a")]
    workload: Workload,

    /// Key distribution; default: the workload's (YCSB's zipfian for A-C,
    /// E, F; latest for D; uniform for write-only and read-only).
    #[arg(long, short = 'd', value_enum)]
    distribution: Option<Distribution>,

    /// Records loaded before the run (keys user000000000000, ...).
    #[arg(long, short = 'r', default_value_t = 100_000)]
    records: u64,

    /// Bytes per value.
    #[arg(long, default_value_t = 256)]
    value_size: usize,

    /// Concurrent clients (each one request at a time).
    #[arg(long, short = 'c', default_value_t = 64)]
    concurrency: usize,

    /// Seconds of the measured phase (default 20 unless --operations).
    #[arg(long, conflicts_with = "operations")]
    duration: Option<f64>,

    /// Operations in the measured phase instead of a duration, split
    /// evenly over the clients.
    #[arg(long, short = 'n')]
    operations: Option<u64>,

    /// Seconds of warm-up before measuring (operations run, not recorded).
    #[arg(long, default_value_t = 3.0)]
    warmup: f64,

    /// Ranges to pre-split the record key space into, at evenly spaced
    /// keys, before loading (1: no split).
    #[arg(long, default_value_t = 64)]
    ranges: u64,

    /// Seed of the op sequences: the same seed gives every client the
    /// same sequence of operations and keys.
    #[arg(long, default_value_t = 1)]
    seed: u64,

    /// Longest scan of workload E (lengths are uniform in 1..=N).
    #[arg(long, default_value_t = 100)]
    scan_max: u32,

    /// Do not load the records (the remote server already holds them).
    #[arg(long)]
    no_load: bool,

    /// Records per load batch (one atomic write in one range; MSET remotely).
    #[arg(long, default_value_t = 100)]
    load_batch: usize,

    /// Parent directory for embedded targets' data and the WAL
    /// measurement (a fresh temporary directory inside, removed after).
    #[arg(long, env = "FLOTILLA_BENCH_DIR")]
    data_dir: Option<PathBuf>,

    /// Raft tick of embedded targets, in milliseconds.
    #[arg(long, default_value_t = 100)]
    tick_ms: u64,

    /// Raft loops per node of embedded and cluster targets (0: one per two cores).
    #[arg(long, default_value_t = 0)]
    pollers: usize,

    /// Remote requests with no reply after this long fail as client_timeout.
    #[arg(long, default_value_t = 30_000)]
    request_timeout_ms: u64,

    /// Measure the WAL's raw group-commit limit after the run (same entry
    /// size and concurrency, same filesystem) and print writes/s divided
    /// by it: auto = write workloads on embedded targets.
    #[arg(long, value_enum, default_value = "auto")]
    wal_limit: WalLimitMode,

    /// Seconds of the WAL measurement.
    #[arg(long, default_value_t = 5.0)]
    wal_seconds: f64,

    /// Throughput sampling interval for the timeline, in milliseconds.
    #[arg(long, default_value_t = 1_000)]
    sample_ms: u64,

    /// Write the result as JSON (configuration, git revision, machine,
    /// per-operation percentiles, timeline, WAL limit).
    #[arg(long)]
    json: Option<PathBuf>,

    /// Draw throughput over time and the latency distribution (an .svg
    /// file; SVG only, convert with e.g. `rsvg-convert`).
    #[arg(long)]
    plot: Option<PathBuf>,

    /// No progress output (the final table is still printed).
    #[arg(long, short = 'q')]
    quiet: bool,
}

impl RunArgs {
    fn config(&self) -> RunConfig {
        let duration = match (self.duration, self.operations) {
            (None, None) => Some(20.0),
            (d, _) => d,
        };
        RunConfig {
            target: self.target.clone(),
            workload: self.workload,
            distribution: self
                .distribution
                .unwrap_or_else(|| self.workload.default_distribution()),
            records: self.records,
            value_bytes: self.value_size,
            concurrency: self.concurrency,
            duration_secs: duration,
            operations: self.operations,
            warmup_secs: self.warmup,
            ranges: self.ranges,
            seed: self.seed,
            scan_max: self.scan_max,
            load: !self.no_load,
            load_batch: self.load_batch,
            data_dir: self.data_dir.clone().unwrap_or_else(std::env::temp_dir),
            tick_ms: self.tick_ms,
            pollers: self.pollers,
            request_timeout_ms: self.request_timeout_ms,
            wal_limit: self.wal_limit,
            wal_secs: self.wal_seconds,
            sample_ms: self.sample_ms,
        }
    }
}

fn read_result(path: &PathBuf) -> Result<RunResult, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text)
        .map_err(|e| format!("{}: not a flotilla-bench result: {e}", path.display()))
}

/// Plots are SVG only: plotters' PNG backend would bring in bitmap and
/// font libraries (`rsvg-convert plot.svg -o plot.png` converts).
fn check_plot_path(path: &std::path::Path) -> Result<(), String> {
    match path.extension().and_then(|e| e.to_str()) {
        Some(ext) if ext.eq_ignore_ascii_case("svg") => Ok(()),
        _ => Err(format!(
            "--plot {}: plots are SVG only (name the file .svg)",
            path.display()
        )),
    }
}

fn run(args: &RunArgs) -> Result<(), String> {
    let config = args.config();
    config.validate()?;
    if let Some(path) = &args.plot {
        check_plot_path(path)?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let progress = if args.quiet {
        Progress::Quiet
    } else {
        Progress::Auto
    };
    let result = runtime.block_on(runner::run(&config, progress))?;
    print!("{}", result.table());
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&result).map_err(|e| format!("json: {e}"))?;
        std::fs::write(path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    if let Some(path) = &args.plot {
        flotilla_bench::plot::plot(&result, path)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match &cli.command {
        None => run(&cli.run),
        Some(Command::Run(args)) => run(args),
        Some(Command::Summarize { files }) => files
            .iter()
            .map(read_result)
            .collect::<Result<Vec<_>, _>>()
            .map(|results| print!("{}", markdown(&results))),
        Some(Command::Plot { json, out }) => check_plot_path(out)
            .and_then(|()| read_result(json))
            .and_then(|r| flotilla_bench::plot::plot(&r, out)),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flotilla-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
