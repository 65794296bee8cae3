//! The order server binary over real gRPC and mutual TLS: every rejection
//! reason, health, metrics, graceful shutdown, and a crash test that kills
//! the server with SIGKILL under concurrent load.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step fails the test

use grompi_proto::pb::{self, RefusalReason, order_service_client::OrderServiceClient};
use grompi_proto::{
    EnvelopeKind, EnvelopeSummary, Epoch, Head, Index, OrderServerKey, Sequence, SlotSet,
};
use grompi_tests::order_conv::{Conv, summary};
use grompi_tests::{OrderServerNode, RunningOrderServer};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::{Code, transport::Channel};

type Client = OrderServiceClient<Channel>;

struct Fixture {
    node: OrderServerNode,
    server: RunningOrderServer,
    client: Client,
    key: OrderServerKey,
}

async fn fixture(extra: &str) -> Fixture {
    let node = OrderServerNode::init(extra).unwrap();
    let server = node.start().await.unwrap();
    let client = OrderServiceClient::new(node.channel(&server).await.unwrap());
    let key = OrderServerKey::parse("key", &hex_decode(&node.public_key_hex)).unwrap();
    Fixture {
        node,
        server,
        client,
        key,
    }
}

/// What a server process wrote to its standard error so far.
fn stderr(process: &grompi_tests::Process) -> String {
    std::fs::read_to_string(process.log()).unwrap_or_default()
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Opens a conversation and attests its Setup.
async fn opened(f: &mut Fixture, tag: u8, n: usize) -> Conv {
    let mut c = Conv::new(&f.key, tag, n);
    f.client.open_conversation(c.open_request()).await.unwrap();
    let (item, s) = c.item(0, 0);
    let r = attest_one(&mut f.client, item).await;
    assert!(
        matches!(r, pb::attest_result::Outcome::Attested(_)),
        "{r:?}"
    );
    c.accept(&s);
    c
}

async fn attest_one(client: &mut Client, item: pb::AttestItem) -> pb::attest_result::Outcome {
    let mut r = client
        .attest(pb::AttestRequest { items: vec![item] })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.results.len(), 1);
    r.results.remove(0).outcome.unwrap()
}

fn refused(outcome: pb::attest_result::Outcome) -> (RefusalReason, String, u64) {
    match outcome {
        pb::attest_result::Outcome::Refused(r) => (
            RefusalReason::try_from(r.reason).unwrap(),
            r.message,
            r.next_index,
        ),
        pb::attest_result::Outcome::Attested(a) => {
            panic!("expected a refusal, got an attestation at {}", a.index)
        }
    }
}

/// What the server says about the item's conversation: epoch, count and
/// head from a head proof for slot 0, or the error code.
async fn state_of(f: &mut Fixture, item: &pb::AttestItem) -> Result<(u64, u64, Vec<u8>), Code> {
    let conversation_id = item
        .envelope
        .as_ref()
        .and_then(|e| e.header.as_ref())
        .map(|h| h.conversation_id.clone())
        .unwrap_or_default();
    f.client
        .prove_head(pb::ProveHeadRequest {
            conversation_id,
            slot: 0,
            nonce: vec![0x11; 32],
        })
        .await
        .map(|r| {
            let p = r.into_inner().proof.unwrap();
            (p.epoch, p.count, p.head)
        })
        .map_err(|s| s.code())
}

/// Sends `item`, expects the refusal `want` with a message saying `words`,
/// and checks that the refusal left the conversation's state unchanged.
async fn expect_refusal(f: &mut Fixture, item: pb::AttestItem, want: RefusalReason, words: &str) {
    let before = state_of(f, &item).await;
    let (reason, message, _) = refused(attest_one(&mut f.client, item.clone()).await);
    assert_eq!(reason, want, "{message}");
    assert!(
        message.contains(words),
        "message {message:?} does not say {words:?}"
    );
    assert_eq!(
        state_of(f, &item).await,
        before,
        "a refused item changed the server's state"
    );
}

// ---- OpenConversation ------------------------------------------------------

#[tokio::test]
async fn open_rejects_a_malformed_conversation_id() {
    let mut f = fixture("").await;
    let mut req = Conv::new(&f.key, 1, 2).open_request();
    req.conversation_id = vec![1; 31];
    let s = f.client.open_conversation(req).await.unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(
        s.message()
            .contains("conversation_id must be 32 bytes, got 31"),
        "{}",
        s.message()
    );
}

#[tokio::test]
async fn open_rejects_a_missing_slot_set() {
    let mut f = fixture("").await;
    let mut req = Conv::new(&f.key, 1, 2).open_request();
    req.slots = None;
    let s = f.client.open_conversation(req).await.unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(
        s.message().contains("missing required field slots"),
        "{}",
        s.message()
    );
}

#[tokio::test]
async fn open_rejects_an_oversized_slot_set() {
    let mut f = fixture("[limits]\nmax_slots = 4\n").await;
    let s = f
        .client
        .open_conversation(Conv::new(&f.key, 1, 5).open_request())
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::ResourceExhausted);
    assert!(
        s.message()
            .contains("5 slots, more than this server's limit of 4"),
        "{}",
        s.message()
    );
}

#[tokio::test]
async fn open_rejects_a_replayed_conversation_id() {
    let mut f = fixture("").await;
    let c = Conv::new(&f.key, 1, 2);
    f.client.open_conversation(c.open_request()).await.unwrap();
    let s = f
        .client
        .open_conversation(c.open_request())
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::AlreadyExists);
    assert!(s.message().contains("already exists"), "{}", s.message());
}

#[tokio::test]
async fn open_rejects_a_low_order_slot_key() {
    let mut f = fixture("").await;
    let mut req = Conv::new(&f.key, 1, 2).open_request();
    req.slots.as_mut().unwrap().slots[1].key = vec![0; 32];
    let s = f.client.open_conversation(req).await.unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(s.message().contains("low order"), "{}", s.message());
}

// ---- Attest: whole-request rejections --------------------------------------

#[tokio::test]
async fn attest_rejects_an_empty_request() {
    let mut f = fixture("").await;
    let s = f
        .client
        .attest(pb::AttestRequest { items: vec![] })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(s.message().contains("at least one item"));
}

#[tokio::test]
async fn attest_rejects_too_many_items() {
    let mut f = fixture("[limits]\nmax_batch_items = 3\n").await;
    let mut c = Conv::new(&f.key, 1, 2);
    let items = (0..4).map(|i| c.item(0, i).0).collect();
    let s = f
        .client
        .attest(pb::AttestRequest { items })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::ResourceExhausted);
    assert!(
        s.message()
            .contains("4 items in one request, more than this server's limit of 3"),
        "{}",
        s.message()
    );
}

#[tokio::test]
async fn attest_rejects_too_many_conversations() {
    let mut f = fixture("[limits]\nmax_batch_conversations = 2\n").await;
    let items = (0..3)
        .map(|t| Conv::new(&f.key, t + 1, 2).item(0, 0).0)
        .collect();
    let s = f
        .client
        .attest(pb::AttestRequest { items })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::ResourceExhausted);
    assert!(
        s.message().contains("3 conversations in one request"),
        "{}",
        s.message()
    );
}

#[tokio::test]
async fn attest_rejects_an_oversized_message() {
    let mut f = fixture("max_request_bytes = 65536\n").await;
    let mut c = Conv::new(&f.key, 1, 2);
    let (mut item, _) = c.item(0, 0);
    item.envelope.as_mut().unwrap().block_digests = vec![vec![0; 32]; 3000];
    let s = f
        .client
        .attest(pb::AttestRequest { items: vec![item] })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::OutOfRange, "{s:?}");
    assert!(
        s.message().contains("message length too large"),
        "{}",
        s.message()
    );
}

// ---- Attest: per-item refusals, one test per reason ------------------------

#[tokio::test]
async fn attest_refuses_a_malformed_item() {
    let mut f = fixture("").await;
    let mut c = opened(&mut f, 1, 2).await;
    let (mut item, _) = c.item(0, 1);
    item.submission_tag = vec![0; 5];
    expect_refusal(
        &mut f,
        item,
        RefusalReason::Malformed,
        "item.submission_tag must be 32 bytes, got 5",
    )
    .await;
}

#[tokio::test]
async fn attest_refuses_an_unknown_conversation() {
    let mut f = fixture("").await;
    let mut c = Conv::new(&f.key, 9, 2);
    let (item, _) = c.item(0, 0);
    expect_refusal(
        &mut f,
        item,
        RefusalReason::UnknownConversation,
        "unknown conversation",
    )
    .await;
}

#[tokio::test]
async fn attest_refuses_an_unauthenticated_sender() {
    let mut f = fixture("").await;
    let mut c = opened(&mut f, 1, 2).await;
    let (mut item, _) = c.item(1, 1);
    item.submission_tag[0] ^= 1;
    expect_refusal(
        &mut f,
        item,
        RefusalReason::BadSubmissionTag,
        "submission tag does not verify for slot 1",
    )
    .await;
}

#[tokio::test]
async fn attest_refuses_a_replayed_sequence() {
    let mut f = fixture("").await;
    let mut c = opened(&mut f, 1, 2).await;
    let (item, s) = c.item(1, 1);
    assert!(matches!(
        attest_one(&mut f.client, item).await,
        pb::attest_result::Outcome::Attested(_)
    ));
    c.accept(&s);
    c.seq -= 1; // the sender reuses its last sequence number for a new envelope
    let (item, _) = c.item(1, 2);
    expect_refusal(
        &mut f,
        item,
        RefusalReason::SequenceNotIncreasing,
        "is not above the last accepted",
    )
    .await;
}

#[tokio::test]
async fn attest_refuses_equivocation_and_a_retry_gets_the_same_tags() {
    let mut f = fixture("").await;
    let mut c = opened(&mut f, 1, 3).await;
    let (item, s) = c.item(1, 1);
    let first = attest_one(&mut f.client, item.clone()).await;
    let again = attest_one(&mut f.client, item.clone()).await;
    assert_eq!(
        first, again,
        "a retry must return exactly the same attestation"
    );
    c.accept(&s);
    let mut other = c.clone();
    other.next -= 1;
    other.head = Head::parse("h", &item.previous_head).unwrap();
    let (item2, _) = other.item(2, 99);
    expect_refusal(
        &mut f,
        item2,
        RefusalReason::Equivocation,
        "index 1 is already attested to a different envelope",
    )
    .await;
    // The refused request was kept as evidence, and the operator can list it.
    f.server.process.kill();
    let out = std::process::Command::new(grompi_tests::binary("order-server").unwrap())
        .args(["evidence", "--data-dir"])
        .arg(&f.node.data_dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("refused equivocation attempts: 1 (kept: 1)"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "conversation {} index 1 sender slot 2",
            hex_encode(c.id.as_bytes())
        )),
        "{text}"
    );
}

fn hex_encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test]
async fn attest_refuses_a_wrong_index() {
    let mut f = fixture("").await;
    let mut c = opened(&mut f, 1, 2).await;
    let (mut item, _) = c.item(0, 1);
    item.index = 5;
    let (reason, message, next) = refused(attest_one(&mut f.client, item).await);
    assert_eq!(reason, RefusalReason::IndexMismatch);
    assert!(
        message.contains("index 5 requested, but the next index is 1"),
        "{message}"
    );
    assert_eq!(next, 1);
}

#[tokio::test]
async fn attest_refuses_a_wrong_previous_head() {
    let mut f = fixture("").await;
    let mut c = opened(&mut f, 1, 2).await;
    let (mut item, _) = c.item(0, 1);
    item.previous_head = vec![7; 32];
    expect_refusal(
        &mut f,
        item,
        RefusalReason::HeadMismatch,
        "previous head does not match",
    )
    .await;
}

#[tokio::test]
async fn attest_refuses_an_unknown_slot() {
    let mut f = fixture("").await;
    let mut c = opened(&mut f, 1, 2).await;
    c.keys.push(c.keys[0].clone());
    let (item, _) = c.item(2, 1);
    expect_refusal(
        &mut f,
        item,
        RefusalReason::UnknownSlot,
        "slot 2 does not exist; the slot set has 2 slots",
    )
    .await;
}

#[tokio::test]
async fn attest_refuses_a_wrong_epoch() {
    let mut f = fixture("").await;
    let mut c = opened(&mut f, 1, 2).await;
    c.seq += 1;
    let s = summary(c.id, Epoch(3), EnvelopeKind::Message, 0, c.seq, 1, None);
    let item = pb::AttestItem {
        envelope: Some((&s).into()),
        submission_tag: c.keys[0].submit(&s.hash(), Sequence(c.seq)).to_vec(),
        index: c.next,
        previous_head: c.head.to_vec(),
        next_slots: None,
    };
    expect_refusal(
        &mut f,
        item,
        RefusalReason::WrongEpoch,
        "the conversation is at epoch 0, the envelope says 3",
    )
    .await;
}

fn update_item(
    c: &mut Conv,
    sender: u32,
    next: &SlotSet,
    claimed: grompi_proto::SlotSetHash,
) -> pb::AttestItem {
    c.seq += 1;
    let s = summary(
        c.id,
        Epoch(0),
        EnvelopeKind::Update,
        sender,
        c.seq,
        7,
        Some(claimed),
    );
    pb::AttestItem {
        envelope: Some((&s).into()),
        submission_tag: c.keys[sender as usize]
            .submit(&s.hash(), Sequence(c.seq))
            .to_vec(),
        index: c.next,
        previous_head: c.head.to_vec(),
        next_slots: Some(next.into()),
    }
}

#[tokio::test]
async fn attest_refuses_an_update_from_a_member_slot() {
    let mut f = fixture("").await;
    let mut c = opened(&mut f, 1, 2).await;
    let next = Conv::new(&f.key, 50, 2).slot_set();
    let item = update_item(&mut c, 1, &next, next.hash());
    expect_refusal(
        &mut f,
        item,
        RefusalReason::NotAuthorized,
        "slot 1 may not send updates",
    )
    .await;
}

#[tokio::test]
async fn attest_refuses_an_update_whose_slot_set_does_not_match() {
    let mut f = fixture("").await;
    let mut c = opened(&mut f, 1, 2).await;
    let next = Conv::new(&f.key, 50, 2).slot_set();
    let other = Conv::new(&f.key, 51, 2).slot_set();
    let item = update_item(&mut c, 0, &next, other.hash());
    expect_refusal(
        &mut f,
        item,
        RefusalReason::SlotSetMismatch,
        "slot set does not match",
    )
    .await;
}

#[tokio::test]
async fn an_update_is_attested_for_both_slot_sets() {
    let mut f = fixture("").await;
    let mut c = opened(&mut f, 1, 2).await;
    let next_conv = Conv::new(&f.key, 50, 3);
    let next = next_conv.slot_set();
    let item = update_item(&mut c, 0, &next, next.hash());
    match attest_one(&mut f.client, item).await {
        pb::attest_result::Outcome::Attested(a) => {
            assert_eq!(a.tags.len(), 2);
            assert_eq!(a.next_tags.len(), 3);
            let st = grompi_proto::AttestationStatement {
                conversation: c.id,
                epoch: Epoch(0),
                index: Index(a.index),
                head: Head::parse("h", &a.head).unwrap(),
            };
            let tag = grompi_proto::Tag::parse("t", &a.next_tags[2]).unwrap();
            assert!(next_conv.keys[2].verify_attestation(&st, &tag));
        }
        other => panic!("{other:?}"),
    }
    // The old slots are no longer served: a head proof for slot 2 exists only in epoch 1.
    let p = f
        .client
        .prove_head(pb::ProveHeadRequest {
            conversation_id: c.id.to_vec(),
            slot: 2,
            nonce: vec![1; 32],
        })
        .await
        .unwrap()
        .into_inner()
        .proof
        .unwrap();
    assert_eq!((p.epoch, p.count), (1, 2));
}

#[tokio::test]
async fn attest_refuses_a_setup_after_index_0() {
    let mut f = fixture("").await;
    let mut c = opened(&mut f, 1, 2).await;
    c.seq += 1;
    let s = summary(
        c.id,
        Epoch(0),
        EnvelopeKind::Setup,
        0,
        c.seq,
        1,
        Some(c.slot_set().hash()),
    );
    let item = pb::AttestItem {
        envelope: Some((&s).into()),
        submission_tag: c.keys[0].submit(&s.hash(), Sequence(c.seq)).to_vec(),
        index: c.next,
        previous_head: c.head.to_vec(),
        next_slots: None,
    };
    expect_refusal(
        &mut f,
        item,
        RefusalReason::UnexpectedKind,
        "a Setup is allowed only at index 0",
    )
    .await;
}

#[tokio::test]
async fn attest_refuses_too_many_block_digests() {
    let mut f = fixture("[limits]\nmax_block_digests = 1\n").await;
    let mut c = Conv::new(&f.key, 1, 2);
    f.client.open_conversation(c.open_request()).await.unwrap();
    let (item, _) = c.item(0, 0);
    expect_refusal(
        &mut f,
        item,
        RefusalReason::LimitExceeded,
        "2 block digests, more than this server's limit of 1",
    )
    .await;
}

// ---- ProveHead and ServerInfo ----------------------------------------------

#[tokio::test]
async fn prove_head_rejects_unknown_conversations_slots_and_bad_nonces() {
    let mut f = fixture("").await;
    let c = opened(&mut f, 1, 2).await;
    let req = |conv: &[u8], slot, nonce: Vec<u8>| pb::ProveHeadRequest {
        conversation_id: conv.to_vec(),
        slot,
        nonce,
    };
    let s = f
        .client
        .prove_head(req(&[9; 32], 0, vec![1; 32]))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::NotFound);
    let s = f
        .client
        .prove_head(req(c.id.as_bytes(), 7, vec![1; 32]))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(s.message().contains("slot 7 does not exist"));
    let s = f
        .client
        .prove_head(req(c.id.as_bytes(), 0, vec![1; 3]))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(s.message().contains("nonce must be 32 bytes"));
    let p = f
        .client
        .prove_head(req(c.id.as_bytes(), 1, vec![4; 32]))
        .await
        .unwrap()
        .into_inner()
        .proof
        .unwrap();
    let proof = grompi_proto::mac::HeadProof::try_from(p).unwrap();
    assert_eq!(proof.statement.count, 1);
    assert_eq!(proof.statement.head, c.head);
    assert!(c.keys[1].verify_head_proof(&proof.statement, &proof.tag));
}

#[tokio::test]
async fn server_info_reports_the_key_and_limits() {
    let mut f = fixture("[limits]\nmax_slots = 64\n").await;
    let info = f
        .client
        .server_info(pb::ServerInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.public_key, f.key.to_vec());
    assert_eq!(info.max_slots, 64);
}

// ---- Transport: who may call -----------------------------------------------

#[tokio::test]
async fn a_client_without_the_pinned_certificate_is_refused() {
    let f = fixture("").await;
    let stranger = grompi_ops::tls::TlsIdentity::generate(&[]).unwrap();
    for identity in [None, Some(&stranger)] {
        let result = async {
            let ch = grompi_tests::connect(f.server.addrs.grpc, &f.node.server_cert_pem, identity)
                .await
                .map_err(|e| e.to_string())?;
            OrderServiceClient::new(ch)
                .server_info(pb::ServerInfoRequest {})
                .await
                .map_err(|s| s.to_string())
        }
        .await;
        assert!(
            result.is_err(),
            "a client with {:?} got through",
            identity.map(|_| "another certificate")
        );
    }
}

// ---- Operations ------------------------------------------------------------

#[tokio::test]
async fn metrics_count_attestations_and_refusals() {
    let mut f = fixture("").await;
    let mut c = opened(&mut f, 1, 2).await;
    let (mut item, _) = c.item(0, 1);
    item.index = 9;
    refused(attest_one(&mut f.client, item).await);
    let addr = f.server.addrs.metrics.unwrap();
    let text = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .await
    .unwrap();
    assert!(text.contains("grompi_order_attestations_total 1"), "{text}");
    assert!(
        text.contains("grompi_order_refusals_total{reason=\"index_mismatch\"} 1"),
        "{text}"
    );
    assert!(text.contains("grompi_order_open_conversations 1"), "{text}");
    assert!(text.contains("grompi_order_commit_seconds"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_down_gracefully_and_state_survives() {
    let mut f = fixture("").await;
    let c = opened(&mut f, 1, 2).await;
    // The connection stays open: the server closes it gracefully. It must
    // exit well before its 10 s grace period ends.
    let process = &mut f.server.process;
    let status = tokio::task::block_in_place(|| process.terminate(Duration::from_secs(8)))
        .unwrap_or_else(|e| panic!("{e}; stderr:\n{}", stderr(&f.server.process)));
    assert!(status.success(), "exit status {status}");
    assert!(stderr(&f.server.process).contains("shutting down"));
    let server = f.node.start().await.unwrap();
    let mut client = OrderServiceClient::new(f.node.channel(&server).await.unwrap());
    let p = client
        .prove_head(pb::ProveHeadRequest {
            conversation_id: c.id.to_vec(),
            slot: 0,
            nonce: vec![1; 32],
        })
        .await
        .unwrap()
        .into_inner()
        .proof
        .unwrap();
    assert_eq!(p.count, 1);
    assert_eq!(p.head, c.head.to_vec());
}

// ---- Crash safety ------------------------------------------------------------

/// Everything the load returned: the item sent and the attestation got, per
/// (conversation, index).
type Returned = Arc<Mutex<HashMap<(u8, u64), (pb::AttestItem, pb::Attestation)>>>;

/// A request sent without an answer (the server was killed): the items and
/// their summaries, resent after the restart.
type Pending = (Vec<pb::AttestItem>, Vec<EnvelopeSummary>);

const CONVERSATIONS: u8 = 8;
const KILLS: usize = 24;

/// One load task: attests items of one conversation, several per request,
/// until the channel breaks (the server was killed). Returns the
/// conversation state, and the last request if it got no answer.
async fn load(
    mut client: Client,
    mut c: Conv,
    tag: u8,
    mut pending: Option<Pending>,
    returned: Returned,
) -> (Conv, Option<Pending>) {
    let mut body = c.next * 1000 + 1;
    loop {
        let (items, summaries) = match pending.take() {
            Some(p) => p,
            None => {
                let mut probe = c.clone();
                let mut items = vec![];
                let mut summaries = vec![];
                for _ in 0..3 {
                    let (item, s) = probe.item((body % 3) as u32, body);
                    probe.accept(&s);
                    body += 1;
                    items.push(item);
                    summaries.push(s);
                }
                (items, summaries)
            }
        };
        let r = client
            .attest(pb::AttestRequest {
                items: items.clone(),
            })
            .await;
        let Ok(r) = r else {
            return (c, Some((items, summaries)));
        };
        for ((result, item), s) in r.into_inner().results.into_iter().zip(items).zip(summaries) {
            match result.outcome.unwrap() {
                pb::attest_result::Outcome::Attested(a) => {
                    assert_eq!(a.index, c.next);
                    let mut map = returned.lock().unwrap();
                    if let Some((_, prev)) = map.get(&(tag, a.index)) {
                        assert_eq!(prev, &a, "index {} of conversation {tag} changed", a.index);
                    }
                    map.insert((tag, a.index), (item, a));
                    c.seq = c.seq.max(s.header.sequence().0);
                    c.accept(&s);
                }
                pb::attest_result::Outcome::Refused(r) => {
                    panic!("refused under load: {}", r.message)
                }
            }
        }
    }
}

/// The real binary under concurrent load is killed with SIGKILL repeatedly
/// and restarted on the same data directory; every attestation returned
/// before a kill is reproduced exactly on retry, nothing at an attested
/// index changes, and no index is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_never_loses_or_changes_an_attestation() {
    let node = OrderServerNode::init("").unwrap();
    let mut server = node.start().await.unwrap();
    let mut client = OrderServiceClient::new(node.channel(&server).await.unwrap());
    let key = OrderServerKey::parse("key", &hex_decode(&node.public_key_hex)).unwrap();
    let mut convs: Vec<(Conv, Option<Pending>)> = vec![];
    for t in 0..CONVERSATIONS {
        let c = Conv::new(&key, t + 1, 3);
        client.open_conversation(c.open_request()).await.unwrap();
        convs.push((c, None));
    }
    let returned: Returned = Arc::default();
    for kill in 0..KILLS {
        let channel = node.channel(&server).await.unwrap();
        let before = returned.lock().unwrap().len();
        let tasks: Vec<_> = convs
            .drain(..)
            .enumerate()
            .map(|(i, (c, pending))| {
                tokio::spawn(load(
                    OrderServiceClient::new(channel.clone()),
                    c,
                    i as u8 + 1,
                    pending,
                    returned.clone(),
                ))
            })
            .collect();
        // Let the load run until some new attestations came back, then kill.
        let target = before + 24 + (kill % 5) * 7;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while returned.lock().unwrap().len() < target {
            assert!(
                std::time::Instant::now() < deadline,
                "the load stalled at kill {kill}"
            );
            assert!(
                !tasks.iter().any(|t| t.is_finished()),
                "a load task ended before the kill"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        server.process.kill();
        for t in tasks {
            convs.push(t.await.unwrap());
        }
        server = node.start().await.unwrap();
    }
    let count = returned.lock().unwrap().len();
    assert!(count >= KILLS * 24, "only {count} attestations under load");

    // Every returned attestation is reproduced exactly; a different envelope
    // at any attested index is refused.
    let mut client = OrderServiceClient::new(node.channel(&server).await.unwrap());
    let all: Vec<_> = returned
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (*k, v.clone()))
        .collect();
    for chunk in all.chunks(256) {
        let items = chunk.iter().map(|(_, (item, _))| item.clone()).collect();
        let r = client
            .attest(pb::AttestRequest { items })
            .await
            .unwrap()
            .into_inner();
        for ((_, (_, want)), got) in chunk.iter().zip(r.results) {
            match got.outcome.unwrap() {
                pb::attest_result::Outcome::Attested(a) => assert_eq!(&a, want),
                pb::attest_result::Outcome::Refused(r) => panic!("retry refused: {}", r.message),
            }
        }
    }
    for ((tag, index), (item, _)) in all.iter().take(64) {
        let mut changed = item.clone();
        changed.envelope.as_mut().unwrap().block_digests[0][0] ^= 1;
        let (reason, _, _) = refused(attest_one(&mut client, changed).await);
        assert_eq!(
            reason,
            RefusalReason::Equivocation,
            "conversation {tag} index {index}"
        );
    }
    // No index was lost: each conversation's count covers every returned index.
    for t in 1..=CONVERSATIONS {
        let max = all
            .iter()
            .filter(|((c, _), _)| *c == t)
            .map(|((_, i), _)| *i)
            .max();
        let p = client
            .prove_head(pb::ProveHeadRequest {
                conversation_id: vec![t; 32],
                slot: 0,
                nonce: vec![3; 32],
            })
            .await
            .unwrap()
            .into_inner()
            .proof
            .unwrap();
        if let Some(max) = max {
            assert!(
                p.count > max,
                "conversation {t}: count {} but index {max} was returned",
                p.count
            );
        }
    }
}

// ---- AttestStream ----------------------------------------------------------

/// Pipelined: ten requests sent before any answer; each is answered, in
/// the order sent, with the attestation at the next index.
#[tokio::test]
async fn attest_stream_answers_pipelined_requests_in_order() {
    let mut f = fixture("").await;
    let mut c = opened(&mut f, 1, 3).await;
    let mut requests = Vec::new();
    for k in 0..10u64 {
        let (item, s) = c.item(1 + (k % 2) as u32, 100 + k);
        c.accept(&s);
        requests.push(pb::AttestRequest { items: vec![item] });
    }
    let mut answers = f
        .client
        .attest_stream(futures::stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    for k in 1..=10u64 {
        let mut r = answers
            .message()
            .await
            .unwrap()
            .expect("an answer per request");
        assert_eq!(r.results.len(), 1);
        match r.results.remove(0).outcome.unwrap() {
            pb::attest_result::Outcome::Attested(a) => assert_eq!(a.index, k, "answers in order"),
            pb::attest_result::Outcome::Refused(r) => panic!("request {k} refused: {r:?}"),
        }
    }
    let (_, count, head) = state_of(&mut f, &c.item(0, 0).0).await.unwrap();
    assert_eq!(count, 11, "the Setup and ten messages");
    assert_eq!(head, c.head.to_vec());
}

/// A request the server refuses as a whole ends the stream with that
/// status, after the answers to the requests before it.
#[tokio::test]
async fn attest_stream_ends_with_the_status_of_a_request_refused_as_a_whole() {
    let mut f = fixture("[limits]\nmax_batch_items = 3\n").await;
    let mut c = opened(&mut f, 1, 3).await;
    let (first, s) = c.item(1, 1);
    c.accept(&s);
    let too_many = (0..4).map(|i| c.item(2, 10 + i).0).collect();
    let requests = vec![
        pb::AttestRequest { items: vec![first] },
        pb::AttestRequest { items: too_many },
    ];
    let mut answers = f
        .client
        .attest_stream(futures::stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let r = answers.message().await.unwrap().unwrap();
    assert!(matches!(
        r.results[0].outcome,
        Some(pb::attest_result::Outcome::Attested(_))
    ));
    let s = answers.message().await.unwrap_err();
    assert_eq!(s.code(), Code::ResourceExhausted);
    assert!(
        s.message()
            .contains("4 items in one request, more than this server's limit of 3"),
        "{}",
        s.message()
    );
}
