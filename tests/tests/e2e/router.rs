//! The real router and three real order servers over TLS on 127.0.0.1:
//! setup, concurrent senders, an offline member catching up, an order
//! server stopped and restarted (stall at t = N, progress at t = 2 of 3,
//! full tags after catch-up), and a router killed with SIGKILL under load.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step fails the test

use grompi_proto::descriptor::{NetworkDescriptor, OrderServerEntry, RouterEntry};
use grompi_proto::envelope::HeaderFields;
use grompi_proto::ids::NetworkBinding;
use grompi_proto::mac::AttestationStatement;
use grompi_proto::pb::{self, router_client::RouterClient};
use grompi_proto::{
    BodyHash, ConversationId, Envelope, EnvelopeHash, EnvelopeHeader, EnvelopeKind, Epoch, Head,
    Index, KeyCommitment, OrderServerKey, RecipientBlock, Sequence, SlotIndex, SlotKey, SlotSet,
    Tag,
};
use grompi_tests::router_member::{Client, Member, authed, fetch_all, hash_of, register};
use grompi_tests::{OrderServerNode, Process, RunningOrderServer};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tonic::Code;

/// The router, its data and the order servers it talks to.
/// The name of the test network, in its descriptor.
const NETWORK_NAME: &str = "e2e";

struct Net {
    dir: tempfile::TempDir,
    nodes: Vec<OrderServerNode>,
    servers: Vec<Option<RunningOrderServer>>,
    keys: Vec<OrderServerKey>,
    router_data: PathBuf,
    router_cert: String,
    router_config: PathBuf,
    router: Option<Process>,
    addr: Option<SocketAddr>,
}

impl Net {
    async fn start(quorum: usize, extra: &str) -> Net {
        grompi_ops::tls::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let router_data = dir.path().join("router");
        let router_bin = grompi_tests::binary("router").unwrap();
        let out = std::process::Command::new(&router_bin)
            .args(["init", "--data-dir"])
            .arg(&router_data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "router init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let router_cert = std::fs::read_to_string(router_data.join("router.crt")).unwrap();
        let mut nodes = Vec::new();
        let mut servers = Vec::new();
        let mut entries = Vec::new();
        let mut keys = Vec::new();
        for i in 0..3 {
            let node = OrderServerNode::init("").unwrap();
            // Every order server pins this router's certificate.
            std::fs::write(node.dir.path().join("router.crt"), &router_cert).unwrap();
            let running = node.start().await.unwrap();
            // Restarts must come back on the same port the descriptor names.
            let mut cfg = std::fs::read_to_string(&node.config).unwrap().replace(
                "\nlisten = \"127.0.0.1:0\"",
                &format!("\nlisten = \"{}\"", running.addrs.grpc),
            );
            if cfg.starts_with("listen = \"127.0.0.1:0\"") {
                cfg = cfg.replacen(
                    "listen = \"127.0.0.1:0\"",
                    &format!("listen = \"{}\"", running.addrs.grpc),
                    1,
                );
            }
            if let Some(m) = running.addrs.metrics {
                cfg = cfg.replace(
                    "metrics_listen = \"127.0.0.1:0\"",
                    &format!("metrics_listen = \"{m}\""),
                );
            }
            std::fs::write(&node.config, cfg).unwrap();
            let key =
                OrderServerKey::parse("k", &hex::decode(&node.public_key_hex).unwrap()).unwrap();
            entries.push(OrderServerEntry {
                name: format!("order{i}"),
                address: format!("https://localhost:{}", running.addrs.grpc.port()),
                public_key: key,
                tls_ca_pem: node.server_cert_pem.clone(),
            });
            keys.push(key);
            nodes.push(node);
            servers.push(Some(running));
        }
        let descriptor = NetworkDescriptor {
            name: NETWORK_NAME.into(),
            router: RouterEntry {
                address: "https://localhost:1".into(),
                tls_ca_pem: router_cert.clone(),
            },
            order_servers: entries,
            quorum,
        };
        std::fs::write(dir.path().join("network.toml"), descriptor.to_toml()).unwrap();
        let router_config = dir.path().join("router.toml");
        std::fs::write(
            &router_config,
            format!(
                "listen = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\ndata_dir = \"router\"\n\
                 descriptor = \"network.toml\"\nbackoff_base_ms = 20\nbackoff_max_ms = 300\n{extra}"
            ),
        )
        .unwrap();
        let mut net = Net {
            dir,
            nodes,
            servers,
            keys,
            router_data,
            router_cert,
            router_config,
            router: None,
            addr: None,
        };
        net.start_router().await;
        net
    }

    /// What a client signs its sign-in for: the network's name and the
    /// router's TLS root.
    fn network(&self) -> NetworkBinding {
        NetworkBinding::of(NETWORK_NAME, &self.router_cert)
    }

    async fn start_router(&mut self) {
        grompi_simulator::live::process::clear_bound_addrs(&self.router_data);
        let bin = grompi_tests::binary("router").unwrap();
        let config = self.router_config.to_string_lossy().into_owned();
        let mut p = Process::spawn(
            "router",
            &bin,
            &["serve", "--config", &config],
            &self.dir.path().join("router.stderr"),
        )
        .unwrap();
        let addrs =
            grompi_tests::wait_for_bound_addrs(&self.router_data, &mut p, Duration::from_secs(30))
                .await
                .unwrap();
        self.addr = Some(addrs.grpc);
        self.router = Some(p);
    }

    async fn client(&self) -> Client {
        let ch = grompi_tests::connect(self.addr.unwrap(), &self.router_cert, None)
            .await
            .unwrap();
        grompi_tests::wait_healthy(&ch, "grompi.v1.Router", Duration::from_secs(30))
            .await
            .unwrap();
        RouterClient::new(ch)
    }

    fn stop_server(&mut self, i: usize) {
        if let Some(mut s) = self.servers[i].take() {
            s.process.terminate(Duration::from_secs(20)).unwrap();
        }
    }

    async fn restart_server(&mut self, i: usize) {
        self.servers[i] = Some(self.nodes[i].start().await.unwrap());
    }
}

fn slot(created: &pb::CreateConversationResponse, m: &Member) -> (SlotIndex, SlotKey) {
    let a = created
        .assignments
        .iter()
        .find(|a| a.account == m.account)
        .unwrap();
    (SlotIndex(a.slot), SlotKey::parse("k", &a.key).unwrap())
}

fn envelope(
    net: &Net,
    m: &Member,
    created: &pb::CreateConversationResponse,
    conv: ConversationId,
    kind: EnvelopeKind,
    sequence: u64,
    body: &[u8],
) -> (pb::SubmitRequest, EnvelopeHash) {
    let set = SlotSet::try_from(created.slots.clone().unwrap()).unwrap();
    let me = slot(created, m);
    let header = EnvelopeHeader::new(HeaderFields {
        conversation: conv,
        epoch: Epoch(0),
        kind,
        sender: me.0,
        sequence: Sequence(sequence),
        last_seen: None,
        body_hash: BodyHash::of(body),
        key_commitment: KeyCommitment::from_bytes([7; 32]),
        slot_set_hash: (kind == EnvelopeKind::Setup).then(|| set.hash()),
    })
    .unwrap();
    let blocks = created
        .assignments
        .iter()
        .filter(|a| a.account != m.account)
        .map(|a| RecipientBlock {
            recipient: SlotIndex(a.slot),
            ciphertext: vec![a.slot as u8; 24],
        })
        .collect();
    let e = Envelope::new(header, body.to_vec(), blocks).unwrap();
    let hash = e.hash();
    let secret = &m.secrets[&me.1];
    let tags = net
        .keys
        .iter()
        .map(|k| {
            secret
                .mac_keys(k)
                .unwrap()
                .submit(&hash, Sequence(sequence))
                .to_vec()
        })
        .collect();
    (
        pb::SubmitRequest {
            envelope: Some(pb::Envelope::from(&e)),
            submission_tags: tags,
        },
        hash,
    )
}

async fn create_and_setup(
    net: &Net,
    c: &mut Client,
    members: &[&Member],
    id: ConversationId,
) -> pb::CreateConversationResponse {
    let created = c
        .create_conversation(authed(
            members[0],
            pb::CreateConversationRequest {
                conversation_id: id.to_vec(),
                members: members
                    .iter()
                    .enumerate()
                    .map(|(i, m)| pb::MemberSpec {
                        account: m.account.clone(),
                        role: if i == 0 { 2 } else { 1 },
                    })
                    .collect(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let (req, _) = envelope(
        net,
        members[0],
        &created,
        id,
        EnvelopeKind::Setup,
        1,
        b"setup",
    );
    c.submit(authed(members[0], req)).await.unwrap();
    created
}

/// Checks a delivery as its member would: its block only, and each tag
/// verifies under the member's own slot key with the server's pinned key.
fn verify(
    net: &Net,
    m: &Member,
    created: &pb::CreateConversationResponse,
    d: &pb::Delivery,
) -> usize {
    let me = slot(created, m);
    if let Some(b) = &d.block {
        assert_eq!(b.recipient_slot, me.0.0);
    }
    let secret = &m.secrets[&me.1];
    for a in &d.attestations {
        assert_eq!(a.tags.len(), 1);
        let st = AttestationStatement {
            conversation: ConversationId::parse("c", &d.conversation_id).unwrap(),
            epoch: Epoch(0),
            index: Index(a.index),
            head: Head::parse("h", &a.head).unwrap(),
        };
        let key = net.keys[a.server as usize];
        assert!(
            secret
                .mac_keys(&key)
                .unwrap()
                .verify_attestation(&st, &Tag::parse("t", &a.tags[0]).unwrap()),
            "tag from order server {} verifies",
            a.server
        );
    }
    d.attestations.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_concurrent_senders_and_an_offline_member_catching_up() {
    let net = Net::start(3, "").await;
    let mut c = net.client().await;
    let members = [
        register(&mut c, &net.network(), 1).await,
        register(&mut c, &net.network(), 2).await,
        register(&mut c, &net.network(), 3).await,
    ];
    let id = ConversationId::from_bytes([21; 32]);
    let mut stream = c
        .subscribe(authed(&members[0], pb::SubscribeRequest {}))
        .await
        .unwrap()
        .into_inner();
    let created =
        create_and_setup(&net, &mut c, &[&members[0], &members[1], &members[2]], id).await;
    // Members 1 and 2 send ten messages each, concurrently; member 3 is offline.
    let mut tasks = Vec::new();
    for m in &members[..2] {
        let reqs: Vec<_> = (2..12u64)
            .map(|s| envelope(&net, m, &created, id, EnvelopeKind::Message, s, b"hello").0)
            .collect();
        let m = m.clone();
        let mut c = net.client().await;
        tasks.push(tokio::spawn(async move {
            for r in reqs {
                c.submit(authed(&m, r)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Member 1's live stream: every index once, in order, fully attested.
    let mut seen = Vec::new();
    while seen.len() < 21 {
        let d = stream.message().await.unwrap().unwrap();
        assert!(d.header.is_some());
        assert_eq!(verify(&net, &members[0], &created, &d), 3);
        seen.push(d.index);
    }
    assert_eq!(seen, (0..21).collect::<Vec<u64>>());
    // The offline member catches up with Fetch.
    let mut c3 = net.client().await;
    let all = fetch_all(&mut c3, &members[2], id.as_bytes()).await;
    assert_eq!(all.len(), 21);
    for (i, d) in all.iter().enumerate() {
        assert_eq!(d.index, i as u64);
        assert_eq!(verify(&net, &members[2], &created, d), 3);
    }
    // Head proofs relayed from every order server verify under the
    // member's slot key and name the head it accepted last.
    let nonce = grompi_proto::ProofNonce::from_bytes([42; 32]);
    let proofs = c3
        .prove_heads(authed(
            &members[2],
            pb::ProveHeadsRequest {
                conversation_id: id.to_vec(),
                nonce: nonce.to_vec(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .proofs;
    assert_eq!(proofs.len(), 3);
    let me = slot(&created, &members[2]);
    let last_head = all.last().unwrap().attestations[0].head.clone();
    for p in proofs {
        let p = grompi_proto::mac::HeadProof::try_from(p).unwrap();
        assert_eq!(p.statement.count, 21);
        assert_eq!(p.statement.head.to_vec(), last_head);
        let keys = members[2].secrets[&me.1]
            .mac_keys(&net.keys[p.server as usize])
            .unwrap();
        assert!(keys.verify_head_proof(&p.statement, &p.tag));
    }
    // SIGTERM: a graceful shutdown exits cleanly.
    let mut net = net;
    let status = net
        .router
        .as_mut()
        .unwrap()
        .terminate(Duration::from_secs(20))
        .unwrap();
    assert!(status.success(), "router exit status {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_order_server_stalls_t_equals_n_progresses_at_two_of_three_and_catches_up() {
    for quorum in [3usize, 2] {
        let mut net = Net::start(quorum, "submit_timeout_ms = 2000\n").await;
        let mut c = net.client().await;
        let members = [
            register(&mut c, &net.network(), 1).await,
            register(&mut c, &net.network(), 2).await,
        ];
        let id = ConversationId::from_bytes([22; 32]);
        let created = create_and_setup(&net, &mut c, &[&members[0], &members[1]], id).await;
        let mut stream = c
            .subscribe(authed(&members[0], pb::SubscribeRequest {}))
            .await
            .unwrap()
            .into_inner();
        net.stop_server(2);
        let (req, _) = envelope(
            &net,
            &members[1],
            &created,
            id,
            EnvelopeKind::Message,
            2,
            b"while one is down",
        );
        let r = c.submit(authed(&members[1], req.clone())).await;
        let mut tags: BTreeMap<u64, usize> = BTreeMap::new();
        if quorum == 3 {
            let s = r.unwrap_err();
            assert_eq!(s.code(), Code::Unavailable, "t = N stalls: {s:?}");
        } else {
            r.unwrap();
            // The Setup was acknowledged at two of three: its third tag may
            // still arrive, as a tag update for index 0, before index 1.
            let d = loop {
                let d = stream.message().await.unwrap().unwrap();
                if !(d.index == 0 && d.header.is_none()) {
                    break d;
                }
            };
            assert_eq!(d.index, 1);
            assert!(d.header.is_some(), "index 1 is delivered whole");
            *tags.entry(1).or_default() += verify(&net, &members[0], &created, &d);
            assert_eq!(tags[&1], 2, "delivered at two of three");
        }
        net.restart_server(2).await;
        c.submit(authed(&members[1], req)).await.unwrap();
        while tags.get(&1).copied().unwrap_or(0) < 3 {
            let d = stream.message().await.unwrap().unwrap();
            if d.header.is_none() {
                // A tag update carries only the new attestations.
                for a in &d.attestations {
                    assert_eq!(a.index, d.index);
                }
            }
            *tags.entry(d.index).or_default() += verify(&net, &members[0], &created, &d);
        }
        assert_eq!(tags[&1], 3, "full tags after catch-up (quorum {quorum})");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_killed_under_load_loses_no_acknowledged_envelope() {
    let mut net = Net::start(2, "").await;
    let mut c = net.client().await;
    let members = [
        register(&mut c, &net.network(), 1).await,
        register(&mut c, &net.network(), 2).await,
        register(&mut c, &net.network(), 3).await,
    ];
    let id = ConversationId::from_bytes([23; 32]);
    let created =
        create_and_setup(&net, &mut c, &[&members[0], &members[1], &members[2]], id).await;
    let mut tasks = Vec::new();
    for m in &members {
        let reqs: Vec<_> = (2..2000u64)
            .map(|s| envelope(&net, m, &created, id, EnvelopeKind::Message, s, b"load"))
            .collect();
        let m = m.clone();
        let mut c = net.client().await;
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for (r, hash) in reqs {
                match c.submit(authed(&m, r)).await {
                    Ok(resp) => {
                        assert_eq!(resp.into_inner().envelope_hash, hash.to_vec());
                        acked.push(hash);
                    }
                    Err(_) => break,
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    if let Some(mut p) = net.router.take() {
        p.kill();
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    assert!(!acked.is_empty());
    net.start_router().await;
    let mut c = net.client().await;
    let mut all = fetch_all(&mut c, &members[0], id.as_bytes()).await;
    // Envelopes committed but not yet attested at the kill are re-sent and
    // complete after the restart.
    for _ in 0..100 {
        let more = fetch_all(&mut c, &members[0], id.as_bytes()).await;
        if more.len() == all.len() {
            break;
        }
        all = more;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut count: HashMap<EnvelopeHash, usize> = HashMap::new();
    for (i, d) in all.iter().enumerate() {
        assert_eq!(d.index, i as u64, "each index once, densely");
        *count.entry(hash_of(d)).or_default() += 1;
    }
    for h in &acked {
        assert_eq!(
            count.get(h),
            Some(&1),
            "an acknowledged envelope is at exactly one index"
        );
    }
    let _ = &members[0].signing;
}
