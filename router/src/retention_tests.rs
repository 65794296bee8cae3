//! The retention setting (`limits.keep_envelopes`) through the core and the
//! production driver, against the real order server cores: what is removed,
//! what is never removed, restarts and crashes over a pruned store, and
//! Fetch and FetchHistory answers below the first index still stored.

use super::*;
use crate::fetch::{build_history_page, build_page};
use crate::record::Table;
use crate::store::KvRead;
use std::collections::BTreeMap;

const ID: [u8; 32] = [0x5e; 32];

/// A world of `n` servers (quorum `quorum`) keeping `keep` indices, with a
/// conversation of three members set up (index 0).
fn world(
    n: usize,
    quorum: usize,
    keep: u64,
) -> (World, Vec<Member>, pb::CreateConversationResponse) {
    let mut w = World::new(n, quorum, 77).with_limits(|l| l.keep_envelopes = keep);
    let mut members = vec![w.register(1, 4), w.register(2, 4), w.register(3, 4)];
    let created = setup(&mut w, &mut members, ConversationId::from_bytes(ID));
    (w, members, created)
}

/// Submits `count` messages from member 1 and lets the servers answer.
fn send(
    w: &mut World,
    members: &mut [Member],
    created: &pb::CreateConversationResponse,
    count: usize,
) {
    let servers = w.config.servers.clone();
    let id = ConversationId::from_bytes(ID);
    for k in 0..count {
        let body = format!("message {k}");
        let req = message(members, created, id, &servers, 1, true, body.as_bytes());
        submit(w, &members[1], req);
        w.settle();
    }
}

/// The indices whose envelope the store holds, and per index the servers
/// whose attestation row it holds.
fn stored_rows(w: &World) -> (Vec<u64>, BTreeMap<u64, Vec<u32>>) {
    let id = ConversationId::from_bytes(ID);
    let envs = w
        .store
        .scan(
            Table::Envelopes,
            &crate::record::envelope_key(&id, Index(0)),
            &crate::record::envelope_key(&id, Index(u64::MAX)),
        )
        .unwrap();
    let indices = envs
        .iter()
        .map(|(k, _)| u64::from_be_bytes(k[32..40].try_into().unwrap()))
        .collect();
    let mut atts: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
    for (k, _) in w
        .store
        .scan(
            Table::Attestations,
            &crate::record::envelope_key(&id, Index(0)),
            &crate::record::envelope_key(&id, Index(u64::MAX)),
        )
        .unwrap()
    {
        let i = u64::from_be_bytes(k[32..40].try_into().unwrap());
        let s = u32::from_be_bytes(k[40..44].try_into().unwrap());
        atts.entry(i).or_default().push(s);
    }
    (indices, atts)
}

fn conv(w: &World) -> &Conversation {
    w.core()
        .conversation(&ConversationId::from_bytes(ID))
        .expect("the conversation")
}

/// Checks that the store holds exactly the indices `first..delivered`,
/// each with every server's attestation, and that the core says `first`.
fn holds_exactly(w: &World, first: u64, servers: u32) {
    let delivered = conv(w).delivered.0;
    let (indices, atts) = stored_rows(w);
    assert_eq!(
        indices,
        (first..delivered).collect::<Vec<_>>(),
        "the store holds other indices than first..delivered"
    );
    assert_eq!(
        atts.keys().copied().collect::<Vec<_>>(),
        indices,
        "attestation rows of removed indices are left"
    );
    for (i, s) in &atts {
        assert_eq!(
            s,
            &(0..servers).collect::<Vec<_>>(),
            "index {i}: attestation rows"
        );
    }
    assert_eq!(conv(w).first_stored(), Index(first));
    // Where each member's envelope was admitted goes with the envelope.
    let mut admitted: Vec<u64> = w
        .store
        .scan(Table::SlotSequences, &[], &[])
        .unwrap()
        .into_iter()
        .filter(|(k, _)| k.starts_with(&ID))
        .map(|(_, v)| crate::record::decode_admitted(&v).unwrap().index.0)
        .collect();
    admitted.sort_unstable();
    assert_eq!(
        admitted, indices,
        "slot sequence rows of other indices than those stored"
    );
}

fn fetch_plan(w: &mut World, m: &Member, from: u64) -> FetchPlan {
    let t = w.authed(
        m,
        Call::Fetch {
            conversation: ConversationId::from_bytes(ID),
            from: Index(from),
            limit: 1000,
        },
    );
    match w.reply(t).cloned() {
        Some(Ok(Response::Fetch(plan))) => plan,
        other => panic!("no fetch plan: {other:?}"),
    }
}

fn history_plan(w: &mut World, m: &Member, from: u64) -> HistoryPlan {
    let t = w.authed(
        m,
        Call::FetchHistory {
            conversation: ConversationId::from_bytes(ID),
            from: Index(from),
            limit: 1000,
        },
    );
    match w.reply(t).cloned() {
        Some(Ok(Response::History(plan))) => plan,
        other => panic!("no history plan: {other:?}"),
    }
}

#[test]
fn retention_keeps_exactly_the_last_n_delivered_indices() {
    let (mut w, mut members, created) = world(3, 3, 5);
    send(&mut w, &mut members, &created, 20);
    assert_eq!(conv(&w).delivered, Index(21));
    // 21 delivered and attested by all three servers: 16..21 stay.
    holds_exactly(&w, 16, 3);
    assert_eq!(w.core().pending_count(), 0, "memory holds no envelope");
    send(&mut w, &mut members, &created, 1);
    holds_exactly(&w, 17, 3);
    for s in &w.servers {
        assert!(s.violations.is_empty(), "{:?}", s.violations);
    }
}

#[test]
fn retention_never_removes_what_the_slowest_server_has_not_attested() {
    let (mut w, mut members, created) = world(3, 2, 5);
    send(&mut w, &mut members, &created, 20);
    holds_exactly(&w, 16, 3);
    // Server 2 stops answering: delivery goes on with the other two.
    w.down[2] = true;
    send(&mut w, &mut members, &created, 10);
    let c = conv(&w);
    assert_eq!(c.delivered, Index(31));
    assert_eq!(c.progress[2], Index(21), "the slow server attested 0..21");
    // delivered - 5 = 26, but server 2 still needs 21..31: nothing at or
    // above 21 goes, and the memory keeps what it needs for it.
    assert_eq!(c.first_stored(), Index(21));
    let (indices, _) = stored_rows(&w);
    assert_eq!(indices, (21..31).collect::<Vec<_>>());
    assert_eq!(w.core().pending_count(), 10);
    // Once it is back and has attested, the removal catches up.
    w.down[2] = false;
    w.now += 10_000;
    w.settle();
    assert_eq!(conv(&w).progress[2], Index(31));
    holds_exactly(&w, 26, 3);
    assert_eq!(w.core().pending_count(), 0);
}

#[test]
fn a_pruned_store_restarts_and_a_crash_keeps_rows_and_first_index_consistent() {
    let (mut w, mut members, created) = world(3, 3, 4);
    send(&mut w, &mut members, &created, 12);
    holds_exactly(&w, 9, 3);
    w.restart();
    holds_exactly(&w, 9, 3);
    assert_eq!(conv(&w).next(), Index(13));
    assert_eq!(w.core().pending_count(), 0);
    // The conversation goes on after the restart, its head unbroken.
    send(&mut w, &mut members, &created, 3);
    holds_exactly(&w, 12, 3);
    let (_, last, _) = w
        .store
        .read(&ConversationId::from_bytes(ID), Index(15), Index(16))
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(last.head, conv(&w).head());
    // A crash may lose the removals committed with answers (deferred):
    // whatever it keeps, rows and the first stored index agree.
    let servers = w.config.servers.clone();
    let id = ConversationId::from_bytes(ID);
    for _ in 0..3 {
        let req = message(&mut members, &created, id, &servers, 1, true, b"x");
        submit(&mut w, &members[1], req);
        for _ in 0..6 {
            w.run_job(0, false);
        }
    }
    w.crash();
    w.settle();
    let first = conv(&w).first_stored().0;
    holds_exactly(&w, first, 3);
    assert_eq!(first, conv(&w).delivered.0 - 4);
}

#[test]
fn fetch_and_history_start_at_the_first_index_still_stored() {
    let (mut w, mut members, created) = world(3, 3, 6);
    send(&mut w, &mut members, &created, 14);
    holds_exactly(&w, 9, 3);
    let reader = w.store.reader();
    let id = ConversationId::from_bytes(ID);
    // Fetch from 0 skips to 9; next_index says where the range ended.
    let plan = fetch_plan(&mut w, &members[2], 0);
    assert_eq!((plan.from, plan.to), (Index(9), Index(15)));
    let page = build_page(reader.as_ref(), &plan, 1 << 20).unwrap();
    assert_eq!(
        page.deliveries.iter().map(|d| d.index).collect::<Vec<_>>(),
        (9..15).collect::<Vec<_>>()
    );
    assert_eq!(page.next_index, 15);
    for d in &page.deliveries {
        check_delivery(&w, &members[2], d, slot_of(&created, &members[2]));
    }
    // Fetch above the first index is unchanged.
    let plan = fetch_plan(&mut w, &members[2], 12);
    assert_eq!((plan.from, plan.to), (Index(12), Index(15)));
    // FetchHistory from 0 answers first_stored and starts there.
    let plan = history_plan(&mut w, &members[2], 0);
    assert_eq!((plan.from, plan.first_stored), (Index(9), Index(9)));
    let page = build_history_page(reader.as_ref(), &plan, 1 << 20).unwrap();
    assert_eq!(page.first_stored, 9);
    assert_eq!(page.stored, 15);
    assert_eq!(page.next_index, 15);
    assert_eq!(
        page.envelopes.iter().map(|e| e.index).collect::<Vec<_>>(),
        (9..15).collect::<Vec<_>>()
    );
    // The head before the first kept index, then the chain over the page,
    // reaches the head the router is at: the page is the attested suffix.
    let rows = w.store.read(&id, Index(9), Index(15)).unwrap();
    let mut head = Head::parse("h", &page.envelopes[0].previous_head).unwrap();
    for ((i, stored, _), e) in rows.iter().zip(&page.envelopes) {
        assert_eq!(Head::parse("h", &e.previous_head).unwrap(), head);
        assert_eq!(e.body, stored.envelope.body());
        head = head.next(
            &id,
            stored.envelope.header().epoch(),
            *i,
            &stored.envelope.hash(),
        );
    }
    assert_eq!(head, conv(&w).head());
    // A page asked from above the first index says the first index too.
    let plan = history_plan(&mut w, &members[2], 11);
    let page = build_history_page(reader.as_ref(), &plan, 1 << 20).unwrap();
    assert_eq!(
        (page.first_stored, page.envelopes.first().map(|e| e.index)),
        (9, Some(11))
    );
}

#[test]
fn removals_made_with_answers_do_not_make_their_commit_wait_for_the_disk() {
    let (mut w, mut members, created) = world(3, 3, 16);
    send(&mut w, &mut members, &created, 16);
    let servers = w.config.servers.clone();
    let id = ConversationId::from_bytes(ID);
    let mut deferred_removals = 0;
    for k in 0..4 {
        let req = message(&mut members, &created, id, &servers, 1, true, &[k]);
        submit(&mut w, &members[1], req);
        for _ in 0..50 {
            if w.jobs.is_empty() {
                break;
            }
            w.run_job_uncommitted(0);
            let removes = w.uncommitted().records.iter().any(Record::is_retention);
            if removes {
                assert_eq!(
                    w.uncommitted().durability(),
                    Durability::Deferred,
                    "a removal with answers forced a sync"
                );
                deferred_removals += 1;
            }
            w.flush();
        }
    }
    assert_eq!(deferred_removals, 4, "one removal per delivered index");
    holds_exactly(&w, 21 - 16, 3);
}

#[test]
fn keep_zero_keeps_every_envelope() {
    let (mut w, mut members, created) = world(3, 3, 0);
    send(&mut w, &mut members, &created, 30);
    // Past the periodic pass too.
    w.now += 120_000;
    w.flush();
    w.settle();
    holds_exactly(&w, 0, 3);
    let plan = history_plan(&mut w, &members[2], 0);
    let page = build_history_page(w.store.reader().as_ref(), &plan, 1 << 20).unwrap();
    assert_eq!(page.first_stored, 0);
    assert_eq!(page.envelopes.len(), 31);
    assert_eq!(page.envelopes[0].index, 0);
}

#[test]
fn lowering_the_setting_removes_the_excess_in_bounded_passes() {
    let (mut w, mut members, created) = world(2, 2, 0);
    send(&mut w, &mut members, &created, 40);
    holds_exactly(&w, 0, 2);
    // Restarted with a retention of 16: the periodic pass removes 0..25.
    w = w.with_limits(|l| l.keep_envelopes = 16);
    holds_exactly(&w, 0, 2);
    w.now += 120_000;
    w.flush();
    w.settle();
    holds_exactly(&w, 25, 2);
    // Removing records goes with the commit that moves the first index.
    let mut conv = Conversation::from_record(
        crate::record::ConversationRecord {
            id: ConversationId::from_bytes(ID),
            creator: members[0].account,
            epochs: Vec::new(),
            prepared: Vec::new(),
            opened: vec![true; 2],
        },
        2,
    );
    conv.delivered = Index(5000);
    conv.progress = vec![Index(5000), Index(4000)];
    let mut out = Vec::new();
    assert_eq!(conv.prune(100, 2, PRUNE_BATCH, &mut out), PRUNE_BATCH);
    assert_eq!(conv.first_stored(), Index(PRUNE_BATCH));
    assert_eq!(out.len() as u64, 3 * PRUNE_BATCH + 1);
    assert!(out.iter().all(Record::is_retention));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Whatever the servers' progress, the deliveries and the setting, the
    /// removal never reaches an index some server has not attested, nor
    /// one of the last `keep` delivered, and removes everything else in
    /// order, once.
    #[test]
    fn pruning_respects_progress_delivery_and_the_last_n(
        keep in 0u64..50,
        steps in proptest::collection::vec(
            (0u64..40, proptest::collection::vec(0u64..40, 3)), 1..12),
    ) {
        let mut conv = Conversation::from_record(
            crate::record::ConversationRecord {
                id: ConversationId::from_bytes(ID),
                creator: AccountId::from_bytes([1; 32]),
                epochs: Vec::new(),
                prepared: Vec::new(),
                opened: vec![true; 3],
            },
            3,
        );
        let mut removed = Vec::new();
        for (deliver, attest) in steps {
            // Progress only grows; delivery is at most the quorum's (2 of 3).
            for (p, a) in conv.progress.iter_mut().zip(&attest) {
                *p = Index(p.0 + a);
            }
            conv.delivered = Index((conv.delivered.0 + deliver).min(conv.quorate(2).0));
            let mut out = Vec::new();
            let before = conv.first_stored();
            conv.prune(keep, 3, PRUNE_BATCH, &mut out);
            let after = conv.first_stored();
            prop_assert!(after >= before);
            let slowest = conv.progress.iter().min().copied().unwrap_or(Index(0));
            prop_assert!(after <= slowest, "removed what a server has not attested");
            if keep == 0 {
                prop_assert_eq!(after, Index(0));
                prop_assert!(out.is_empty());
            } else {
                prop_assert!(after.0 <= conv.delivered.0.saturating_sub(keep));
                prop_assert_eq!(
                    after.0,
                    conv.delivered.0.saturating_sub(keep).min(slowest.0)
                );
            }
            for r in &out {
                match r {
                    Record::EnvelopeRemoved { index, .. } => removed.push(index.0),
                    Record::AttestationRemoved { index, .. } => {
                        prop_assert!(*index >= before && *index < after)
                    }
                    Record::FirstStored { first, .. } => prop_assert_eq!(*first, after),
                    other => prop_assert!(false, "unexpected record {:?}", other),
                }
            }
        }
        prop_assert_eq!(removed.clone(), (0..conv.first_stored().0).collect::<Vec<_>>());
    }
}
