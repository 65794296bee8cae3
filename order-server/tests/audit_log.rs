//! The audit log end to end: a server made by `init` and run by `serve`
//! attests over gRPC, answers with the entry's log index, and serves a
//! signed checkpoint and tiles over HTTP; a copy of them fetched from the
//! endpoint verifies against the log key `init` printed, and the entry at
//! the answered index is the one a member recomputes from the
//! conversation id, epoch, index and head.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use grompi_ops::tls::{self, TlsIdentity};
use grompi_order_server::{audit_entry, audit_log, config::Config, init, server};
use grompi_proto::envelope::HeaderFields;
use grompi_proto::pb::{self, order_service_client::OrderServiceClient};
use grompi_proto::{
    BlockDigest, BodyHash, ConversationId, EnvelopeHeader, EnvelopeKind, EnvelopeSummary, Epoch,
    Head, Index, KeyCommitment, Sequence, SlotEntry, SlotIndex, SlotRole, SlotSecret, SlotSet,
};
use grompi_tlog::note::Ed25519Verifier;
use grompi_tlog::tiles;
use std::net::SocketAddr;
use std::path::Path;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn http_get(addr: SocketAddr, path: &str) -> (u16, Vec<u8>) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET /{path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let end = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let status = std::str::from_utf8(&out[9..12]).unwrap().parse().unwrap();
    (status, out[end + 4..].to_vec())
}

fn bound(data: &Path) -> Option<(SocketAddr, SocketAddr)> {
    let text = std::fs::read_to_string(data.join(init::BOUND_ADDRS_FILE)).ok()?;
    let value: toml::Value = toml::from_str(&text).ok()?;
    Some((
        value.get("grpc")?.as_str()?.parse().ok()?,
        value.get("audit")?.as_str()?.parse().ok()?,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attestations_are_logged_served_and_verified() {
    tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let made = init::init_with_origin(&data, &[], Some("example.org/order-0")).unwrap();
    let router = TlsIdentity::generate(&[]).unwrap();
    std::fs::write(dir.path().join("router.crt"), &router.cert_pem).unwrap();
    let config = dir.path().join("order.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\nrouter_certificate = \"router.crt\"\n\
         audit_listen = \"127.0.0.1:0\"\naudit_checkpoint_seconds = 1\n",
    )
    .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server::serve_until(Config::load(&config).unwrap(), async {
        let _ = stopped.await;
    }));
    let mut addrs = None;
    for _ in 0..500 {
        addrs = bound(&data);
        if addrs.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (grpc, audit) = addrs.expect("the server wrote its bound addresses");

    // The router opens a conversation and attests its Setup.
    let server_cert =
        std::fs::read_to_string(TlsIdentity::cert_path(&data, init::TLS_STEM)).unwrap();
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{grpc}"))
        .unwrap()
        .tls_config(tls::client_config(&server_cert, "localhost", Some(&router)))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = OrderServiceClient::new(channel);
    let slot = SlotSecret::from_bytes([21; 32]);
    let set = SlotSet::new(vec![SlotEntry {
        key: slot.public_key(),
        role: SlotRole::Admin,
    }])
    .unwrap();
    let conv = ConversationId::from_bytes([7; 32]);
    client
        .open_conversation(pb::OpenConversationRequest {
            conversation_id: conv.to_vec(),
            slots: Some((&set).into()),
        })
        .await
        .unwrap();
    let summary = EnvelopeSummary {
        header: EnvelopeHeader::new(HeaderFields {
            conversation: conv,
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
    let tag = slot
        .mac_keys(&made.public_key)
        .unwrap()
        .submit(&summary.hash(), Sequence(1));
    let item = pb::AttestItem {
        envelope: Some((&summary).into()),
        submission_tag: tag.to_vec(),
        index: 0,
        previous_head: Head::genesis(&conv).to_vec(),
        next_slots: None,
    };
    let answer = |r: pb::AttestResponse| {
        let result = r.results.into_iter().next().unwrap();
        let Some(pb::attest_result::Outcome::Attested(a)) = result.outcome else {
            panic!("refused: {result:?}");
        };
        (a.head, result.log_index)
    };
    let (head, log_index) = answer(
        client
            .attest(pb::AttestRequest {
                items: vec![item.clone()],
            })
            .await
            .unwrap()
            .into_inner(),
    );
    // The start's security event is entry 0, the Setup entry 1; a retry
    // answers with the same entry.
    assert_eq!(log_index, Some(1));
    let (_, again) = answer(
        client
            .attest(pb::AttestRequest { items: vec![item] })
            .await
            .unwrap()
            .into_inner(),
    );
    assert_eq!(again, Some(1));

    // The endpoint signs the grown log within a period.
    let mut checkpoint = Vec::new();
    for _ in 0..100 {
        let (status, body) = http_get(audit, "checkpoint").await;
        assert_eq!(status, 200);
        if String::from_utf8_lossy(&body).lines().nth(1) == Some("2") {
            checkpoint = body;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(!checkpoint.is_empty(), "no checkpoint of size 2 was served");

    // A copy of checkpoint and tiles, fetched over HTTP, verifies.
    let copy = dir.path().join("copy");
    std::fs::create_dir_all(&copy).unwrap();
    std::fs::write(copy.join("checkpoint"), &checkpoint).unwrap();
    let paths: Vec<String> = tiles::tiles_for_size(0, 2)
        .iter()
        .map(|t| t.path())
        .chain(tiles::bundles_for_size(0, 2).iter().map(|b| b.path()))
        .collect();
    for path in &paths {
        let (status, body) = http_get(audit, path).await;
        assert_eq!(status, 200, "{path}");
        let file = copy.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, body).unwrap();
    }
    let verifier = Ed25519Verifier::from_vkey(&made.log_key).unwrap();
    let v = audit_log::verify_dir(&copy, &verifier).unwrap();
    assert_eq!((v.size, v.attestations, v.events), (2, 1, 1));

    // The member finds its entry at the answered index.
    let bundle = std::fs::read(copy.join("tile/entries/000.p/2")).unwrap();
    let entries = tiles::decode_bundle(&bundle, 2).unwrap();
    let head = Head::from_bytes(head.try_into().unwrap());
    assert_eq!(
        entries[1],
        audit_entry::attestation(&conv, Epoch(0), Index(0), &head).to_vec()
    );

    stop.send(()).unwrap();
    serving.await.unwrap().unwrap();
}
