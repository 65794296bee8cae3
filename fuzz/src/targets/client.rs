//! Targets for what the client parses: deliveries from the router, the
//! block frame around Olm messages and the block plaintext inside, decrypted
//! contents, the strict codec, prekey bundles and saved conversation state.

use super::samples;
use crate::target::{Outcome, Target, Violation, bucket, ensure, normalize, rejected};
use grompi_client_core::Conversation;
use grompi_client_core::body::{BlockPlaintext, BodyKey};
use grompi_client_core::codec::{Canonical, DecodeError, Reader};
use grompi_client_core::content::{
    Change, Content, MemberEntry, ReceiptContent, SetupContent, UpdateContent, Visibility,
};
use grompi_client_core::conversation::ConversationConfig;
use grompi_client_core::delivery::{Delivery, Incoming};
use grompi_client_core::pairwise::{Pairwise, PairwiseError, PairwisePickle, PrekeyBundle};
use grompi_proto::{
    AccountId, ConversationId, CoreHash, EnvelopeHash, EnvelopeKind, Epoch, Head, Index, SlotIndex,
    SlotRole, pb,
};
use prost::Message;
use std::sync::OnceLock;

/// The targets of this module.
pub fn targets() -> Vec<Target> {
    vec![
        Target {
            name: "delivery",
            reaches: "grompi_client_core::delivery: Incoming::try_from(pb::Delivery), then Delivery::check",
            run: delivery,
            seeds: delivery_seeds,
            dictionary: &[],
            protobuf: true,
        },
        Target {
            name: "olm_frame",
            reaches: "grompi_client_core::pairwise::Pairwise::decrypt_from (block frame, vodozemac Olm parsing and decryption) on a fixed recipient, then BlockPlaintext::decode of the plaintext",
            run: olm_frame,
            seeds: olm_seeds,
            dictionary: &[&[1], &[0], &[1, 0], &[1, 1]],
            protobuf: false,
        },
        Target {
            name: "block_plaintext",
            reaches: "grompi_client_core::body::BlockPlaintext::decode (the Olm payload)",
            run: block_plaintext,
            seeds: block_plaintext_seeds,
            dictionary: &[],
            protobuf: false,
        },
        Target {
            name: "content",
            reaches: "grompi_client_core::content::Content::decode (decrypted bodies; first byte picks the header kind)",
            run: content,
            seeds: content_seeds,
            dictionary: &[&[0; 8], &[0, 0, 0, 0, 0, 0, 4, 0], &[1, 1], &[1, 2]],
            protobuf: false,
        },
        Target {
            name: "codec",
            reaches: "grompi_client_core::codec::Reader (the strict canonical reader), driven by a read program in the input",
            run: codec,
            seeds: codec_seeds,
            dictionary: &[],
            protobuf: false,
        },
        Target {
            name: "prekey_bundle",
            reaches: "grompi_client_core::pairwise::PrekeyBundle::try_from(pb::PrekeyBundle) (account id and signature checks)",
            run: prekey_bundle,
            seeds: prekey_bundle_seeds,
            dictionary: &[],
            protobuf: true,
        },
        Target {
            name: "conversation_state",
            reaches: "grompi_client_core::Conversation::restore_state (saved conversation state)",
            run: conversation_state,
            seeds: conversation_state_seeds,
            dictionary: &[&[0; 8], &[1], &[3]],
            protobuf: false,
        },
    ]
}

fn violation(what: impl std::fmt::Display) -> Violation {
    Violation(what.to_string())
}

// ---- delivery -----------------------------------------------------------

fn delivery(data: &[u8]) -> Outcome {
    let raw = match pb::Delivery::decode(data) {
        Ok(d) => d,
        Err(e) => return rejected(&e),
    };
    let incoming = match Incoming::try_from(raw) {
        Ok(i) => i,
        Err(e) => return rejected(&e),
    };
    match incoming {
        Incoming::Tags(t) => {
            let wire = pb::Delivery {
                conversation_id: t.conversation.to_vec(),
                index: t.index.0,
                attestations: t.attestations.iter().map(Into::into).collect(),
                ..Default::default()
            };
            ensure(
                Incoming::try_from(wire).ok() == Some(Incoming::Tags(t.clone())),
                "tag update does not round-trip",
            )?;
            Ok(format!("ok:tags{}", bucket(t.attestations.len())))
        }
        Incoming::Envelope(d) => {
            let wire = pb::Delivery::from(&*d);
            ensure(
                Incoming::try_from(wire).ok() == Some(Incoming::Envelope(d.clone())),
                "delivery does not round-trip",
            )?;
            let kind = d.header.kind();
            let digests = d.block_digests.clone();
            let core = d.header.core_hash();
            match Delivery::check(*d) {
                Ok(r) => {
                    ensure(
                        r.envelope_hash == EnvelopeHash::compute(&core, &digests),
                        "recomputed envelope hash differs",
                    )?;
                    Ok(format!("ok:{kind:?}:block={}", r.delivery.block.is_some()))
                }
                Err(m) => Ok(format!("inconsistent:{}", normalize(&format!("{m:?}")))),
            }
        }
    }
}

fn delivery_seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, e) in samples::envelopes() {
        let summary = e.summary();
        let block = e.blocks().first().cloned();
        let d = Delivery {
            conversation: samples::conversation(),
            index: Index(5),
            header: e.header().clone(),
            body: e.body().to_vec(),
            block: block.map(|b| (0, b)),
            block_digests: summary.block_digests.clone(),
            attestations: samples::attestation(5, false).into_iter().collect(),
            previous_head: (name == "update").then(|| Head::genesis(&samples::conversation())),
            history_block: e.history_block().map(<[u8]>::to_vec),
        };
        out.push((
            format!("seed-{name}"),
            pb::Delivery::from(&d).encode_to_vec(),
        ));
    }
    let tags = pb::Delivery {
        conversation_id: samples::conversation().to_vec(),
        index: 5,
        attestations: samples::attestation(5, true)
            .iter()
            .map(Into::into)
            .collect(),
        ..Default::default()
    };
    out.push(("seed-late-tags".into(), tags.encode_to_vec()));
    let mut body_no_header = tags;
    body_no_header.body = b"x".to_vec();
    out.push((
        "edge-body-without-header".into(),
        body_no_header.encode_to_vec(),
    ));
    out
}

// ---- olm frame ------------------------------------------------------------

/// The fixed recipient the `olm_frame` target decrypts with: a vodozemac
/// account pickle with sessions, and frames sent to it (generated once by
/// `grompi-fuzz seed --olm-fixture`, because Olm draws keys from the OS).
const OLM_FIXTURE: &str = include_str!("../../fixtures/olm_recipient.json");

struct OlmFixture {
    pickle: serde_json::Value,
    genuine: Vec<u8>,
    frames: Vec<(String, Vec<u8>)>,
}

fn olm_fixture() -> Option<&'static OlmFixture> {
    static FIXTURE: OnceLock<Option<OlmFixture>> = OnceLock::new();
    FIXTURE
        .get_or_init(|| {
            let v: serde_json::Value = serde_json::from_str(OLM_FIXTURE).ok()?;
            let frames: Vec<(String, Vec<u8>)> = v
                .get("frames")?
                .as_object()?
                .iter()
                .filter_map(|(k, h)| Some((k.clone(), hex::decode(h.as_str()?).ok()?)))
                .collect();
            let genuine = frames
                .iter()
                .find(|(k, _)| k == "normal")
                .map(|(_, f)| f.clone())?;
            Some(OlmFixture {
                pickle: v.get("pickle")?.clone(),
                genuine,
                frames,
            })
        })
        .as_ref()
}

fn recipient(f: &OlmFixture) -> Option<Pairwise> {
    serde_json::from_value::<PairwisePickle>(f.pickle.clone())
        .ok()
        .map(Pairwise::from_pickle)
}

fn olm_frame(data: &[u8]) -> Outcome {
    let Some(fixture) = olm_fixture() else {
        return Err(violation(
            "fixtures/olm_recipient.json is missing or invalid; run `grompi-fuzz seed --olm-fixture`",
        ));
    };
    let mut me =
        recipient(fixture).ok_or_else(|| violation("the Olm fixture does not unpickle"))?;
    match me.decrypt_from(data) {
        Ok((sender, plain)) => {
            ensure(
                data.get(1..33) == Some(sender.as_bytes().as_slice()),
                "decrypted sender is not the frame's sender",
            )?;
            let kind = if data.get(33) == Some(&0) {
                "prekey"
            } else {
                "normal"
            };
            let payload = match BlockPlaintext::decode(&plain) {
                Ok(b) => {
                    ensure(
                        b.encode()[..] == plain[..],
                        "block plaintext does not re-encode to itself",
                    )?;
                    "block".to_owned()
                }
                Err(e) => format!("payload-err:{}", normalize(&format!("{e:?}"))),
            };
            Ok(format!("ok:{kind}:{payload}"))
        }
        Err(e) => {
            if matches!(e, PairwiseError::Decrypt(_)) {
                // Olm refused the message: that must not have changed the
                // sessions, so a genuine message still decrypts.
                ensure(
                    me.decrypt_from(&fixture.genuine).is_ok() || data == fixture.genuine,
                    "a refused frame damaged the session state",
                )?;
            }
            Ok(format!("err:{}", olm_label(&e)))
        }
    }
}

/// The error's variant and static reason; Olm's own messages name the
/// failing check, with numbers blanked.
fn olm_label(e: &PairwiseError) -> String {
    normalize(&format!("{e:?}"))
}

fn olm_seeds() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = olm_fixture()
        .map(|f| {
            f.frames
                .iter()
                .map(|(k, v)| (format!("seed-{k}"), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    out.push(("edge-empty".into(), Vec::new()));
    out.push(("edge-version-only".into(), vec![1]));
    out.push(("edge-unknown-type".into(), [&[1u8][..], &[7; 33]].concat()));
    out
}

/// Builds the Olm fixture: a recipient with one established session and
/// one pending first contact, and frames to it.
pub fn generate_olm_fixture() -> Result<String, PairwiseError> {
    let mut b = Pairwise::new();
    let mut a = Pairwise::new();
    let mut c = Pairwise::new();
    let bundle = b.bundle(true);
    let mut fallback_only = bundle;
    fallback_only.one_time_prekey = None;
    let payload = |core: u8| {
        BlockPlaintext {
            key: BodyKey::from_bytes([0x22; 32]),
            core: CoreHash::from_bytes([core; 32]),
            rn1: None,
        }
        .encode()
    };
    a.start_session(&bundle)?;
    let first = a.encrypt_to(&b.account_id(), &payload(1))?;
    let second_prekey = a.encrypt_to(&b.account_id(), &payload(2))?;
    b.decrypt_from(&first)?;
    let reply = b.encrypt_to(&a.account_id(), b"reply")?;
    a.decrypt_from(&reply)?;
    let normal = a.encrypt_to(&b.account_id(), &payload(3))?;
    let garbage_payload = a.encrypt_to(&b.account_id(), b"not a block plaintext")?;
    c.start_session(&fallback_only)?;
    let first_contact = c.encrypt_to(&b.account_id(), &payload(4))?;
    let frames = serde_json::json!({
        "normal": hex::encode(&normal),
        "normal-garbage-payload": hex::encode(&garbage_payload),
        "prekey-existing-session": hex::encode(&second_prekey),
        "prekey-first-contact": hex::encode(&first_contact),
        "prekey-replayed": hex::encode(&first),
    });
    let pickle =
        serde_json::to_value(b.pickle()).map_err(|e| PairwiseError::Encrypt(e.to_string()))?;
    let v = serde_json::json!({
        "comment": "Olm state of a fixed recipient for the olm_frame fuzz target (test keys only). Regenerate with `grompi-fuzz seed --olm-fixture`, then rebuild.",
        "pickle": pickle,
        "frames": frames,
    });
    serde_json::to_string_pretty(&v).map_err(|e| PairwiseError::Encrypt(e.to_string()))
}

// ---- block plaintext ----------------------------------------------------

fn block_plaintext(data: &[u8]) -> Outcome {
    match BlockPlaintext::decode(data) {
        Ok(b) => {
            ensure(
                b.encode()[..] == data[..],
                "block plaintext is not canonical",
            )?;
            Ok("ok".to_owned())
        }
        Err(e) => rejected(&e),
    }
}

fn block_plaintext_seeds() -> Vec<(String, Vec<u8>)> {
    let b = BlockPlaintext {
        key: BodyKey::from_bytes([0x22; 32]),
        core: CoreHash::from_bytes([0x33; 32]),
        rn1: None,
    };
    let enc = b.encode().to_vec();
    let mut v2 = enc.clone();
    if let Some(v) = v2.first_mut() {
        *v = 2;
    }
    vec![
        ("seed-block".into(), enc.clone()),
        ("edge-version-2".into(), v2),
        (
            "edge-truncated".into(),
            enc.get(..40).unwrap_or_default().to_vec(),
        ),
        ("edge-trailing".into(), [&enc[..], &[0]].concat()),
    ]
}

// ---- content ------------------------------------------------------------

fn kind_of(b: u8) -> EnvelopeKind {
    match b % 5 {
        0 => EnvelopeKind::Setup,
        1 => EnvelopeKind::Message,
        2 => EnvelopeKind::Update,
        3 => EnvelopeKind::Receipt,
        _ => EnvelopeKind::Noise,
    }
}

fn content(data: &[u8]) -> Outcome {
    let Some((&k, bytes)) = data.split_first() else {
        return Ok("err:empty".to_owned());
    };
    let kind = kind_of(k);
    match Content::decode(kind, bytes) {
        Ok(c) => {
            ensure(c.kind() == kind, "decoded content of another kind")?;
            ensure(
                c.encode() == bytes,
                "content does not re-encode to the same bytes (one encoding, one meaning)",
            )?;
            Ok(format!("ok:{kind:?}"))
        }
        Err(e) => Ok(format!("err:{kind:?}:{}", normalize(&format!("{e:?}")))),
    }
}

fn sample_contents() -> Vec<Content> {
    let Some(slots) = samples::slot_set(3) else {
        return Vec::new();
    };
    let members = vec![
        MemberEntry {
            account: AccountId::from_bytes([0x51; 32]),
            role: SlotRole::Admin,
            slot: SlotIndex(0),
        },
        MemberEntry {
            account: AccountId::from_bytes([0x52; 32]),
            role: SlotRole::Member,
            slot: SlotIndex(2),
        },
    ];
    let update = |change| {
        Content::Update(UpdateContent {
            change,
            next_slots: slots.clone(),
            next_members: members.clone(),
            history: Visibility::Joined,
        })
    };
    vec![
        Content::Setup(SetupContent {
            creator: AccountId::from_bytes([0x51; 32]),
            slots: slots.clone(),
            members: members.clone(),
            history: Visibility::Shared,
        }),
        Content::Message(b"hello, group".to_vec()),
        Content::Message(Vec::new()),
        update(Change::Add {
            account: AccountId::from_bytes([0x53; 32]),
            role: SlotRole::Member,
        }),
        update(Change::Remove {
            account: AccountId::from_bytes([0x52; 32]),
        }),
        update(Change::Leave),
        update(Change::SetRole {
            account: AccountId::from_bytes([0x52; 32]),
            role: SlotRole::Admin,
        }),
        Content::Receipt(ReceiptContent {
            through: Index(9),
            head: Head::from_bytes([0x33; 32]),
            undecryptable: vec![Index(3), Index(7)],
        }),
        Content::Noise,
    ]
}

fn content_seeds() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = sample_contents()
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let k = c.kind().code() - 1;
            (
                format!("seed-{i}-{:?}", c.kind()).to_lowercase(),
                [&[k][..], &c.encode()].concat(),
            )
        })
        .collect();
    out.push((
        "edge-kind-mismatch".into(),
        vec![3, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0],
    ));
    out.push((
        "edge-huge-count".into(),
        [&[3u8, 1, 4][..], &[0; 40], &[0xff; 8]].concat(),
    ));
    out
}

// ---- codec --------------------------------------------------------------

/// Runs a read program: the first byte is the number of reads (at most
/// 16), then one byte per read names it, then the data.
fn codec(data: &[u8]) -> Outcome {
    let Some((&n, rest)) = data.split_first() else {
        return Ok("err:empty".to_owned());
    };
    let n = usize::from(n % 17).min(rest.len());
    let (ops, input) = rest.split_at(n);
    let mut r = Reader::new("fuzz", input);
    let mut written = Canonical::new();
    let mut done = 0;
    let mut error: Option<DecodeError> = None;
    for op in ops {
        let step = match op % 7 {
            0 => r.u8().map(|v| written.clone().u8(v)),
            1 => r.u32().map(|v| written.clone().u32(v)),
            2 => r.u64().map(|v| written.clone().u64(v)),
            3 => r.fixed().map(|v| written.clone().fixed(&v)),
            4 => r.bytes("b", 64).map(|v| written.clone().bytes(v)),
            5 => r.count("c", 16).map(|v| written.clone().count(v)),
            _ => r.opt_u64().map(|v| written.clone().opt_u64(v)),
        };
        match step {
            Ok(w) => {
                written = w;
                done += 1;
            }
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    let consumed = written.as_bytes().len();
    ensure(
        input.get(..consumed) == Some(written.as_bytes()),
        "what was read does not re-encode to the bytes it was read from",
    )?;
    let end = match error {
        Some(e) => format!("err:{}", normalize(&format!("{e:?}"))),
        None => match r.finish() {
            Ok(()) => {
                ensure(consumed == input.len(), "finish accepted unread bytes")?;
                "ok".to_owned()
            }
            Err(e) => format!("trailing:{}", normalize(&format!("{e:?}"))),
        },
    };
    Ok(format!("{end}:reads{}", bucket(done)))
}

fn codec_seeds() -> Vec<(String, Vec<u8>)> {
    let c = Canonical::new()
        .u8(7)
        .u32(9)
        .u64(11)
        .fixed(&[3; 32])
        .bytes(b"abc")
        .count(2)
        .opt_u64(Some(5))
        .opt_u64(None);
    vec![
        (
            "seed-every-read".into(),
            [&[8u8, 0, 1, 2, 3, 4, 5, 6, 6][..], c.as_bytes()].concat(),
        ),
        (
            "edge-long-length".into(),
            [&[1u8, 4][..], Canonical::new().count(65).as_bytes()].concat(),
        ),
        ("edge-bad-option".into(), vec![1, 6, 2]),
    ]
}

// ---- prekey bundle ------------------------------------------------------

fn prekey_bundle(data: &[u8]) -> Outcome {
    let raw = match pb::PrekeyBundle::decode(data) {
        Ok(b) => b,
        Err(e) => return rejected(&e),
    };
    match PrekeyBundle::try_from(raw) {
        Ok(b) => {
            ensure(b.verify().is_ok(), "an accepted bundle does not verify")?;
            ensure(
                b.identity.account_id() == b.account,
                "account id is not the hash of the identity keys",
            )?;
            Ok(format!("ok:one_time={}", b.one_time_prekey.is_some()))
        }
        Err(e) => rejected(&e),
    }
}

fn prekey_bundle_seeds() -> Vec<(String, Vec<u8>)> {
    let id = super::router::identity(1);
    let bundle = |one_time: bool| pb::PrekeyBundle {
        account: id.account.to_vec(),
        identity: Some(pb::IdentityKeys {
            signing_key: id.signing.to_vec(),
            session_key: id.session.to_vec(),
        }),
        fallback_prekey: Some(pb::SignedPrekey {
            key: id.prekey.to_vec(),
            signature: id.prekey_signature.to_vec(),
        }),
        one_time_prekey: if one_time { vec![0x61; 32] } else { Vec::new() },
    };
    let mut bad_sig = bundle(false);
    if let Some(b) = bad_sig
        .fallback_prekey
        .as_mut()
        .and_then(|p| p.signature.first_mut())
    {
        *b ^= 1;
    }
    let mut other_account = bundle(true);
    other_account.account = vec![0; 32];
    vec![
        ("seed-one-time".into(), bundle(true).encode_to_vec()),
        ("seed-fallback-only".into(), bundle(false).encode_to_vec()),
        ("edge-bad-signature".into(), bad_sig.encode_to_vec()),
        ("edge-other-account".into(), other_account.encode_to_vec()),
    ]
}

// ---- conversation state -------------------------------------------------

fn config() -> ConversationConfig {
    ConversationConfig::new(
        samples::server_secrets()
            .iter()
            .map(grompi_proto::OrderServerSecret::public_key)
            .collect(),
        2,
    )
}

fn conversation_state(data: &[u8]) -> Outcome {
    let c = match Conversation::restore_state(data, config()) {
        Ok(c) => c,
        Err(e) => return rejected(&e),
    };
    let saved = c.save_state();
    let again = Conversation::restore_state(&saved, config())
        .map_err(|e| violation(format!("a saved state does not restore: {e}")))?;
    ensure(
        again.transcript() == c.transcript(),
        "transcript changed through save and restore",
    )?;
    ensure(
        again.membership() == c.membership(),
        "membership changed through save and restore",
    )?;
    ensure(
        again.phase() == c.phase(),
        "phase changed through save and restore",
    )?;
    ensure(
        again.save_state().len() == saved.len(),
        "saved state is not stable",
    )?;
    Ok(format!(
        "ok:{}:entries{}:membership={}",
        normalize(&format!("{:?}", c.phase()))
            .split(['(', ' '])
            .next()
            .unwrap_or_default(),
        bucket(c.transcript().entries().len()),
        c.membership().is_some()
    ))
}

/// A saved state written field by field in the documented layout.
fn state_bytes(with_history: bool) -> Vec<u8> {
    let conv = ConversationId::from_bytes([0x11; 32]);
    let me = AccountId::from_bytes([0x51; 32]);
    let mut c = Canonical::new()
        .u8(grompi_client_core::conversation::STATE_VERSION)
        .fixed(conv.as_bytes())
        .fixed(me.as_bytes())
        .u8(if with_history { 3 } else { 1 })
        .u64(0)
        .opt_fixed(Some(Head::genesis(&conv).as_bytes()));
    if with_history {
        let mut head = Head::genesis(&conv);
        c = c.count(2);
        for i in 0..2u64 {
            let e = EnvelopeHash::from_bytes([u8::try_from(i).unwrap_or(0) + 0x70; 32]);
            head = head.next(&conv, Epoch(0), Index(i), &e);
            c = c
                .u64(i)
                .u64(0)
                .fixed(e.as_bytes())
                .fixed(head.as_bytes())
                .u32(0b011);
        }
        let slots = samples::slot_set(3);
        c = c.u8(1).u64(0).count(slots.as_ref().map_or(0, |s| s.len()));
        for e in slots.iter().flat_map(|s| s.entries()) {
            c = c.fixed(e.key.as_bytes()).u8(e.role.code());
        }
        c = c
            .count(2)
            .fixed(&[0x51; 32])
            .u8(2)
            .fixed(&[0x52; 32])
            .u8(1)
            .count(2)
            .u32(0)
            .fixed(&[0x51; 32])
            .u32(2)
            .fixed(&[0x52; 32]);
        // One epoch's slot secret, no prepared keys.
        c = c.count(1).u64(0).fixed(&[0x40; 32]).count(0);
        let msg = Content::Message(b"unsent".to_vec()).encode();
        c = c.count(1).fixed(&[0x80; 32]).u8(2).bytes(&msg);
        let block = BlockPlaintext {
            key: BodyKey::from_bytes([0x22; 32]),
            core: CoreHash::from_bytes([0x33; 32]),
            rn1: None,
        }
        .encode();
        c = c
            .count(1)
            .fixed(&[0x90; 32])
            .fixed(&[0x52; 32])
            .bytes(&block);
        c = c.u64(4).count(1).u64(0).u32(2).u64(3);
        c = c.count(1).fixed(&[0x52; 32]).u64(1);
        c = c.count(1).u64(1);
    } else {
        c = c.count(0).u8(0).count(0).count(0).count(0).count(0).u64(1);
        c = c.count(0).count(0).count(0);
    }
    // Counters, then (state version 2) no proved heads yet, then (version
    // 3) no RN1 of a sent envelope and no group keys (pairwise-keyed),
    // then (version 4) the history policy `joined` and no history root.
    c.u64(0)
        .u64(1)
        .u64(2)
        .u64(3)
        .count(0)
        .count(0)
        .u8(0)
        .u8(1)
        .u8(0)
        .as_bytes()
        .to_vec()
}

/// [`state_bytes`] of a group-keyed conversation: its version 3 tail holds
/// one sent envelope's RN1 and group keys (one generation with one sender
/// chain, one period's share, one share point, one parked Message).
fn group_state_bytes() -> Vec<u8> {
    let mut bytes = state_bytes(true);
    // Drop the pairwise tail (no sent RN1, no group state, the history
    // policy and no history root: 11 bytes).
    bytes.truncate(bytes.len().saturating_sub(11));
    let conv = ConversationId::from_bytes([0x11; 32]);
    let header = grompi_proto::EnvelopeHeader::new(grompi_proto::envelope::HeaderFields {
        conversation: conv,
        epoch: Epoch(0),
        kind: EnvelopeKind::Message,
        sender: SlotIndex(1),
        sequence: grompi_proto::Sequence(2),
        last_seen: Some(Index(1)),
        body_hash: grompi_proto::BodyHash::from_bytes([0x61; 32]),
        key_commitment: grompi_proto::KeyCommitment::from_bytes([0x62; 32]),
        slot_set_hash: None,
    })
    .ok()
    .and_then(|h| {
        h.with_key(grompi_proto::HeaderKey::Id(grompi_proto::KeyId {
            generation: 0,
            period: 1,
            servers: grompi_proto::ShareServers::new(0b11).ok()?,
        }))
        .ok()
    });
    let header = header
        .map(|h| grompi_proto::wire::encode::<pb::EnvelopeHeader, _>(&h))
        .unwrap_or_default();
    let tail = Canonical::new()
        .count(1)
        .fixed(&[0x71; 32])
        .fixed(&[0x72; 32])
        .u8(1)
        .u64(0)
        .u64(100)
        .u64(0)
        // Group keys: conversation, epoch, one generation with one chain.
        .u8(1)
        .fixed(conv.as_bytes())
        .u64(0)
        .count(1)
        .u64(0)
        .fixed(&[0x73; 32])
        .fixed(&[0x74; 32])
        .count(1)
        .u32(1)
        .u64(3)
        .fixed(&[0x75; 32])
        // One share of period 1 from server 0, one share point.
        .count(1)
        .u64(1)
        .u32(0)
        .fixed(&[0x76; 32])
        .count(1)
        .u64(1)
        .u64(0)
        .u64(1)
        // One parked Message: its header, body and chain key, no sender.
        .count(1)
        .u64(2)
        .bytes(&header)
        .bytes(b"a sealed body")
        .fixed(&[0x77; 32])
        .fixed(conv.as_bytes())
        .u64(0)
        .u64(0)
        .u32(1)
        .u64(2)
        .u8(0)
        // History: shared, with the root this member joined with.
        .u8(2)
        .u8(1)
        .u64(1)
        .fixed(&[0x78; 32])
        .u64(0)
        .u64(0)
        .fixed(&[0x79; 32]);
    bytes.extend_from_slice(tail.as_bytes());
    bytes
}

fn conversation_state_seeds() -> Vec<(String, Vec<u8>)> {
    let full = state_bytes(true);
    vec![
        ("seed-fresh".into(), state_bytes(false)),
        ("seed-active-with-history".into(), full.clone()),
        ("seed-group-keyed".into(), group_state_bytes()),
        (
            "edge-truncated".into(),
            full.get(..full.len() / 2).unwrap_or_default().to_vec(),
        ),
        ("edge-version-0".into(), vec![0; 80]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The group-keyed seed reaches past the decoder into the group state,
    /// so the fuzzer starts inside the new code paths.
    #[test]
    fn the_group_keyed_state_seed_is_accepted() {
        let c = Conversation::restore_state(&group_state_bytes(), config()).unwrap();
        assert!(c.is_group_keyed());
        assert_eq!(
            c.history_visibility(),
            grompi_client_core::content::Visibility::Shared
        );
        assert!(conversation_state(&group_state_bytes()).is_ok());
        // The pairwise-keyed seed it is built from parses too.
        let pairwise = Conversation::restore_state(&state_bytes(true), config()).unwrap();
        assert!(!pairwise.is_group_keyed());
    }
}
