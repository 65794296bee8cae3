//! Order servers witnessing each other's audit logs, with the real
//! binaries: three servers, each a C2SP tlog-witness of the other two over
//! HTTP on 127.0.0.1 (attestations over gRPC and mutual TLS grow the logs).
//!
//! * Every server's served checkpoint carries both peers' cosignatures.
//! * Rollback: a server's data directory is copied at time T, the server
//!   runs on (and is cosigned further), then restarts from the copy. Every
//!   honest witness refuses its next checkpoint (`409`, as behind what it
//!   cosigned, and once the log has grown past it, `422` as inconsistent),
//!   keeps the evidence on disk, and the refusal shows in both sides'
//!   metrics.
//! * Fork: a checkpoint of the size a witness cosigned with another root,
//!   signed by the log's key, is refused with `422`; both checkpoints are
//!   kept, and a restarted witness still refuses it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step fails the test

use grompi_proto::envelope::HeaderFields;
use grompi_proto::pb::{self, order_service_client::OrderServiceClient};
use grompi_proto::{
    BlockDigest, BodyHash, ConversationId, EnvelopeHeader, EnvelopeKind, EnvelopeSummary, Epoch,
    Head, KeyCommitment, OrderServerKey, Sequence, SlotEntry, SlotIndex, SlotRole, SlotSecret,
    SlotSet,
};
use grompi_tests::audit_log::{self, copy_dir, eventually, http, metric, metrics_text};
use grompi_tests::{OrderServerNode, RunningOrderServer, audit_addr};
use grompi_tlog::checkpoint::Checkpoint;
use grompi_tlog::cosignature::CosignatureVerifier;
use grompi_tlog::merkle;
use grompi_tlog::note::{Ed25519Signer, Ed25519Verifier, NoteVerifier};
use grompi_tlog::witness::AddCheckpointRequest;
use std::net::SocketAddr;
use std::time::Duration;

/// One order server of the witnessing trio.
struct Member {
    node: OrderServerNode,
    server: Option<RunningOrderServer>,
    audit: SocketAddr,
    log_signer: Ed25519Signer,
    witness: CosignatureVerifier,
    key: OrderServerKey,
}

impl Member {
    fn log_key(&self) -> Ed25519Verifier {
        self.log_signer.verifier()
    }

    fn origin(&self) -> String {
        self.log_signer.name().to_owned()
    }

    fn server(&self) -> &RunningOrderServer {
        self.server.as_ref().expect("running")
    }

    fn stop(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.process.stop(Duration::from_secs(15));
        }
    }

    /// Starts the server (again, on its fixed ports).
    async fn start(&mut self) {
        self.server = Some(self.node.start_again().await.unwrap());
    }
}

/// The Prometheus text a server exports.
async fn metrics(m: &Member) -> String {
    metrics_text(m.server().addrs.metrics.unwrap()).await
}

/// The checkpoint `m` serves, and which of `witnesses` cosigned it.
async fn served(m: &Member, witnesses: &[&CosignatureVerifier]) -> (Checkpoint, usize) {
    audit_log::served(m.audit, &m.log_key(), witnesses).await
}

/// Opens conversation `tag` on `m` and attests its Setup: one log entry.
async fn attest_setup(m: &Member, tag: u8) {
    let channel = m.node.channel(m.server()).await.unwrap();
    let mut client = OrderServiceClient::new(channel);
    let slot = SlotSecret::from_bytes([tag.wrapping_add(100); 32]);
    let set = SlotSet::new(vec![SlotEntry {
        key: slot.public_key(),
        role: SlotRole::Admin,
    }])
    .unwrap();
    let conv = ConversationId::from_bytes([tag; 32]);
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
            body_hash: BodyHash::from_bytes([tag; 32]),
            key_commitment: KeyCommitment::from_bytes([5; 32]),
            slot_set_hash: Some(set.hash()),
        })
        .unwrap(),
        block_digests: vec![BlockDigest::from_bytes([1; 32])],
    };
    let tag_mac = slot
        .mac_keys(&m.key)
        .unwrap()
        .submit(&summary.hash(), Sequence(1));
    let r = client
        .attest(pb::AttestRequest {
            items: vec![pb::AttestItem {
                envelope: Some((&summary).into()),
                submission_tag: tag_mac.to_vec(),
                index: 0,
                previous_head: Head::genesis(&conv).to_vec(),
                next_slots: None,
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        matches!(
            r.results[0].outcome,
            Some(pb::attest_result::Outcome::Attested(_))
        ),
        "{r:?}"
    );
}

/// Three order servers, each witnessing the other two and submitting its
/// checkpoints to them, once every server's checkpoint is cosigned by both.
async fn trio() -> Vec<Member> {
    let mut members = Vec::new();
    for _ in 0..3 {
        let node =
            OrderServerNode::init("audit_listen = \"127.0.0.1:0\"\naudit_checkpoint_seconds = 1\n")
                .unwrap();
        let server = node.start().await.unwrap();
        let audit = audit_addr(&node.data_dir).unwrap();
        let log_signer = audit_log::log_signer(&node.data_dir);
        let witness = audit_log::witness_verifier(&node.data_dir);
        let key =
            OrderServerKey::parse("key", &hex::decode(&node.public_key_hex).unwrap()).unwrap();
        members.push(Member {
            node,
            server: Some(server),
            audit,
            log_signer,
            witness,
            key,
        });
    }
    // Now that the ports are known: fixed audit ports, and the peers.
    for i in 0..3 {
        members[i].stop();
        let mut extra = String::new();
        for (j, p) in members.iter().enumerate() {
            if j != i {
                extra.push_str(&format!(
                    "\n[[peers]]\nname = \"order{j}\"\nurl = \"http://{}\"\nlog_key = \"{}\"\n\
                     witness_key = \"{}\"\n",
                    p.audit,
                    p.log_key().vkey(),
                    p.witness.vkey()
                ));
            }
        }
        let config = std::fs::read_to_string(&members[i].node.config).unwrap();
        let config = config.replace(
            "audit_listen = \"127.0.0.1:0\"",
            &format!("audit_listen = \"{}\"", members[i].audit),
        );
        std::fs::write(&members[i].node.config, format!("{config}{extra}")).unwrap();
        members[i].start().await;
    }
    for i in 0..3 {
        let others: Vec<CosignatureVerifier> = (0..3)
            .filter(|&j| j != i)
            .map(|j| members[j].witness.clone())
            .collect();
        let m = &members[i];
        eventually("both peers to cosign", Duration::from_secs(60), || async {
            served(m, &[&others[0], &others[1]]).await.1 == 2
        })
        .await;
    }
    members
}

/// Runs `grompi audit` over a descriptor naming the trio's logs: whether
/// it exited 0, and what it printed.
fn grompi_audit(m: &[Member]) -> (bool, String) {
    use grompi_proto::descriptor::{
        AuditLogEntry, NetworkDescriptor, OrderServerEntry, RouterEntry,
    };
    let descriptor = NetworkDescriptor {
        name: "witnessing".into(),
        router: RouterEntry {
            address: "https://localhost:1".into(),
            tls_ca_pem: m[0].node.server_cert_pem.clone(),
        },
        order_servers: m
            .iter()
            .enumerate()
            .map(|(i, x)| OrderServerEntry {
                name: format!("order{i}"),
                address: format!("https://localhost:{}", x.server().addrs.grpc.port()),
                public_key: x.key,
                tls_ca_pem: x.node.server_cert_pem.clone(),
            })
            .collect(),
        quorum: 3,
    };
    let logs: Vec<Option<AuditLogEntry>> = m
        .iter()
        .map(|x| {
            Some(AuditLogEntry {
                origin: x.origin(),
                log_key: x.log_key().vkey(),
                log_url: Some(format!("http://{}", x.audit)),
                witness_key: Some(x.witness.vkey()),
            })
        })
        .collect();
    let file = m[0].node.dir.path().join("audit-network.toml");
    std::fs::write(&file, descriptor.to_toml_with_audit_logs(&logs)).unwrap();
    let out = std::process::Command::new(grompi_tests::binary("grompi").unwrap())
        .args(["audit", "--network"])
        .arg(&file)
        .output()
        .unwrap();
    grompi_tests::exit_and_text(&out)
}

/// Runs `grompi status` for a fresh account that trusts the descriptor
/// `grompi_audit` wrote (it has no conversations, so it needs no router):
/// what it printed.
fn grompi_status(m: &[Member]) -> String {
    let file = m[0].node.dir.path().join("audit-network.toml");
    let home = m[0].node.dir.path().join("member-home");
    let key = m[0].node.dir.path().join("member.key");
    let grompi = grompi_tests::binary("grompi").unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(&grompi)
            .arg("--home")
            .arg(&home)
            .arg("--key-file")
            .arg(&key)
            .args(args)
            .output()
            .unwrap()
    };
    if !home.exists() {
        let init = run(&["init", "--network", &file.to_string_lossy()]);
        assert!(init.status.success(), "{init:?}");
    }
    grompi_tests::exit_and_text(&run(&["status"])).1
}

fn evidence(m: &Member, kind: &str) -> Vec<std::path::PathBuf> {
    audit_log::evidence(&m.node.data_dir, kind)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_order_server_is_refused_by_every_witness() {
    let mut m = trio().await;
    let all: Vec<CosignatureVerifier> = m.iter().map(|x| x.witness.clone()).collect();
    let others = [&all[1], &all[2]];

    // Time T: a copy of server 0's data directory (stopped for the copy).
    m[0].stop();
    let snapshot = m[0].node.dir.path().join("snapshot");
    copy_dir(&m[0].node.data_dir, &snapshot);
    m[0].start().await;
    // It runs on: more attestations, cosigned by both witnesses.
    for tag in 1..=3 {
        attest_setup(&m[0], tag).await;
    }
    // Two starts and three attestations: six entries.
    let cosigned_size = 6;
    eventually(
        "the grown log cosigned",
        Duration::from_secs(60),
        || async {
            let (c, n) = served(&m[0], &others).await;
            n == 2 && c.size() == cosigned_size
        },
    )
    .await;

    // A member's audit finds every log cosigned by both peers.
    let (ok, out) = grompi_audit(&m);
    assert!(ok, "{out}");
    assert_eq!(out.matches("ok     order").count(), 3, "{out}");
    let status = grompi_status(&m);
    assert!(status.contains("alerts: none"), "{status}");

    // Restarted from the copy at T.
    m[0].stop();
    std::fs::remove_dir_all(&m[0].node.data_dir).unwrap();
    copy_dir(&snapshot, &m[0].node.data_dir);
    m[0].start().await;
    let (rolled, _) = served(&m[0], &others).await;
    assert!(rolled.size() < cosigned_size, "the copy is older");

    // Every honest witness refuses it; the server raises the alarm for each.
    for j in [1, 2] {
        let w = &m[j];
        eventually("a behind record", Duration::from_secs(30), || async {
            !evidence(w, "behind").is_empty()
        })
        .await;
        let text = metrics(w).await;
        assert!(
            metric(
                &text,
                "grompi_order_witness_misbehaviour_total",
                &["kind=\"behind\""]
            ) >= 1.0,
            "{text}"
        );
    }
    audit_log::await_witness_alarm(
        m[0].server().addrs.metrics.unwrap(),
        m[0].server().process.log(),
        &["order1", "order2"],
    )
    .await;
    assert_eq!(served(&m[0], &others).await.1, 0, "nobody cosigned it");
    // And a member's audit raises the alert for it, only for it.
    let (ok, out) = grompi_audit(&m);
    assert!(!ok, "{out}");
    assert!(
        out.contains("ALERT  order0: its checkpoint of 3 entries has 0 of the 2"),
        "{out}"
    );
    assert_eq!(out.matches("ok     order").count(), 2, "{out}");
    // So does `grompi status`, for an account trusting that descriptor.
    let status = grompi_status(&m);
    assert!(
        status.contains("ALERT: order server order0's audit log"),
        "{status}"
    );

    // Grown to or past what was cosigned, from its other history: 422, as
    // a fork (a checkpoint signed at the cosigned size) or inconsistent.
    for tag in 11..=14 {
        attest_setup(&m[0], tag).await;
    }
    for j in [1, 2] {
        let w = &m[j];
        let refused = || {
            let mut r = evidence(w, "fork");
            r.extend(evidence(w, "inconsistent"));
            r
        };
        eventually(
            "a fork or inconsistent record",
            Duration::from_secs(30),
            || async { !refused().is_empty() },
        )
        .await;
        let record = &refused()[0];
        let reason = std::fs::read_to_string(record.join("reason")).unwrap();
        assert!(reason.contains("status 422"), "{reason}");
        // Both checkpoints are the log's, and the proof sent does not join them.
        let log = m[0].log_key();
        let known: [&dyn NoteVerifier; 1] = [&log];
        let a = Checkpoint::open(&std::fs::read(record.join("cosigned")).unwrap(), &known)
            .unwrap()
            .checkpoint;
        let req =
            AddCheckpointRequest::parse(&std::fs::read(record.join("submitted")).unwrap()).unwrap();
        let b = Checkpoint::open(&req.checkpoint, &known)
            .unwrap()
            .checkpoint;
        assert_eq!(a.size(), cosigned_size);
        assert!(b.size() >= a.size());
        if b.size() == a.size() {
            assert_ne!(a.root(), b.root(), "{reason}");
        } else {
            assert!(
                merkle::verify_consistency(a.size(), b.size(), a.root(), b.root(), &req.proof)
                    .is_err()
            );
        }
        let text = metrics(w).await;
        assert!(
            metric(&text, "grompi_order_witness_misbehaviour_total", &[]) >= 2.0,
            "{text}"
        );
        // And the witness still holds the honest checkpoint it cosigned.
        assert_eq!(
            w.node
                .data_dir
                .join("witness/latest")
                .read_dir()
                .unwrap()
                .count(),
            2
        );
    }
    assert_eq!(served(&m[0], &others).await.1, 0);
    for x in &mut m {
        x.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forked_log_is_refused_with_422_and_the_evidence_is_kept() {
    let mut m = trio().await;
    let (cosigned, _) = served(&m[0], &[&m[1].witness, &m[2].witness]).await;
    // Wait until witness 1 has cosigned exactly this checkpoint (no newer).
    let size = cosigned.size();
    // The log's key signs another tree of the same size.
    let mut other_root = cosigned.root().0;
    other_root[0] ^= 1;
    let fork = Checkpoint::new(&m[0].origin(), size, grompi_tlog::Hash(other_root), vec![])
        .unwrap()
        .sign(&m[0].log_signer)
        .unwrap();
    let body = AddCheckpointRequest {
        old_size: size,
        proof: vec![],
        checkpoint: fork.clone().into_bytes(),
    }
    .to_bytes();
    let (status, answer) = http(m[1].audit, "POST", "add-checkpoint", &body).await;
    assert_eq!(status, 422, "{}", String::from_utf8_lossy(&answer));
    assert!(String::from_utf8_lossy(&answer).contains("fork"));
    let records = evidence(&m[1], "fork");
    assert_eq!(records.len(), 1);
    let log = m[0].log_key();
    let known: [&dyn NoteVerifier; 1] = [&log];
    let kept = Checkpoint::open(&std::fs::read(records[0].join("cosigned")).unwrap(), &known)
        .unwrap()
        .checkpoint;
    assert_eq!(kept.size(), size);
    assert_eq!(kept.root(), cosigned.root());
    assert_eq!(std::fs::read(records[0].join("submitted")).unwrap(), body);
    let text = metrics(&m[1]).await;
    assert!(
        metric(
            &text,
            "grompi_order_witness_answers_total",
            &["status=\"422\""]
        ) >= 1.0,
        "{text}"
    );

    // A restarted witness has not forgotten what it cosigned: still 422.
    m[1].stop();
    m[1].start().await;
    let (status, _) = http(m[1].audit, "POST", "add-checkpoint", &body).await;
    assert_eq!(status, 422);
    assert_eq!(evidence(&m[1], "fork").len(), 2);
    // The honest log is still cosigned by the restarted witness.
    attest_setup(&m[0], 40).await;
    let (w1, w2) = (m[1].witness.clone(), m[2].witness.clone());
    let honest = &m[0];
    eventually(
        "the honest log cosigned again",
        Duration::from_secs(60),
        || async {
            let (c, n) = served(honest, &[&w1, &w2]).await;
            c.size() > size && n == 2
        },
    )
    .await;
    for x in &mut m {
        x.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_log_serves_each_new_checkpoint_with_its_cosignatures() {
    // A new checkpoint is served only once its round of submissions has
    // ended: a member auditing at any moment sees every checkpoint of a
    // healthy log cosigned by both peers, never a new one that has none
    // yet (which would read as a log its witnesses refuse).
    let mut m = trio().await;
    let others = [m[1].witness.clone(), m[2].witness.clone()];
    let others = [&others[0], &others[1]];
    let (first, n) = served(&m[0], &others).await;
    assert_eq!(n, 2);
    let mut sizes = std::collections::BTreeSet::from([first.size()]);
    let mut reads = 0u32;
    for tag in 60..66 {
        attest_setup(&m[0], tag).await;
        // Read the checkpoint as fast as it answers for a little over one
        // signing period (1 s): across the moment a new one is signed and
        // submitted.
        let until = std::time::Instant::now() + Duration::from_millis(1_200);
        while std::time::Instant::now() < until {
            let (c, n) = served(&m[0], &others).await;
            reads += 1;
            assert_eq!(
                n,
                2,
                "checkpoint of {} entries served with {n} of 2 cosignatures (read {reads})",
                c.size()
            );
            sizes.insert(c.size());
        }
    }
    assert!(
        sizes.len() >= 4,
        "only checkpoints of sizes {sizes:?} were served in {reads} reads: the log did not grow \
         through new checkpoints"
    );
    for x in &mut m {
        x.stop();
    }
}
