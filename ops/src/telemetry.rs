//! Logs (`tracing`, filtered by `RUST_LOG`) and the Prometheus metrics
//! endpoint.
//!
//! The metrics endpoint is a minimal HTTP server of its own that answers
//! every request with the Prometheus text exposition, so that it can bind
//! port 0 and report the address it got (the exporter's own listener cannot).

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Initialises `tracing` logs on stderr. The filter comes from `RUST_LOG`
/// when set, else `default_filter` (for example `"info"` or
/// `"order_server=debug,info"`). Calling it again does nothing.
pub fn init_tracing(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Why the metrics endpoint could not be started.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The Prometheus recorder could not be built or installed.
    #[error("cannot install the Prometheus recorder: {0}")]
    Recorder(String),
    /// The listen address could not be bound.
    #[error("cannot listen for metrics on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The underlying error.
        source: std::io::Error,
    },
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide Prometheus handle, installing the global recorder on
/// first use. Later calls return the same handle.
pub fn prometheus_handle() -> Result<PrometheusHandle, MetricsError> {
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    // Fine steps from 25 us to 10 ms, where commits and round trips on
    // one host fall: `grompi-sim bench` reads medians from these buckets
    // (interpolated within one). A step is at most a third of its lower
    // edge from 300 us to 5 ms, at most half from 50 us to 10 ms.
    let handle = PrometheusBuilder::new()
        .set_buckets(&[
            0.000_025, 0.000_05, 0.000_075, 0.000_1, 0.000_15, 0.000_2, 0.000_3, 0.000_4, 0.000_5,
            0.000_65, 0.000_8, 0.001, 0.001_25, 0.001_5, 0.002, 0.002_5, 0.003, 0.004, 0.005,
            0.007_5, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 100.0, 1000.0, 4096.0,
        ])
        .map_err(|e| MetricsError::Recorder(e.to_string()))?
        .install_recorder()
        .map_err(|e| MetricsError::Recorder(e.to_string()))?;
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// Installs the global metrics recorder and, when `listen` is given, serves
/// the Prometheus text format over HTTP there (any path). Returns the bound
/// address (useful when `listen` has port 0). Must be called inside a tokio
/// runtime when `listen` is given.
pub fn install_metrics(listen: Option<SocketAddr>) -> Result<Option<SocketAddr>, MetricsError> {
    let handle = prometheus_handle()?;
    let Some(addr) = listen else {
        return Ok(None);
    };
    let bind_err = |source| MetricsError::Bind { addr, source };
    let std_listener = std::net::TcpListener::bind(addr).map_err(bind_err)?;
    std_listener.set_nonblocking(true).map_err(bind_err)?;
    let bound = std_listener.local_addr().map_err(bind_err)?;
    let listener = tokio::net::TcpListener::from_std(std_listener).map_err(bind_err)?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let handle = handle.clone();
            tokio::spawn(async move {
                // Read (and ignore) the request head; every path gets metrics.
                let mut buf = [0u8; 2048];
                let read =
                    tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
                if !matches!(read, Ok(Ok(n)) if n > 0) {
                    return;
                }
                let body = handle.render();
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(body.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    tracing::info!(%bound, "serving Prometheus metrics");
    Ok(Some(bound))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn endpoint_serves_recorded_metrics() {
        let addr = install_metrics(Some("127.0.0.1:0".parse().unwrap()))
            .unwrap()
            .unwrap();
        metrics::counter!("ops_test_total").increment(3);
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
        assert!(out.contains("ops_test_total 3"), "{out}");
        // A second install reuses the recorder and binds another listener.
        assert!(
            install_metrics(Some("127.0.0.1:0".parse().unwrap()))
                .unwrap()
                .is_some()
        );
    }
}
