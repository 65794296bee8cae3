//! The service's own caller check, behind the TLS handshake: a client whose
//! certificate the TLS layer accepts but which is not byte for byte the
//! pinned router certificate gets PERMISSION_DENIED, and a client without a
//! certificate (which the real server's TLS layer already refuses; here
//! the TLS layer lets it through) gets UNAUTHENTICATED, on every RPC. A
//! refused call changes nothing: the pinned router then gets exactly what
//! it would have got without it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use grompi_ops::tls::{self, TlsIdentity};
use grompi_order_server::committer::{Committer, Writer};
use grompi_order_server::core::OrderCore;
use grompi_order_server::limits::Limits;
use grompi_order_server::redb_store::RedbStore;
use grompi_order_server::service::OrderGrpc;
use grompi_proto::envelope::HeaderFields;
use grompi_proto::pb::{
    self, order_service_client::OrderServiceClient, order_service_server::OrderServiceServer,
};
use grompi_proto::{
    BlockDigest, BodyHash, ConversationId, EnvelopeHeader, EnvelopeKind, EnvelopeSummary, Epoch,
    Head, KeyCommitment, OrderServerSecret, Sequence, SlotEntry, SlotIndex, SlotRole, SlotSecret,
    SlotSet,
};
use std::net::SocketAddr;
use std::sync::Arc;
use tonic::Code;
use tonic::transport::Channel;

type Client = OrderServiceClient<Channel>;

const SERVER_SECRET: [u8; 32] = [1; 32];

/// A server whose TLS layer accepts the router's certificate, a stranger's
/// and no certificate at all, and whose service pins the router's.
struct Fixture {
    _dir: tempfile::TempDir,
    _writer: Writer,
    addr: SocketAddr,
    server_cert: String,
    router: TlsIdentity,
    stranger: TlsIdentity,
}

async fn fixture() -> Fixture {
    tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(RedbStore::open(&dir.path().join("db")).unwrap());
    let core = Arc::new(OrderCore::new(
        OrderServerSecret::from_bytes(SERVER_SECRET),
        0,
        Limits::default(),
    ));
    let (committer, writer) = Committer::start(
        Arc::clone(&core),
        Arc::clone(&store),
        16,
        grompi_order_server::committer::Gather::OFF,
    )
    .unwrap();
    let server_id = TlsIdentity::generate(&[]).unwrap();
    let router = TlsIdentity::generate(&[]).unwrap();
    let stranger = TlsIdentity::generate(&[]).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = OrderServiceServer::new(OrderGrpc::new(
        core,
        store,
        committer,
        Some(router.cert_der().unwrap()),
    ));
    let trusted = format!("{}\n{}", router.cert_pem, stranger.cert_pem);
    tokio::spawn(
        tonic::transport::Server::builder()
            .tls_config(tls::server_config(&server_id, Some(&trusted)).client_auth_optional(true))
            .unwrap()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    Fixture {
        _dir: dir,
        _writer: writer,
        addr,
        server_cert: server_id.cert_pem,
        router,
        stranger,
    }
}

impl Fixture {
    async fn client(&self, identity: Option<&TlsIdentity>) -> Client {
        let channel = tonic::transport::Endpoint::from_shared(format!("https://{}", self.addr))
            .unwrap()
            .tls_config(tls::client_config(&self.server_cert, "localhost", identity))
            .unwrap()
            .connect()
            .await
            .unwrap();
        OrderServiceClient::new(channel)
    }
}

/// A two-slot conversation and its valid Setup item at index 0.
struct Conv {
    id: ConversationId,
    set: SlotSet,
    setup: pb::AttestItem,
}

fn conversation() -> Conv {
    let server = OrderServerSecret::from_bytes(SERVER_SECRET).public_key();
    let secrets = [
        SlotSecret::from_bytes([21; 32]),
        SlotSecret::from_bytes([22; 32]),
    ];
    let set = SlotSet::new(
        secrets
            .iter()
            .zip([SlotRole::Admin, SlotRole::Member])
            .map(|(s, role)| SlotEntry {
                key: s.public_key(),
                role,
            })
            .collect(),
    )
    .unwrap();
    let id = ConversationId::from_bytes([7; 32]);
    let summary = EnvelopeSummary {
        header: EnvelopeHeader::new(HeaderFields {
            conversation: id,
            epoch: Epoch(0),
            kind: EnvelopeKind::Setup,
            sender: SlotIndex(0),
            sequence: Sequence(1),
            last_seen: None,
            body_hash: BodyHash::from_bytes([3; 32]),
            key_commitment: KeyCommitment::from_bytes([5; 32]),
            slot_set_hash: Some(set.hash()),
        })
        .unwrap(),
        block_digests: vec![BlockDigest::from_bytes([1; 32])],
    };
    let tag = secrets[0]
        .mac_keys(&server)
        .unwrap()
        .submit(&summary.hash(), Sequence(1));
    let setup = pb::AttestItem {
        envelope: Some((&summary).into()),
        submission_tag: tag.to_vec(),
        index: 0,
        previous_head: Head::genesis(&id).to_vec(),
        next_slots: None,
    };
    Conv { id, set, setup }
}

/// What the pinned router sees of the conversation: count and head from a
/// head proof, or the error code.
async fn state(router: &mut Client, conv: &Conv) -> Result<(u64, Vec<u8>), Code> {
    router
        .prove_head(pb::ProveHeadRequest {
            conversation_id: conv.id.to_vec(),
            slot: 0,
            nonce: vec![9; 32],
        })
        .await
        .map(|r| {
            let p = r.into_inner().proof.unwrap();
            (p.count, p.head)
        })
        .map_err(|s| s.code())
}

fn refused<T: std::fmt::Debug>(
    r: Result<tonic::Response<T>, tonic::Status>,
    code: Code,
    says: &str,
) {
    let s = r.expect_err("the call was served");
    assert_eq!(s.code(), code, "{s:?}");
    assert!(
        s.message().contains(says),
        "{:?} should say {says:?}",
        s.message()
    );
}

/// Who calls besides the router.
#[derive(Debug, Clone, Copy)]
enum Caller {
    /// A client certificate the TLS layer accepts but the service does not pin.
    Stranger,
    /// No client certificate.
    Nobody,
}

/// Calls every RPC as `caller`, expecting `code` saying `says`, around the
/// pinned router's own calls, and checks that nothing the caller sent was
/// taken.
async fn every_rpc_is_refused(caller: Caller, code: Code, says: &str) {
    let f = fixture().await;
    let mut router = f.client(Some(&f.router)).await;
    let mut other = f
        .client(match caller {
            Caller::Stranger => Some(&f.stranger),
            Caller::Nobody => None,
        })
        .await;
    let conv = conversation();

    // OpenConversation: refused, and the conversation stays unknown.
    refused(
        other
            .open_conversation(pb::OpenConversationRequest {
                conversation_id: conv.id.to_vec(),
                slots: Some((&conv.set).into()),
            })
            .await,
        code,
        says,
    );
    assert_eq!(state(&mut router, &conv).await, Err(Code::NotFound));
    let opened = router
        .open_conversation(pb::OpenConversationRequest {
            conversation_id: conv.id.to_vec(),
            slots: Some((&conv.set).into()),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(opened.genesis_head, Head::genesis(&conv.id).to_vec());
    let before = state(&mut router, &conv).await;
    assert_eq!(before, Ok((0, Head::genesis(&conv.id).to_vec())));

    // Attest: refused, nothing attested.
    refused(
        other
            .attest(pb::AttestRequest {
                items: vec![conv.setup.clone()],
            })
            .await,
        code,
        says,
    );
    assert_eq!(state(&mut router, &conv).await, before);

    // AttestStream: refused before any response, nothing attested.
    refused(
        other
            .attest_stream(tokio_stream::iter(vec![pb::AttestRequest {
                items: vec![conv.setup.clone()],
            }]))
            .await,
        code,
        says,
    );
    assert_eq!(state(&mut router, &conv).await, before);

    // ProveHead and ServerInfo: refused.
    refused(
        other
            .prove_head(pb::ProveHeadRequest {
                conversation_id: conv.id.to_vec(),
                slot: 0,
                nonce: vec![9; 32],
            })
            .await,
        code,
        says,
    );
    refused(
        other.server_info(pb::ServerInfoRequest {}).await,
        code,
        says,
    );
    assert_eq!(state(&mut router, &conv).await, before);

    // The router's own Setup is the first thing attested at index 0.
    let mut results = router
        .attest(pb::AttestRequest {
            items: vec![conv.setup.clone()],
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    match results.remove(0).outcome.unwrap() {
        pb::attest_result::Outcome::Attested(a) => assert_eq!(a.index, 0),
        pb::attest_result::Outcome::Refused(r) => panic!("the router's Setup was refused: {r:?}"),
    }
    assert_eq!(state(&mut router, &conv).await.map(|(n, _)| n), Ok(1));
    router.server_info(pb::ServerInfoRequest {}).await.unwrap();
}

#[tokio::test]
async fn every_rpc_from_a_certificate_other_than_the_pinned_one_is_permission_denied() {
    every_rpc_is_refused(
        Caller::Stranger,
        Code::PermissionDenied,
        "the client certificate is not the pinned router certificate",
    )
    .await;
}

#[tokio::test]
async fn every_rpc_without_a_client_certificate_is_unauthenticated() {
    every_rpc_is_refused(
        Caller::Nobody,
        Code::Unauthenticated,
        "a client certificate is required (mutual TLS)",
    )
    .await;
}

#[tokio::test]
async fn the_pinned_router_certificate_is_served() {
    let f = fixture().await;
    let info = f
        .client(Some(&f.router))
        .await
        .server_info(pb::ServerInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        info.public_key,
        OrderServerSecret::from_bytes(SERVER_SECRET)
            .public_key()
            .to_vec()
    );
}
