//! The Prometheus endpoint: `GET /metrics` on `server.metrics_listen`.
//!
//! The `metrics-exporter-prometheus` recorder collects everything the
//! crates record through the `metrics` facade; this module serves its
//! text rendering over a minimal HTTP/1.1 responder (one request per
//! connection), so no HTTP stack is compiled in. Each scrape also reads
//! the node's counters ([`crate::NodeStats`]) and publishes them.

use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::Server;

/// Install the Prometheus recorder as the process's global recorder.
/// `None` when another recorder is already installed (e.g. a second
/// server in one process): that server then has no endpoint data of its own.
pub fn install() -> Option<PrometheusHandle> {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    match metrics::set_global_recorder(recorder) {
        Ok(()) => Some(handle),
        Err(_) => {
            tracing::warn!("a metrics recorder is already installed; no Prometheus endpoint");
            None
        }
    }
}

const REQUEST_BYTES_MAX: usize = 8 << 10;

/// Serve scrapes until `stop` flips.
pub async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    server: Arc<Server>,
    mut stop: watch::Receiver<bool>,
) {
    let upkeep = handle.clone();
    let upkeep_task = tokio::spawn(async move {
        // Histograms are drained into their summaries here.
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let handle = handle.clone();
                let server = server.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(10),
                        scrape(stream, &handle, &server),
                    )
                    .await;
                });
            }
        }
    }
    upkeep_task.abort();
}

async fn scrape(
    mut stream: TcpStream,
    handle: &PrometheusHandle,
    server: &Server,
) -> std::io::Result<()> {
    let mut request = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 || request.len() + n > REQUEST_BYTES_MAX {
            return Ok(());
        }
        request.extend_from_slice(&chunk[..n]);
    }
    let first_line = request.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = first_line.split(|&b| b == b' ');
    let (method, path) = (parts.next(), parts.next());
    let response = match (method, path) {
        (Some(b"GET"), Some(b"/metrics" | b"/")) => {
            publish_node_stats(server).await;
            let body = handle.render();
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        }
        _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 22\r\nConnection: close\r\n\r\ntry GET /metrics here\n"
            .to_string(),
    };
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// The engine's own counters, as `flotilla_node_*` series.
async fn publish_node_stats(server: &Server) {
    let Ok(pairs) = super::commands::status_pairs(server).await else {
        return;
    };
    for (name, value) in pairs {
        match name {
            "node_id" | "cluster_id" => {}
            "uptime_ms" => metrics::gauge!("flotilla_node_uptime_seconds").set(value as f64 / 1e3),
            "ranges" => metrics::gauge!("flotilla_node_ranges").set(value as f64),
            "ranges_leading" => metrics::gauge!("flotilla_node_ranges_leading").set(value as f64),
            "ranges_hibernating" => {
                metrics::gauge!("flotilla_node_ranges_hibernating").set(value as f64)
            }
            other => metrics::counter!(format!("flotilla_node_{other}_total")).absolute(value),
        }
    }
}
