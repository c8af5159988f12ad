//! The `flotilla` command-line tool. `flotilla demo` (what `make run`
//! runs): an embedded single node that writes, reads, scans, splits and
//! merges, printing what it did and how long it took.

use std::time::Instant;

use bytes::Bytes;
use flotilla::{Engine, EngineConfig, Error};

fn usage() -> ! {
    eprintln!("usage: flotilla demo [--data-dir DIR] [--keys N]");
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first() else { usage() };
    if command != "demo" {
        usage();
    }
    let mut data_dir = None;
    let mut keys = 10_000u64;
    let mut rest = args[1..].iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--data-dir" => data_dir = rest.next().cloned(),
            "--keys" => {
                keys = rest
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            _ => usage(),
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(demo(data_dir, keys)) {
        eprintln!("demo failed: {e}");
        std::process::exit(1);
    }
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
