//! Targets for what the router parses: client requests (registration,
//! sign-in, key upload, member lists, submissions) and its own stored
//! records.

use super::samples;
use crate::target::{Outcome, Target, Violation, ensure, join_kv, rejected, split_kv};
use ed25519_dalek::{Signer, SigningKey};
use grompi_proto::ids::{NetworkBinding, prekey_signing_message};
use grompi_proto::{AccountId, Challenge, Epoch, Head, Index, SlotIndex, Tag, pb};
use grompi_router::conversation::{EpochSlots, PaddingSecret};
use grompi_router::core::{parse_members, parse_submit};
use grompi_router::directory::{
    IdentityKeys, SignedPrekey, parse_register, parse_sign_in, parse_upload,
};
use grompi_router::limits::Limits;
use grompi_router::record::{self, AccountRecord, ConversationRecord, Record, StoredEnvelope};
use prost::Message;

/// The targets of this module.
pub fn targets() -> Vec<Target> {
    vec![
        Target {
            name: "router_register",
            reaches: "grompi_router::directory::parse_register (key lengths, challenge and prekey signatures, order keys)",
            run: register,
            seeds: register_seeds,
            dictionary: &[],
            protobuf: true,
        },
        Target {
            name: "router_sign_in",
            reaches: "grompi_router::directory::parse_sign_in",
            run: sign_in,
            seeds: sign_in_seeds,
            dictionary: &[],
            protobuf: true,
        },
        Target {
            name: "router_upload",
            reaches: "grompi_router::directory::parse_upload (distinct keys, low-order order keys)",
            run: upload,
            seeds: upload_seeds,
            dictionary: &[],
            protobuf: true,
        },
        Target {
            name: "router_members",
            reaches: "grompi_router::core::parse_members on CreateConversationRequest.members",
            run: members,
            seeds: members_seeds,
            dictionary: &[],
            protobuf: true,
        },
        Target {
            name: "router_submit",
            reaches: "grompi_router::core::parse_submit (size limits, Envelope::try_from, one tag per server)",
            run: submit,
            seeds: submit_seeds,
            dictionary: &[],
            protobuf: true,
        },
        Target {
            name: "router_account",
            reaches: "grompi_router::record::decode_account (stored record; input = key length, key, value)",
            run: account,
            seeds: account_seeds,
            dictionary: &[],
            protobuf: false,
        },
        Target {
            name: "router_keys",
            reaches: "grompi_router::record::decode_pair, decode_session, decode_tail, decode_progress (stored records; first byte picks one, then key length, key, value)",
            run: keys,
            seeds: keys_seeds,
            dictionary: &[],
            protobuf: false,
        },
        Target {
            name: "router_conversation",
            reaches: "grompi_router::record::decode_conversation (stored record; input = key length, key, value)",
            run: conversation,
            seeds: conversation_seeds,
            dictionary: &[],
            protobuf: false,
        },
        Target {
            name: "router_envelope",
            reaches: "grompi_router::record::decode_envelope (stored record)",
            run: envelope,
            seeds: envelope_seeds,
            dictionary: &[],
            protobuf: true,
        },
    ]
}

fn violation(what: impl std::fmt::Display) -> Violation {
    Violation(what.to_string())
}

/// A deterministic identity for seeds: keys, account id, signed prekey.
pub struct Identity {
    /// The Ed25519 signing key.
    pub key: SigningKey,
    /// Its public half.
    pub signing: [u8; 32],
    /// A Curve25519 session key (any 32 bytes do for parsing).
    pub session: [u8; 32],
    /// The account id.
    pub account: AccountId,
    /// A signed prekey's X25519 public key.
    pub prekey: [u8; 32],
    /// The identity key's Ed25519 signature over the prekey's signing message.
    pub prekey_signature: [u8; 64],
}

/// The identity with seed `n`.
pub fn identity(n: u8) -> Identity {
    let key = SigningKey::from_bytes(&[n; 32]);
    let signing = key.verifying_key().to_bytes();
    let session = grompi_proto::OrderServerSecret::from_bytes([n.wrapping_add(0x80); 32])
        .public_key()
        .as_bytes()
        .to_owned();
    let prekey = grompi_proto::OrderServerSecret::from_bytes([n.wrapping_add(0x90); 32])
        .public_key()
        .as_bytes()
        .to_owned();
    let prekey_signature = key.sign(&prekey_signing_message(&prekey)).to_bytes();
    Identity {
        account: AccountId::of_identity(&signing, &session),
        key,
        signing,
        session,
        prekey,
        prekey_signature,
    }
}

fn order_key(n: u8) -> Vec<u8> {
    grompi_proto::SlotSecret::from_bytes([n; 32])
        .public_key()
        .to_vec()
}

// ---- requests -------------------------------------------------------------

/// The network the parsed requests are for: what the seeds sign for.
fn network() -> NetworkBinding {
    NetworkBinding::of("fuzz", "")
}

fn register(data: &[u8]) -> Outcome {
    let r = match pb::RegisterRequest::decode(data) {
        Ok(r) => r,
        Err(e) => return rejected(&e),
    };
    match parse_register(&r, &network()) {
        Ok(a) => {
            ensure(
                a.identity.signing.as_slice()
                    == r.identity.map(|i| i.signing_key).unwrap_or_default(),
                "parsed identity differs from the request",
            )?;
            Ok(format!(
                "ok:one_time={}:order_keys={}",
                !a.one_time.is_empty(),
                !a.order_keys.is_empty()
            ))
        }
        Err(e) => rejected(&e),
    }
}

fn register_request(n: u8, challenge: [u8; 32]) -> pb::RegisterRequest {
    let id = identity(n);
    let sig = id
        .key
        .sign(&Challenge::from_bytes(challenge).network_signing_message(&network()));
    pb::RegisterRequest {
        identity: Some(pb::IdentityKeys {
            signing_key: id.signing.to_vec(),
            session_key: id.session.to_vec(),
        }),
        challenge: challenge.to_vec(),
        signature: sig.to_bytes().to_vec(),
        fallback_prekey: Some(pb::SignedPrekey {
            key: id.prekey.to_vec(),
            signature: id.prekey_signature.to_vec(),
        }),
        one_time_prekeys: vec![vec![0x61; 32], vec![0x62; 32]],
        order_keys: vec![order_key(1), order_key(2)],
    }
}

fn register_seeds() -> Vec<(String, Vec<u8>)> {
    let good = register_request(1, [0x0c; 32]);
    let mut dup = good.clone();
    dup.one_time_prekeys.push(vec![0x61; 32]);
    let mut low = good.clone();
    low.order_keys.push(vec![0; 32]);
    let mut bad_sig = good.clone();
    bad_sig.challenge = vec![0x0d; 32];
    vec![
        ("seed-register".into(), good.encode_to_vec()),
        ("edge-duplicate-prekey".into(), dup.encode_to_vec()),
        ("edge-low-order-order-key".into(), low.encode_to_vec()),
        ("edge-wrong-challenge".into(), bad_sig.encode_to_vec()),
    ]
}

fn sign_in(data: &[u8]) -> Outcome {
    let r = match pb::SignInRequest::decode(data) {
        Ok(r) => r,
        Err(e) => return rejected(&e),
    };
    match parse_sign_in(&r, &network()) {
        Ok(s) => {
            ensure(
                s.account.as_bytes().as_slice() == r.account,
                "account differs",
            )?;
            Ok("ok".to_owned())
        }
        Err(e) => rejected(&e),
    }
}

fn sign_in_seeds() -> Vec<(String, Vec<u8>)> {
    let id = identity(2);
    let challenge = Challenge::from_bytes([0x0c; 32]);
    let r = pb::SignInRequest {
        account: id.account.to_vec(),
        challenge: challenge.to_vec(),
        signature: id
            .key
            .sign(&challenge.network_signing_message(&network()))
            .to_bytes()
            .to_vec(),
    };
    vec![("seed-sign-in".into(), r.encode_to_vec())]
}

fn upload(data: &[u8]) -> Outcome {
    let r = match pb::UploadKeysRequest::decode(data) {
        Ok(r) => r,
        Err(e) => return rejected(&e),
    };
    match parse_upload(&r) {
        Ok((k, fallback)) => {
            ensure(
                k.one_time.len() == r.one_time_prekeys.len()
                    && k.order_keys.len() == r.order_keys.len(),
                "keys lost in parsing",
            )?;
            Ok(format!("ok:fallback={}", fallback.is_some()))
        }
        Err(e) => rejected(&e),
    }
}

fn upload_seeds() -> Vec<(String, Vec<u8>)> {
    let id = identity(3);
    let r = pb::UploadKeysRequest {
        one_time_prekeys: vec![vec![0x61; 32], vec![0x62; 32]],
        order_keys: vec![order_key(3), order_key(4)],
        fallback_prekey: Some(pb::SignedPrekey {
            key: id.prekey.to_vec(),
            signature: id.prekey_signature.to_vec(),
        }),
    };
    let mut short = r.clone();
    short.one_time_prekeys.push(vec![1; 31]);
    vec![
        ("seed-upload".into(), r.encode_to_vec()),
        ("edge-short-key".into(), short.encode_to_vec()),
    ]
}

fn members(data: &[u8]) -> Outcome {
    let r = match pb::CreateConversationRequest::decode(data) {
        Ok(r) => r,
        Err(e) => return rejected(&e),
    };
    match parse_members(&r.members, &Limits::default()) {
        Ok(m) => {
            ensure(m.len() == r.members.len(), "members lost in parsing")?;
            Ok("ok".to_owned())
        }
        Err(e) => rejected(&e),
    }
}

fn members_seeds() -> Vec<(String, Vec<u8>)> {
    let spec = |n: u8, role: i32| pb::MemberSpec {
        account: identity(n).account.to_vec(),
        role,
    };
    let r = pb::CreateConversationRequest {
        conversation_id: samples::conversation().to_vec(),
        members: vec![spec(1, 2), spec(2, 1), spec(3, 1)],
    };
    let mut twice = r.clone();
    twice.members.push(spec(2, 2));
    vec![
        ("seed-three-members".into(), r.encode_to_vec()),
        ("edge-member-twice".into(), twice.encode_to_vec()),
    ]
}

fn submit(data: &[u8]) -> Outcome {
    let r = match pb::SubmitRequest::decode(data) {
        Ok(r) => r,
        Err(e) => return rejected(&e),
    };
    match parse_submit(r, 3, &Limits::default()) {
        Ok(s) => {
            ensure(s.tags.len() == 3, "not one tag per server")?;
            let _ = s.envelope.hash();
            Ok(format!("ok:{:?}", s.envelope.header().kind()))
        }
        Err(e) => rejected(&e),
    }
}

fn submit_seeds() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = samples::envelopes()
        .iter()
        .map(|(name, e)| {
            let r = pb::SubmitRequest {
                envelope: Some(pb::Envelope::from(e)),
                submission_tags: (0..3u8).map(|i| vec![0x50 + i; 32]).collect(),
            };
            (format!("seed-{name}"), r.encode_to_vec())
        })
        .collect();
    out.push((
        "edge-no-tags".into(),
        pb::SubmitRequest {
            envelope: samples::envelopes()
                .first()
                .map(|(_, e)| pb::Envelope::from(e)),
            submission_tags: Vec::new(),
        }
        .encode_to_vec(),
    ));
    out
}

// ---- stored records -------------------------------------------------------

fn kv_of(r: &Record) -> Result<(Vec<u8>, Vec<u8>), Violation> {
    let (_, k, v) = r.to_kv();
    Ok((k, v.ok_or_else(|| violation("record encodes as a delete"))?))
}

fn account(data: &[u8]) -> Outcome {
    let (key, value) = split_kv(data);
    let a = match record::decode_account(key, value) {
        Ok(a) => a,
        Err(e) => return rejected(&e),
    };
    let (k, v) = kv_of(&Record::Account(a.clone()))?;
    let again = record::decode_account(&k, &v)
        .map_err(|e| violation(format!("re-encoded account does not decode: {e}")))?;
    ensure(again == a, "account does not round-trip")?;
    Ok("ok".to_owned())
}

fn account_record() -> AccountRecord {
    let id = identity(4);
    AccountRecord {
        id: id.account,
        identity: IdentityKeys {
            signing: id.signing,
            session: id.session,
        },
        fallback: SignedPrekey {
            key: id.prekey,
            signature: id.prekey_signature,
        },
    }
}

fn account_seeds() -> Vec<(String, Vec<u8>)> {
    kv_of(&Record::Account(account_record()))
        .map(|(k, v)| {
            vec![
                ("seed-account".into(), join_kv(&k, &v)),
                ("edge-short-key".into(), join_kv(&k[1..], &v)),
            ]
        })
        .unwrap_or_default()
}

fn keys(data: &[u8]) -> Outcome {
    let Some((&which, rest)) = data.split_first() else {
        return Ok("err:empty".to_owned());
    };
    let (key, value) = split_kv(rest);
    match which % 4 {
        0 => match record::decode_pair("one_time_prekeys", key) {
            Ok((a, k)) => {
                let (_, enc, _) = Record::OneTimePrekey {
                    account: a,
                    key: k,
                    present: true,
                }
                .to_kv();
                ensure(enc == key, "pair key does not round-trip")?;
                Ok("ok:pair".to_owned())
            }
            Err(e) => rejected(&e),
        },
        1 => match record::decode_session(key, value) {
            Ok((hash, account, Some(expires_at))) => {
                let (k, v) = kv_of(&Record::Session {
                    hash,
                    account,
                    expires_at,
                })?;
                ensure(k == key && v == value, "session does not round-trip")?;
                Ok("ok:session".to_owned())
            }
            Ok((hash, account, None)) => {
                // A session stored before sessions expired: the account only.
                ensure(
                    hash.as_slice() == key && account.as_bytes().as_slice() == value,
                    "an old session record does not decode to its bytes",
                )?;
                Ok("ok:session-without-end".to_owned())
            }
            Err(e) => rejected(&e),
        },
        2 => match record::decode_tail(key, value) {
            Ok((c, next, head)) => {
                let (k, v) = kv_of(&Record::Tail {
                    conversation: c,
                    next,
                    head,
                })?;
                ensure(
                    k == c.to_vec() && k == key && v == value,
                    "tail does not round-trip",
                )?;
                Ok("ok:tail".to_owned())
            }
            Err(e) => rejected(&e),
        },
        _ => match record::decode_progress(key, value) {
            Ok((c, server, next)) => {
                let (k, v) = kv_of(&Record::Progress {
                    conversation: c,
                    server,
                    next,
                })?;
                ensure(k == key && v == value, "progress does not round-trip")?;
                Ok("ok:progress".to_owned())
            }
            Err(e) => rejected(&e),
        },
    }
}

fn keys_seeds() -> Vec<(String, Vec<u8>)> {
    let c = samples::conversation();
    let a = identity(5).account;
    let records = [
        (
            "pair",
            0u8,
            Record::OneTimePrekey {
                account: a,
                key: [0x61; 32],
                present: true,
            },
        ),
        (
            "session",
            1,
            Record::Session {
                hash: [0x71; 32],
                account: a,
                expires_at: 1_800_000_000_000,
            },
        ),
        (
            "tail",
            2,
            Record::Tail {
                conversation: c,
                next: Index(12),
                head: Head::from_bytes([0x33; 32]),
            },
        ),
        (
            "progress",
            3,
            Record::Progress {
                conversation: c,
                server: 2,
                next: Index(11),
            },
        ),
    ];
    records
        .iter()
        .map(|(name, which, r)| {
            let (_, k, v) = r.to_kv();
            (
                format!("seed-{name}"),
                [&[*which][..], &join_kv(&k, &v.unwrap_or_default())].concat(),
            )
        })
        .collect()
}

fn conversation(data: &[u8]) -> Outcome {
    let (key, value) = split_kv(data);
    let c = match record::decode_conversation(key, value) {
        Ok(c) => c,
        Err(e) => return rejected(&e),
    };
    let (k1, v1) = kv_of(&Record::Conversation(Box::new(c.clone())))?;
    let again = record::decode_conversation(&k1, &v1)
        .map_err(|e| violation(format!("re-encoded conversation does not decode: {e}")))?;
    let (k2, v2) = kv_of(&Record::Conversation(Box::new(again)))?;
    ensure(k1 == k2 && v1 == v2, "conversation does not round-trip")?;
    ensure(k1 == key, "conversation key does not round-trip")?;
    Ok(format!(
        "ok:epochs={}:prepared={}",
        c.epochs.len().min(3),
        c.prepared.len().min(3)
    ))
}

fn epoch_slots(epoch: u64, first: Option<u64>) -> Option<EpochSlots> {
    let slots = samples::slot_set(3)?;
    Some(EpochSlots {
        epoch: Epoch(epoch),
        first_index: first.map(Index),
        slots,
        holders: vec![Some(identity(1).account), None, Some(identity(2).account)],
        padding: vec![(SlotIndex(1), PaddingSecret::new([0x41; 32]))],
    })
}

fn conversation_seeds() -> Vec<(String, Vec<u8>)> {
    let record = |prepared: bool| {
        Record::Conversation(Box::new(ConversationRecord {
            id: samples::conversation(),
            creator: identity(1).account,
            epochs: epoch_slots(0, Some(0)).into_iter().collect(),
            prepared: if prepared {
                epoch_slots(1, None).into_iter().collect()
            } else {
                Vec::new()
            },
            opened: vec![true, true, false],
        }))
    };
    [("seed-one-epoch", false), ("seed-prepared-update", true)]
        .iter()
        .filter_map(|(name, p)| {
            let (k, v) = kv_of(&record(*p)).ok()?;
            Some(((*name).to_owned(), join_kv(&k, &v)))
        })
        .collect()
}

fn envelope(data: &[u8]) -> Outcome {
    let s = match record::decode_envelope(data) {
        Ok(s) => s,
        Err(e) => return rejected(&e),
    };
    let c = samples::conversation();
    let stored = |s: StoredEnvelope| Record::Envelope {
        conversation: c,
        index: Index(1),
        stored: Some(Box::new(s)),
    };
    let (_, v1) = kv_of(&stored(s.clone()))?;
    let again = record::decode_envelope(&v1)
        .map_err(|e| violation(format!("re-encoded envelope does not decode: {e}")))?;
    ensure(
        again.envelope == s.envelope,
        "stored envelope does not round-trip",
    )?;
    let (_, v2) = kv_of(&stored(again))?;
    ensure(v1 == v2, "stored envelope record does not round-trip")?;
    Ok(format!(
        "ok:{:?}:submitter={}",
        s.envelope.header().kind(),
        s.submitter.is_some()
    ))
}

fn envelope_seeds() -> Vec<(String, Vec<u8>)> {
    samples::envelopes()
        .into_iter()
        .filter_map(|(name, e)| {
            let next_slots = (name == "update").then(|| samples::slot_set(4)).flatten();
            let s = StoredEnvelope {
                envelope: e,
                submission_tags: (0..3u8).map(|i| Tag::from_bytes([0x50 + i; 32])).collect(),
                previous_head: Head::genesis(&samples::conversation()),
                head: Head::from_bytes([0x33; 32]),
                submitter: (name != "noise").then(|| identity(1).account),
                next_slots,
            };
            let (_, v) = kv_of(&Record::Envelope {
                conversation: samples::conversation(),
                index: Index(1),
                stored: Some(Box::new(s)),
            })
            .ok()?;
            Some((format!("seed-{name}"), v))
        })
        .collect()
}
