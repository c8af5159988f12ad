//! Test hooks of the server, refused unless `server.fault_injection = true`
//! (off by default): `FLOTILLA.FAULT` drives the transport's fault layer
//! (partitions, also one-way, and lossy links) and `FLOTILLA.LOCALSCAN`
//! reads what this node's own replicas applied, without going to leaders.
//! The chaos harness (`engine/tests/chaos.rs`) uses both.
//!
//! ```text
//! FLOTILLA.FAULT PARTITION <node>   drop traffic both ways between this node and <node>
//! FLOTILLA.FAULT ONEWAY <node>      this node's messages to <node> are lost
//! FLOTILLA.FAULT BLOCKFROM <node>   messages from <node> are discarded here
//! FLOTILLA.FAULT HEAL <node>        lift the above for <node>
//! FLOTILLA.FAULT LINK <node|*> <drop%> <dup%> <delay_ms> <jitter_ms>
//! FLOTILLA.FAULT SEED <n>           restart the layer's random decisions
//! FLOTILLA.FAULT CLEAR              remove every fault
//! FLOTILLA.LOCALSCAN <start> <end>  stale rows of the replicas held here
//! ```
//!
//! Faults live in memory: a restarted node starts clean.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use flotilla_router::transport::LinkFaults;

use super::commands::error_frame;
use super::resp::Frame;
use super::Server;
use crate::node::Consistency;

fn disabled() -> Frame {
    Frame::err("fault injection is disabled on this node (server.fault_injection = false)")
}

fn number(arg: &[u8], what: &str) -> Result<u64, Frame> {
    std::str::from_utf8(arg)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Frame::err(format!("{what} must be a number")))
}

/// `FLOTILLA.FAULT ...` (see the module docs).
pub(crate) fn fault(server: &Server, args: &[Bytes]) -> Frame {
    if !server.config.server.fault_injection {
        return disabled();
    }
    let Some(faults) = server.engine.transport_faults() else {
        return Frame::err("this node has no transport (single node): nothing to fault");
    };
    let sub = String::from_utf8_lossy(&args[1]).to_ascii_uppercase();
    let node = |i: usize| -> Result<u64, Frame> {
        match args.get(i) {
            Some(a) => number(a, "node id"),
            None => Err(Frame::err(format!("FLOTILLA.FAULT {sub}: missing node id"))),
        }
    };
    let result = (|| -> Result<(), Frame> {
        match (sub.as_str(), args.len()) {
            ("PARTITION", 3) => faults.partition(node(2)?),
            ("ONEWAY", 3) => faults.partition_one_way(node(2)?),
            ("BLOCKFROM", 3) => faults.block_inbound_from(node(2)?),
            ("HEAL", 3) => faults.heal(node(2)?),
            ("CLEAR", 2) => faults.clear(),
            ("SEED", 3) => faults.seed(number(&args[2], "seed")?),
            ("LINK", 7) => {
                let percent = |i: usize, what: &str| -> Result<u8, Frame> {
                    let p = number(&args[i], what)?;
                    u8::try_from(p)
                        .ok()
                        .filter(|p| *p <= 100)
                        .ok_or_else(|| Frame::err(format!("{what} must be in 0..=100")))
                };
                let link = LinkFaults {
                    drop_percent: percent(3, "drop percent")?,
                    duplicate_percent: percent(4, "duplicate percent")?,
                    delay: Duration::from_millis(number(&args[5], "delay_ms")?),
                    delay_jitter: Duration::from_millis(number(&args[6], "jitter_ms")?),
                };
                if &args[2][..] == b"*" {
                    faults.set_all_links(link);
                } else {
                    faults.set_link(node(2)?, link);
                }
            }
            _ => {
                return Err(Frame::err(
                    "syntax: FLOTILLA.FAULT PARTITION|ONEWAY|BLOCKFROM|HEAL <node> | \
                     LINK <node|*> <drop%> <dup%> <delay_ms> <jitter_ms> | SEED <n> | CLEAR",
                ))
            }
        }
        Ok(())
    })();
    match result {
        Ok(()) => {
            let shown: Vec<_> = args.iter().map(|a| String::from_utf8_lossy(a)).collect();
            tracing::warn!(fault = %shown.join(" "), "fault injected");
            Frame::ok()
        }
        Err(frame) => frame,
    }
}

/// `FLOTILLA.LOCALSCAN start end`: the rows in `[start, end)` (empty end:
/// to the end) of the ranges this node holds a replica of, as applied
/// here (stale reads, no leader involved), as `k1 v1 k2 v2 ...`.
pub(crate) async fn local_scan(server: &Arc<Server>, args: &[Bytes]) -> Frame {
    if !server.config.server.fault_injection {
        return disabled();
    }
    let (start, end) = (args[1].clone(), args[2].clone());
    let ranges = match server.engine.ranges().await {
        Ok(r) => r,
        Err(e) => return error_frame(server, &e),
    };
    let limit = server.config.server.scan_rows_max;
    let mut rows = Vec::new();
    for range in ranges {
        let d = &range.descriptor;
        if (!end.is_empty() && d.start >= end) || (!d.end.is_empty() && d.end <= start) {
            continue;
        }
        let sub_start = start.clone().max(d.start.clone());
        let sub_end = match (end.is_empty(), d.end.is_empty()) {
            (true, _) => d.end.clone(),
            (false, true) => end.clone(),
            (false, false) => end.clone().min(d.end.clone()),
        };
        match server
            .engine
            .scan_with(sub_start..sub_end, limit, Consistency::Stale)
            .await
        {
            Ok(found) => {
                for (k, v) in found {
                    rows.push(Frame::Bulk(k));
                    rows.push(Frame::Bulk(v));
                }
            }
            Err(e) => return error_frame(server, &e),
        }
    }
    Frame::Array(rows)
}
