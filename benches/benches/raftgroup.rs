//! Proposals committed per second by a 3-replica group in memory, with
//! batching on (many proposals per Ready cycle share one append message and
//! one persist) and off (one proposal per cycle).

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use flotilla_raftgroup::testkit::MemCluster;

const PROPOSALS: u64 = 1_000;

fn commit(cluster: &mut MemCluster, leader: u64, batch: u64) {
    let payload = Bytes::from(vec![7u8; 256]);
    let mut proposed = 0;
    while proposed < PROPOSALS {
        for _ in 0..batch.min(PROPOSALS - proposed) {
            if let Some(group) = cluster.replica(leader) {
                group.propose(payload.clone()).expect("leader accepts");
            }
            proposed += 1;
        }
        cluster.settle().expect("in-memory cluster settles");
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("raftgroup_3_replicas_256B");
    group.throughput(Throughput::Elements(PROPOSALS));
    for batch in [1u64, 64] {
        let name = if batch == 1 {
            "batching_off"
        } else {
            "batching_on_64"
        };
        group.bench_function(name, |b| {
            b.iter_batched(
                || {
                    let mut cluster = MemCluster::new(3).expect("cluster");
                    let leader = cluster.elect(1).expect("leader");
                    (cluster, leader)
                },
                |(mut cluster, leader)| commit(&mut cluster, leader, batch),
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
