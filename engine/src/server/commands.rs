//! The RESP commands: the Redis subset (GET, SET, DEL, EXISTS, MGET, MSET,
//! PING, ECHO, INFO, QUIT, AUTH, COMMAND, HELLO, CLIENT, SELECT, CONFIG GET)
//! and Flotilla's own (`FLOTILLA.SCAN`, `FLOTILLA.RANGES`,
//! `FLOTILLA.SPLIT`, `FLOTILLA.MERGE`, `FLOTILLA.STATUS`,
//! `FLOTILLA.TRANSFERLEADER`, `FLOTILLA.ADDREPLICA`,
//! `FLOTILLA.REMOVEREPLICA`; the last three take a range id and a node id
//! and run on the range's leader like every single-range command).
//!
//! Commands that touch one range run through [`route`]: tried on the local
//! replica; when another node leads the range, proxied to that node's RESP
//! server (or answered with `-MOVED`); while a range has no leader
//! (election) or just changed shape (split, merge), retried with backoff
//! until `server.forward_timeout_ms`. Multi-key commands that need not be
//! atomic (DEL, EXISTS, MGET) run key by key; MSET is one atomic batch and
//! fails with `-CROSSRANGE` when its keys span ranges.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::resp::{self, Frame};
use super::{FollowerRequests, Server};
use crate::command::WriteOp;
use crate::error::Error;

/// Per-connection state.
#[derive(Debug, Default)]
pub struct Session {
    pub authenticated: bool,
    /// Set by `FLOTILLA.NOFORWARD` on server-to-server connections: never
    /// forward again (answer `-MOVED`/`-TRYAGAIN`), so requests cannot loop.
    pub no_forward: bool,
    /// `QUIT` was received: answer and close.
    pub quit: bool,
    name: Option<Bytes>,
}

impl Session {
    pub fn new(authenticated: bool) -> Session {
        Session {
            authenticated,
            ..Session::default()
        }
    }
}

/// One command's shape, as `COMMAND` reports it (Redis conventions:
/// arity counts the name; negative means "at least").
struct Spec {
    name: &'static str,
    arity: i64,
    flags: &'static [&'static str],
    first_key: i64,
    last_key: i64,
    step: i64,
}

const fn spec(
    name: &'static str,
    arity: i64,
    flags: &'static [&'static str],
    keys: (i64, i64, i64),
) -> Spec {
    Spec {
        name,
        arity,
        flags,
        first_key: keys.0,
        last_key: keys.1,
        step: keys.2,
    }
}

const NO_KEYS: (i64, i64, i64) = (0, 0, 0);
const READ: &[&str] = &["readonly", "fast"];
const WRITE: &[&str] = &["write"];
const CONN: &[&str] = &["fast", "no-auth", "loading", "stale"];
const ADMIN: &[&str] = &["admin"];

static COMMANDS: &[Spec] = &[
    spec("get", 2, READ, (1, 1, 1)),
    spec("set", -3, WRITE, (1, 1, 1)),
    spec("del", -2, WRITE, (1, -1, 1)),
    spec("exists", -2, READ, (1, -1, 1)),
    spec("mget", -2, READ, (1, -1, 1)),
    spec("mset", -3, WRITE, (1, -1, 2)),
    spec("ping", -1, CONN, NO_KEYS),
    spec("echo", 2, CONN, NO_KEYS),
    spec("info", -1, &["loading", "stale"], NO_KEYS),
    spec("quit", -1, CONN, NO_KEYS),
    spec("auth", -2, CONN, NO_KEYS),
    spec("hello", -1, CONN, NO_KEYS),
    spec("command", -1, &["loading", "stale"], NO_KEYS),
    spec("client", -2, &["loading", "stale"], NO_KEYS),
    spec("select", 2, &["loading", "stale", "fast"], NO_KEYS),
    spec("config", -2, ADMIN, NO_KEYS),
    spec("flotilla.scan", -3, &["readonly"], NO_KEYS),
    spec("flotilla.ranges", 1, ADMIN, NO_KEYS),
    spec("flotilla.status", 1, ADMIN, NO_KEYS),
    spec("flotilla.split", 2, ADMIN, NO_KEYS),
    spec("flotilla.merge", 3, ADMIN, NO_KEYS),
    spec("flotilla.transferleader", 3, ADMIN, NO_KEYS),
    spec("flotilla.addreplica", 3, ADMIN, NO_KEYS),
    spec("flotilla.removereplica", 3, ADMIN, NO_KEYS),
    spec("flotilla.noforward", 1, ADMIN, NO_KEYS),
    spec("flotilla.fault", -2, ADMIN, NO_KEYS),
    spec("flotilla.localscan", 3, ADMIN, NO_KEYS),
];

fn lookup(name: &str) -> Option<&'static Spec> {
    COMMANDS.iter().find(|s| s.name.eq_ignore_ascii_case(name))
}

/// Run one command and build its reply. Never panics on client input.
pub async fn execute(server: &Arc<Server>, session: &mut Session, args: Vec<Bytes>) -> Frame {
    let name = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
    let Some(spec) = lookup(&name) else {
        metrics::counter!("flotilla_server_errors_total", "kind" => "unknown_command").increment(1);
        let shown: Vec<String> = args[1..]
            .iter()
            .take(3)
            .map(|a| format!("'{}'", show(a)))
            .collect();
        return Frame::err(format!(
            "unknown command '{}', with args beginning with: {}",
            show(&args[0]),
            shown.join(" ")
        ));
    };
    let n = args.len() as i64;
    if (spec.arity > 0 && n != spec.arity) || (spec.arity < 0 && n < -spec.arity) {
        metrics::counter!("flotilla_server_errors_total", "kind" => "wrong_arity").increment(1);
        return Frame::err(format!(
            "wrong number of arguments for '{}' command",
            spec.name
        ));
    }
    if !session.authenticated && !matches!(spec.name, "auth" | "hello" | "quit") {
        metrics::counter!("flotilla_server_errors_total", "kind" => "noauth").increment(1);
        return Frame::Error("NOAUTH Authentication required.".into());
    }
    let started = Instant::now();
    let reply = dispatch(server, session, spec, args).await;
    metrics::counter!("flotilla_server_commands_total", "command" => spec.name).increment(1);
    metrics::histogram!("flotilla_server_command_seconds", "command" => spec.name)
        .record(started.elapsed().as_secs_f64());
    reply
}

async fn dispatch(
    server: &Arc<Server>,
    session: &mut Session,
    spec: &'static Spec,
    args: Vec<Bytes>,
) -> Frame {
    match spec.name {
        "get"
        | "set"
        | "mset"
        | "flotilla.split"
        | "flotilla.transferleader"
        | "flotilla.addreplica"
        | "flotilla.removereplica" => route(server, session, args).await,
        "del" | "exists" => {
            let mut count = 0;
            for key in &args[1..] {
                match route(server, session, vec![args[0].clone(), key.clone()]).await {
                    Frame::Integer(i) => count += i,
                    other => return other,
                }
            }
            Frame::Integer(count)
        }
        "mget" => {
            let mut values = Vec::with_capacity(args.len() - 1);
            for key in &args[1..] {
                match route(
                    server,
                    session,
                    vec![Bytes::from_static(b"GET"), key.clone()],
                )
                .await
                {
                    frame @ (Frame::Bulk(_) | Frame::Null) => values.push(frame),
                    other => return other,
                }
            }
            Frame::Array(values)
        }
        "flotilla.merge" => merge(server, session, args).await,
        "flotilla.scan" => scan(server, session, &args).await,
        "flotilla.fault" => super::faults::fault(server, &args),
        "flotilla.localscan" => super::faults::local_scan(server, &args).await,
        "ping" => match args.len() {
            1 => Frame::Simple("PONG".into()),
            2 => Frame::Bulk(args[1].clone()),
            _ => Frame::err("wrong number of arguments for 'ping' command"),
        },
        "echo" => Frame::Bulk(args[1].clone()),
        "quit" => {
            session.quit = true;
            Frame::ok()
        }
        "auth" => auth(server, session, &args[1..]),
        "hello" => hello(server, session, &args[1..]),
        "info" => Frame::Bulk(info(server).await.into()),
        "command" => command(&args[1..]),
        "client" => client(session, &args[1..]),
        "select" => match &args[1][..] {
            b"0" => Frame::ok(),
            _ => Frame::err("DB index is out of range"),
        },
        "config" if args[1].eq_ignore_ascii_case(b"get") => Frame::Array(Vec::new()),
        "config" => Frame::err("CONFIG: only GET is supported (and returns nothing)"),
        "flotilla.ranges" => ranges(server).await,
        "flotilla.status" => status(server).await,
        "flotilla.noforward" => {
            session.no_forward = true;
            Frame::ok()
        }
        other => Frame::err(format!("command '{other}' has no handler")),
    }
}

/// Run a single-range command on the range's leader: locally, forwarded
/// or redirected, retrying while the range has no leader or moves.
async fn route(server: &Arc<Server>, session: &Session, args: Vec<Bytes>) -> Frame {
    let settings = &server.config.server;
    let deadline = Instant::now() + Duration::from_millis(settings.forward_timeout_ms);
    // `forward_timeout_ms` bounds the retries (elections, leader moves).
    // One forwarded call may take as long as the engine lets the command
    // run on the leader: adding a replica waits for its catch-up.
    let call_deadline = deadline.max(Instant::now() + admin_wait(server, &args));
    let mut backoff = Duration::from_millis(5);
    // A node holding no replica of the key's range asks the others in
    // turn; one that knows the leader answers MOVED, followed next.
    let me = server.engine.node_id();
    let others: Vec<u64> = server
        .config
        .nodes
        .iter()
        .map(|n| n.id)
        .filter(|&id| id != me)
        .collect();
    let mut asked = 0usize;
    let mut hint: Option<u64> = None;
    loop {
        let error = match local(server, &args).await {
            Ok(frame) => return frame,
            Err(e) => e,
        };
        let not_here = matches!(error, Error::RangeNotFound(_))
            && !session.no_forward
            && settings.follower_requests == FollowerRequests::Forward;
        let leader_elsewhere = match &error {
            Error::NotLeader {
                leader: Some(leader),
                ..
            } if leader.node_id != me => Some(leader.node_id),
            _ if not_here && asked < 3 * others.len() => {
                asked += 1;
                hint.take()
                    .or_else(|| others.get((asked - 1) % others.len()).copied())
            }
            _ => None,
        };
        let retry = match leader_elsewhere {
            Some(_)
                if session.no_forward
                    || settings.follower_requests == FollowerRequests::Redirect =>
            {
                metrics::counter!("flotilla_server_redirects_total").increment(1);
                return error_frame(server, &error);
            }
            Some(node) => {
                metrics::counter!("flotilla_server_forwarded_total").increment(1);
                match forward(server, node, &args, call_deadline).await {
                    // The leader moved again or is being elected: retry
                    // (a node asked for lack of a replica here names it).
                    Ok(Frame::Error(e)) if e.starts_with("MOVED") => {
                        hint = moved_to(server, &e);
                        true
                    }
                    Ok(Frame::Error(e)) if e.starts_with("TRYAGAIN") => true,
                    Ok(Frame::Error(e)) if not_here && e.contains("range not found") => true,
                    Ok(frame) => return frame,
                    // A write that may have reached the leader is not
                    // resent: its outcome is unknown, like a timeout.
                    Err(e) if e.sent && !is_read(&args) => {
                        tracing::warn!(node_id = node, error = %e.message, "forwarded write lost its reply");
                        metrics::counter!("flotilla_server_errors_total", "kind" => "timeout")
                            .increment(1);
                        return Frame::Error(format!(
                            "TIMEOUT forwarded to node {node}, no reply (outcome unknown): {}",
                            e.message
                        ));
                    }
                    Err(e) => {
                        tracing::warn!(node_id = node, error = %e.message, "forwarding failed");
                        true
                    }
                }
            }
            None => {
                matches!(
                    error,
                    Error::NotLeader { .. } | Error::EpochMismatch { .. } | Error::Busy(_)
                ) && !session.no_forward
            }
        };
        if !retry || Instant::now() + backoff >= deadline {
            return error_frame(server, &error);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(100));
    }
}

/// How long the engine may run an admin command on the range's leader
/// (zero for the rest), plus a margin for the answer to travel back.
fn admin_wait(server: &Server, args: &[Bytes]) -> Duration {
    let engine = &server.config.engine;
    let name = args
        .first()
        .map(|a| a.to_ascii_lowercase())
        .unwrap_or_default();
    let wait = match name.as_slice() {
        b"flotilla.addreplica" | b"flotilla.removereplica" => {
            Duration::from_secs(engine.membership_timeout_secs)
        }
        b"flotilla.split" | b"flotilla.merge" | b"flotilla.transferleader" => {
            Duration::from_millis(engine.request_timeout_ms)
        }
        _ => return Duration::ZERO,
    };
    wait + Duration::from_secs(5)
}

/// `FLOTILLA.MERGE`: a merge needs one node to lead both ranges; when
/// they are led apart, move the right range's leadership as the refusal
/// suggests and try again (a few times: leaders can move meanwhile).
async fn merge(server: &Arc<Server>, session: &mut Session, args: Vec<Bytes>) -> Frame {
    const HINT: &str = "(hint: FLOTILLA.TRANSFERLEADER ";
    for _ in 0..3 {
        let reply = route(server, session, args.clone()).await;
        let Frame::Error(text) = &reply else {
            return reply;
        };
        let Some(hint) = text.find(HINT).map(|at| &text[at + HINT.len()..]) else {
            return reply;
        };
        let mut words = hint.trim_end_matches(')').split_whitespace();
        let (Some(range), Some(node)) = (words.next(), words.next()) else {
            return reply;
        };
        let transfer = vec![
            Bytes::from_static(b"FLOTILLA.TRANSFERLEADER"),
            Bytes::copy_from_slice(range.as_bytes()),
            Bytes::copy_from_slice(node.as_bytes()),
        ];
        if let Frame::Error(_) = route(server, session, transfer).await {
            return reply;
        }
    }
    route(server, session, args).await
}

/// The node a `MOVED <range> <host:port>` reply points at.
fn moved_to(server: &Server, reply: &str) -> Option<u64> {
    let addr: std::net::SocketAddr = reply.split_whitespace().nth(2)?.parse().ok()?;
    server
        .config
        .nodes
        .iter()
        .find(|n| n.client == addr)
        .map(|n| n.id)
}

/// A single-range command on the local replica.
async fn local(server: &Arc<Server>, args: &[Bytes]) -> Result<Frame, Error> {
    let engine = &server.engine;
    let name = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
    match name.as_str() {
        "get" => Ok(engine
            .get(args[1].clone())
            .await?
            .map_or(Frame::Null, Frame::Bulk)),
        "set" if args.len() == 3 => {
            engine.put(args[1].clone(), args[2].clone()).await?;
            Ok(Frame::ok())
        }
        "set" => Err(Error::InvalidRequest(
            "SET options (EX, PX, NX, XX, GET, KEEPTTL) are not supported".into(),
        )),
        "del" => {
            let existed = engine.get(args[1].clone()).await?.is_some();
            if existed {
                engine.delete(args[1].clone()).await?;
            }
            Ok(Frame::Integer(existed as i64))
        }
        "exists" => Ok(Frame::Integer(
            engine.get(args[1].clone()).await?.is_some() as i64
        )),
        "mset" => {
            if args.len() % 2 == 0 {
                return Err(Error::InvalidRequest(
                    "wrong number of arguments for 'mset' command".into(),
                ));
            }
            let ops = args[1..]
                .chunks(2)
                .map(|kv| WriteOp::Put {
                    key: kv[0].clone(),
                    value: kv[1].clone(),
                })
                .collect();
            engine.write_batch(ops).await?;
            Ok(Frame::ok())
        }
        "flotilla.split" => Ok(Frame::Integer(engine.split(args[1].clone()).await? as i64)),
        "flotilla.merge" => {
            let left = parse_u64(&args[1], "left range id")?;
            let right = parse_u64(&args[2], "right range id")?;
            engine.merge(left, right).await?;
            Ok(Frame::ok())
        }
        "flotilla.transferleader" | "flotilla.addreplica" | "flotilla.removereplica" => {
            let range_id = parse_u64(&args[1], "range id")?;
            let node = parse_u64(&args[2], "node id")?;
            match name.as_str() {
                "flotilla.transferleader" => engine.transfer_leader(range_id, node).await?,
                "flotilla.addreplica" => engine.add_replica(range_id, node).await?,
                _ => engine.remove_replica(range_id, node).await?,
            }
            Ok(Frame::ok())
        }
        "flotilla.scan" => {
            let (start, end, limit) = scan_args(server, args)?;
            let rows = engine.scan(start..end, limit).await?;
            Ok(rows_frame(rows))
        }
        other => Err(Error::InvalidRequest(format!(
            "command '{other}' cannot be routed"
        ))),
    }
}

fn parse_u64(arg: &[u8], what: &str) -> Result<u64, Error> {
    std::str::from_utf8(arg)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            Error::InvalidRequest(format!("{what} must be a number, got '{}'", show(arg)))
        })
}

/// `FLOTILLA.SCAN start end [LIMIT n]`: an empty `end` means "to the end".
fn scan_args(server: &Server, args: &[Bytes]) -> Result<(Bytes, Bytes, usize), Error> {
    let max = server.config.server.scan_rows_max;
    let limit = match args.len() {
        3 => max,
        5 if args[3].eq_ignore_ascii_case(b"limit") => {
            let n = parse_u64(&args[4], "LIMIT")? as usize;
            if n == 0 || n > max {
                return Err(Error::InvalidRequest(format!(
                    "LIMIT must be in 1..={max} (server.scan_rows_max), got {n}"
                )));
            }
            n
        }
        _ => {
            return Err(Error::InvalidRequest(
                "syntax: FLOTILLA.SCAN start end [LIMIT n] (empty end: to the end)".into(),
            ))
        }
    };
    let (start, end) = (args[1].clone(), args[2].clone());
    if !end.is_empty() && end <= start {
        return Err(Error::InvalidRequest(
            "scan end must be greater than start (or empty)".into(),
        ));
    }
    Ok((start, end, limit))
}

fn rows_frame(rows: Vec<(Bytes, Bytes)>) -> Frame {
    Frame::Array(
        rows.into_iter()
            .flat_map(|(k, v)| [Frame::Bulk(k), Frame::Bulk(v)])
            .collect(),
    )
}

/// An ordered scan across ranges: one sub-scan per range, each on that
/// range's leader, concatenated in key order until the limit.
async fn scan(server: &Arc<Server>, session: &Session, args: &[Bytes]) -> Frame {
    let (start, end, limit) = match scan_args(server, args) {
        Ok(parsed) => parsed,
        Err(e) => return error_frame(server, &e),
    };
    let ranges = match server.engine.ranges().await {
        Ok(r) => r,
        Err(e) => return error_frame(server, &e),
    };
    let mut rows = Vec::new();
    for range in ranges {
        let d = &range.descriptor;
        let after_end = !end.is_empty() && d.start >= end;
        let before_start = !d.end.is_empty() && d.end <= start;
        if after_end || before_start {
            continue;
        }
        let remaining = limit - rows.len() / 2;
        if remaining == 0 {
            break;
        }
        let sub_start = start.clone().max(d.start.clone());
        let sub_end = match (end.is_empty(), d.end.is_empty()) {
            (true, _) => d.end.clone(),
            (false, true) => end.clone(),
            (false, false) => end.clone().min(d.end.clone()),
        };
        let sub = vec![
            Bytes::from_static(b"FLOTILLA.SCAN"),
            sub_start,
            sub_end,
            Bytes::from_static(b"LIMIT"),
            Bytes::from(remaining.to_string()),
        ];
        match route(server, session, sub).await {
            Frame::Array(items) => rows.extend(items),
            other => return other,
        }
    }
    Frame::Array(rows)
}

/// An engine error as a RESP error, with a Redis-style prefix clients can
/// act on: MOVED / TRYAGAIN (retry elsewhere or later), CROSSRANGE, BUSY,
/// TIMEOUT, SHUTDOWN, ERR (the request is wrong or the node is broken).
pub fn error_frame(server: &Server, error: &Error) -> Frame {
    let (kind, text) = match error {
        Error::NotLeader {
            range_id,
            leader: Some(leader),
        } => match server.config.node(leader.node_id) {
            Some(node) => ("not_leader", format!("MOVED {range_id} {}", node.client)),
            None => (
                "not_leader",
                format!(
                    "TRYAGAIN range {range_id}: node {} leads it but has no client address in [[nodes]]",
                    leader.node_id
                ),
            ),
        },
        Error::NotLeader { range_id, .. } => (
            "not_leader",
            format!("TRYAGAIN range {range_id} has no known leader yet"),
        ),
        Error::EpochMismatch { .. } => ("epoch_mismatch", format!("TRYAGAIN {error}")),
        Error::CrossRangeBatch { .. } => ("cross_range", format!("CROSSRANGE {error}")),
        Error::Busy(_) => ("busy", format!("BUSY {error}")),
        Error::Timeout(_) => ("timeout", format!("TIMEOUT {error}")),
        Error::InvalidRequest(_) => ("invalid_request", format!("ERR {error}")),
        Error::RangeNotFound(_) => ("range_not_found", format!("ERR {error}")),
        Error::AdminRefused(_) => ("admin_refused", format!("ERR {error}")),
        Error::Closed => ("closed", format!("SHUTDOWN {error}")),
        Error::Config { .. } | Error::Storage(_) => ("storage", format!("ERR {error}")),
    };
    metrics::counter!("flotilla_server_errors_total", "kind" => kind).increment(1);
    Frame::Error(text)
}

fn auth(server: &Server, session: &mut Session, args: &[Bytes]) -> Frame {
    let Some(password) = &server.config.server.password else {
        return Frame::err(
            "AUTH <password> called without any password configured for the default user. \
             Are you sure your configuration is correct?",
        );
    };
    let (user, given) = match args {
        [p] => (&b"default"[..], p),
        [u, p] => (&u[..], p),
        _ => return Frame::err("syntax error"),
    };
    if user == b"default" && given[..] == *password.as_bytes() {
        session.authenticated = true;
        Frame::ok()
    } else {
        metrics::counter!("flotilla_server_errors_total", "kind" => "wrongpass").increment(1);
        Frame::Error("WRONGPASS invalid username-password pair or user is disabled.".into())
    }
}

/// `HELLO [protover [AUTH user pass] [SETNAME name]]`: RESP2 only.
fn hello(server: &Server, session: &mut Session, args: &[Bytes]) -> Frame {
    if let Some(version) = args.first() {
        match &version[..] {
            b"2" => {}
            b"3" => {
                return Frame::Error("NOPROTO this server speaks RESP2 only".into());
            }
            _ => return Frame::Error("NOPROTO unsupported protocol version".into()),
        }
    }
    let mut rest = args.iter().skip(1);
    while let Some(option) = rest.next() {
        if option.eq_ignore_ascii_case(b"auth") {
            let (Some(user), Some(pass)) = (rest.next(), rest.next()) else {
                return Frame::err("syntax error in HELLO option 'auth'");
            };
            if let Frame::Error(e) = auth(server, session, &[user.clone(), pass.clone()]) {
                return Frame::Error(e);
            }
        } else if option.eq_ignore_ascii_case(b"setname") {
            let Some(name) = rest.next() else {
                return Frame::err("syntax error in HELLO option 'setname'");
            };
            session.name = Some(name.clone());
        } else {
            return Frame::err(format!("syntax error in HELLO option '{}'", show(option)));
        }
    }
    if !session.authenticated {
        return Frame::Error(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the \
             HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client"
                .into(),
        );
    }
    map(vec![
        ("server", Frame::bulk("flotilla")),
        ("version", Frame::bulk(env!("CARGO_PKG_VERSION"))),
        ("proto", Frame::Integer(2)),
        ("id", Frame::Integer(0)),
        ("mode", Frame::bulk("standalone")),
        ("role", Frame::bulk("master")),
        ("modules", Frame::Array(Vec::new())),
    ])
}

fn command(args: &[Bytes]) -> Frame {
    let info = |s: &Spec| {
        Frame::Array(vec![
            Frame::bulk(s.name),
            Frame::Integer(s.arity),
            Frame::Array(
                s.flags
                    .iter()
                    .map(|f| Frame::Simple(f.to_string()))
                    .collect(),
            ),
            Frame::Integer(s.first_key),
            Frame::Integer(s.last_key),
            Frame::Integer(s.step),
            Frame::Array(Vec::new()),
            Frame::Array(Vec::new()),
            Frame::Array(Vec::new()),
            Frame::Array(Vec::new()),
        ])
    };
    let Some(sub) = args.first() else {
        return Frame::Array(COMMANDS.iter().map(info).collect());
    };
    let sub = String::from_utf8_lossy(sub).to_ascii_lowercase();
    match sub.as_str() {
        "count" => Frame::Integer(COMMANDS.len() as i64),
        // No documentation records: redis-cli falls back to no hints.
        "docs" => Frame::Array(Vec::new()),
        "list" => Frame::Array(COMMANDS.iter().map(|s| Frame::bulk(s.name)).collect()),
        "info" => Frame::Array(
            args[1..]
                .iter()
                .map(|name| lookup(&String::from_utf8_lossy(name)).map_or(Frame::NullArray, info))
                .collect(),
        ),
        _ => Frame::err(format!("unknown subcommand '{sub}' of COMMAND")),
    }
}

fn client(session: &mut Session, args: &[Bytes]) -> Frame {
    let sub = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
    match (sub.as_str(), args.len()) {
        ("setname", 2) => {
            session.name = Some(args[1].clone());
            Frame::ok()
        }
        ("getname", 1) => session.name.clone().map_or(Frame::Null, Frame::Bulk),
        ("id", 1) => Frame::Integer(0),
        ("setinfo", 3) => Frame::ok(),
        _ => Frame::err(format!("unknown or malformed CLIENT subcommand '{sub}'")),
    }
}

fn map(pairs: Vec<(&str, Frame)>) -> Frame {
    Frame::Array(
        pairs
            .into_iter()
            .flat_map(|(k, v)| [Frame::bulk(k.to_string()), v])
            .collect(),
    )
}

async fn ranges(server: &Server) -> Frame {
    let infos = match server.engine.ranges().await {
        Ok(r) => r,
        Err(e) => return error_frame(server, &e),
    };
    Frame::Array(
        infos
            .into_iter()
            .map(|r| {
                let d = r.descriptor;
                map(vec![
                    ("id", Frame::Integer(d.id as i64)),
                    ("start", Frame::Bulk(d.start)),
                    ("end", Frame::Bulk(d.end)),
                    ("epoch_version", Frame::Integer(d.epoch.version as i64)),
                    (
                        "epoch_conf_version",
                        Frame::Integer(d.epoch.conf_version as i64),
                    ),
                    ("role", Frame::bulk(format!("{:?}", r.role).to_lowercase())),
                    ("term", Frame::Integer(r.term as i64)),
                    ("applied_index", Frame::Integer(r.applied_index as i64)),
                    (
                        "replicas",
                        Frame::Array(
                            d.replicas
                                .iter()
                                .map(|rep| Frame::Integer(rep.node_id as i64))
                                .collect(),
                        ),
                    ),
                    (
                        "merging_into",
                        r.merging_into
                            .map_or(Frame::Null, |id| Frame::Integer(id as i64)),
                    ),
                ])
            })
            .collect(),
    )
}

/// Numbers describing the node, as (name, value) pairs.
pub(crate) async fn status_pairs(server: &Server) -> Result<Vec<(&'static str, u64)>, Error> {
    let stats = server.engine.stats().await?;
    let ranges = server.engine.ranges().await?;
    let leading = ranges
        .iter()
        .filter(|r| r.role == flotilla_raftgroup::Role::Leader)
        .count() as u64;
    Ok(vec![
        ("node_id", server.engine.node_id()),
        ("cluster_id", server.config.cluster_id),
        ("uptime_ms", server.started.elapsed().as_millis() as u64),
        ("ranges", stats.ranges),
        ("ranges_leading", leading),
        ("ranges_hibernating", stats.ranges_hibernating),
        ("proposals", stats.proposals),
        ("entries_applied", stats.entries_applied),
        ("wal_writes", stats.wal_writes),
        ("wal_fsyncs", stats.wal_fsyncs),
        ("wal_batches", stats.wal_batches),
        ("reads", stats.reads),
        ("scans", stats.scans),
        ("splits", stats.splits),
        ("merges", stats.merges),
        ("compactions", stats.compactions),
        ("snapshots_sent", stats.snapshots_sent),
        ("snapshots_applied", stats.snapshots_applied),
        (
            "messages_dropped_unknown_range",
            stats.messages_dropped_unknown_range,
        ),
        (
            "unknown_range_probes_answered",
            stats.unknown_range_probes_answered,
        ),
        ("membership_changes", stats.membership_changes),
        ("replicas_destroyed", stats.replicas_destroyed),
        ("handovers", stats.handovers),
        ("pre_votes", stats.pre_votes),
        ("elections", stats.elections),
        ("elections_won", stats.elections_won),
        ("leader_changes", stats.leader_changes),
        ("auto_splits", stats.auto_splits),
        ("auto_merges", stats.auto_merges),
    ])
}

async fn status(server: &Server) -> Frame {
    match status_pairs(server).await {
        Ok(pairs) => {
            let mut frames: Vec<(&str, Frame)> = pairs
                .into_iter()
                .map(|(k, v)| (k, Frame::Integer(v as i64)))
                .collect();
            frames.push((
                "client_address",
                Frame::bulk(server.client_addr.to_string()),
            ));
            let raft = server.engine.local_addr().map(|a| a.to_string());
            frames.push(("raft_address", raft.map_or(Frame::Null, Frame::bulk)));
            map(frames)
        }
        Err(e) => error_frame(server, &e),
    }
}

async fn info(server: &Server) -> String {
    let mut text = format!(
        "# Server\r\nredis_version:7.0.0\r\nflotilla_version:{}\r\nredis_mode:standalone\r\n\
         process_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\n\r\n# Flotilla\r\n",
        env!("CARGO_PKG_VERSION"),
        std::process::id(),
        server.client_addr.port(),
        server.started.elapsed().as_secs(),
    );
    match status_pairs(server).await {
        Ok(pairs) => {
            for (k, v) in pairs {
                text.push_str(&format!("{k}:{v}\r\n"));
            }
        }
        Err(e) => text.push_str(&format!("error:{e}\r\n")),
    }
    text
}

fn show(arg: &[u8]) -> String {
    let shown: String = String::from_utf8_lossy(&arg[..arg.len().min(64)])
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    shown
}

/// Idle connections to other nodes' RESP servers, by node id.
#[derive(Default)]
pub struct Upstreams {
    idle: parking_lot::Mutex<HashMap<u64, Vec<Upstream>>>,
}

const UPSTREAM_IDLE_MAX: usize = 16;

struct Upstream {
    stream: TcpStream,
    buf: BytesMut,
}

impl Upstream {
    async fn call(&mut self, args: &[Bytes], limits: &resp::Limits) -> Result<Frame, String> {
        let mut out = BytesMut::new();
        Frame::encode_request(args, &mut out);
        self.stream
            .write_all(&out)
            .await
            .map_err(|e| e.to_string())?;
        loop {
            if let Some(frame) =
                resp::parse_frame(&mut self.buf, limits).map_err(|e| e.to_string())?
            {
                return Ok(frame);
            }
            self.buf.reserve(16 << 10);
            if self
                .stream
                .read_buf(&mut self.buf)
                .await
                .map_err(|e| e.to_string())?
                == 0
            {
                return Err("connection closed".into());
            }
        }
    }
}

/// Commands that only read: safe to resend when a forwarded copy lost its
/// reply.
fn is_read(args: &[Bytes]) -> bool {
    ["get", "exists", "flotilla.scan"]
        .iter()
        .any(|name| args[0].eq_ignore_ascii_case(name.as_bytes()))
}

/// Why forwarding failed, and whether the command may have been sent.
struct ForwardError {
    sent: bool,
    message: String,
}

/// Proxy `args` to node `node`'s RESP server and return its reply.
async fn forward(
    server: &Server,
    node: u64,
    args: &[Bytes],
    deadline: Instant,
) -> Result<Frame, ForwardError> {
    let not_sent = |message: String| ForwardError {
        sent: false,
        message,
    };
    let Some(addr) = server.config.node(node).map(|n| n.client) else {
        return Err(not_sent(format!(
            "node {node} has no client address in [[nodes]]"
        )));
    };
    let sent = std::sync::atomic::AtomicBool::new(false);
    let remaining = deadline.saturating_duration_since(Instant::now());
    let pooled = server
        .upstreams
        .idle
        .lock()
        .get_mut(&node)
        .and_then(|v| v.pop());
    let work = async {
        let mut upstream = match pooled {
            Some(u) => u,
            None => {
                let stream = TcpStream::connect(addr)
                    .await
                    .map_err(|e| format!("{addr}: {e}"))?;
                let _ = stream.set_nodelay(true);
                let mut u = Upstream {
                    stream,
                    buf: BytesMut::new(),
                };
                if let Some(password) = &server.config.server.password {
                    let auth = [Bytes::from_static(b"AUTH"), Bytes::from(password.clone())];
                    if let Frame::Error(e) = u.call(&auth, &server.limits).await? {
                        return Err(format!("{addr}: AUTH refused: {e}"));
                    }
                }
                u.call(&[Bytes::from_static(b"FLOTILLA.NOFORWARD")], &server.limits)
                    .await?;
                u
            }
        };
        sent.store(true, std::sync::atomic::Ordering::Relaxed);
        let reply = upstream.call(args, &server.limits).await?;
        Ok::<_, String>((upstream, reply))
    };
    match tokio::time::timeout(remaining, work).await {
        Ok(Ok((upstream, reply))) => {
            let mut idle = server.upstreams.idle.lock();
            let list = idle.entry(node).or_default();
            if list.len() < UPSTREAM_IDLE_MAX {
                list.push(upstream);
            }
            Ok(reply)
        }
        result => Err(ForwardError {
            sent: sent.load(std::sync::atomic::Ordering::Relaxed),
            message: match result {
                Ok(Err(e)) => e,
                _ => format!("no reply from node {node} at {addr} in time"),
            },
        }),
    }
}
