//! `make run` (until the engine lands): a three-replica Raft group in
//! memory elects a leader, commits writes, serves a linearizable read,
//! loses its leader, elects another, and keeps every acknowledged write.

use std::time::Instant;

use bytes::Bytes;
use flotilla_raftgroup::testkit::MemCluster;
use flotilla_raftgroup::Error;

fn main() -> Result<(), Error> {
    let started = Instant::now();
    let mut cluster = MemCluster::new(3)?;
    let leader = cluster.elect(1)?;
    println!("elected replica {leader} as leader of a 3-replica group");

    let writes = 1_000u64;
    for i in 0..writes {
        if let Some(group) = cluster.replica(leader) {
            group.propose(Bytes::from(format!("key{i}=value{i}")))?;
        }
        if i % 100 == 99 {
            cluster.settle()?;
        }
    }
    cluster.settle()?;
    println!(
        "committed and applied {writes} writes on all replicas: {:?}",
        cluster.applied.iter().map(Vec::len).collect::<Vec<_>>()
    );

    if let Some(group) = cluster.replica(leader) {
        group.read_index(Bytes::from_static(b"read-1"))?;
    }
    cluster.settle()?;
    let read = cluster.reads[(leader - 1) as usize].last().map(|r| r.index);
    println!("linearizable read (ReadIndex) confirmed by a heartbeat round: safe once index {read:?} is applied");

    cluster.stop(leader);
    println!("stopped the leader (replica {leader})");
    let mut new_leader = None;
    for _ in 0..100 {
        cluster.tick();
        cluster.settle()?;
        if let Some(l) = cluster.leader() {
            new_leader = Some(l);
            break;
        }
    }
    let new_leader = new_leader.ok_or(Error::NoLeader)?;
    println!("replica {new_leader} took over");
    if let Some(group) = cluster.replica(new_leader) {
        group.propose(Bytes::from_static(b"after-failover=1"))?;
    }
    cluster.settle()?;
    let survivors: Vec<usize> = cluster
        .applied
        .iter()
        .enumerate()
        .filter(|(i, _)| *i as u64 + 1 != leader)
        .map(|(_, a)| a.len())
        .collect();
    println!("survivors applied {survivors:?} entries (all {writes} acknowledged writes kept, plus one more)");
    println!(
        "done in {:.1} ms, {} messages delivered",
        started.elapsed().as_secs_f64() * 1e3,
        cluster.messages_delivered
    );
    Ok(())
}
