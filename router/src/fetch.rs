//! Answering Fetch within bounds: a page holds at most `max_fetch_bytes`
//! of deliveries (at least one index, so a client always makes progress),
//! is read from storage a few indices at a time, and the bytes reserved by
//! the pages being built are bounded per account
//! (`max_fetch_bytes_per_account`) and in total
//! (`max_fetch_bytes_in_flight`). A Fetch over either bound is refused at
//! once with a typed error rather than queued.

use crate::core::{FetchPlan, HistoryPlan, stored_view};
use crate::error::RouterError;
use crate::limits::Limits;
use crate::store::{EnvelopeReader, StoreError};
use grompi_proto::{AccountId, Index, pb};
use prost::Message;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Indices read from storage at once while building a page: what a page
/// holds beyond its reservation while it is built is at most this many
/// envelopes.
pub const READ_CHUNK: u64 = 4;

#[derive(Debug, Default)]
struct BudgetState {
    by_account: HashMap<AccountId, usize>,
    total: usize,
}

/// The bytes reserved by Fetch pages being built, per account and in
/// total.
#[derive(Debug)]
pub struct FetchBudget {
    state: Mutex<BudgetState>,
    /// Bytes one page reserves (`max_fetch_bytes`).
    page: usize,
    per_account: usize,
    total: usize,
}

impl FetchBudget {
    /// A budget with the bounds of `limits`.
    pub fn new(limits: &Limits) -> Self {
        Self {
            state: Mutex::new(BudgetState::default()),
            page: limits.max_fetch_bytes.max(1),
            per_account: limits.max_fetch_bytes_per_account,
            total: limits.max_fetch_bytes_in_flight,
        }
    }

    fn lock(&self) -> MutexGuard<'_, BudgetState> {
        // Every critical section leaves the state consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most bytes one page may hold.
    pub fn page_bytes(&self) -> usize {
        self.page
    }

    /// Reserves one page's bytes for `account`, or says which bound
    /// refuses it. The reservation is released when dropped.
    pub fn reserve(self: &Arc<Self>, account: AccountId) -> Result<Reservation, RouterError> {
        let mut s = self.lock();
        let held = s.by_account.get(&account).copied().unwrap_or(0);
        if held.saturating_add(self.page) > self.per_account {
            return Err(RouterError::FetchesInFlight {
                held,
                need: self.page,
                max: self.per_account,
            });
        }
        if s.total.saturating_add(self.page) > self.total {
            return Err(RouterError::FetchBytesFull { max: self.total });
        }
        *s.by_account.entry(account).or_default() += self.page;
        s.total += self.page;
        metrics::gauge!("router_fetch_bytes_in_flight").set(s.total as f64);
        Ok(Reservation {
            budget: self.clone(),
            account,
        })
    }

    /// Bytes reserved now, in total.
    pub fn in_flight(&self) -> usize {
        self.lock().total
    }

    fn release(&self, account: &AccountId) {
        let mut s = self.lock();
        if let Some(held) = s.by_account.get_mut(account) {
            *held = held.saturating_sub(self.page);
            if *held == 0 {
                s.by_account.remove(account);
            }
        }
        s.total = s.total.saturating_sub(self.page);
        metrics::gauge!("router_fetch_bytes_in_flight").set(s.total as f64);
    }
}

/// One page's reservation; released on drop.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<FetchBudget>,
    account: AccountId,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.release(&self.account);
    }
}

/// Builds the page `plan` asks for, reading `READ_CHUNK` indices at a time
/// and stopping before the delivery that would take it over `max_bytes`
/// (but never before the first). `next_index` says where the next page
/// starts.
pub fn build_page(
    reader: &dyn EnvelopeReader,
    plan: &FetchPlan,
    max_bytes: usize,
) -> Result<pb::FetchResponse, StoreError> {
    let mut deliveries = Vec::new();
    let mut bytes = 0usize;
    let mut next = plan.from;
    'read: while next < plan.to {
        let until = Index(next.0.saturating_add(READ_CHUNK).min(plan.to.0));
        let rows = reader.read(&plan.conversation, next, until)?;
        for (i, stored, atts) in rows {
            let member = plan.member(&stored.envelope);
            if member.receives() {
                let d = stored_view(&plan.conversation, i, &stored, member, &atts);
                let size = d.encoded_len();
                if !deliveries.is_empty() && bytes.saturating_add(size) > max_bytes {
                    next = i;
                    break 'read;
                }
                bytes += size;
                deliveries.push(d);
            }
            next = Index(i.0.saturating_add(1)).max(next);
        }
        // Indices the store does not hold (never the case below
        // `delivered`) are skipped.
        next = next.max(until);
    }
    metrics::histogram!("router_fetch_page_bytes").record(bytes as f64);
    Ok(pb::FetchResponse {
        deliveries,
        next_index: next.0,
    })
}

/// Builds the history page `plan` asks for: each stored envelope with its
/// header, body, block digests, history block (never a member's block) and
/// the head before it, within `max_bytes` as [`build_page`] does, and
/// `first_stored`, the first index still stored.
///
/// The retention setting removes envelopes from the bottom of a
/// conversation only, and may do so while the page is read (after the plan
/// was made, or between two reads). A missing index in the range therefore
/// means that every index below it is gone too: the page starts again at
/// the first index found after it, drops what it had read before, and says
/// so in `first_stored`. A page thus always holds consecutive indices from
/// its first, and its first is `first_stored` when the caller asked from
/// below it, so a member starting from index 0 can start its verified
/// history there (`docs/PROTOCOL.md` section 4.6).
pub fn build_history_page(
    reader: &dyn EnvelopeReader,
    plan: &HistoryPlan,
    max_bytes: usize,
) -> Result<pb::FetchHistoryResponse, StoreError> {
    let mut envelopes: Vec<pb::HistoryEnvelope> = Vec::new();
    let mut bytes = 0usize;
    let mut first_stored = plan.first_stored;
    let mut next = plan.from;
    'read: while next < plan.to {
        let until = Index(next.0.saturating_add(READ_CHUNK).min(plan.to.0));
        let rows = reader.read(&plan.conversation, next, until)?;
        if rows.is_empty() {
            // Removed since the plan was made: the first stored index is
            // past this chunk.
            envelopes.clear();
            bytes = 0;
            first_stored = first_stored.max(until);
        }
        for (i, stored, attestations) in rows {
            if i != next {
                // `next` was removed since the plan was made, and with it
                // everything below: start again at `i`.
                envelopes.clear();
                bytes = 0;
                first_stored = first_stored.max(i);
            }
            let e = &stored.envelope;
            let item = pb::HistoryEnvelope {
                index: i.0,
                header: Some(e.header().into()),
                body: e.body().to_vec(),
                block_digests: e.blocks().iter().map(|b| b.digest().to_vec()).collect(),
                history_block: e.history_block().map(<[u8]>::to_vec).unwrap_or_default(),
                previous_head: stored.previous_head.to_vec(),
                log_positions: attestations
                    .iter()
                    .filter_map(|a| {
                        a.log_index.map(|log_index| pb::LogPosition {
                            server: a.server,
                            log_index,
                        })
                    })
                    .collect(),
            };
            let size = item.encoded_len();
            if !envelopes.is_empty() && bytes.saturating_add(size) > max_bytes {
                next = i;
                break 'read;
            }
            bytes += size;
            envelopes.push(item);
            next = Index(i.0.saturating_add(1));
        }
        next = next.max(until);
    }
    metrics::histogram!("router_history_page_bytes").record(bytes as f64);
    Ok(pb::FetchHistoryResponse {
        envelopes,
        next_index: next.0,
        stored: plan.stored.0,
        first_stored: first_stored.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Record, StoredEnvelope};
    use crate::store::{Durability, MemStore, Store};
    use grompi_proto::envelope::HeaderFields;
    use grompi_proto::{
        BodyHash, ConversationId, Envelope, EnvelopeHeader, EnvelopeKind, Epoch, Head,
        KeyCommitment, RecipientBlock, Sequence, SlotIndex,
    };
    use std::sync::Barrier;

    const KIB: usize = 1024;

    /// A store holding `count` envelopes of `body` bytes from slot 0 to
    /// slots 1..4 of conversation `id`.
    fn store(id: ConversationId, count: u64, body: usize) -> MemStore {
        let mut store = MemStore::new();
        let records: Vec<Record> = (0..count)
            .map(|i| {
                let body = vec![i as u8; body];
                let header = EnvelopeHeader::new(HeaderFields {
                    conversation: id,
                    epoch: Epoch(0),
                    kind: EnvelopeKind::Message,
                    sender: SlotIndex(0),
                    sequence: Sequence(i + 1),
                    last_seen: None,
                    body_hash: BodyHash::of(&body),
                    key_commitment: KeyCommitment::from_bytes([7; 32]),
                    slot_set_hash: None,
                })
                .unwrap();
                let blocks = (1..4)
                    .map(|s| RecipientBlock {
                        recipient: SlotIndex(s),
                        ciphertext: vec![s as u8; 64],
                    })
                    .collect();
                Record::Envelope {
                    conversation: id,
                    index: Index(i),
                    stored: Some(Box::new(StoredEnvelope {
                        envelope: Envelope::new(header, body, blocks).unwrap(),
                        submission_tags: Vec::new(),
                        previous_head: Head::genesis(&id),
                        head: Head::genesis(&id),
                        submitter: None,
                        next_slots: None,
                    })),
                }
            })
            .collect();
        store.commit(&records, Durability::Now).unwrap();
        store
    }

    fn plan(account: AccountId, id: ConversationId, from: u64, to: u64) -> FetchPlan {
        FetchPlan {
            account,
            conversation: id,
            from: Index(from),
            to: Index(to),
            slots_by_epoch: vec![Some(SlotIndex(1))],
        }
    }

    fn limits() -> Limits {
        Limits {
            max_fetch_bytes: 1024 * KIB,
            max_fetch_bytes_per_account: 2 * 1024 * KIB,
            max_fetch_bytes_in_flight: 6 * 1024 * KIB,
            ..Limits::default()
        }
    }

    #[test]
    fn a_page_stops_at_its_byte_bound_and_says_where_to_go_on() {
        let id = ConversationId::from_bytes([1; 32]);
        let s = store(id, 40, 200 * KIB);
        let reader = s.reader();
        let a = AccountId::from_bytes([2; 32]);
        let page = build_page(reader.as_ref(), &plan(a, id, 0, 40), 1024 * KIB).unwrap();
        // Five bodies of 200 KiB fit in 1 MiB with their headers, not six.
        assert_eq!(page.deliveries.len(), 5);
        assert_eq!(page.next_index, 5);
        assert!(page.encoded_len() <= 1024 * KIB + 64);
        let rest = build_page(reader.as_ref(), &plan(a, id, 5, 40), 1024 * KIB).unwrap();
        assert_eq!(rest.deliveries.first().map(|d| d.index), Some(5));
        // One envelope over the bound still makes a page, so a client
        // always gets on.
        let one = build_page(reader.as_ref(), &plan(a, id, 0, 40), 10).unwrap();
        assert_eq!((one.deliveries.len(), one.next_index), (1, 1));
        // A member without a slot gets nothing, but learns where to go on.
        let mut none = plan(a, id, 0, 40);
        none.slots_by_epoch = vec![None];
        let empty = build_page(reader.as_ref(), &none, 1024 * KIB).unwrap();
        assert_eq!((empty.deliveries.len(), empty.next_index), (0, 40));
    }

    #[test]
    fn concurrent_maximal_fetches_stay_under_the_bounds_and_others_are_served() {
        let id = ConversationId::from_bytes([1; 32]);
        let s = store(id, 64, 250 * KIB);
        let reader: Arc<dyn EnvelopeReader> = s.reader();
        let limits = limits();
        let budget = Arc::new(FetchBudget::new(&limits));
        let abuser = AccountId::from_bytes([3; 32]);
        let threads = 48;
        let barrier = Arc::new(Barrier::new(threads));
        let peak = Arc::new(Mutex::new(0usize));
        let outcomes: Vec<Result<usize, RouterError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|k| {
                    let (reader, budget, barrier, peak) = (
                        reader.clone(),
                        budget.clone(),
                        barrier.clone(),
                        peak.clone(),
                    );
                    // A third of the callers are the abuser, the rest other
                    // accounts, one each.
                    let account = if k % 3 == 0 {
                        abuser
                    } else {
                        AccountId::from_bytes([10 + k as u8; 32])
                    };
                    scope.spawn(move || {
                        barrier.wait();
                        let r = budget.reserve(account)?;
                        {
                            let mut p = peak.lock().unwrap();
                            *p = (*p).max(budget.in_flight());
                        }
                        let page = build_page(
                            reader.as_ref(),
                            &plan(account, id, 0, 64),
                            budget.page_bytes(),
                        )
                        .unwrap();
                        // Hold the page a moment, as a slow transport would.
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        drop(r);
                        Ok(page.encoded_len())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let peak = *peak.lock().unwrap();
        assert!(
            peak <= limits.max_fetch_bytes_in_flight,
            "{peak} bytes in flight, over the bound"
        );
        for o in &outcomes {
            match o {
                Ok(bytes) => assert!(*bytes <= limits.max_fetch_bytes + 64, "page of {bytes}"),
                Err(RouterError::FetchesInFlight { max, .. }) => {
                    assert_eq!(*max, limits.max_fetch_bytes_per_account)
                }
                Err(RouterError::FetchBytesFull { max }) => {
                    assert_eq!(*max, limits.max_fetch_bytes_in_flight)
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert!(outcomes.iter().any(Result::is_ok));
        assert_eq!(budget.in_flight(), 0, "every reservation was released");
        // The abuser holding its whole budget does not stop anyone else.
        let held: Vec<Reservation> = (0..2).map(|_| budget.reserve(abuser).unwrap()).collect();
        assert!(matches!(
            budget.reserve(abuser),
            Err(RouterError::FetchesInFlight { held: h, .. }) if h == 2 * 1024 * KIB
        ));
        let other = AccountId::from_bytes([99; 32]);
        let r = budget.reserve(other).unwrap();
        let page = build_page(
            reader.as_ref(),
            &plan(other, id, 0, 64),
            budget.page_bytes(),
        )
        .unwrap();
        assert_eq!(page.deliveries.len(), 4);
        drop((held, r));
        assert_eq!(budget.in_flight(), 0);
    }

    fn history_plan(id: ConversationId, from: u64, to: u64, first: u64) -> HistoryPlan {
        HistoryPlan {
            account: AccountId::from_bytes([2; 32]),
            conversation: id,
            from: Index(from),
            to: Index(to),
            stored: Index(to),
            first_stored: Index(first),
        }
    }

    /// Removes indices `0..first` as the retention setting does.
    fn remove_below(store: &mut MemStore, id: ConversationId, first: u64) {
        let records: Vec<Record> = (0..first)
            .map(|i| Record::EnvelopeRemoved {
                conversation: id,
                index: Index(i),
            })
            .chain([Record::FirstStored {
                conversation: id,
                first: Index(first),
            }])
            .collect();
        store.commit(&records, Durability::Deferred).unwrap();
    }

    /// A reader that, before its `at`-th read, has the retention setting
    /// remove `0..first`: a removal between two reads of one page.
    struct RemovingReader {
        store: Mutex<MemStore>,
        reads: Mutex<usize>,
        at: usize,
        id: ConversationId,
        first: u64,
    }

    impl EnvelopeReader for RemovingReader {
        fn read(
            &self,
            c: &ConversationId,
            from: Index,
            to: Index,
        ) -> Result<Vec<(Index, StoredEnvelope, Vec<grompi_proto::mac::Attestation>)>, StoreError>
        {
            let mut store = self.store.lock().unwrap();
            let mut reads = self.reads.lock().unwrap();
            *reads += 1;
            if *reads == self.at {
                remove_below(&mut store, self.id, self.first);
            }
            store.read(c, from, to)
        }

        fn admitted(
            &self,
            c: &ConversationId,
            epoch: grompi_proto::Epoch,
            slot: grompi_proto::SlotIndex,
            sequence: grompi_proto::Sequence,
        ) -> Result<Option<crate::record::Admitted>, StoreError> {
            self.store
                .lock()
                .unwrap()
                .admitted(c, epoch, slot, sequence)
        }
    }

    fn indices(page: &pb::FetchHistoryResponse) -> Vec<u64> {
        page.envelopes.iter().map(|e| e.index).collect()
    }

    #[test]
    fn a_history_page_starts_at_the_first_index_still_stored_even_when_removed_while_read() {
        let id = ConversationId::from_bytes([1; 32]);
        let mut s = store(id, 40, 100);
        // Removed before the plan: the plan starts at the first index.
        remove_below(&mut s, id, 10);
        let page = build_history_page(
            s.reader().as_ref(),
            &history_plan(id, 10, 30, 10),
            KIB * KIB,
        )
        .unwrap();
        assert_eq!(page.first_stored, 10);
        assert_eq!(indices(&page), (10..30).collect::<Vec<_>>());
        // Removed after the plan was made, before the first read.
        remove_below(&mut s, id, 13);
        let page = build_history_page(
            s.reader().as_ref(),
            &history_plan(id, 10, 30, 10),
            KIB * KIB,
        )
        .unwrap();
        assert_eq!(page.first_stored, 13);
        assert_eq!(indices(&page), (13..30).collect::<Vec<_>>());
        // Removed between two reads of the page: what was read before is
        // dropped, and the page starts again at the first index kept.
        for (at, first) in [(2, 22), (2, 18), (3, 27), (2, 16)] {
            let reader = RemovingReader {
                store: Mutex::new(store(id, 40, 100)),
                reads: Mutex::new(0),
                at,
                id,
                first,
            };
            let page = build_history_page(&reader, &history_plan(id, 0, 40, 0), KIB * KIB).unwrap();
            assert_eq!(
                page.first_stored, first,
                "removed up to {first} at read {at}"
            );
            assert_eq!(indices(&page), (first..40).collect::<Vec<_>>());
            assert_eq!(page.next_index, 40);
        }
        // Nothing removed: first_stored stays 0 and the page is whole.
        let page = build_history_page(
            store(id, 40, 100).reader().as_ref(),
            &history_plan(id, 0, 40, 0),
            KIB * KIB,
        )
        .unwrap();
        assert_eq!(page.first_stored, 0);
        assert_eq!(indices(&page), (0..40).collect::<Vec<_>>());
    }

    #[test]
    fn a_fetch_page_below_removed_indices_skips_them() {
        let id = ConversationId::from_bytes([1; 32]);
        let mut s = store(id, 40, 100);
        remove_below(&mut s, id, 25);
        let a = AccountId::from_bytes([2; 32]);
        let page = build_page(s.reader().as_ref(), &plan(a, id, 20, 40), KIB * KIB).unwrap();
        assert_eq!(
            page.deliveries.iter().map(|d| d.index).collect::<Vec<_>>(),
            (25..40).collect::<Vec<_>>()
        );
        assert_eq!(page.next_index, 40);
    }
}
