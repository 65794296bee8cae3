//! The service's own caller check, behind the TLS handshake: a client whose
//! certificate the TLS layer accepts but which is not byte for byte the
//! pinned router certificate gets PERMISSION_DENIED.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use grompi_ops::tls::{self, TlsIdentity};
use grompi_order_server::committer::Committer;
use grompi_order_server::core::OrderCore;
use grompi_order_server::limits::Limits;
use grompi_order_server::redb_store::RedbStore;
use grompi_order_server::service::OrderGrpc;
use grompi_proto::OrderServerSecret;
use grompi_proto::pb::{
    self, order_service_client::OrderServiceClient, order_service_server::OrderServiceServer,
};
use std::sync::Arc;

/// Calls ServerInfo as the router; the service pins `other` when given,
/// else the router's own certificate.
async fn call_with_pin(other: Option<Vec<u8>>) -> Result<pb::ServerInfoResponse, tonic::Status> {
    tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(RedbStore::open(&dir.path().join("db")).unwrap());
    let core = Arc::new(OrderCore::new(
        OrderServerSecret::from_bytes([1; 32]),
        0,
        Limits::default(),
    ));
    let (committer, _writer) = Committer::start(Arc::clone(&core), Arc::clone(&store), 16).unwrap();
    let server_id = TlsIdentity::generate(&[]).unwrap();
    let router = TlsIdentity::generate(&[]).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let pinned = match other {
        Some(der) => der,
        None => router.cert_der().unwrap(),
    };
    let service = OrderServiceServer::new(OrderGrpc::new(core, store, committer, Some(pinned)));
    // The TLS layer trusts the router's certificate; the service pins `pinned`.
    tokio::spawn(
        tonic::transport::Server::builder()
            .tls_config(tls::server_config(&server_id, Some(&router.cert_pem)))
            .unwrap()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls::client_config(
            &server_id.cert_pem,
            "localhost",
            Some(&router),
        ))
        .unwrap()
        .connect()
        .await
        .unwrap();
    OrderServiceClient::new(channel)
        .server_info(pb::ServerInfoRequest {})
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn a_certificate_other_than_the_pinned_one_is_permission_denied() {
    let other = TlsIdentity::generate(&[]).unwrap().cert_der().unwrap();
    let status = call_with_pin(Some(other)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert!(
        status
            .message()
            .contains("not the pinned router certificate"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn the_pinned_router_certificate_is_served() {
    let info = call_with_pin(None).await.unwrap();
    assert_eq!(
        info.public_key,
        OrderServerSecret::from_bytes([1; 32]).public_key().to_vec()
    );
}
