//! How long a new replica takes to catch up a large range: a 4-node
//! in-process cluster over loopback TCP (the first range lives on nodes
//! 1..=3), `CATCHUP_BENCH_MIB` MiB (1,024 by default) loaded into range 1,
//! then `add_replica(1, 4)` timed until node 4 is a voter (learner,
//! snapshot, promotion). The load rate through Raft is printed as the peer.
//!
//! `cargo run --release --bin bench-catchup` (with the workspace's target dir).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use flotilla::{Cluster, WriteOp};

const VALUE_BYTES: usize = 64 << 10;
const VALUES_PER_BATCH: usize = 16;
const WRITERS: usize = 4;

fn main() {
    let mib: usize = std::env::var("CATCHUP_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    if std::env::var_os("FLOTILLA_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .try_init();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    rt.block_on(async {
        let mut cluster = Cluster::start_with(4, dir.path(), Duration::from_millis(100), |c| {
            c.log_compact_entries = 1000;
            c.request_timeout = Duration::from_secs(60);
        })
        .expect("cluster");
        cluster.put("warm-up", "x").await.expect("first write");
        let leader = cluster.leader_of(b"").await.expect("a leader");
        let values = mib * (1 << 20) / VALUE_BYTES;
        // Incompressible (xorshift) so the transfer's lz4 cannot shrink it.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let value: Bytes = (0..VALUE_BYTES)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect::<Vec<u8>>()
            .into();
        let t = Instant::now();
        let handles: Vec<Arc<flotilla::Engine>> = (1..=3)
            .map(|id| cluster.node_handle(id).expect("node"))
            .collect();
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let handles = handles.clone();
            let mut at = leader as usize - 1;
            let value = value.clone();
            tasks.push(tokio::spawn(async move {
                let mut i = w * VALUES_PER_BATCH;
                while i < values {
                    let ops: Vec<WriteOp> = (i..(i + VALUES_PER_BATCH).min(values))
                        .map(|k| WriteOp::Put {
                            key: Bytes::from(format!("k{k:09}")),
                            value: value.clone(),
                        })
                        .collect();
                    // Follow the leader if it moves under the load.
                    match handles[at].write_batch(ops).await {
                        Ok(()) => i += WRITERS * VALUES_PER_BATCH,
                        Err(flotilla::Error::NotLeader {
                            leader: Some(l), ..
                        }) => at = l.node_id as usize - 1,
                        Err(e) if e.is_retryable() => {
                            tokio::time::sleep(Duration::from_millis(50)).await
                        }
                        Err(e) => panic!("load: {e}"),
                    }
                }
            }));
        }
        for task in tasks {
            task.await.expect("writer");
        }
        let load = t.elapsed().as_secs_f64();
        println!(
            "# bench-catchup: 4 in-process nodes, {mib} MiB in {values} incompressible values of 64 KiB in range 1 (replicas on nodes 1-3)"
        );
        println!(
            "load through Raft (3 replicas, one disk): {load:.1} s = {:.1} MiB/s",
            mib as f64 / load
        );
        let leader = cluster.leader_of(b"").await.expect("a leader");
        let engine = cluster.node_handle(leader).expect("leader engine");
        let t = Instant::now();
        engine.add_replica(1, 4).await.expect("add replica");
        let catchup = t.elapsed().as_secs_f64();
        println!(
            "add_replica(1, 4) until voter: {catchup:.1} s = {:.1} MiB/s",
            mib as f64 / catchup
        );
        let four = cluster.node_handle(4).expect("node 4");
        let stats = four.stats().await.expect("stats");
        println!(
            "node 4: {} snapshot(s) applied, {} entries applied",
            stats.snapshots_applied, stats.entries_applied
        );
        cluster.close().await.expect("close");
    });
}
