//! The standalone server: a node behind a Redis-protocol (RESP2) front end,
//! with a Prometheus endpoint and graceful shutdown.
//!
//! - [`config`]: the TOML config ([`ServerConfig`]).
//! - [`resp`]: the wire protocol (parser with limits, encoder).
//! - [`commands`]: what each command does, leader forwarding / redirects.
//! - [`admin`]: the client side used by `flotilla admin`.
//! - [`metrics_http`]: the `/metrics` endpoint.
//! - [`faults`]: test hooks (`FLOTILLA.FAULT`, `FLOTILLA.LOCALSCAN`), off by
//!   default (`server.fault_injection`).
//!
//! Every connection handles its requests in order (pipelining works: all
//! complete requests in the buffer are answered before one flush). A
//! request for a range this node does not lead is proxied to the leader's
//! RESP server (`server.follower_requests = "forward"`, the default) or
//! answered with `-MOVED <range id> <host:port>` ("redirect").

pub mod admin;
pub mod commands;
pub mod config;
pub mod faults;
pub mod metrics_http;
pub mod resp;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::engine::Engine;
use crate::error::Error;
pub use commands::Session;
pub use config::{FollowerRequests, NodeAddress, ServerConfig};
use resp::{Frame, Limits, Request};

/// A node's RESP server: the engine, the settings and the connections to
/// other nodes' servers used for forwarding.
pub struct Server {
    engine: Arc<Engine>,
    config: ServerConfig,
    limits: Limits,
    started: Instant,
    client_addr: SocketAddr,
    upstreams: commands::Upstreams,
}

/// The bound addresses of a started server.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub client: SocketAddr,
    pub raft: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
}

impl Server {
    /// This node's engine.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }
}

/// Open the engine, bind the listeners, and serve until `shutdown`
/// resolves; then stop accepting, let in-flight requests finish (bounded
/// by `server.shutdown_grace_ms`), and close the engine (flush).
/// `on_ready` is called once everything listens.
pub async fn run(
    config: ServerConfig,
    shutdown: impl std::future::Future<Output = ()>,
    on_ready: impl FnOnce(Bound),
) -> Result<(), Error> {
    let engine_config = config.engine_config()?;
    let listener = TcpListener::bind(config.client_listen())
        .await
        .map_err(|e| Error::Config {
            field: "server.listen",
            reason: format!("cannot listen on {}: {e}", config.client_listen()),
        })?;
    let metrics_listener = match config.server.metrics_listen {
        Some(addr) => Some(TcpListener::bind(addr).await.map_err(|e| Error::Config {
            field: "server.metrics_listen",
            reason: format!("cannot listen on {addr}: {e}"),
        })?),
        None => None,
    };
    let prometheus = metrics_listener
        .as_ref()
        .and_then(|_| metrics_http::install());
    // Recovery reads the whole WAL: keep it off the async threads.
    let engine = tokio::task::spawn_blocking(move || Engine::open(engine_config))
        .await
        .map_err(|e| Error::Storage(format!("engine open task failed: {e}")))??;
    let engine = Arc::new(engine);
    let client_addr = listener
        .local_addr()
        .map_err(|e| Error::Storage(e.to_string()))?;
    let limits = Limits {
        request_bytes_max: config.server.request_bytes_max,
        args_max: config.server.args_max,
        ..Limits::default()
    };
    let server = Arc::new(Server {
        engine: engine.clone(),
        limits,
        started: Instant::now(),
        client_addr,
        upstreams: commands::Upstreams::default(),
        config,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut background = JoinSet::new();
    let mut metrics_addr = None;
    if let (Some(listener), Some(handle)) = (metrics_listener, prometheus) {
        metrics_addr = listener.local_addr().ok();
        background.spawn(metrics_http::serve(
            listener,
            handle,
            server.clone(),
            stop_rx.clone(),
        ));
    }
    let bound = Bound {
        client: client_addr,
        raft: engine.local_addr(),
        metrics: metrics_addr,
    };
    tracing::info!(
        node_id = server.config.node_id,
        cluster_id = server.config.cluster_id,
        client = %bound.client,
        raft = ?bound.raft,
        metrics = ?bound.metrics,
        "flotilla server ready"
    );
    on_ready(bound);

    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of file descriptors and the like: back off.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if connections.len() >= server.config.server.connections_max {
                    metrics::counter!("flotilla_server_connections_refused_total").increment(1);
                    tokio::spawn(refuse(stream));
                    continue;
                }
                let server = server.clone();
                let stop = stop_rx.clone();
                connections.spawn(async move {
                    metrics::counter!("flotilla_server_connections_total").increment(1);
                    let gauge = metrics::gauge!("flotilla_server_connections");
                    gauge.increment(1.0);
                    if let Err(e) = serve_connection(&server, stream, stop).await {
                        tracing::debug!(%peer, error = %e, "connection ended");
                    }
                    gauge.decrement(1.0);
                });
            }
        }
    }
    tracing::info!(
        connections = connections.len(),
        "shutting down: not accepting, finishing in-flight requests"
    );
    drop(listener);
    let _ = stop_tx.send(true);
    let grace = Duration::from_millis(server.config.server.shutdown_grace_ms);
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            "grace period over, dropping connections"
        );
        connections.shutdown().await;
    }
    background.shutdown().await;
    let result = engine.close().await;
    drop(server);
    // The engine's own runtime must not be dropped on an async thread.
    let _ = tokio::task::spawn_blocking(move || drop(engine)).await;
    tracing::info!("engine closed");
    result
}

async fn refuse(mut stream: TcpStream) {
    let _ = stream
        .write_all(b"-ERR max number of clients reached\r\n")
        .await;
}

/// Read, execute and answer requests until the client quits, the stream
/// breaks, or shutdown is signalled (between requests only: a request that
/// started is answered).
async fn serve_connection(
    server: &Arc<Server>,
    mut stream: TcpStream,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut input = BytesMut::with_capacity(16 << 10);
    let mut output = BytesMut::with_capacity(16 << 10);
    let mut session = Session::new(server.config.server.password.is_none());
    loop {
        // Answer every complete request in the buffer, then flush once.
        loop {
            match resp::parse_request(&mut input, &server.limits) {
                Ok(Some(Request::Command(args))) => {
                    let reply = commands::execute(server, &mut session, args).await;
                    reply.encode(&mut output);
                    if session.quit {
                        stream.write_all(&output).await?;
                        return Ok(());
                    }
                }
                Ok(Some(Request::BadInline(message))) => {
                    metrics::counter!("flotilla_server_errors_total", "kind" => "protocol")
                        .increment(1);
                    Frame::err(message).encode(&mut output);
                }
                Ok(Some(Request::Empty)) => {}
                Ok(None) => break,
                Err(e) => {
                    // The next request's position is unknown: answer, close.
                    metrics::counter!("flotilla_server_errors_total", "kind" => "protocol")
                        .increment(1);
                    Frame::err(e.to_string()).encode(&mut output);
                    stream.write_all(&output).await?;
                    return Ok(());
                }
            }
        }
        if !output.is_empty() {
            stream.write_all(&output).await?;
            output.clear();
        }
        if *stop.borrow() {
            return Ok(());
        }
        input.reserve(16 << 10);
        tokio::select! {
            read = stream.read_buf(&mut input) => {
                if read? == 0 {
                    return Ok(());
                }
            }
            _ = stop.changed() => return Ok(()),
        }
    }
}
