//! End to end: the tool's library against an embedded node, an
//! in-process cluster and an in-process RESP server, for a small op count.
//! Every run must do all its operations with no error and no missing key.

use flotilla_bench::report::{markdown, RunResult};
use flotilla_bench::runner::{run, Progress, RunConfig, WalLimitMode};
use flotilla_bench::workload::Workload;

fn quick(target: &str, workload: Workload, ops: u64, dir: &std::path::Path) -> RunConfig {
    let mut c = RunConfig::quick(target, workload);
    c.operations = Some(ops);
    c.data_dir = dir.to_path_buf();
    c
}

fn assert_clean(r: &RunResult, ops: u64) {
    assert_eq!(r.summary.ops, ops, "{}", r.table());
    assert_eq!(r.summary.errors, 0, "{}", r.table());
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.summary.read_misses, 0, "{}", r.table());
    assert!(r.summary.ops_per_sec > 0.0);
    let all = r.ops.iter().find(|o| o.op == "all").expect("all row");
    assert_eq!(all.count, ops);
    assert!(all.p50_us > 0 && all.p50_us <= all.p99_us && all.p99_us <= all.max_us);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_ycsb_a_json_plot_and_wal_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = quick("embedded", Workload::A, 2_000, dir.path());
    config.wal_limit = WalLimitMode::On;
    config.wal_secs = 0.3;
    let r = run(&config, Progress::Quiet).await.expect("run");
    assert_clean(&r, 2_000);
    let names: Vec<&str> = r.ops.iter().map(|o| o.op.as_str()).collect();
    assert_eq!(names, ["read", "update", "all"]);
    assert_eq!(r.load.as_ref().map(|l| l.records), Some(1_000));
    assert_eq!(r.presplit.refused, 0);
    assert_eq!(r.nodes.len(), 1);
    assert!(r.nodes[0].proposals >= r.ops[1].count);
    let wal = r.wal_limit.as_ref().expect("wal limit measured");
    assert!(wal.entries_per_sec > 0.0);
    assert_eq!(wal.entry_bytes, config.entry_bytes());
    assert!(r.wal_ratio.is_some_and(|x| x > 0.0));
    assert_ne!(r.git_revision, "");
    assert!(r.machine.cores >= 1 && r.machine.memory_bytes > 0);

    // JSON round trip and the documented top-level fields.
    let text = serde_json::to_string_pretty(&r).expect("json");
    let back: RunResult = serde_json::from_str(&text).expect("parse back");
    // (serde_json parses floats to within an ulp; compare what is kept.)
    assert_eq!(back.config, r.config);
    assert_eq!(back.ops.len(), r.ops.len());
    assert_eq!(back.summary.ops, r.summary.ops);
    assert_eq!(back.errors, r.errors);
    assert_eq!(back.timeline.len(), r.timeline.len());
    let value: serde_json::Value = serde_json::from_str(&text).expect("value");
    for field in [
        "config",
        "git_revision",
        "machine",
        "summary",
        "ops",
        "errors",
        "timeline",
        "latency_curves",
        "wal_limit",
        "wal_ratio",
    ] {
        assert!(value.get(field).is_some(), "missing {field}");
    }
    assert_eq!(value["config"]["workload"], "a");
    assert_eq!(value["config"]["distribution"], "zipfian");
    assert_eq!(
        value["machine"]["cores"].as_u64(),
        Some(r.machine.cores as u64)
    );

    let table = r.table();
    assert!(table.contains("p99.9 ms") && table.contains("update") && table.contains("WAL raw"));
    let md = markdown(std::slice::from_ref(&r));
    assert_eq!(md.lines().count(), 3);
    assert!(md.contains("| embedded | ycsb-a | zipfian |"));

    let svg = dir.path().join("a.svg");
    flotilla_bench::plot::plot(&r, &svg).expect("plot");
    let drawn = std::fs::read_to_string(&svg).expect("svg");
    assert!(drawn.starts_with("<svg") && drawn.contains("latency by percentile"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_scans_inserts_and_read_modify_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (workload, ops) in [
        (Workload::E, 400),
        (Workload::D, 1_000),
        (Workload::F, 1_000),
    ] {
        let r = run(
            &quick("embedded", workload, ops, dir.path()),
            Progress::Quiet,
        )
        .await
        .expect("run");
        assert_clean(&r, ops);
        if workload == Workload::E {
            assert!(r.summary.rows_scanned > 0);
            assert!(r.ops.iter().any(|o| o.op == "scan" && o.count > 0));
        }
        if workload == Workload::F {
            assert!(r
                .ops
                .iter()
                .any(|o| o.op == "read-modify-write" && o.count > 0));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_node_cluster_routes_to_leaders() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = quick("cluster", Workload::A, 1_000, dir.path());
    config.tick_ms = 20;
    let r = run(&config, Progress::Quiet).await.expect("run");
    assert_clean(&r, 1_000);
    assert_eq!(r.nodes.len(), 3);
    // Every node applied the updates.
    for n in &r.nodes {
        assert!(n.entries_applied > 0, "{:?}", r.nodes);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp_server_get_set_mset_split_and_scan() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("server");
    let config = flotilla::server::ServerConfig::from_toml(&format!(
        "data_dir = {:?}\n[server]\nlisten = \"127.0.0.1:0\"\n",
        data.display().to_string()
    ))
    .expect("server config");
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(flotilla::server::run(
        config,
        async move {
            let _ = stop_rx.await;
        },
        move |bound| {
            let _ = ready_tx.send(bound.client);
        },
    ));
    let addr = ready_rx.await.expect("server ready");
    let target = format!("resp://{addr}");

    let r = run(
        &quick(&target, Workload::F, 1_000, dir.path()),
        Progress::Quiet,
    )
    .await
    .expect("run F");
    assert_clean(&r, 1_000);
    assert!(r.nodes.is_empty(), "no node counters for a remote target");
    assert!(
        r.wal_limit.is_none(),
        "auto: no WAL run for a remote target"
    );

    // Already split and loaded: the splits are refused and counted.
    let mut e = quick(&target, Workload::E, 300, dir.path());
    e.load = false;
    let r = run(&e, Progress::Quiet).await.expect("run E");
    assert_clean(&r, 300);
    assert_eq!(r.presplit.refused, 3, "{:?}", r.presplit);
    assert!(r.summary.rows_scanned > 0);

    let _ = stop_tx.send(());
    server.await.expect("server task").expect("server run");
}

#[test]
fn command_line_runs_summarizes_and_plots() {
    let bin = env!("CARGO_BIN_EXE_flotilla-bench");
    let dir = tempfile::tempdir().expect("tempdir");
    let help = std::process::Command::new(bin)
        .arg("--help")
        .output()
        .expect("help");
    let help = String::from_utf8_lossy(&help.stdout).to_string();
    for option in [
        "--target",
        "--workload",
        "--distribution",
        "--records",
        "--value-size",
        "--concurrency",
        "--duration",
        "--operations",
        "--warmup",
        "--ranges",
        "--seed",
        "--json",
        "--plot",
        "--wal-limit",
        "summarize",
    ] {
        assert!(help.contains(option), "--help lacks {option}");
    }

    let bad = std::process::Command::new(bin)
        .args(["--operations", "10", "--plot", "x.png"])
        .output()
        .expect("bad plot");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("SVG only"));

    let json = dir.path().join("r.json");
    let out = std::process::Command::new(bin)
        .args([
            "--workload",
            "b",
            "--records",
            "300",
            "--ranges",
            "3",
            "--concurrency",
            "4",
        ])
        .args(["--operations", "300", "--warmup", "0", "-q", "--data-dir"])
        .arg(dir.path())
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ycsb-b (zipfian) on embedded") && stdout.contains("errors: none"));

    let md = std::process::Command::new(bin)
        .arg("summarize")
        .arg(&json)
        .output()
        .expect("summarize");
    assert!(String::from_utf8_lossy(&md.stdout).contains("| embedded | ycsb-b | zipfian | 4 | 3 |"));
    let svg = dir.path().join("r.svg");
    let plot = std::process::Command::new(bin)
        .arg("plot")
        .arg(&json)
        .arg(&svg)
        .output()
        .expect("plot");
    assert!(plot.status.success());
    assert!(svg.exists());
}
