//! Three real transports on loopback: exactly-once delivery for 1,000
//! groups, one-way partitions through the fault layer, heartbeat
//! coalescing, and bounded queues that drop instead of blocking.

mod transport_common;

use std::collections::HashMap;
use std::time::Instant;

use flotilla_router::transport::LinkFaults;
use flotilla_router::NodeId;
use transport_common::*;

const GROUPS: u64 = 1000;

/// Sends one round (`seq`) from `from` to `to`: a heartbeat and a small
/// append for every group.
fn send_round(from: &flotilla_router::transport::Transport, to: NodeId, seq: u64) {
    let me = from.node_id();
    for range in 1..=GROUPS {
        from.send(to, heartbeat(range, me, to, seq));
        from.send(to, append(range, me, to, seq, 16));
    }
}

/// How often each (sender, range, kind, seq) was received.
fn tally(recorder: &Recorder) -> HashMap<(NodeId, u64, &'static str, u64), u32> {
    let mut counts = HashMap::new();
    for (from, env) in recorder.raft.lock().iter() {
        *counts
            .entry((*from, env.range_id, env.message.body.name(), seq_of(env)))
            .or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_deliver_exactly_once_and_one_way_partitions_stop_one_direction() {
    let (n1, r1) = start(config(1)).await;
    let (n2, r2) = start(config(2)).await;
    let (n3, r3) = start(config(3)).await;
    mesh(&[&n1, &n2, &n3]).await;
    let nodes = [(&n1, &r1), (&n2, &r2), (&n3, &r3)];

    // Healthy: 3 rounds, everyone to everyone, one flush per round.
    for seq in 1..=3 {
        for (a, _) in nodes {
            for (b, _) in nodes {
                if a.node_id() != b.node_id() {
                    send_round(a, b.node_id(), seq);
                }
            }
            a.flush();
        }
    }
    let per_node = 2 * 3 * 2 * GROUPS; // 2 senders, 3 rounds, 2 kinds
    for (_, r) in nodes {
        wait_until("healthy rounds arrive", || r.messages() >= per_node).await;
    }
    for (node, r) in nodes {
        let counts = tally(r);
        assert_eq!(
            counts.len() as u64,
            per_node,
            "node {} got unexpected keys",
            node.node_id()
        );
        assert!(
            counts.values().all(|&c| c == 1),
            "duplicates at node {}",
            node.node_id()
        );
        for (other, _) in nodes {
            if other.node_id() == node.node_id() {
                continue;
            }
            for seq in 1..=3 {
                for range in [1, GROUPS / 2, GROUPS] {
                    assert_eq!(
                        counts.get(&(other.node_id(), range, "append", seq)),
                        Some(&1)
                    );
                    assert_eq!(
                        counts.get(&(other.node_id(), range, "heartbeat", seq)),
                        Some(&1)
                    );
                }
            }
        }
        assert_eq!(
            node.stats().dropped_queue_full + node.stats().dropped_peer_down,
            0
        );
    }

    // One-way partition 1 -> 2, round 4: 2 -> 1 and 1 -> 3 keep flowing.
    n1.faults().partition_one_way(2);
    let before = (r1.messages(), r2.messages(), r3.messages());
    let fault_drops_before = n1.stats().dropped_fault;
    send_round(&n1, 2, 4);
    send_round(&n1, 3, 4);
    n1.flush();
    send_round(&n2, 1, 4);
    n2.flush();
    wait_until("2 -> 1 flows during the partition", || {
        r1.messages() >= before.0 + 2 * GROUPS
    })
    .await;
    wait_until("1 -> 3 flows during the partition", || {
        r3.messages() >= before.2 + 2 * GROUPS
    })
    .await;
    assert_eq!(
        n1.stats().dropped_fault - fault_drops_before,
        2 * GROUPS,
        "the partition ate 1 -> 2"
    );

    // Heal, round 5 from 1 to 2. The connection is FIFO: once round 5 is
    // in, anything of round 4 would have arrived before it.
    n1.faults().heal(2);
    send_round(&n1, 2, 5);
    n1.flush();
    wait_until("1 -> 2 flows after healing", || {
        r2.messages() >= before.1 + 2 * GROUPS
    })
    .await;
    let counts2 = tally(&r2);
    let round =
        |counts: &HashMap<(NodeId, u64, &'static str, u64), u32>, from: NodeId, seq: u64| {
            counts
                .iter()
                .filter(|((f, _, _, s), _)| *f == from && *s == seq)
                .map(|(_, c)| *c as u64)
                .sum::<u64>()
        };
    assert_eq!(
        round(&counts2, 1, 4),
        0,
        "a partitioned message got through"
    );
    assert_eq!(round(&counts2, 1, 5), 2 * GROUPS);
    assert_eq!(round(&tally(&r1), 2, 4), 2 * GROUPS);
    assert_eq!(round(&tally(&r3), 1, 4), 2 * GROUPS);
    assert_eq!(
        r2.messages(),
        before.1 + 2 * GROUPS,
        "node 2 got exactly round 5 from node 1"
    );

    // Blocking inbound at the receiver has the same effect in the other
    // direction only: node 2 blocks what node 3 sends it.
    n2.faults().block_inbound_from(3);
    let blocked_before = n2.stats().dropped_inbound_blocked;
    let r3_before = r3.messages();
    send_round(&n3, 2, 6);
    n3.flush();
    send_round(&n2, 3, 6);
    n2.flush();
    wait_until("2 -> 3 flows while 2 blocks 3", || {
        r3.messages() >= r3_before + 2 * GROUPS
    })
    .await;
    wait_until("node 2 discards 3's round", || {
        n2.stats().dropped_inbound_blocked >= blocked_before + 2 * GROUPS
    })
    .await;
    assert_eq!(round(&tally(&r2), 3, 6), 0);

    for n in [n1, n2, n3] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_heartbeats_in_one_flush_travel_as_one_coalesced_message() {
    let (a, _ra) = start(config(1)).await;
    let (b, rb) = start(config(2)).await;
    mesh(&[&a, &b]).await;
    let (sent_before, received_before) = (a.stats(), b.stats());
    for range in 1..=GROUPS {
        a.send(2, heartbeat(range, 1, 2, 7));
        a.send(2, heartbeat_response(range, 1, 2, 7));
    }
    a.flush();
    wait_until("all heartbeats arrive", || rb.messages() >= 2 * GROUPS).await;
    let (sent, received) = (a.stats(), b.stats());
    assert_eq!(sent.raft_frames_sent - sent_before.raft_frames_sent, 1);
    assert_eq!(
        sent.heartbeat_items_sent - sent_before.heartbeat_items_sent,
        1
    );
    assert_eq!(
        received.raft_frames_received - received_before.raft_frames_received,
        1
    );
    assert_eq!(
        received.heartbeat_items_received - received_before.heartbeat_items_received,
        1
    );
    assert_eq!(
        received.heartbeats_coalesced_received - received_before.heartbeats_coalesced_received,
        2 * GROUPS
    );
    assert_eq!(
        rb.raft_calls.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one frame, one delivery"
    );
    // Compact: 2,000 heartbeats in well under 20 bytes each.
    let bytes = sent.bytes_sent - sent_before.bytes_sent;
    assert!(
        bytes < 2 * GROUPS * 20,
        "{bytes} bytes for 2,000 heartbeats"
    );
    let counts = tally(&rb);
    assert_eq!(counts.len() as u64, 2 * GROUPS);
    assert!(counts.values().all(|&c| c == 1));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_and_counts_instead_of_blocking() {
    let mut cfg = config(1);
    cfg.queue_messages_max = 100;
    cfg.queue_bytes_max = 1 << 20;
    let (a, _ra) = start(cfg).await;
    let (b, rb) = start(config(2)).await;
    mesh(&[&a, &b]).await;

    // By count: 150 sends, no flush, 100 fit.
    for seq in 1..=150 {
        a.send(2, heartbeat(seq, 1, 2, seq));
    }
    assert_eq!(a.stats().dropped_queue_full, 50);
    assert_eq!(a.queued_messages(2), 100);
    a.flush();
    wait_until("the 100 queued arrive", || rb.messages() >= 100).await;
    assert_eq!(rb.messages(), 100);

    // By bytes: 64 KiB entries against a 1 MiB budget.
    let dropped_before = a.stats().dropped_queue_full;
    for seq in 1..=40 {
        a.send(2, append(seq, 1, 2, seq, 64 << 10));
    }
    let dropped = a.stats().dropped_queue_full - dropped_before;
    assert!(
        (20..=25).contains(&dropped),
        "dropped {dropped} of 40 64-KiB appends"
    );
    a.flush();
    wait_until("the appends that fit arrive", || {
        rb.messages() >= 100 + 40 - dropped
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_never_blocks_when_the_peer_stops_reading() {
    // A raw peer that completes the handshake and then never reads: the
    // socket fills, the writer stalls, the queue fills, sends drop.
    use flotilla_router::transport::handshake::{Hello, HelloAck, PROTOCOL_VERSION};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut cfg = config(1);
    cfg.queue_messages_max = 2_000;
    cfg.queue_bytes_max = 8 << 20;
    let (a, _ra) = start(cfg).await;
    a.add_peer(2, listener.local_addr().unwrap()).unwrap();
    let (mut socket, _) = listener.accept().await.unwrap();
    let mut hello = vec![
        0u8;
        Hello {
            protocol_version: 1,
            cluster_id: 0,
            node_id: 0,
            target_node_id: 0
        }
        .encode_frame()
        .len()
    ];
    socket.read_exact(&mut hello).await.unwrap();
    assert_eq!(Hello::decode_frame(&hello).unwrap().node_id, 1);
    let ack = HelloAck {
        protocol_version: PROTOCOL_VERSION,
        cluster_id: CLUSTER,
        node_id: 2,
        refusal: None,
    };
    socket.write_all(&ack.encode_frame()).await.unwrap();
    wait_until("connected to the raw peer", || a.is_connected(2)).await;

    let started = Instant::now();
    let mut rounds = 0u64;
    while a.stats().dropped_queue_full == 0 {
        for range in 1..=100 {
            a.send(2, append(range, 1, 2, rounds, 4096));
        }
        a.flush();
        rounds += 1;
        assert!(rounds < 100_000, "the queue never filled");
        tokio::task::yield_now().await;
    }
    // 100+ MB were offered to a socket that holds a few MB: only the bounded
    // queue absorbed the rest, and the loop never waited on the network.
    assert!(a.queued_messages(2) <= 2_000);
    assert!(
        started.elapsed() < DEADLINE,
        "sending took {:?}",
        started.elapsed()
    );
    drop(socket);
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_faults_drop_and_duplicate_deterministically() {
    async fn run(seed: u64) -> (u64, Vec<(u64, u64)>) {
        let (a, _ra) = start(config(1)).await;
        let (b, rb) = start(config(2)).await;
        mesh(&[&a, &b]).await;
        a.faults().seed(seed);
        a.faults().set_link(
            2,
            LinkFaults {
                drop_percent: 30,
                duplicate_percent: 20,
                ..Default::default()
            },
        );
        for range in 1..=500 {
            a.send(2, append(range, 1, 2, 1, 8));
        }
        let dropped = a.stats().dropped_fault;
        let expected = a.queued_messages(2) as u64;
        a.flush();
        wait_until("surviving messages arrive", || rb.messages() >= expected).await;
        let mut got: Vec<(u64, u64)> = rb
            .raft
            .lock()
            .iter()
            .map(|(_, e)| (e.range_id, seq_of(e)))
            .collect();
        got.sort_unstable();
        a.shutdown().await;
        b.shutdown().await;
        (dropped, got)
    }
    let (dropped, got) = run(11).await;
    assert!(
        (100..=200).contains(&dropped),
        "30% of 500 dropped: {dropped}"
    );
    assert!(
        got.windows(2).any(|w| w[0] == w[1]),
        "20% duplicates expected"
    );
    assert_eq!(run(11).await, (dropped, got), "same seed, same faults");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_messages_arrive_later_not_never() {
    let (a, _ra) = start(config(1)).await;
    let (b, rb) = start(config(2)).await;
    mesh(&[&a, &b]).await;
    a.faults().set_link(
        2,
        LinkFaults {
            delay: std::time::Duration::from_millis(50),
            ..Default::default()
        },
    );
    let sent_at = Instant::now();
    for range in 1..=10 {
        a.send(2, heartbeat(range, 1, 2, 1));
    }
    a.flush();
    assert_eq!(
        a.queued_messages(2),
        0,
        "delayed messages are held outside the queue"
    );
    wait_until("delayed messages arrive", || rb.messages() >= 10).await;
    assert!(sent_at.elapsed() >= std::time::Duration::from_millis(50));
    a.shutdown().await;
    b.shutdown().await;
}
