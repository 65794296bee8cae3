//! A test network: N order servers (the real order server core over its
//! in-memory store, [`super::order_servers`]) served over mutual TLS in this
//! process, and the real `router` binary as a child process.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::order_servers::OrderServer;
use ed25519_dalek::{Signer, SigningKey};
use grompi_ops::tls::TlsIdentity;
use grompi_proto::descriptor::{NetworkDescriptor, OrderServerEntry, RouterEntry};
use grompi_proto::ids::{NetworkBinding, prekey_signing_message};
use grompi_proto::pb::order_service_server::{OrderService, OrderServiceServer};
use grompi_proto::pb::router_client::RouterClient;
use grompi_proto::pb::{self};
use grompi_proto::{
    BodyHash, Challenge, ConversationId, Envelope, EnvelopeHeader, EnvelopeKind, Epoch,
    KeyCommitment, OrderServerKey, RecipientBlock, Sequence, SlotIndex, SlotKey, SlotSecret,
    SlotSetHash,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

/// One order server behind gRPC; `down` makes every call fail.
#[derive(Clone)]
pub struct OrderNode {
    pub server: Arc<Mutex<OrderServer>>,
    pub down: Arc<AtomicBool>,
}

impl OrderNode {
    fn check(&self) -> Result<(), Status> {
        if self.down.load(Ordering::SeqCst) {
            Err(Status::unavailable("order server stopped"))
        } else {
            Ok(())
        }
    }
}

#[tonic::async_trait]
impl OrderService for OrderNode {
    async fn open_conversation(
        &self,
        r: Request<pb::OpenConversationRequest>,
    ) -> Result<Response<pb::OpenConversationResponse>, Status> {
        self.check()?;
        self.server
            .lock()
            .unwrap()
            .open(r.get_ref())
            .map(Response::new)
    }

    async fn attest(
        &self,
        r: Request<pb::AttestRequest>,
    ) -> Result<Response<pb::AttestResponse>, Status> {
        self.check()?;
        let results = self.server.lock().unwrap().attest(r.get_ref());
        Ok(Response::new(pb::AttestResponse { results }))
    }

    type AttestStreamStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<pb::AttestResponse, Status>> + Send + 'static>,
    >;

    async fn attest_stream(
        &self,
        r: Request<tonic::Streaming<pb::AttestRequest>>,
    ) -> Result<Response<Self::AttestStreamStream>, Status> {
        use futures::StreamExt;
        self.check()?;
        let me = self.clone();
        let answers = r.into_inner().map(move |req| {
            me.check()?;
            let req = req?;
            let results = me.server.lock().unwrap().attest(&req);
            Ok(pb::AttestResponse { results })
        });
        Ok(Response::new(Box::pin(answers)))
    }

    async fn prove_head(
        &self,
        r: Request<pb::ProveHeadRequest>,
    ) -> Result<Response<pb::ProveHeadResponse>, Status> {
        self.check()?;
        let proof = self.server.lock().unwrap().prove(r.get_ref())?;
        Ok(Response::new(pb::ProveHeadResponse { proof: Some(proof) }))
    }

    async fn server_info(
        &self,
        _r: Request<pb::ServerInfoRequest>,
    ) -> Result<Response<pb::ServerInfoResponse>, Status> {
        Ok(Response::new(self.server.lock().unwrap().info()))
    }
}

/// The name of the test network, in its descriptor.
pub const NETWORK_NAME: &str = "test";

/// The network.
pub struct Net {
    pub dir: tempfile::TempDir,
    pub orders: Vec<OrderNode>,
    pub keys: Vec<OrderServerKey>,
    pub router_cert: String,
    pub router: Option<Child>,
    pub address: String,
    pub config_path: PathBuf,
}

impl Net {
    /// Starts `n` order servers and the router with `quorum` and
    /// extra config lines.
    pub async fn start(n: usize, quorum: usize, extra: &str) -> Net {
        grompi_ops::tls::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("router");
        grompi_router::server::init(&data, &[]).unwrap();
        let router_cert = std::fs::read_to_string(data.join("router.crt")).unwrap();
        let mut orders = Vec::new();
        let mut entries = Vec::new();
        let mut keys = Vec::new();
        for i in 0..n {
            let node = OrderNode {
                server: Arc::new(Mutex::new(OrderServer::new(i as u32, 60 + i as u8))),
                down: Arc::new(AtomicBool::new(false)),
            };
            let key = node.server.lock().unwrap().secret.public_key();
            let identity = TlsIdentity::generate(&[]).unwrap();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let tls = grompi_ops::tls::server_config(&identity, Some(&router_cert));
            let svc = OrderServiceServer::new(node.clone());
            tokio::spawn(async move {
                tonic::transport::Server::builder()
                    .tls_config(tls)
                    .unwrap()
                    .add_service(svc)
                    .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                    .await
                    .unwrap();
            });
            entries.push(OrderServerEntry {
                name: format!("order{i}"),
                address: format!("https://127.0.0.1:{}", addr.port()),
                public_key: key,
                tls_ca_pem: identity.cert_pem.clone(),
            });
            keys.push(key);
            orders.push(node);
        }
        let descriptor = NetworkDescriptor {
            name: NETWORK_NAME.into(),
            router: RouterEntry {
                address: "https://127.0.0.1:1".into(),
                tls_ca_pem: router_cert.clone(),
            },
            order_servers: entries,
            quorum,
        };
        std::fs::write(dir.path().join("network.toml"), descriptor.to_toml()).unwrap();
        let config_path = dir.path().join("router.toml");
        std::fs::write(
            &config_path,
            format!(
                "listen = \"127.0.0.1:0\"\ndata_dir = \"router\"\ndescriptor = \"network.toml\"\n\
                 backoff_base_ms = 20\nbackoff_max_ms = 200\nlog = \"warn\"\n{extra}"
            ),
        )
        .unwrap();
        let mut net = Net {
            dir,
            orders,
            keys,
            router_cert,
            router: None,
            address: String::new(),
            config_path,
        };
        net.start_router().await;
        net
    }

    /// The binding of this network (its name and the router's TLS root):
    /// what a client signs its sign-in for.
    pub fn network(&self) -> NetworkBinding {
        NetworkBinding::of(NETWORK_NAME, &self.router_cert)
    }

    /// Starts (or restarts) the router process and waits for its address.
    pub async fn start_router(&mut self) {
        let bound = self
            .dir
            .path()
            .join("router")
            .join(grompi_ops::bound_addrs::BOUND_ADDRS_FILE);
        let _ = std::fs::remove_file(&bound);
        let child = Command::new(env!("CARGO_BIN_EXE_router"))
            .args(["serve", "--config"])
            .arg(&self.config_path)
            .spawn()
            .unwrap();
        self.router = Some(child);
        for _ in 0..600 {
            if let Some(port) = std::fs::read_to_string(&bound).ok().and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("grpc = \"127.0.0.1:"))
                    .and_then(|p| p.strip_suffix('"'))
                    .map(str::to_owned)
            }) {
                self.address = format!("https://127.0.0.1:{port}");
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("router did not start");
    }

    /// SIGKILL.
    pub fn kill_router(&mut self) {
        if let Some(mut c) = self.router.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A TLS client.
    pub async fn client(&self) -> RouterClient<Channel> {
        let tls = grompi_ops::tls::client_config(&self.router_cert, "127.0.0.1", None);
        let ch = Endpoint::from_shared(self.address.clone())
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap();
        RouterClient::new(ch).max_decoding_message_size(64 << 20)
    }

    /// A TLS client whose connection comes from the loopback address
    /// `local` (Linux routes all of 127.0.0.0/8 to loopback, so 127.0.0.2
    /// is a second client address); the error if it cannot connect.
    pub async fn try_client_from(
        &self,
        local: std::net::Ipv4Addr,
    ) -> Result<RouterClient<Channel>, tonic::transport::Error> {
        let tls = grompi_ops::tls::client_config(&self.router_cert, "127.0.0.1", None);
        let ch = Endpoint::from_shared(self.address.clone())
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .local_address(Some(std::net::IpAddr::V4(local)))
            .connect()
            .await?;
        Ok(RouterClient::new(ch).max_decoding_message_size(64 << 20))
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.kill_router();
    }
}

/// A member as a client sees itself.
#[derive(Clone)]
pub struct Member {
    pub signing: SigningKey,
    pub account: Vec<u8>,
    pub token: String,
    pub secrets: Arc<HashMap<SlotKey, SlotSecret>>,
}

pub fn authed<T>(m: &Member, body: T) -> Request<T> {
    let mut r = Request::new(body);
    r.metadata_mut()
        .insert(grompi_proto::SESSION_METADATA, m.token.parse().unwrap());
    r
}

/// A registration signed for the router of `network`.
pub fn registration(
    network: &NetworkBinding,
    signing: &SigningKey,
    challenge: &[u8],
    order_keys: &[SlotKey],
) -> pb::RegisterRequest {
    let c = Challenge::parse("c", challenge).unwrap();
    let prekey = [4u8; 32];
    pb::RegisterRequest {
        identity: Some(pb::IdentityKeys {
            signing_key: signing.verifying_key().to_bytes().to_vec(),
            session_key: signing.verifying_key().to_bytes().to_vec(),
        }),
        challenge: challenge.to_vec(),
        signature: signing
            .sign(&c.network_signing_message(network))
            .to_bytes()
            .to_vec(),
        fallback_prekey: Some(pb::SignedPrekey {
            key: prekey.to_vec(),
            signature: signing
                .sign(&prekey_signing_message(&prekey))
                .to_bytes()
                .to_vec(),
        }),
        one_time_prekeys: vec![vec![1; 32], vec![2; 32]],
        order_keys: order_keys.iter().map(|k| k.to_vec()).collect(),
    }
}

/// Registers the member `seed` with the router of `network`.
pub async fn register(
    client: &mut RouterClient<Channel>,
    network: &NetworkBinding,
    seed: u8,
) -> Member {
    let challenge = client
        .get_challenge(pb::GetChallengeRequest {})
        .await
        .unwrap()
        .into_inner()
        .challenge;
    let signing = SigningKey::from_bytes(&[seed; 32]);
    let secrets: HashMap<SlotKey, SlotSecret> = (0..4u8)
        .map(|i| {
            let s = SlotSecret::from_bytes([seed.wrapping_mul(17).wrapping_add(i + 1); 32]);
            (s.public_key(), s)
        })
        .collect();
    let keys: Vec<SlotKey> = secrets.keys().copied().collect();
    let r = client
        .register(registration(network, &signing, &challenge, &keys))
        .await
        .unwrap()
        .into_inner();
    Member {
        signing,
        account: r.account,
        token: hex::encode(r.session_token),
        secrets: Arc::new(secrets),
    }
}

/// A slot assignment of a member.
pub fn slot(assignments: &[pb::SlotAssignment], m: &Member) -> (SlotIndex, SlotKey) {
    let a = assignments.iter().find(|a| a.account == m.account).unwrap();
    (SlotIndex(a.slot), SlotKey::parse("k", &a.key).unwrap())
}

/// An envelope with one block per slot other than the sender's.
#[allow(clippy::too_many_arguments)]
pub fn envelope(
    m: &Member,
    conv: ConversationId,
    epoch: Epoch,
    slot: (SlotIndex, SlotKey),
    kind: EnvelopeKind,
    slot_set_hash: Option<SlotSetHash>,
    sequence: u64,
    servers: &[OrderServerKey],
    body: &[u8],
    slots: u32,
) -> pb::SubmitRequest {
    let header = EnvelopeHeader::new(grompi_proto::envelope::HeaderFields {
        conversation: conv,
        epoch,
        kind,
        sender: slot.0,
        sequence: Sequence(sequence),
        last_seen: None,
        body_hash: BodyHash::of(body),
        key_commitment: KeyCommitment::from_bytes([7; 32]),
        slot_set_hash,
    })
    .unwrap();
    let blocks = (0..slots)
        .filter(|s| *s != slot.0.0)
        .map(|s| RecipientBlock {
            recipient: SlotIndex(s),
            ciphertext: vec![s as u8; 16],
        })
        .collect();
    let e = Envelope::new(header, body.to_vec(), blocks).unwrap();
    let hash = e.hash();
    let secret = &m.secrets[&slot.1];
    pb::SubmitRequest {
        envelope: Some(pb::Envelope::from(&e)),
        submission_tags: servers
            .iter()
            .map(|k| {
                secret
                    .mac_keys(k)
                    .unwrap()
                    .submit(&hash, Sequence(sequence))
                    .to_vec()
            })
            .collect(),
    }
}
