//! `limits.max_connections` on the real serve path (TLS, the pinned router
//! certificate, `serve_until`), in process: with a cap of 2, a third
//! connection is closed right after accept while the first two keep
//! working, and once one of them closes a new one is accepted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use grompi_ops::tls::{self, TlsIdentity};
use grompi_order_server::config::Config;
use grompi_order_server::init::{self, BOUND_ADDRS_FILE, TLS_STEM};
use grompi_order_server::server::serve_until;
use grompi_proto::pb::{self, order_service_client::OrderServiceClient};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

async fn bound_grpc(data: &Path) -> SocketAddr {
    let path = data.join(BOUND_ADDRS_FILE);
    for _ in 0..600 {
        if let Some(addr) = std::fs::read_to_string(&path).ok().and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("grpc = \""))
                .and_then(|rest| rest.strip_suffix('"'))
                .and_then(|a| a.parse().ok())
        }) {
            return addr;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the order server did not write {}", path.display());
}

async fn connect(
    addr: SocketAddr,
    server_cert: &str,
    router: &TlsIdentity,
) -> Result<OrderServiceClient<Channel>, tonic::transport::Error> {
    let channel = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls::client_config(server_cert, "localhost", Some(router)))
        .unwrap()
        .connect()
        .await?;
    Ok(OrderServiceClient::new(channel))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_over_max_connections_is_closed_until_one_closes() {
    tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    init::init(&data, &[]).unwrap();
    let router = TlsIdentity::generate(&[]).unwrap();
    std::fs::write(dir.path().join("router.crt"), &router.cert_pem).unwrap();
    let config = Config::parse(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\nrouter_certificate = \"router.crt\"\n\
         shutdown_grace_seconds = 2\n[limits]\nmax_connections = 2\n",
        dir.path(),
        &dir.path().join("order.toml"),
    )
    .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_until(config, async {
        let _ = stopped.await;
    }));
    let addr = bound_grpc(&data).await;
    let cert = tls::read_cert_pem(&TlsIdentity::cert_path(&data, TLS_STEM)).unwrap();

    let mut c1 = connect(addr, &cert, &router).await.unwrap();
    let mut c2 = connect(addr, &cert, &router).await.unwrap();
    assert!(
        connect(addr, &cert, &router).await.is_err(),
        "a third connection was accepted"
    );
    c1.server_info(pb::ServerInfoRequest {}).await.unwrap();
    c2.server_info(pb::ServerInfoRequest {}).await.unwrap();

    // Closing a connection frees its slot once the server sees it closed.
    drop(c1);
    let mut admitted = None;
    for _ in 0..200 {
        if let Ok(c) = connect(addr, &cert, &router).await {
            admitted = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut c3 = admitted.expect("a connection was accepted after one closed");
    c3.server_info(pb::ServerInfoRequest {}).await.unwrap();
    c2.server_info(pb::ServerInfoRequest {}).await.unwrap();

    drop((c2, c3));
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
