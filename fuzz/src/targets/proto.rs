//! Targets for the wire types of `grompi-proto`: every protobuf message a
//! peer sends, parsed into its domain type, and the network descriptor.

use super::samples;
use crate::target::{
    Outcome, Target, Violation, blank_quoted, bucket, ensure, normalize, rejected,
};
use grompi_proto::descriptor::DescriptorError;
use grompi_proto::mac::{Attestation, HeadProof};
use grompi_proto::{
    BodyHash, Envelope, EnvelopeHash, EnvelopeHeader, EnvelopeSummary, NetworkDescriptor,
    OrderServerEntry, RecipientBlock, RouterEntry, SlotSet, WireError, pb, wire,
};
use prost::Message;

/// The targets of this module.
pub fn targets() -> Vec<Target> {
    vec![
        Target {
            name: "envelope",
            reaches: "grompi_proto::wire::decode::<pb::Envelope, Envelope> (Submit, stored envelopes)",
            run: envelope,
            seeds: envelope_seeds,
            dictionary: &[],
            protobuf: true,
        },
        Target {
            name: "envelope_header",
            reaches: "EnvelopeHeader::try_from(pb::EnvelopeHeader)",
            run: envelope_header,
            seeds: header_seeds,
            dictionary: &[],
            protobuf: true,
        },
        Target {
            name: "envelope_summary",
            reaches: "EnvelopeSummary::try_from(pb::EnvelopeSummary) (what order servers attest)",
            run: envelope_summary,
            seeds: summary_seeds,
            dictionary: &[],
            protobuf: true,
        },
        Target {
            name: "recipient_block",
            reaches: "RecipientBlock::try_from(pb::RecipientBlock)",
            run: recipient_block,
            seeds: block_seeds,
            dictionary: &[],
            protobuf: true,
        },
        Target {
            name: "slot_set",
            reaches: "SlotSet::try_from(pb::SlotSet) and SlotEntry::try_from (OpenConversation, AttestItem.next_slots)",
            run: slot_set,
            seeds: slot_set_seeds,
            dictionary: &[],
            protobuf: true,
        },
        Target {
            name: "attestation",
            reaches: "Attestation::try_from(pb::Attestation) and router::record::decode_attestation",
            run: attestation,
            seeds: attestation_seeds,
            dictionary: &[],
            protobuf: true,
        },
        Target {
            name: "head_proof",
            reaches: "HeadProof::try_from(pb::HeadProof) (ProveHeads responses)",
            run: head_proof,
            seeds: head_proof_seeds,
            dictionary: &[],
            protobuf: true,
        },
        Target {
            name: "descriptor",
            reaches: "NetworkDescriptor::parse (the TOML network descriptor)",
            run: descriptor,
            seeds: descriptor_seeds,
            dictionary: DESCRIPTOR_TOKENS,
            protobuf: false,
        },
    ]
}

fn violation(what: impl std::fmt::Display) -> Violation {
    Violation(what.to_string())
}

/// Re-encodes a parsed value and checks it parses back to itself.
fn round_trip<P, T>(what: &str, value: &T) -> Result<(), Violation>
where
    P: Message + Default + for<'a> From<&'a T>,
    T: TryFrom<P, Error = WireError> + PartialEq,
{
    let bytes = wire::encode::<P, T>(value);
    let again = wire::decode::<P, T>(&bytes)
        .map_err(|e| violation(format!("re-encoded {what} does not parse: {e}")))?;
    ensure(&again == value, &format!("{what} does not round-trip"))
}

fn envelope(data: &[u8]) -> Outcome {
    let env = match wire::decode::<pb::Envelope, Envelope>(data) {
        Ok(e) => e,
        Err(e) => return rejected(&e),
    };
    round_trip::<pb::Envelope, _>("envelope", &env)?;
    ensure(
        BodyHash::of(env.body()) == env.header().body_hash(),
        "accepted body does not match the header's body hash",
    )?;
    let summary = env.summary();
    ensure(
        env.hash() == EnvelopeHash::compute(&env.header().core_hash(), &summary.block_digests),
        "envelope hash differs from the hash of its summary",
    )?;
    round_trip::<pb::EnvelopeSummary, _>("summary", &summary)?;
    Ok(format!(
        "ok:{:?}:blocks{}",
        env.header().kind(),
        bucket(env.blocks().len())
    ))
}

fn envelope_header(data: &[u8]) -> Outcome {
    let h = match wire::decode::<pb::EnvelopeHeader, EnvelopeHeader>(data) {
        Ok(h) => h,
        Err(e) => return rejected(&e),
    };
    round_trip::<pb::EnvelopeHeader, _>("header", &h)?;
    ensure(
        EnvelopeHeader::new(h.fields())
            .and_then(|rebuilt| rebuilt.with_key(h.key()))
            .as_ref()
            == Ok(&h),
        "header fields do not rebuild the header",
    )?;
    ensure(
        h.kind().installs_slot_set() == h.slot_set_hash().is_some(),
        "slot set hash present on the wrong kind",
    )?;
    let _ = h.core_hash();
    Ok(format!(
        "ok:{:?}:last_seen={}",
        h.kind(),
        h.last_seen().is_some()
    ))
}

fn envelope_summary(data: &[u8]) -> Outcome {
    let s = match wire::decode::<pb::EnvelopeSummary, EnvelopeSummary>(data) {
        Ok(s) => s,
        Err(e) => return rejected(&e),
    };
    round_trip::<pb::EnvelopeSummary, _>("summary", &s)?;
    let _ = s.hash();
    Ok(format!(
        "ok:{:?}:digests{}",
        s.header.kind(),
        bucket(s.block_digests.len())
    ))
}

fn recipient_block(data: &[u8]) -> Outcome {
    let b = match wire::decode::<pb::RecipientBlock, RecipientBlock>(data) {
        Ok(b) => b,
        Err(e) => return rejected(&e),
    };
    round_trip::<pb::RecipientBlock, _>("block", &b)?;
    let _ = b.digest();
    Ok(format!("ok:len{}", bucket(b.ciphertext.len())))
}

fn slot_set(data: &[u8]) -> Outcome {
    let s = match wire::decode::<pb::SlotSet, SlotSet>(data) {
        Ok(s) => s,
        Err(e) => return rejected(&e),
    };
    round_trip::<pb::SlotSet, _>("slot set", &s)?;
    ensure(!s.is_empty(), "an accepted slot set is empty")?;
    for (i, e) in s.entries().iter().enumerate() {
        let pos = s.position(&e.key).map(|p| p.0 as usize);
        ensure(pos == Some(i), "a key's position is not its slot")?;
    }
    let _ = s.hash();
    Ok(format!("ok:slots{}", bucket(s.len())))
}

fn attestation(data: &[u8]) -> Outcome {
    let parsed = wire::decode::<pb::Attestation, Attestation>(data);
    let stored = grompi_router::record::decode_attestation(data);
    ensure(
        parsed.is_ok() == stored.is_ok(),
        "the router's stored-attestation decoder disagrees with the wire decoder",
    )?;
    let a = match parsed {
        Ok(a) => a,
        Err(e) => return rejected(&e),
    };
    round_trip::<pb::Attestation, _>("attestation", &a)?;
    ensure(
        stored.ok().as_ref() == Some(&a),
        "stored attestation differs",
    )?;
    Ok(format!(
        "ok:tags{}:next{}",
        bucket(a.tags.len()),
        bucket(a.next_tags.len())
    ))
}

fn head_proof(data: &[u8]) -> Outcome {
    let p = match wire::decode::<pb::HeadProof, HeadProof>(data) {
        Ok(p) => p,
        Err(e) => return rejected(&e),
    };
    round_trip::<pb::HeadProof, _>("head proof", &p)?;
    let _ = p.statement.canonical().as_bytes().len();
    Ok("ok".to_owned())
}

fn descriptor(data: &[u8]) -> Outcome {
    // The descriptor is read as text; bytes that are not UTF-8 never reach
    // the parser.
    let Ok(text) = std::str::from_utf8(data) else {
        return Ok("err:not utf-8".to_owned());
    };
    let d = match NetworkDescriptor::parse(text) {
        Ok(d) => d,
        Err(e) => return Ok(format!("err:{}", descriptor_label(&e))),
    };
    let again = NetworkDescriptor::parse(&d.to_toml())
        .map_err(|e| violation(format!("to_toml output does not parse: {e}")))?;
    ensure(again == d, "descriptor does not round-trip through to_toml")?;
    ensure(
        d.quorum >= 1 && d.quorum <= d.server_count(),
        "accepted quorum out of range",
    )?;
    ensure(
        d.tolerated_equivocators() < d.server_count(),
        "tolerated equivocators out of range",
    )?;
    Ok(format!(
        "ok:servers{}:quorum={}",
        d.server_count(),
        if d.quorum == d.server_count() {
            "all"
        } else {
            "majority"
        }
    ))
}

/// Names a descriptor error by its variant (and, for syntax errors, the
/// parser's description without the quoted input), so that the names and
/// addresses in the input do not make every error new.
fn descriptor_label(e: &DescriptorError) -> String {
    let debug = format!("{e:?}");
    let variant = debug
        .split(['(', ' ', '{'])
        .next()
        .unwrap_or_default()
        .to_owned();
    match e {
        DescriptorError::Syntax(msg) => {
            let detail: Vec<&str> = msg
                .lines()
                .skip(1)
                .filter(|l| !l.contains('|'))
                .map(|l| l.split('`').next().unwrap_or_default())
                .collect();
            format!("{variant}:{}", normalize(&blank_quoted(&detail.join(" "))))
        }
        _ => variant,
    }
}

const DESCRIPTOR_TOKENS: &[&[u8]] = &[
    b"version = 1\n",
    b"name = ",
    b"quorum = ",
    b"[router]\n",
    b"[[order_server]]\n",
    b"address = \"https://h:1\"\n",
    b"public_key = ",
    b"tls_ca_pem = ",
    b"-----BEGIN CERTIFICATE-----",
    b"-----END CERTIFICATE-----",
    b"\"\"\"",
    b"'''",
    b"\\u0000",
    b"\\U0010ffff",
    b"0000000000000000000000000000000000000000000000000000000000000000",
    b"e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
    b"18446744073709551616",
    b"-1",
    b"inf",
    b"[",
    b"]",
    b"{",
    b"}",
    b"=",
    b",",
    b"\n",
    b"#",
];

const PEM: &str =
    "-----BEGIN CERTIFICATE-----\nMIIBfzCCASWgAwIBAgIUYWJj\n-----END CERTIFICATE-----\n";

fn sample_descriptor(servers: usize, quorum: usize) -> NetworkDescriptor {
    NetworkDescriptor {
        name: "fuzz-net".into(),
        router: RouterEntry {
            address: "https://router.example:7000".into(),
            tls_ca_pem: PEM.into(),
        },
        order_servers: (0..servers)
            .map(|i| OrderServerEntry {
                name: format!("os-{i}"),
                address: format!("https://127.0.0.1:{}", 7100 + i),
                public_key: grompi_proto::OrderServerSecret::from_bytes(
                    [u8::try_from(i).unwrap_or(0) + 1; 32],
                )
                .public_key(),
                tls_ca_pem: PEM.into(),
            })
            .collect(),
        quorum,
    }
}

fn descriptor_seeds() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = [(1, 1), (3, 3), (3, 2), (5, 3), (16, 9)]
        .iter()
        .map(|&(n, q)| {
            (
                format!("seed-{n}-servers-quorum-{q}"),
                sample_descriptor(n, q).to_toml().into_bytes(),
            )
        })
        .collect();
    let three = sample_descriptor(3, 3).to_toml();
    out.push((
        "seed-no-quorum-line".into(),
        three.replace("quorum = 3\n", "").into_bytes(),
    ));
    out.push((
        "edge-low-order-key".into(),
        three
            .replacen(
                &sample_descriptor(1, 1)
                    .order_servers
                    .first()
                    .map(|s| s.public_key.to_hex())
                    .unwrap_or_default(),
                &"00".repeat(32),
                1,
            )
            .into_bytes(),
    ));
    out.push((
        "edge-multiline-literal-pem".into(),
        three
            .replacen(
                &format!("tls_ca_pem = {:?}", PEM),
                &format!("tls_ca_pem = '''\n{PEM}'''"),
                1,
            )
            .into_bytes(),
    ));
    out.push(("edge-empty".into(), Vec::new()));
    out.push(("edge-not-utf8".into(), vec![0xff, 0xfe, b'=', b'1']));
    out
}

fn encode<P: Message>(m: &P) -> Vec<u8> {
    m.encode_to_vec()
}

fn envelope_seeds() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = samples::envelopes()
        .iter()
        .map(|(n, e)| (format!("seed-{n}"), encode(&pb::Envelope::from(e))))
        .collect();
    if let Some((_, e)) = samples::envelopes().get(1) {
        let mut dup = pb::Envelope::from(e);
        dup.blocks.extend(dup.blocks.clone());
        dup.blocks.push(pb::RecipientBlock {
            recipient_slot: 9,
            ciphertext: vec![0; 32],
        });
        out.push(("edge-duplicate-recipient".into(), encode(&dup)));
        let mut no_header = pb::Envelope::from(e);
        no_header.header = None;
        out.push(("edge-no-header".into(), encode(&no_header)));
        let mut wrong_body = pb::Envelope::from(e);
        wrong_body.body.push(0);
        out.push(("edge-body-mismatch".into(), encode(&wrong_body)));
    }
    out.push(("edge-empty".into(), Vec::new()));
    out
}

fn header_seeds() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = samples::envelopes()
        .iter()
        .map(|(n, e)| {
            (
                format!("seed-{n}"),
                encode(&pb::EnvelopeHeader::from(e.header())),
            )
        })
        .collect();
    if let Some((_, e)) = samples::envelopes().first() {
        let mut h = pb::EnvelopeHeader::from(e.header());
        h.kind = 9;
        out.push(("edge-unknown-kind".into(), encode(&h)));
        h.kind = 2;
        out.push(("edge-message-with-slot-set-hash".into(), encode(&h)));
        h.sequence = 0;
        h.slot_set_hash.clear();
        out.push(("edge-sequence-zero".into(), encode(&h)));
    }
    out
}

fn summary_seeds() -> Vec<(String, Vec<u8>)> {
    samples::envelopes()
        .iter()
        .map(|(n, e)| {
            (
                format!("seed-{n}"),
                encode(&pb::EnvelopeSummary::from(&e.summary())),
            )
        })
        .collect()
}

fn block_seeds() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = samples::blocks(2)
        .iter()
        .map(|b| {
            (
                format!("seed-slot-{}", b.recipient.0),
                encode(&pb::RecipientBlock::from(b)),
            )
        })
        .collect();
    out.push((
        "edge-oversized".into(),
        encode(&pb::RecipientBlock {
            recipient_slot: u32::MAX,
            ciphertext: vec![0xab; grompi_proto::limits::MAX_BLOCK_BYTES + 1],
        }),
    ));
    out
}

fn slot_set_seeds() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = [1u8, 3, 8]
        .iter()
        .filter_map(|&n| {
            let s = samples::slot_set(n)?;
            Some((format!("seed-{n}-slots"), encode(&pb::SlotSet::from(&s))))
        })
        .collect();
    if let Some(s) = samples::slot_set(2) {
        let mut dup = pb::SlotSet::from(&s);
        dup.slots.extend(dup.slots.clone());
        out.push(("edge-duplicate-key".into(), encode(&dup)));
        let mut role = pb::SlotSet::from(&s);
        if let Some(e) = role.slots.first_mut() {
            e.role = 0;
        }
        out.push(("edge-unknown-role".into(), encode(&role)));
    }
    out.push(("edge-empty".into(), Vec::new()));
    out
}

fn attestation_seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    if let Some(a) = samples::attestation(4, false) {
        out.push(("seed-index-4".into(), encode(&pb::Attestation::from(&a))));
    }
    if let Some(a) = samples::attestation(0, true) {
        out.push((
            "seed-update-next-tags".into(),
            encode(&pb::Attestation::from(&a)),
        ));
        let mut short = pb::Attestation::from(&a);
        if let Some(t) = short.tags.first_mut() {
            t.pop();
        }
        out.push(("edge-short-tag".into(), encode(&short)));
    }
    out
}

fn head_proof_seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    if let Some(p) = samples::head_proof() {
        let wire = pb::HeadProof::from(&p);
        out.push(("seed-proof".into(), encode(&wire)));
        let mut no_nonce = wire;
        no_nonce.nonce.clear();
        out.push(("edge-no-nonce".into(), encode(&no_nonce)));
    }
    out
}
