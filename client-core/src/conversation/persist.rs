//! A conversation's state as bytes, for the encrypted local store, so a
//! program can stop and resume. Sans-IO: this only encodes and decodes.
//!
//! What is saved: the phase, the accepted transcript, the membership, the
//! slot secrets of the epochs in use (exactly as sensitive as the MAC keys
//! derived from them), slot keys taken for a Setup or Update not yet
//! accepted, the outbox (own envelopes not yet accepted), blocks decrypted
//! early, sequence numbers, receipts and undecryptable indices, and the
//! highest head each order server proved (so a rolled-back server is caught
//! across restarts).
//!
//! What is not saved: deliveries buffered ahead of the next index and
//! queued alerts and events. A resumed conversation fetches again from its
//! next index; the application drains alerts and events before saving.
//!
//! ```text
//! state = version u8 (2) || conversation || account || phase u8
//!         || transcript || optional membership || keys || prepared
//!         || outbox || early blocks || next sequence u64
//!         || last sequences || processed || undecryptable || counters
//!         || proved heads (version 2 on)
//!         || sent RN1s || optional group state (version 3 on)
//!         || history policy u8 || optional history root (version 4 on)
//! group state = epoch u64 || period length u64 || epoch start u64
//!         || optional group keys || shares (period, server, share)
//!         || share points (index, epoch, period)
//! history root = index u64 || head || epoch u64 || generation u64 || key
//! ```
//!
//! Version 1 (without proved heads), 2 (without group keys) and 3
//! (without history) states are still read.

use super::{Conversation, ConversationConfig, Counters, Phase};
use crate::body::BlockPlaintext;
use crate::codec::{Canonical, DecodeError, Reader};
use crate::content::Visibility;
use crate::content::{self, Content};
use crate::group_key::{ChainKey, GroupKeys, KeyGeneration, Rn1};
use crate::head_proof::ProvedHead;
use crate::history::{HistoryKey, HistoryKeyId, HistoryRoot};
use crate::keyring::SlotMacKeys;
use crate::membership::Membership;
use crate::transcript::{Entry, Transcript};
use grompi_proto::key_share::{KeyPeriod, KeyShare};
use grompi_proto::limits::{MAX_BODY_BYTES, MAX_ORDER_SERVERS, MAX_SLOTS};
use grompi_proto::{
    AccountId, BlockDigest, ConversationId, CoreHash, EnvelopeHash, EnvelopeKind, Epoch, Head,
    Index, Sequence, SlotIndex, SlotSecret,
};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use zeroize::Zeroizing;

/// Version byte of the saved state.
pub const STATE_VERSION: u8 = 4;
/// Most items of any one list in a saved state.
const MAX_ITEMS: usize = 1 << 24;

fn invalid(field: &'static str, reason: &'static str) -> DecodeError {
    DecodeError::Invalid { field, reason }
}

fn phase_code(p: &Phase) -> u8 {
    match p {
        Phase::AwaitingSetup => 1,
        Phase::AwaitingJoin => 2,
        Phase::Active => 3,
        Phase::Removed => 4,
        Phase::Halted(_) => 5,
    }
}

fn opt_fixed(c: Canonical, v: Option<&[u8; 32]>) -> Canonical {
    c.opt_fixed(v)
}

fn read_opt_fixed(r: &mut Reader<'_>) -> Result<Option<[u8; 32]>, DecodeError> {
    match r.u8()? {
        0 => Ok(None),
        1 => r.fixed().map(Some),
        _ => Err(invalid("state", "optional marker must be 0 or 1")),
    }
}

impl Conversation {
    /// The state to save (secrets inside: store it encrypted).
    pub fn save_state(&self) -> Zeroizing<Vec<u8>> {
        let mut c = Canonical::new()
            .u8(STATE_VERSION)
            .fixed(self.id.as_bytes())
            .fixed(self.me.as_bytes())
            .u8(phase_code(&self.phase));
        // Transcript.
        let t = &self.transcript;
        c = c.u64(t.first().0);
        c = opt_fixed(c, t.anchor().as_ref().map(Head::as_bytes));
        c = c.count(t.entries().len());
        for e in t.entries() {
            c = c
                .u64(e.index.0)
                .u64(e.epoch.0)
                .fixed(e.envelope_hash.as_bytes())
                .fixed(e.head.as_bytes())
                .u32(e.attested_by);
        }
        // Membership.
        match &self.membership {
            None => c = c.u8(0),
            Some(m) => {
                c = content::slot_set(c.u8(1).u64(m.epoch().0), m.slots());
                let (roster, holders) = m.roster_and_holders();
                c = c.count(roster.len());
                for (a, r) in roster {
                    c = c.fixed(a.as_bytes()).u8(r.code());
                }
                c = c.count(holders.len());
                for (s, a) in holders {
                    c = c.u32(s.0).fixed(a.as_bytes());
                }
            }
        }
        c = c.count(self.keys.len());
        for (e, k) in &self.keys {
            c = c.u64(e.0).fixed(k.secret_bytes());
        }
        c = c.count(self.prepared.len());
        for (_, k) in &self.prepared {
            c = c.fixed(k.secret_bytes());
        }
        c = c.count(self.outbox.len());
        for (core, content) in &self.outbox {
            c = c
                .fixed(core.as_bytes())
                .u8(content.kind().code())
                .bytes(&content.encode());
        }
        c = c.count(self.early_blocks.len());
        for (digest, (sender, block)) in &self.early_blocks {
            c = c
                .fixed(digest.as_bytes())
                .fixed(sender.as_bytes())
                .bytes(&block.encode());
        }
        c = c.u64(self.next_sequence.0);
        c = c.count(self.last_sequences.len());
        for ((e, s), q) in &self.last_sequences {
            c = c.u64(e.0).u32(s.0).u64(q.0);
        }
        c = c.count(self.processed.len());
        for (a, i) in &self.processed {
            c = c.fixed(a.as_bytes()).u64(i.0);
        }
        c = c.count(self.undecryptable.len());
        for i in &self.undecryptable {
            c = c.u64(i.0);
        }
        let k = self.counters;
        c = c
            .u64(k.duplicates)
            .u64(k.dropped)
            .u64(k.ignored)
            .u64(k.queue_overflow);
        c = c.count(self.proved.len());
        for (server, p) in &self.proved {
            c = c
                .u32(*server)
                .u64(p.epoch.0)
                .u64(p.count)
                .fixed(p.head.as_bytes());
        }
        c = c.count(self.sent_rn1.len());
        for (core, rn1) in &self.sent_rn1 {
            c = c.fixed(core.as_bytes()).fixed(rn1.expose());
        }
        match &self.group {
            None => c = c.u8(0),
            Some(g) => {
                c = c
                    .u8(1)
                    .u64(g.epoch.0)
                    .u64(g.period_length)
                    .u64(g.epoch_start.0);
                c = match &g.keys {
                    None => c.u8(0),
                    Some(k) => k.encode_into(c.u8(1)),
                };
                let shares: Vec<_> = g
                    .shares
                    .iter()
                    .flat_map(|(p, by)| by.iter().map(move |(s, k)| (*p, *s, k)))
                    .collect();
                c = c.count(shares.len());
                for (p, s, k) in shares {
                    c = c.u64(p.0).u32(s).fixed(k.expose());
                }
                c = c.count(g.due.len());
                for (i, (e, p)) in &g.due {
                    c = c.u64(i.0).u64(e.0).u64(p.0);
                }
                c = c.count(g.parked.len());
                for (i, p) in &g.parked {
                    let header = grompi_proto::wire::encode::<grompi_proto::pb::EnvelopeHeader, _>(
                        &p.header,
                    );
                    c = p
                        .chain
                        .encode_into(c.u64(i.0).bytes(&header).bytes(&p.body));
                    c = opt_fixed(c, p.sender.as_ref().map(AccountId::as_bytes));
                }
            }
        }
        c = c.u8(self.history.code());
        c = match &self.history_root {
            None => c.u8(0),
            Some(root) => c
                .u8(1)
                .u64(root.through.0)
                .fixed(root.head.as_bytes())
                .u64(root.id.epoch.0)
                .u64(root.id.generation.0)
                .fixed(root.key.expose()),
        };
        Zeroizing::new(c.as_bytes().to_vec())
    }

    /// Restores a state saved with [`Conversation::save_state`], in a
    /// network with `config` (the slot MAC keys are derived again from the
    /// saved slot secrets).
    pub fn restore_state(bytes: &[u8], config: ConversationConfig) -> Result<Self, DecodeError> {
        let mut r = Reader::new("conversation state", bytes);
        let version = r.u8()?;
        if !(1..=STATE_VERSION).contains(&version) {
            return Err(invalid("state.version", "unknown state version"));
        }
        let id = ConversationId::from_bytes(r.fixed()?);
        let me = AccountId::from_bytes(r.fixed()?);
        let phase = match r.u8()? {
            1 => Phase::AwaitingSetup,
            2 => Phase::AwaitingJoin,
            3 => Phase::Active,
            4 => Phase::Removed,
            5 => Phase::Halted("halted before the state was saved"),
            _ => return Err(invalid("state.phase", "unknown phase")),
        };
        let first = Index(r.u64()?);
        let anchor = read_opt_fixed(&mut r)?.map(Head::from_bytes);
        let n = r.count("state.transcript", MAX_ITEMS)?;
        let mut entries = Vec::with_capacity(n.min(4096));
        for _ in 0..n {
            entries.push(Entry {
                index: Index(r.u64()?),
                epoch: Epoch(r.u64()?),
                envelope_hash: EnvelopeHash::from_bytes(r.fixed()?),
                head: Head::from_bytes(r.fixed()?),
                attested_by: r.u32()?,
            });
        }
        let transcript = Transcript::from_parts(id, first, anchor, entries)
            .ok_or(invalid("state.transcript", "entries do not chain"))?;
        let membership = match r.u8()? {
            0 => None,
            1 => {
                let epoch = Epoch(r.u64()?);
                let slots = content::read_slot_set(&mut r)?;
                let n = r.count("state.roster", MAX_SLOTS)?;
                let mut roster = BTreeMap::new();
                for _ in 0..n {
                    let a = AccountId::from_bytes(r.fixed()?);
                    roster.insert(a, content::read_role(&mut r)?);
                }
                let n = r.count("state.holders", MAX_SLOTS)?;
                let mut holders = BTreeMap::new();
                for _ in 0..n {
                    let s = SlotIndex(r.u32()?);
                    holders.insert(s, AccountId::from_bytes(r.fixed()?));
                }
                Some(
                    Membership::from_parts(epoch, slots, roster, holders)
                        .map_err(|e| invalid("state.membership", e))?,
                )
            }
            _ => return Err(invalid("state.membership", "optional marker")),
        };
        let derive = |secret: [u8; 32]| {
            SlotMacKeys::derive(&SlotSecret::from_bytes(secret), &config.servers)
                .map_err(|_| invalid("state.keys", "a server key is of low order"))
        };
        let n = r.count("state.keys", MAX_ITEMS)?;
        let mut keys = BTreeMap::new();
        for _ in 0..n {
            let e = Epoch(r.u64()?);
            keys.insert(e, derive(r.fixed()?)?);
        }
        let n = r.count("state.prepared", MAX_ITEMS)?;
        let mut prepared = Vec::new();
        for _ in 0..n {
            let k = derive(r.fixed()?)?;
            prepared.push((k.slot_key(), k));
        }
        let n = r.count("state.outbox", MAX_ITEMS)?;
        let mut outbox = HashMap::new();
        for _ in 0..n {
            let core = CoreHash::from_bytes(r.fixed()?);
            let kind = EnvelopeKind::from_code(i32::from(r.u8()?))
                .ok_or(invalid("state.outbox", "unknown kind"))?;
            let body = r.bytes("state.outbox", MAX_BODY_BYTES.saturating_mul(2))?;
            outbox.insert(core, Content::decode(kind, body)?);
        }
        let n = r.count("state.early_blocks", MAX_ITEMS)?;
        let mut early_blocks = HashMap::new();
        for _ in 0..n {
            let digest = BlockDigest::from_bytes(r.fixed()?);
            let sender = AccountId::from_bytes(r.fixed()?);
            let block = BlockPlaintext::decode(r.bytes("state.early_blocks", 1024)?)?;
            early_blocks.insert(digest, (sender, block));
        }
        let next_sequence = Sequence(r.u64()?);
        let n = r.count("state.last_sequences", MAX_ITEMS)?;
        let mut last_sequences = BTreeMap::new();
        for _ in 0..n {
            let e = Epoch(r.u64()?);
            let s = SlotIndex(r.u32()?);
            last_sequences.insert((e, s), Sequence(r.u64()?));
        }
        let n = r.count("state.processed", MAX_ITEMS)?;
        let mut processed = BTreeMap::new();
        for _ in 0..n {
            let a = AccountId::from_bytes(r.fixed()?);
            processed.insert(a, Index(r.u64()?));
        }
        let n = r.count("state.undecryptable", MAX_ITEMS)?;
        let mut undecryptable = BTreeSet::new();
        for _ in 0..n {
            undecryptable.insert(Index(r.u64()?));
        }
        let counters = Counters {
            duplicates: r.u64()?,
            dropped: r.u64()?,
            ignored: r.u64()?,
            queue_overflow: r.u64()?,
        };
        let mut proved = BTreeMap::new();
        if version >= 2 {
            let n = r.count("state.proved", MAX_ORDER_SERVERS)?;
            for _ in 0..n {
                let server = r.u32()?;
                let p = ProvedHead {
                    epoch: Epoch(r.u64()?),
                    count: r.u64()?,
                    head: Head::from_bytes(r.fixed()?),
                };
                proved.insert(server, p);
            }
        }
        let mut sent_rn1 = HashMap::new();
        let mut group = None;
        if version >= 3 {
            let n = r.count("state.sent_rn1", MAX_ITEMS)?;
            for _ in 0..n {
                let core = CoreHash::from_bytes(r.fixed()?);
                sent_rn1.insert(core, Rn1::from_bytes(r.fixed()?));
            }
            group = match r.u8()? {
                0 => None,
                1 => {
                    let epoch = Epoch(r.u64()?);
                    let period_length = r.u64()?;
                    let epoch_start = Index(r.u64()?);
                    let keys = match r.u8()? {
                        0 => None,
                        1 => Some(GroupKeys::decode(&mut r)?),
                        _ => return Err(invalid("state.group.keys", "optional marker")),
                    };
                    let n = r.count("state.group.shares", MAX_ITEMS)?;
                    let mut shares: BTreeMap<KeyPeriod, BTreeMap<u32, KeyShare>> = BTreeMap::new();
                    for _ in 0..n {
                        let p = KeyPeriod(r.u64()?);
                        let s = r.u32()?;
                        shares
                            .entry(p)
                            .or_default()
                            .insert(s, KeyShare::from_bytes(r.fixed()?));
                    }
                    let n = r.count("state.group.due", MAX_ITEMS)?;
                    let mut due = BTreeMap::new();
                    for _ in 0..n {
                        let i = Index(r.u64()?);
                        let e = Epoch(r.u64()?);
                        due.insert(i, (e, KeyPeriod(r.u64()?)));
                    }
                    let n = r.count("state.group.parked", super::group::MAX_PARKED)?;
                    let mut parked = BTreeMap::new();
                    for _ in 0..n {
                        let i = Index(r.u64()?);
                        let header = grompi_proto::wire::decode::<
                            grompi_proto::pb::EnvelopeHeader,
                            grompi_proto::EnvelopeHeader,
                        >(r.bytes("state.group.parked", 4096)?)
                        .map_err(|_| {
                            invalid("state.group.parked", "a header that does not parse")
                        })?;
                        let body = r
                            .bytes("state.group.parked", MAX_BODY_BYTES.saturating_mul(2))?
                            .to_vec();
                        let chain = ChainKey::decode(&mut r)?;
                        let sender = read_opt_fixed(&mut r)?.map(AccountId::from_bytes);
                        parked.insert(
                            i,
                            super::group::Parked {
                                header,
                                body,
                                chain,
                                sender,
                            },
                        );
                    }
                    Some(super::group::GroupState {
                        epoch,
                        period_length,
                        epoch_start,
                        keys,
                        shares,
                        due,
                        parked,
                    })
                }
                _ => return Err(invalid("state.group", "optional marker")),
            };
        }
        let mut history = Visibility::Joined;
        let mut history_root = None;
        if version >= 4 {
            history = Visibility::from_code(r.u8()?)
                .ok_or(invalid("state.history", "unknown history policy code"))?;
            history_root = match r.u8()? {
                0 => None,
                1 => Some(HistoryRoot {
                    through: Index(r.u64()?),
                    head: Head::from_bytes(r.fixed()?),
                    id: HistoryKeyId {
                        epoch: Epoch(r.u64()?),
                        generation: KeyGeneration(r.u64()?),
                    },
                    key: HistoryKey::from_bytes(r.fixed()?),
                }),
                _ => return Err(invalid("state.history_root", "optional marker")),
            };
        }
        r.finish()?;
        Ok(Self {
            id,
            me,
            config,
            phase,
            transcript,
            membership,
            keys,
            prepared,
            pending: BTreeMap::new(),
            buffered: 0,
            outbox,
            sent_rn1,
            group,
            history,
            history_root,
            early_blocks,
            next_sequence,
            last_sequences,
            processed,
            undecryptable,
            head_nonce: None,
            stalled_at: None,
            proved,
            candidate_peers: BTreeSet::new(),
            alerts: VecDeque::new(),
            events: VecDeque::new(),
            counters,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::content::{Change, Content};
    use crate::conversation::Conversation;
    use crate::testkit::World;
    use grompi_proto::{Index, SlotRole};

    #[test]
    fn a_restored_conversation_continues_where_it_stopped() {
        let mut w = World::new(41, 3, 3, 3);
        w.setup_with(0, &[0, 1]);
        w.send(0, Content::Message(b"one".to_vec()));
        w.send(1, Content::Message(b"two".to_vec()));
        let mut next = w.roster();
        next.insert(2, SlotRole::Member);
        w.update(
            0,
            Change::Add {
                account: w.accounts[2],
                role: SlotRole::Member,
            },
            next,
        );
        // Save and restore every member's conversation, then keep going.
        for m in 0..3 {
            let c = w.convs[m].as_ref().unwrap();
            let saved = c.save_state();
            let restored = Conversation::restore_state(&saved, w.config.clone()).unwrap();
            assert_eq!(restored.transcript(), c.transcript());
            assert_eq!(restored.membership(), c.membership());
            assert_eq!(restored.phase(), c.phase());
            assert_eq!(restored.save_state(), saved);
            w.convs[m] = Some(restored);
        }
        let at = w.send(2, Content::Message(b"three".to_vec()));
        w.send(0, Content::Message(b"four".to_vec()));
        for m in 0..3 {
            let c = w.convs[m].as_mut().unwrap();
            assert_eq!(c.next_expected(), Index(at.0 + 2));
            assert!(c.drain_alerts().is_empty(), "member {m}");
        }
        // Garbage never panics and is refused.
        let saved = w.convs[0].as_ref().unwrap().save_state();
        for cut in [0, 1, 40, saved.len() - 1] {
            assert!(Conversation::restore_state(&saved[..cut], w.config.clone()).is_err());
        }
        let mut bad = saved.to_vec();
        bad[0] = 9;
        assert!(Conversation::restore_state(&bad, w.config.clone()).is_err());
    }
}
