//! Connections come back after a peer restarts; a peer that stays away is
//! reported unreachable exactly once per outage.

mod transport_common;

use std::time::Duration;

use transport_common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_peer_is_reconnected_and_delivery_resumes() {
    let (a, ra) = start(config(1)).await;
    let (b, rb) = start(config(2)).await;
    mesh(&[&a, &b]).await;
    a.send(2, heartbeat(1, 1, 2, 1));
    a.flush();
    wait_until("first delivery", || rb.messages() == 1).await;

    // Restart node 2 (the acceptor) on the same address: node 1 redials.
    let b_addr = b.local_addr();
    b.shutdown().await;
    wait_until("node 1 notices", || !a.is_connected(2)).await;
    let mut cfg = config(2);
    cfg.listen = b_addr;
    let (b, rb) = start(cfg).await;
    b.add_peer(1, a.local_addr()).unwrap();
    wait_until("reconnected to the new node 2", || {
        a.is_connected(2) && b.is_connected(1)
    })
    .await;
    assert!(a.stats().reconnects >= 1);
    a.send(2, heartbeat(1, 1, 2, 2));
    a.flush();
    b.send(1, heartbeat(1, 2, 1, 2));
    b.flush();
    wait_until("delivery resumes both ways", || {
        rb.messages() == 1 && ra.messages() == 1
    })
    .await;

    // Restart node 1 (the dialer): it dials node 2 again by itself.
    let a_addr = a.local_addr();
    a.shutdown().await;
    wait_until("node 2 notices", || !b.is_connected(1)).await;
    let mut cfg = config(1);
    cfg.listen = a_addr;
    let (a, ra) = start(cfg).await;
    a.add_peer(2, b.local_addr()).unwrap();
    wait_until("the new node 1 is connected", || {
        a.is_connected(2) && b.is_connected(1)
    })
    .await;
    b.send(1, heartbeat(1, 2, 1, 3));
    b.flush();
    wait_until("delivery from node 2 resumes", || ra.messages() == 1).await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_peer_is_reported_once_per_outage() {
    // An address where nothing listens (bound once to pick a free port).
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut cfg = config(1);
    cfg.unreachable_after_attempts = 3;
    cfg.unreachable_after = Duration::from_secs(60);
    let (a, ra) = start(cfg).await;
    a.add_peer(2, dead).unwrap();
    wait_until("reported after 3 failed attempts", || {
        ra.unreachable_count(2) == 1
    })
    .await;
    let failures = a.stats().connect_failures;
    assert!(failures >= 3);
    wait_until("keeps retrying", || {
        a.stats().connect_failures >= failures + 5
    })
    .await;
    assert_eq!(
        ra.unreachable_count(2),
        1,
        "one report per outage, not per attempt"
    );

    // The peer appears: connected, then a second outage, a second report.
    let mut cfg = config(2);
    cfg.listen = dead;
    let (b, _rb) = start(cfg).await;
    b.add_peer(1, a.local_addr()).unwrap();
    wait_until("connected at last", || a.is_connected(2)).await;
    b.shutdown().await;
    wait_until("second outage reported", || ra.unreachable_count(2) == 2).await;
    let failures = a.stats().connect_failures;
    wait_until("keeps retrying", || {
        a.stats().connect_failures >= failures + 5
    })
    .await;
    assert_eq!(ra.unreachable_count(2), 2);
    assert_eq!(a.stats().unreachable_reports, 2);
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_accepting_side_reports_a_peer_that_never_dials() {
    // Node 2 accepts from node 1, which never comes: reported by time.
    let mut cfg = config(2);
    cfg.unreachable_after = Duration::from_millis(50);
    let (b, rb) = start(cfg).await;
    b.add_peer(1, "127.0.0.1:9".parse().unwrap()).unwrap();
    wait_until("reported by the acceptor", || rb.unreachable_count(1) == 1).await;
    b.shutdown().await;
    assert_eq!(rb.unreachable_count(1), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_peers_and_shutdown_drop_sends_without_blocking() {
    let (a, _ra) = start(config(1)).await;
    let (b, _rb) = start(config(2)).await;
    mesh(&[&a, &b]).await;
    assert!(a.remove_peer(2));
    assert!(!a.remove_peer(2));
    a.send(2, heartbeat(1, 1, 2, 1));
    assert_eq!(a.stats().dropped_unknown_peer, 1);
    wait_until("node 2 sees the connection close", || !b.is_connected(1)).await;
    a.shutdown().await;
    a.send(2, heartbeat(1, 1, 2, 1));
    a.flush();
    assert!(a.add_peer(3, b.local_addr()).is_err());
    b.shutdown().await;
}
