//! An account as a test drives the real router directly over gRPC:
//! registered with fixed keys (its slot secrets registered as order keys),
//! its session token on each call; and reading a conversation back. Shared
//! by the router's end-to-end tests and its power-loss test.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: a failed step fails the test

use ed25519_dalek::{Signer, SigningKey};
use grompi_proto::ids::{NetworkBinding, prekey_signing_message};
use grompi_proto::pb::{self, router_client::RouterClient};
use grompi_proto::{BlockDigest, Challenge, EnvelopeHash, EnvelopeHeader, SlotKey, SlotSecret};
use std::collections::HashMap;
use std::sync::Arc;
use tonic::Request;
use tonic::transport::Channel;

/// A router client over TLS.
pub type Client = RouterClient<Channel>;

/// A registered account.
#[derive(Clone)]
pub struct Member {
    /// Its identity signing key.
    pub signing: SigningKey,
    /// Its account id.
    pub account: Vec<u8>,
    /// Its session token (hex), sent with every call.
    pub token: String,
    /// The secrets of the slot keys it registered as order keys.
    pub secrets: Arc<HashMap<SlotKey, SlotSecret>>,
}

/// `body` as a call of `m`'s session.
pub fn authed<T>(m: &Member, body: T) -> Request<T> {
    let mut r = Request::new(body);
    r.metadata_mut()
        .insert(grompi_proto::SESSION_METADATA, m.token.parse().unwrap());
    r
}

/// Registers the account whose keys derive from `seed`, with four order
/// keys, at the router of `network`.
pub async fn register(c: &mut Client, network: &NetworkBinding, seed: u8) -> Member {
    let challenge = c
        .get_challenge(pb::GetChallengeRequest {})
        .await
        .unwrap()
        .into_inner()
        .challenge;
    let ch = Challenge::parse("c", &challenge).unwrap();
    let signing = SigningKey::from_bytes(&[seed; 32]);
    let secrets: HashMap<SlotKey, SlotSecret> = (0..4u8)
        .map(|i| {
            let s = SlotSecret::from_bytes([seed.wrapping_mul(13).wrapping_add(i + 1); 32]);
            (s.public_key(), s)
        })
        .collect();
    let prekey = [seed; 32];
    let r = c
        .register(pb::RegisterRequest {
            identity: Some(pb::IdentityKeys {
                signing_key: signing.verifying_key().to_bytes().to_vec(),
                session_key: vec![seed; 32],
            }),
            challenge,
            signature: signing
                .sign(&ch.network_signing_message(network))
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
            order_keys: secrets.keys().map(|k| k.to_vec()).collect(),
        })
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

/// The envelope hash of a delivery, recomputed from its header and digests.
pub fn hash_of(d: &pb::Delivery) -> EnvelopeHash {
    let h = EnvelopeHeader::try_from(d.header.clone().unwrap()).unwrap();
    let digests: Vec<BlockDigest> = d
        .block_digests
        .iter()
        .map(|b| BlockDigest::parse("d", b).unwrap())
        .collect();
    EnvelopeHash::compute(&h.core_hash(), &digests)
}

/// Every delivery of conversation `id` that `m` can fetch, from index 0.
pub async fn fetch_all(c: &mut Client, m: &Member, id: &[u8]) -> Vec<pb::Delivery> {
    let mut all: Vec<pb::Delivery> = Vec::new();
    loop {
        let next = c
            .fetch(authed(
                m,
                pb::FetchRequest {
                    conversation_id: id.to_vec(),
                    from_index: all.len() as u64,
                    limit: 256,
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .deliveries;
        if next.is_empty() {
            return all;
        }
        all.extend(next);
    }
}
