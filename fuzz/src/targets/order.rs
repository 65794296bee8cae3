//! Targets for what an order server parses: Attest items from the router,
//! its own stored records (a damaged or tampered database must be refused,
//! never crash the server) and kept evidence.

use super::samples;
use crate::target::{Outcome, Target, Violation, ensure, rejected};
use grompi_order_server::evidence::{self, EvidenceEntry};
use grompi_order_server::mem_store::MemStore;
use grompi_order_server::request::AttestRequest;
use grompi_order_server::state::{
    ConversationState, IndexRecord, decode_slot_set, encode_slot_set,
};
use grompi_order_server::store::StoreWrite;
use grompi_proto::{EnvelopeHash, EnvelopeKind, Epoch, Head, Index, Tag, pb};
use prost::Message;

/// The targets of this module.
pub fn targets() -> Vec<Target> {
    vec![
        Target {
            name: "attest_item",
            reaches: "grompi_order_server::request::AttestRequest::try_from(pb::AttestItem), and EvidenceEntry's Display of the raw item",
            run: attest_item,
            seeds: attest_item_seeds,
            dictionary: &[],
            protobuf: true,
        },
        Target {
            name: "order_conversation_state",
            reaches: "grompi_order_server::state::ConversationState::decode (stored record)",
            run: order_conversation_state,
            seeds: conversation_state_seeds,
            dictionary: &[&[1]],
            protobuf: false,
        },
        Target {
            name: "order_index_record",
            reaches: "grompi_order_server::state::IndexRecord::decode (stored record)",
            run: order_index_record,
            seeds: index_record_seeds,
            dictionary: &[&[1]],
            protobuf: false,
        },
        Target {
            name: "order_slot_set",
            reaches: "grompi_order_server::state::decode_slot_set (stored record)",
            run: order_slot_set,
            seeds: slot_set_seeds,
            dictionary: &[&[1], &[2]],
            protobuf: false,
        },
        Target {
            name: "order_evidence",
            reaches: "grompi_order_server::evidence::list over a store holding the bytes as kept evidence (prost decode of AttestItem, then Display)",
            run: order_evidence,
            seeds: attest_item_seeds,
            dictionary: &[],
            protobuf: true,
        },
    ]
}

fn violation(what: impl std::fmt::Display) -> Violation {
    Violation(what.to_string())
}

fn attest_item(data: &[u8]) -> Outcome {
    let item = match pb::AttestItem::decode(data) {
        Ok(i) => i,
        Err(e) => return rejected(&e),
    };
    // What an operator sees for kept evidence: must never fail on any item.
    let shown = EvidenceEntry {
        number: 0,
        item: item.clone(),
    }
    .to_string();
    ensure(shown.starts_with("#0 "), "evidence display is malformed")?;
    let r = match AttestRequest::try_from(item) {
        Ok(r) => r,
        Err(e) => return rejected(&e),
    };
    let again = AttestRequest::try_from(pb::AttestItem::from(&r))
        .map_err(|e| violation(format!("re-encoded item does not parse: {e}")))?;
    ensure(again == r, "attest item does not round-trip")?;
    let _ = r.envelope.hash();
    Ok(format!(
        "ok:{:?}:next_slots={}",
        r.envelope.header.kind(),
        r.next_slots.is_some()
    ))
}

fn attest_item_seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, e) in samples::envelopes() {
        let r = AttestRequest {
            envelope: e.summary(),
            submission_tag: Tag::from_bytes([0x5a; 32]),
            index: Index(3),
            previous_head: Head::genesis(&samples::conversation()),
            next_slots: (name == "update").then(|| samples::slot_set(4)).flatten(),
        };
        out.push((
            format!("seed-{name}"),
            pb::AttestItem::from(&r).encode_to_vec(),
        ));
    }
    out.push((
        "edge-index-only".into(),
        pb::AttestItem {
            index: 4,
            ..Default::default()
        }
        .encode_to_vec(),
    ));
    out
}

fn order_conversation_state(data: &[u8]) -> Outcome {
    match ConversationState::decode(data) {
        Ok(s) => {
            // The current layout (2) is canonical; the first layout still
            // reads, and what it reads re-encodes to the same state.
            let again = s.encode();
            ensure(
                data.first() != Some(&2) || again == data,
                "stored conversation state is not canonical",
            )?;
            ensure(
                ConversationState::decode(&again).as_ref() == Ok(&s),
                "a conversation state does not survive re-encoding",
            )?;
            Ok(format!("ok:layout-{}", data.first().copied().unwrap_or(0)))
        }
        Err(e) => rejected(&e),
    }
}

fn conversation_state_seeds() -> Vec<(String, Vec<u8>)> {
    let Some(set) = samples::slot_set(3) else {
        return Vec::new();
    };
    let opened = ConversationState::opened(&samples::conversation(), &set);
    let later = ConversationState {
        epoch: Epoch(2),
        next_index: Index(41),
        head: Head::from_bytes([0x33; 32]),
        ..opened
    };
    let enc = later.encode();
    vec![
        ("seed-opened".into(), opened.encode()),
        ("seed-later".into(), enc.clone()),
        (
            "edge-version-2".into(),
            [&[2u8][..], enc.get(1..).unwrap_or_default()].concat(),
        ),
        ("edge-empty".into(), Vec::new()),
    ]
}

fn order_index_record(data: &[u8]) -> Outcome {
    match IndexRecord::decode(data) {
        Ok(r) => {
            let again = r.encode();
            ensure(
                data.first() != Some(&2) || again == data,
                "stored index record is not canonical",
            )?;
            ensure(
                IndexRecord::decode(&again).as_ref() == Ok(&r),
                "an index record does not survive re-encoding",
            )?;
            Ok(format!("ok:{:?}", r.kind))
        }
        Err(e) => rejected(&e),
    }
}

fn index_record_seeds() -> Vec<(String, Vec<u8>)> {
    let r = IndexRecord {
        epoch: Epoch(1),
        kind: EnvelopeKind::Update,
        envelope: EnvelopeHash::from_bytes([0x70; 32]),
        head: Head::from_bytes([0x33; 32]),
        key_period: None,
        log_index: None,
    };
    let m = IndexRecord {
        kind: EnvelopeKind::Message,
        ..r
    };
    let mut bad_kind = m.encode();
    if let Some(k) = bad_kind.get_mut(9) {
        *k = 0;
    }
    vec![
        ("seed-update".into(), r.encode()),
        ("seed-message".into(), m.encode()),
        ("edge-unknown-kind".into(), bad_kind),
    ]
}

fn order_slot_set(data: &[u8]) -> Outcome {
    match decode_slot_set(data) {
        Ok(s) => {
            ensure(
                encode_slot_set(&s) == data,
                "stored slot set is not canonical",
            )?;
            Ok("ok".to_owned())
        }
        Err(e) => rejected(&e),
    }
}

fn slot_set_seeds() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = [1u8, 3]
        .iter()
        .filter_map(|&n| {
            Some((
                format!("seed-{n}-slots"),
                encode_slot_set(&samples::slot_set(n)?),
            ))
        })
        .collect();
    out.push(("edge-version-only".into(), vec![1]));
    out
}

fn order_evidence(data: &[u8]) -> Outcome {
    let mut store = MemStore::new();
    let mut txn = store.begin();
    txn.put_evidence(0, data)
        .and_then(|()| txn.set_evidence_total(2))
        .map_err(|e| violation(format!("memory store refused a write: {e}")))?;
    txn.commit();
    match evidence::list(&store, 10) {
        Ok((total, entries)) => {
            ensure(total == 2 && entries.len() == 1, "evidence count is wrong")?;
            for e in &entries {
                let _ = e.to_string();
            }
            Ok("ok".to_owned())
        }
        Err(e) => rejected(&e),
    }
}
