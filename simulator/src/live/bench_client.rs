//! The benchmark's protocol client: registers accounts, creates a
//! conversation, submits envelopes with submission tags and checks each
//! delivery the way a member does before accepting it (the head chain, and
//! a quorum of attestation tags under its own slot key). It does not run
//! Olm or the body cipher: those costs are the client's own and the same
//! whether or not the router asks order servers, so they would only dilute
//! the ratio the benchmark reports.

use super::LiveError;
use ed25519_dalek::{Signer, SigningKey};
use grompi_proto::descriptor::NetworkDescriptor;
use grompi_proto::envelope::HeaderFields;
use grompi_proto::ids::{NetworkBinding, prekey_signing_message};
use grompi_proto::keys::MacKeys;
use grompi_proto::mac::AttestationStatement;
use grompi_proto::pb::{self, router_client::RouterClient};
use grompi_proto::{
    BlockDigest, BodyHash, Challenge, ConversationId, Envelope, EnvelopeHash, EnvelopeHeader,
    EnvelopeKind, Epoch, Head, Index, KeyCommitment, OrderServerKey, RecipientBlock, Sequence,
    SlotIndex, SlotKey, SlotSecret, SlotSet, Tag,
};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

fn rpc(what: &str) -> impl FnOnce(tonic::Status) -> LiveError + '_ {
    move |s| LiveError::Setup(format!("{what}: {:?} {}", s.code(), s.message()))
}

fn wire(what: &str) -> impl FnOnce(grompi_proto::WireError) -> LiveError + '_ {
    move |e| LiveError::Setup(format!("{what}: {e}"))
}

/// Connects to the router the descriptor names, over TLS with its pinned
/// certificate, retrying for up to 30 s while it starts.
pub async fn connect_router(
    descriptor: &NetworkDescriptor,
) -> Result<RouterClient<Channel>, LiveError> {
    grompi_ops::tls::install_crypto_provider();
    let endpoint = tonic::transport::Endpoint::from_shared(descriptor.router.address.clone())
        .map_err(|e| LiveError::Setup(format!("router address: {e}")))?
        .tls_config(grompi_ops::tls::client_config(
            &descriptor.router.tls_ca_pem,
            "localhost",
            None,
        ))
        .map_err(|e| LiveError::Setup(format!("router TLS: {e}")))?
        .connect_timeout(Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match endpoint.connect().await {
            Ok(ch) => return Ok(RouterClient::new(ch)),
            Err(e) if Instant::now() > deadline => {
                return Err(LiveError::Setup(format!("connect to the router: {e}")));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Every delivery of `conversation` the router has for `account`, from
/// index 0, fetched page by page.
pub async fn fetch_all(
    client: &mut RouterClient<Channel>,
    account: &BenchAccount,
    conversation: ConversationId,
) -> Result<Vec<pb::Delivery>, LiveError> {
    let mut all: Vec<pb::Delivery> = Vec::new();
    loop {
        let page = client
            .fetch(account.authed(pb::FetchRequest {
                conversation_id: conversation.to_vec(),
                from_index: all.len() as u64,
                limit: 256,
            }))
            .await
            .map_err(rpc("fetch"))?
            .into_inner()
            .deliveries;
        if page.is_empty() {
            return Ok(all);
        }
        all.extend(page);
    }
}

/// A registered account with its single-use order keys.
pub struct BenchAccount {
    account: Vec<u8>,
    token: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    order_secrets: HashMap<SlotKey, SlotSecret>,
}

impl BenchAccount {
    /// Registers a fresh account derived from `seed`, with `order_keys`
    /// single-use order keys, with the router of `network`
    /// ([`NetworkBinding::of_descriptor`] of the descriptor it serves).
    pub async fn register(
        client: &mut RouterClient<Channel>,
        network: &NetworkBinding,
        seed: u64,
        order_keys: u8,
    ) -> Result<Self, LiveError> {
        let challenge = client
            .get_challenge(pb::GetChallengeRequest {})
            .await
            .map_err(rpc("get challenge"))?
            .into_inner()
            .challenge;
        let parsed = Challenge::parse("challenge", &challenge).map_err(wire("challenge"))?;
        let mut seed_bytes = [0u8; 32];
        // Away from bytes 0 and 31, which X25519 clamping changes.
        seed_bytes[16..24].copy_from_slice(&seed.to_le_bytes());
        seed_bytes[8] = 1;
        let signing = SigningKey::from_bytes(&seed_bytes);
        let order_secrets: HashMap<SlotKey, SlotSecret> = (0..order_keys)
            .map(|i| {
                let mut b = seed_bytes;
                b[8] = 2;
                b[9] = i;
                let s = SlotSecret::from_bytes(b);
                (s.public_key(), s)
            })
            .collect();
        let mut session_key = seed_bytes;
        session_key[8] = 3;
        let mut prekey = seed_bytes;
        prekey[8] = 4;
        let r = client
            .register(pb::RegisterRequest {
                identity: Some(pb::IdentityKeys {
                    signing_key: signing.verifying_key().to_bytes().to_vec(),
                    session_key: session_key.to_vec(),
                }),
                challenge,
                signature: signing
                    .sign(&parsed.network_signing_message(network))
                    .to_bytes()
                    .to_vec(),
                fallback_prekey: Some(pb::SignedPrekey {
                    key: prekey.to_vec(),
                    signature: signing
                        .sign(&prekey_signing_message(&prekey))
                        .to_bytes()
                        .to_vec(),
                }),
                one_time_prekeys: vec![],
                order_keys: order_secrets.keys().map(|k| k.to_vec()).collect(),
            })
            .await
            .map_err(rpc("register"))?
            .into_inner();
        let token = hex::encode(&r.session_token)
            .parse()
            .map_err(|_| LiveError::Setup("session token is not ASCII".into()))?;
        Ok(Self {
            account: r.account,
            token,
            order_secrets,
        })
    }

    /// The account id the router's register answer gave, as raw bytes.
    pub fn account(&self) -> &[u8] {
        &self.account
    }

    /// Wraps a request with this account's session token.
    pub fn authed<T>(&self, body: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(body);
        r.metadata_mut()
            .insert(grompi_proto::SESSION_METADATA, self.token.clone());
        r
    }
}

/// One member's place in a conversation: its slot and the MAC keys it
/// shares with each order server (derived once, not per message).
pub struct MemberSlot {
    /// The conversation the benchmark created; headers and attestations name it.
    pub conversation: ConversationId,
    /// The member's slot.
    pub slot: SlotIndex,
    /// Per order server (descriptor order): the MAC keys.
    pub keys: Vec<MacKeys>,
    /// The other members' slots, for blocks.
    pub recipients: Vec<SlotIndex>,
    /// The slot set the router assigned at creation; a Setup header carries its hash.
    pub slot_set: SlotSet,
}

impl MemberSlot {
    /// The slot `account` got in `created`, with its MAC keys.
    pub fn new(
        account: &BenchAccount,
        conversation: ConversationId,
        created: &pb::CreateConversationResponse,
        servers: &[OrderServerKey],
    ) -> Result<Self, LiveError> {
        let mine = created
            .assignments
            .iter()
            .find(|a| a.account == account.account)
            .ok_or_else(|| LiveError::Setup("no slot assigned to a member".into()))?;
        let key = SlotKey::parse("assignment.key", &mine.key).map_err(wire("assignment"))?;
        let secret = account
            .order_secrets
            .get(&key)
            .ok_or_else(|| LiveError::Setup("slot key is not one of ours".into()))?;
        let keys = servers
            .iter()
            .map(|s| {
                secret
                    .mac_keys(s)
                    .map_err(|e| LiveError::Setup(format!("MAC keys: {e}")))
            })
            .collect::<Result<_, _>>()?;
        let slot_set = SlotSet::try_from(
            created
                .slots
                .clone()
                .ok_or_else(|| LiveError::Setup("create response without slots".into()))?,
        )
        .map_err(wire("slots"))?;
        Ok(Self {
            conversation,
            slot: SlotIndex(mine.slot),
            keys,
            recipients: created
                .assignments
                .iter()
                .filter(|a| a.account != account.account)
                .map(|a| SlotIndex(a.slot))
                .collect(),
            slot_set,
        })
    }

    /// An envelope of `kind` from this member with `body` and one block of
    /// `block_bytes` per other member, and its submission tags.
    pub fn envelope(
        &self,
        kind: EnvelopeKind,
        sequence: u64,
        body: &[u8],
        block_bytes: usize,
    ) -> Result<(pb::SubmitRequest, EnvelopeHash), LiveError> {
        let header = EnvelopeHeader::new(HeaderFields {
            conversation: self.conversation,
            epoch: Epoch(0),
            kind,
            sender: self.slot,
            sequence: Sequence(sequence),
            last_seen: None,
            body_hash: BodyHash::of(body),
            key_commitment: KeyCommitment::from_bytes([7; 32]),
            slot_set_hash: (kind == EnvelopeKind::Setup).then(|| self.slot_set.hash()),
        })
        .map_err(wire("header"))?;
        let blocks = self
            .recipients
            .iter()
            .map(|r| RecipientBlock {
                recipient: *r,
                ciphertext: vec![0x5a; block_bytes],
            })
            .collect();
        let e = Envelope::new(header, body.to_vec(), blocks).map_err(wire("envelope"))?;
        let hash = e.hash();
        let tags = self
            .keys
            .iter()
            .map(|k| k.submit(&hash, Sequence(sequence)).to_vec())
            .collect();
        Ok((
            pb::SubmitRequest {
                envelope: Some(pb::Envelope::from(&e)),
                submission_tags: tags,
            },
            hash,
        ))
    }
}

/// What a member checks before accepting, and the chain it keeps.
pub struct Acceptor {
    slot: MemberSlot,
    quorum: usize,
    head: Head,
    next: Index,
}

/// Why a delivery was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum NotAccepted {
    /// A delivery that only carries late tags.
    #[error("a tag update")]
    TagUpdate,
    /// Parsing failed.
    #[error("malformed delivery: {0}")]
    Malformed(String),
    /// Not the next index.
    #[error("index {got}, expected {expected}")]
    OutOfOrder {
        /// The index the member accepts next.
        expected: u64,
        /// The index the delivery carries.
        got: u64,
    },
    /// Too few tags verify.
    #[error("{verified} tags verify, the quorum is {quorum}")]
    Unattested {
        /// Attestation tags that verified under the member's MAC keys.
        verified: usize,
        /// Tags the member requires (0 for the relay baseline).
        quorum: usize,
    },
}

impl Acceptor {
    /// A member at the start of the conversation; `quorum` 0 is the
    /// relay baseline (nothing to verify).
    pub fn new(slot: MemberSlot, quorum: usize) -> Self {
        let head = Head::genesis(&slot.conversation);
        Self {
            slot,
            quorum,
            head,
            next: Index(0),
        }
    }

    /// Checks the next delivery; returns its envelope hash when accepted.
    pub fn accept(&mut self, d: &pb::Delivery) -> Result<EnvelopeHash, NotAccepted> {
        let header = d.header.clone().ok_or(NotAccepted::TagUpdate)?;
        let header =
            EnvelopeHeader::try_from(header).map_err(|e| NotAccepted::Malformed(e.to_string()))?;
        if d.index != self.next.0 {
            return Err(NotAccepted::OutOfOrder {
                expected: self.next.0,
                got: d.index,
            });
        }
        let digests: Vec<BlockDigest> = d
            .block_digests
            .iter()
            .map(|b| BlockDigest::parse("block_digests", b))
            .collect::<Result<_, _>>()
            .map_err(|e| NotAccepted::Malformed(e.to_string()))?;
        let hash = EnvelopeHash::compute(&header.core_hash(), &digests);
        let head = self
            .head
            .next(&self.slot.conversation, header.epoch(), self.next, &hash);
        let statement = AttestationStatement {
            conversation: self.slot.conversation,
            epoch: header.epoch(),
            index: self.next,
            head,
        };
        let verified = d
            .attestations
            .iter()
            .filter(|a| {
                let (Some(keys), Some(tag)) = (
                    self.slot.keys.get(a.server as usize),
                    a.tags.first().and_then(|t| Tag::parse("tag", t).ok()),
                ) else {
                    return false;
                };
                keys.verify_attestation(&statement, &tag)
            })
            .count();
        if verified < self.quorum {
            return Err(NotAccepted::Unattested {
                verified,
                quorum: self.quorum,
            });
        }
        self.head = head;
        self.next = Index(self.next.0 + 1);
        Ok(hash)
    }
}
