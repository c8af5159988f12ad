//! The `flotilla` command-line tool.
//!
//! - `flotilla demo` (what `make run` runs): an embedded single node that
//!   writes, reads, scans, splits and merges, printing what it did and how
//!   long it took.
//! - `flotilla server`: a node behind the Redis-protocol front end.
//! - `flotilla admin ...`: admin commands against a running server.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, Subcommand};
use flotilla::server::admin::{self, AdminClient};
use flotilla::server::{FollowerRequests, ServerConfig};
use flotilla::{Engine, EngineConfig, Error};

/// Flotilla: a multi-Raft partitioned key-value storage engine.
#[derive(Parser)]
#[command(name = "flotilla", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an embedded single node that writes, reads, scans, splits and
    /// merges, and print what it did and how long it took.
    Demo {
        /// Data directory (default: a fresh directory under the system
        /// temp dir, removed at the end).
        #[arg(long)]
        data_dir: Option<String>,
        /// How many keys to write.
        #[arg(long, default_value_t = 10_000)]
        keys: u64,
    },
    /// Start a node serving the Redis protocol (RESP2). With no config
    /// file, `--data-dir DIR --listen ADDR` starts a single-node cluster
    /// with the default settings. Flags override the file.
    Server(ServerArgs),
    /// Admin commands against a running server.
    Admin(AdminArgs),
}

#[derive(clap::Args)]
struct ServerArgs {
    /// TOML config file (see flotilla.example.toml).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Data directory (WAL and state store).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// RESP listen address (default 127.0.0.1:6379; port 0 picks one).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Prometheus endpoint address (GET /metrics).
    #[arg(long)]
    metrics_listen: Option<std::net::SocketAddr>,
    /// This node's id.
    #[arg(long)]
    node_id: Option<u64>,
    /// The cluster's id (a data directory of another cluster is refused).
    #[arg(long)]
    cluster_id: Option<u64>,
    /// Password clients must AUTH with.
    #[arg(long, env = "FLOTILLA_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Answer requests for ranges led elsewhere with -MOVED instead of
    /// forwarding them to the leader.
    #[arg(long)]
    redirect: bool,
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, default_value = "info")]
    log_level: tracing::Level,
}

#[derive(clap::Args)]
struct AdminArgs {
    /// The server's RESP address.
    #[arg(long, short, default_value = "127.0.0.1:6379")]
    addr: String,
    /// Password, when the server requires one.
    #[arg(long, env = "FLOTILLA_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// Seconds to wait for the server.
    #[arg(long, default_value_t = 30)]
    timeout_secs: u64,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// List the ranges the node holds (id, keys, epoch, its role, term).
    Ranges,
    /// Split the range holding KEY at KEY; prints the new range's id.
    Split { key: String },
    /// Merge range RIGHT into its left neighbour LEFT.
    Merge { left: u64, right: u64 },
    /// Move a range's leadership to its replica on a node; returns once it leads.
    TransferLeader { range: u64, node: u64 },
    /// Add a replica of a range on a node: it joins as a learner, catches up
    /// by snapshot and is promoted to voter; returns once it votes.
    AddReplica { range: u64, node: u64 },
    /// Remove a range's replica from a node (refused for the leader's node,
    /// below the replication factor, or without a quorum left); the node
    /// destroys its copy.
    RemoveReplica { range: u64, node: u64 },
    /// The node's id, addresses and counters.
    Status,
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Demo { data_dir, keys } => run_demo(data_dir, keys),
        Command::Server(args) => run_server(args),
        Command::Admin(args) => run_admin(args),
    };
    std::process::exit(code);
}

fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    }
}

fn run_demo(data_dir: Option<String>, keys: u64) -> i32 {
    if let Err(e) = runtime().block_on(demo(data_dir, keys)) {
        eprintln!("demo failed: {e}");
        return 1;
    }
    0
}

fn run_server(args: ServerArgs) -> i32 {
    tracing_subscriber::fmt()
        .with_max_level(args.log_level)
        .with_writer(std::io::stderr)
        .init();
    let mut config = match &args.config {
        Some(path) => match ServerConfig::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("flotilla server: {e}");
                return 2;
            }
        },
        None => ServerConfig::default(),
    };
    if let Some(d) = args.data_dir {
        config.data_dir = Some(d);
    }
    if let Some(l) = args.listen {
        config.server.listen = Some(l);
    }
    if let Some(m) = args.metrics_listen {
        config.server.metrics_listen = Some(m);
    }
    if let Some(id) = args.node_id {
        config.node_id = id;
    }
    if let Some(id) = args.cluster_id {
        config.cluster_id = id;
    }
    if let Some(p) = args.password {
        config.server.password = Some(p);
    }
    if args.redirect {
        config.server.follower_requests = FollowerRequests::Redirect;
    }
    let result = runtime().block_on(flotilla::server::run(config, shutdown_signal(), |bound| {
        // One line on stdout once every listener is bound: scripts and
        // tests wait for it (and read the ports when 0 was asked for).
        println!(
            "flotilla server ready: resp={} raft={} metrics={}",
            bound.client,
            bound.raft.map_or("-".to_string(), |a| a.to_string()),
            bound.metrics.map_or("-".to_string(), |a| a.to_string()),
        );
    }));
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("flotilla server: {e}");
            1
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutdown signal received");
}

fn run_admin(args: AdminArgs) -> i32 {
    let timeout = Duration::from_secs(args.timeout_secs.max(1));
    let mut client = match AdminClient::connect(&args.addr, args.password.as_deref(), timeout) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("flotilla admin: {e}");
            return 1;
        }
    };
    let (command, shape): (Vec<String>, Shape) = match &args.command {
        AdminCommand::Ranges => (vec!["FLOTILLA.RANGES".into()], Shape::Ranges),
        AdminCommand::Split { key } => (
            vec!["FLOTILLA.SPLIT".into(), key.clone()],
            Shape::Value("new_range_id"),
        ),
        AdminCommand::Merge { left, right } => (
            vec!["FLOTILLA.MERGE".into(), left.to_string(), right.to_string()],
            Shape::Value("result"),
        ),
        AdminCommand::TransferLeader { range, node } => (
            vec![
                "FLOTILLA.TRANSFERLEADER".into(),
                range.to_string(),
                node.to_string(),
            ],
            Shape::Value("result"),
        ),
        AdminCommand::AddReplica { range, node } => (
            vec![
                "FLOTILLA.ADDREPLICA".into(),
                range.to_string(),
                node.to_string(),
            ],
            Shape::Value("result"),
        ),
        AdminCommand::RemoveReplica { range, node } => (
            vec![
                "FLOTILLA.REMOVEREPLICA".into(),
                range.to_string(),
                node.to_string(),
            ],
            Shape::Value("result"),
        ),
        AdminCommand::Status => (vec!["FLOTILLA.STATUS".into()], Shape::Map),
    };
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let reply = match client.call_ok(&command) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("flotilla admin: {e}");
            return 1;
        }
    };
    let value = match shape {
        Shape::Ranges => admin::ranges_json(&reply),
        Shape::Map => admin::to_json(&reply, true),
        Shape::Value(name) => serde_json::json!({ name: admin::to_json(&reply, false) }),
    };
    if args.json {
        println!("{value}");
    } else {
        match shape {
            Shape::Ranges => print!("{}", admin::ranges_table(&value)),
            _ => print!("{}", admin::map_table(&value)),
        }
    }
    0
}

#[derive(Clone, Copy)]
enum Shape {
    Ranges,
    Map,
    Value(&'static str),
}

async fn demo(data_dir: Option<String>, keys: u64) -> Result<(), Error> {
    let temp;
    let dir = match data_dir {
        Some(d) => std::path::PathBuf::from(d),
        None => {
            temp = std::env::temp_dir().join(format!("flotilla-demo-{}", std::process::id()));
            temp
        }
    };
    println!("flotilla demo: a single-node engine in {}", dir.display());
    let started = Instant::now();
    let engine = Engine::open(EngineConfig::new(&dir))?;
    println!(
        "  opened in {:.1} ms: {} range(s)",
        ms(started),
        engine.ranges().await?.len()
    );

    let t = Instant::now();
    let writers = 64;
    let mut tasks = Vec::new();
    let engine = std::sync::Arc::new(engine);
    for w in 0..writers {
        let engine = engine.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while i < keys {
                engine
                    .put(format!("key{i:06}"), format!("value{i}"))
                    .await?;
                i += writers;
            }
            Ok::<(), Error>(())
        }));
    }
    for task in tasks {
        task.await.map_err(|e| Error::Storage(e.to_string()))??;
    }
    let secs = t.elapsed().as_secs_f64();
    println!("  wrote {keys} keys with {writers} concurrent writers in {:.0} ms ({:.0} writes/s, fsync on)", secs * 1e3, keys as f64 / secs);

    let t = Instant::now();
    let value = engine.get("key000042").await?;
    println!(
        "  read key000042 = {:?} (linearizable, {:.2} ms)",
        value.as_deref().map(String::from_utf8_lossy),
        ms(t)
    );

    let t = Instant::now();
    let right = engine.split("key005000").await?;
    println!(
        "  split at key005000 -> new range {right} in {:.2} ms (metadata only, no data copied)",
        ms(t)
    );
    let right2 = engine.split("key007500").await?;
    for r in engine.ranges().await? {
        println!(
            "    range {:>12}  [{:?}, {:?})  epoch v{}",
            r.descriptor.id,
            String::from_utf8_lossy(&r.descriptor.start),
            String::from_utf8_lossy(&r.descriptor.end),
            r.descriptor.epoch.version
        );
    }

    let t = Instant::now();
    let rows = engine
        .scan(
            Bytes::from_static(b"key004998")..Bytes::from_static(b"key005003"),
            100,
        )
        .await?;
    println!(
        "  scan across the split boundary returned {} rows in {:.2} ms: {:?}",
        rows.len(),
        ms(t),
        rows.iter()
            .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
            .collect::<Vec<_>>()
    );

    engine.put("key007777", "written after the split").await?;
    let ranges = engine.ranges().await?;
    let t = Instant::now();
    engine.merge(ranges[1].descriptor.id, right2).await?;
    engine
        .merge(ranges[0].descriptor.id, ranges[1].descriptor.id)
        .await?;
    println!(
        "  merged back into {} range(s) in {:.2} ms",
        engine.ranges().await?.len(),
        ms(t)
    );
    let all = engine.scan(Bytes::new()..Bytes::new(), usize::MAX).await?;
    println!(
        "  full scan after merges: {} keys (expected {}), key007777 = {:?}",
        all.len(),
        keys.max(7778),
        engine
            .get("key007777")
            .await?
            .as_deref()
            .map(String::from_utf8_lossy)
    );

    let stats = engine.stats().await?;
    println!(
        "  stats: {} entries applied, {} WAL writes, {} fsyncs ({:.1} writes per fsync), {} splits, {} merges",
        stats.entries_applied,
        stats.wal_writes,
        stats.wal_fsyncs,
        stats.proposals as f64 / stats.wal_fsyncs.max(1) as f64,
        stats.splits,
        stats.merges
    );
    engine.close().await?;
    println!("  closed; total {:.0} ms", ms(started));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}
