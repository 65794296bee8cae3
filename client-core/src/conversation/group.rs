//! Group keys in a conversation (`docs/PROTOCOL.md` section 4.5): starting
//! a key generation at a Setup, an Update or a Rekey from the RN1 in this
//! member's block, keeping the order servers' key shares, and the body key
//! of a group-keyed Message or Receipt, sent or received.
//!
//! A conversation is group-keyed when its Setup's header carries a key
//! start; it stays so for life (an Update without a key start leaves the
//! members without group keys, which every later Message then shows).

use super::{Conversation, Secrets};
use crate::body::BodyContext;
use crate::body::BodyKey;
use crate::content::Content;
use crate::errors::ClientError;
use crate::group_key::{ChainKey, GroupKeyError, GroupKeys, KeyGeneration, PeriodKey, Rn1};
use grompi_proto::key_share::{KeyPeriod, KeyShare, WrappedShare};
use grompi_proto::{
    EnvelopeHeader, EnvelopeKind, Epoch, HeaderKey, Index, KeyId, KeyStart, Misbehaviour, Sequence,
    ShareServers, SlotIndex, SlotRole,
};
use std::collections::BTreeMap;

/// How many key periods behind the current one a Message may still name
/// (and how many periods' shares a member keeps).
pub const MAX_PERIOD_LAG: u64 = 16;

/// How many indices where shares are due a member remembers for late tags.
const MAX_SHARE_POINTS: usize = 64;

/// Most accepted Messages and Receipts a member keeps unopened while a
/// share they name is on its way (beyond it: `MissingKeyShare` at once).
pub const MAX_PARKED: usize = 64;

/// An accepted group-keyed Message or Receipt whose period key misses a
/// share that may still arrive as a late tag: its chain key (taken, so the
/// chain stays in step) waits with the envelope until the share comes, or
/// until a stall says it will not.
#[derive(Clone, Debug)]
pub(super) struct Parked {
    pub(super) header: EnvelopeHeader,
    pub(super) body: Vec<u8>,
    pub(super) chain: ChainKey,
    pub(super) sender: Option<grompi_proto::AccountId>,
}

/// What opening a group-keyed envelope gave.
pub(super) enum GroupOpen {
    /// Opened now: what it says, ready to apply.
    Opened(super::Opened),
    /// Waiting for a share.
    Parked,
}

/// A group-keyed conversation's key state at this member, for the current
/// epoch.
#[derive(Clone, Debug)]
pub(super) struct GroupState {
    /// The epoch this state is for.
    pub(super) epoch: Epoch,
    /// Indices per key period in the epoch (0: the epoch has no key start,
    /// so no group keys).
    pub(super) period_length: u64,
    /// The epoch's first index (0, or the index after its Update).
    pub(super) epoch_start: Index,
    /// This member's keys for the epoch; `None` when it got no valid RN1.
    pub(super) keys: Option<GroupKeys>,
    /// Opened key shares of the epoch, by period and server.
    pub(super) shares: BTreeMap<KeyPeriod, BTreeMap<u32, KeyShare>>,
    /// Indices whose attestations carry shares, and for which epoch and
    /// period: late tags for them still bring shares.
    pub(super) due: BTreeMap<Index, (Epoch, KeyPeriod)>,
    /// Accepted Messages and Receipts waiting for a share, by index.
    pub(super) parked: BTreeMap<Index, Parked>,
}

impl GroupState {
    /// The key period a Message accepted at `index` may name at most: the
    /// period of the index before it, or the epoch's first.
    fn current_period(&self, index: Index) -> KeyPeriod {
        index
            .0
            .checked_sub(1)
            .map(Index)
            .filter(|last| *last >= self.epoch_start)
            .and_then(|last| KeyPeriod::of(last, self.epoch_start, self.period_length))
            .unwrap_or_default()
    }

    /// The servers whose shares this member holds for `period`.
    fn held(&self, period: KeyPeriod) -> Option<ShareServers> {
        ShareServers::of(self.shares.get(&period)?.keys().copied())
    }

    /// The period key from the shares `servers` names, or the first server
    /// whose share is missing.
    fn period_key(
        &self,
        conversation: &grompi_proto::ConversationId,
        period: KeyPeriod,
        servers: ShareServers,
    ) -> Result<PeriodKey, Misbehaviour> {
        let held = self.shares.get(&period);
        let mut shares = Vec::new();
        for server in servers.servers() {
            match held.and_then(|h| h.get(&server)) {
                Some(share) => shares.push((server, share)),
                None => return Err(Misbehaviour::MissingKeyShare { server }),
            }
        }
        PeriodKey::mix(conversation, self.epoch, period, &shares)
            .map_err(|_| Misbehaviour::WrongKeyId("the key id names no order server"))
    }
}

/// Opens a group-keyed body under the message key of `chain` and `pk`,
/// checked against the header's key commitment, and decodes its content.
fn open_body(
    header: &EnvelopeHeader,
    body: &[u8],
    chain: &ChainKey,
    period: KeyPeriod,
    pk: &PeriodKey,
    sender: Option<grompi_proto::AccountId>,
) -> Result<super::Opened, Misbehaviour> {
    let key = chain.message_key(period, pk);
    let plaintext = crate::body::open(
        &key,
        &header.key_commitment(),
        &BodyContext::of(header),
        body,
    )
    .map_err(|e| match e {
        crate::body::BodyError::KeyCommitmentMismatch => Misbehaviour::KeyCommitmentMismatch,
        crate::body::BodyError::Undecryptable => {
            Misbehaviour::Undecryptable("body does not decrypt")
        }
    })?;
    let content =
        Content::decode(header.kind(), &plaintext).map_err(super::open::decode_misbehaviour)?;
    Ok(super::Opened {
        sender,
        content,
        rn1: None,
    })
}

fn key_error(e: GroupKeyError) -> Misbehaviour {
    Misbehaviour::WrongKeyId(match e {
        GroupKeyError::UnknownGeneration { .. } => "a key generation this member does not hold",
        GroupKeyError::UnknownSlot { .. } => "a sender slot without a chain",
        GroupKeyError::KeyGone { .. } => "a chain position already used",
        GroupKeyError::SkipTooFar { .. } => "a sequence too far ahead of its chain",
        GroupKeyError::NoShares | GroupKeyError::SharesOutOfOrder => "a malformed share set",
        GroupKeyError::GenerationOutOfOrder { .. } => "a key generation out of order",
    })
}

impl Conversation {
    /// Whether this conversation is group-keyed (its Setup had a key start).
    pub fn is_group_keyed(&self) -> bool {
        self.group.is_some()
    }

    /// Where a group-keyed conversation's keys are: the epoch, the key
    /// generation this member holds (none after a bad RN1), the current key
    /// period and its length.
    pub fn key_position(&self) -> Option<(Epoch, Option<KeyGeneration>, KeyPeriod, u64)> {
        let g = self.group.as_ref()?;
        Some((
            g.epoch,
            g.keys.as_ref().map(GroupKeys::current),
            g.current_period(self.transcript.next_index()),
            g.period_length,
        ))
    }

    /// Starts the key generation a Setup (`index` 0) or an Update opens for
    /// the epoch now current, from the RN1 in this member's block.
    pub(super) fn start_group_epoch(
        &mut self,
        index: Index,
        header: &EnvelopeHeader,
        rn1: Option<Rn1>,
    ) {
        let Some(m) = self.membership.as_ref() else {
            return;
        };
        let epoch = m.epoch();
        let slots = u32::try_from(m.slots().len()).unwrap_or(u32::MAX);
        let epoch_start = if header.kind() == EnvelopeKind::Setup {
            Index(0)
        } else {
            Index(index.0.saturating_add(1))
        };
        let start = match header.key() {
            HeaderKey::Start(k) => k,
            _ => {
                if self.group.is_some() {
                    self.alert(
                        Misbehaviour::WrongKeyId(
                            "an Update without a key start in a group-keyed conversation",
                        ),
                        Some(index),
                        None,
                    );
                    self.group = Some(GroupState {
                        epoch,
                        period_length: 0,
                        epoch_start,
                        keys: None,
                        shares: BTreeMap::new(),
                        due: BTreeMap::new(),
                        parked: BTreeMap::new(),
                    });
                }
                return;
            }
        };
        if header.kind() == EnvelopeKind::Update && self.group.is_none() {
            self.alert(
                Misbehaviour::WrongKeyId("a key start in a pairwise-keyed conversation"),
                Some(index),
                None,
            );
            return;
        }
        let keys = if start.generation() != 0 {
            self.alert(
                Misbehaviour::WrongKeyId("an epoch's first key generation must be 0"),
                Some(index),
                None,
            );
            None
        } else {
            self.checked_rn1(index, epoch, &start, rn1)
                .map(|rn1| GroupKeys::start_epoch(self.id, epoch, &rn1, (0..slots).map(SlotIndex)))
        };
        let mut due = BTreeMap::new();
        due.insert(index, (epoch, KeyPeriod(0)));
        // What still waits for a share of the epoch that ends will not get
        // one it can use any more.
        self.give_up_parked();
        self.group = Some(GroupState {
            epoch,
            period_length: start.period_length(),
            epoch_start,
            keys,
            shares: BTreeMap::new(),
            due,
            parked: BTreeMap::new(),
        });
    }

    /// The RN1 of this member's block if it matches the header's commitment
    /// for `epoch` and the key start's generation; otherwise raises
    /// [`Misbehaviour::Rn1Mismatch`].
    fn checked_rn1(
        &mut self,
        index: Index,
        epoch: Epoch,
        start: &KeyStart,
        rn1: Option<Rn1>,
    ) -> Option<Rn1> {
        let generation = KeyGeneration(start.generation());
        match rn1 {
            Some(rn1) if rn1.commitment(&self.id, epoch, generation) == start.rn1_commitment() => {
                Some(rn1)
            }
            _ => {
                self.alert(Misbehaviour::Rn1Mismatch, Some(index), None);
                None
            }
        }
    }

    /// Applies an accepted Rekey: the next key generation of the epoch.
    pub(super) fn rekeyed(&mut self, index: Index, header: &EnvelopeHeader, rn1: Option<Rn1>) {
        let Some(g) = self.group.as_ref() else {
            self.alert(
                Misbehaviour::UnauthorizedUpdate("a Rekey in a pairwise-keyed conversation"),
                Some(index),
                None,
            );
            return;
        };
        let epoch = g.epoch;
        let period_length = g.period_length;
        let current = g.keys.as_ref().map(GroupKeys::current);
        let admin = self
            .membership
            .as_ref()
            .and_then(|m| m.holder(header.sender()).and_then(|a| m.role(&a)))
            == Some(SlotRole::Admin);
        if !admin {
            self.alert(
                Misbehaviour::UnauthorizedUpdate("a Rekey from a slot without an Admin holder"),
                Some(index),
                None,
            );
            return;
        }
        let HeaderKey::Start(start) = header.key() else {
            self.alert(
                Misbehaviour::WrongKeyId("a Rekey without a key start"),
                Some(index),
                None,
            );
            return;
        };
        let Some(current) = current else {
            // This member holds no keys for the epoch (a bad RN1 before):
            // the Rekey cannot be followed, which its Messages will show.
            return;
        };
        if current.0.checked_add(1) != Some(start.generation())
            || start.period_length() != period_length
        {
            self.alert(
                Misbehaviour::WrongKeyId(
                    "a Rekey must start the next generation with the epoch's period length",
                ),
                Some(index),
                None,
            );
            return;
        }
        let Some(rn1) = self.checked_rn1(index, epoch, &start, rn1) else {
            return;
        };
        let slots = self
            .membership
            .as_ref()
            .map_or(0, |m| u32::try_from(m.slots().len()).unwrap_or(u32::MAX));
        let starts: Vec<(SlotIndex, Sequence)> = (0..slots)
            .map(SlotIndex)
            .map(|s| {
                let last = self.last_sequences.get(&(epoch, s)).map_or(0, |q| q.0);
                (s, Sequence(last.saturating_add(1)))
            })
            .collect();
        if let Some(keys) = self.group.as_mut().and_then(|g| g.keys.as_mut())
            && keys
                .rekey(KeyGeneration(start.generation()), &rn1, starts)
                .is_err()
        {
            self.alert(
                Misbehaviour::WrongKeyId("a key generation out of order"),
                Some(index),
                None,
            );
        }
    }

    /// Records that the attestations of accepted `index` carry key shares
    /// when it starts a key period (the Setup's and an Update's are
    /// recorded when they start the epoch).
    pub(super) fn note_share_point(&mut self, index: Index, kind: EnvelopeKind) {
        let Some(g) = self.group.as_mut() else { return };
        if matches!(kind, EnvelopeKind::Setup | EnvelopeKind::Update) {
            return;
        }
        let after_update = g.epoch.0 > 0 && index == g.epoch_start;
        if !after_update
            && KeyPeriod::starts_at(index, g.epoch_start, g.period_length)
            && let Some(p) = KeyPeriod::of(index, g.epoch_start, g.period_length)
        {
            g.due.insert(index, (g.epoch, p));
            while g.due.len() > MAX_SHARE_POINTS {
                g.due.pop_first();
            }
        }
    }

    /// Opens the key shares delivered with `index` (each sealed for this
    /// member's slot) and keeps those that open; a share that does not
    /// open, or that came where none is due, is
    /// [`Misbehaviour::BadKeyShare`].
    pub(super) fn take_shares(&mut self, index: Index, shares: &BTreeMap<u32, WrappedShare>) {
        if shares.is_empty() {
            return;
        }
        let due = self
            .group
            .as_ref()
            .and_then(|g| g.due.get(&index).copied().filter(|(e, _)| *e == g.epoch));
        let Some((epoch, period)) = due else {
            // Shares where none is due (or for an epoch this member has
            // left behind, which it no longer needs).
            let stale = self
                .group
                .as_ref()
                .is_some_and(|g| g.due.get(&index).is_some_and(|(e, _)| *e != g.epoch));
            if !stale {
                for server in shares.keys() {
                    self.alert(
                        Misbehaviour::BadKeyShare { server: *server },
                        Some(index),
                        Some(*server),
                    );
                }
            }
            return;
        };
        let Some(keys) = self.keys.get(&epoch).cloned() else {
            return;
        };
        for (server, wrapped) in shares {
            let opened = keys
                .server(*server)
                .and_then(|k| k.unwrap_share(&self.id, epoch, period, wrapped).ok());
            match opened {
                Some(share) => {
                    if let Some(g) = self.group.as_mut() {
                        g.shares.entry(period).or_default().insert(*server, share);
                    }
                }
                None => self.alert(
                    Misbehaviour::BadKeyShare { server: *server },
                    Some(index),
                    Some(*server),
                ),
            }
        }
        if let Some(g) = self.group.as_mut() {
            let keep = g.current_period(Index(index.0.saturating_add(1)));
            g.shares
                .retain(|p, _| p.0.saturating_add(MAX_PERIOD_LAG) >= keep.0);
        }
    }

    /// Opens an accepted group-keyed Message or Receipt from another member,
    /// from its header's key id. The sender slot's chain moves past the
    /// sequence whatever happens, so every member's chains stay in step. A
    /// share the key id names that has not arrived yet may still come as a
    /// late tag: the envelope is then parked with its chain key.
    pub(super) fn group_open(
        &mut self,
        index: Index,
        header: &EnvelopeHeader,
        body: &[u8],
        sender: Option<grompi_proto::AccountId>,
    ) -> Result<GroupOpen, Misbehaviour> {
        let Some(g) = self.group.as_mut() else {
            return Err(Misbehaviour::WrongKeyId(
                "a key id in a pairwise-keyed conversation",
            ));
        };
        let current = g.current_period(index);
        let HeaderKey::Id(kid) = header.key() else {
            return Err(Misbehaviour::WrongKeyId(
                "no key id in a group-keyed conversation",
            ));
        };
        let generation = KeyGeneration(kid.generation);
        let period = KeyPeriod(kid.period);
        let (slot, sequence) = (header.sender(), header.sequence());
        let Some(keys) = g.keys.as_mut() else {
            return Err(Misbehaviour::WrongKeyId(
                "this member holds no group key for the epoch",
            ));
        };
        let checked = if header.epoch() != g.epoch {
            Err(Misbehaviour::WrongContext)
        } else if period > current {
            Err(Misbehaviour::WrongKeyId(
                "a key period that has not started",
            ))
        } else if period.0.saturating_add(MAX_PERIOD_LAG) < current.0 {
            Err(Misbehaviour::WrongKeyId("a key period long over"))
        } else {
            Ok(())
        };
        if let Err(m) = checked {
            // Keep the chain in step with every other member's.
            let _ = keys.skip(generation, slot, sequence);
            return Err(m);
        }
        let chain = keys
            .take_chain_key(generation, slot, sequence)
            .map_err(key_error)?;
        let id = self.id;
        let Some(g) = self.group.as_mut() else {
            return Err(Misbehaviour::WrongKeyId("no group key state"));
        };
        match g.period_key(&id, period, kid.servers) {
            Ok(pk) => open_body(header, body, &chain, period, &pk, sender).map(GroupOpen::Opened),
            Err(_) if g.parked.len() < MAX_PARKED => {
                g.parked.insert(
                    index,
                    Parked {
                        header: header.clone(),
                        body: body.to_vec(),
                        chain,
                        sender,
                    },
                );
                Ok(GroupOpen::Parked)
            }
            Err(missing) => Err(missing),
        }
    }

    /// Opens every parked envelope whose shares have all arrived, and
    /// applies it.
    pub(super) fn retry_parked(&mut self, secrets: &mut Secrets) {
        let id = self.id;
        let ready: Vec<(Index, Parked, PeriodKey, KeyPeriod)> = {
            let Some(g) = self.group.as_mut() else { return };
            let mut out = Vec::new();
            let indices: Vec<Index> = g.parked.keys().copied().collect();
            for index in indices {
                let Some(p) = g.parked.get(&index) else {
                    continue;
                };
                let HeaderKey::Id(kid) = p.header.key() else {
                    continue;
                };
                let period = KeyPeriod(kid.period);
                if let Ok(pk) = g.period_key(&id, period, kid.servers)
                    && let Some(p) = g.parked.remove(&index)
                {
                    out.push((index, p, pk, period));
                }
            }
            out
        };
        for (index, p, pk, period) in ready {
            match open_body(&p.header, &p.body, &p.chain, period, &pk, p.sender) {
                Ok(opened) => self.apply(index, &p.header, opened, secrets),
                Err(m) => {
                    self.alert(m, Some(index), None);
                    self.undecryptable.insert(index);
                }
            }
        }
    }

    /// Gives up on every parked envelope (a stall, or the epoch ended): each
    /// raises [`Misbehaviour::MissingKeyShare`] for the first share it
    /// still misses and is listed undecryptable.
    pub(super) fn give_up_parked(&mut self) {
        let id = self.id;
        let parked: Vec<(Index, Misbehaviour)> = {
            let Some(g) = self.group.as_mut() else { return };
            let parked = std::mem::take(&mut g.parked);
            parked
                .into_iter()
                .map(|(index, p)| {
                    let missing = match p.header.key() {
                        HeaderKey::Id(kid) => g
                            .period_key(&id, KeyPeriod(kid.period), kid.servers)
                            .err()
                            .unwrap_or(Misbehaviour::WrongKeyId("a share went missing")),
                        _ => Misbehaviour::WrongKeyId("a share went missing"),
                    };
                    (index, missing)
                })
                .collect()
        };
        for (index, m) in parked {
            let server = match m {
                Misbehaviour::MissingKeyShare { server } => Some(server),
                _ => None,
            };
            self.alert(m, Some(index), server);
            self.undecryptable.insert(index);
        }
    }

    /// The key id and body key of this member's next group-keyed Message or
    /// Receipt: the current generation, the period of the last accepted
    /// index, and every server whose share this member holds for it.
    pub(super) fn group_send_key(
        &mut self,
        slot: SlotIndex,
        sequence: Sequence,
    ) -> Result<(KeyId, BodyKey), ClientError> {
        let next = self.transcript.next_index();
        let id = self.id;
        let g = self
            .group
            .as_mut()
            .ok_or(ClientError::NotActive("the conversation is pairwise-keyed"))?;
        let period = g.current_period(next);
        let servers = g.held(period).ok_or(ClientError::NotActive(
            "no order server's key share for the current key period has arrived yet",
        ))?;
        let pk = g
            .period_key(&id, period, servers)
            .map_err(|_| ClientError::NotActive("a key share went missing"))?;
        let keys = g.keys.as_mut().ok_or(ClientError::NotActive(
            "this member holds no group key for the epoch",
        ))?;
        let generation = keys.current();
        let key = keys
            .message_key(generation, period, &pk, slot, sequence)
            .map_err(|_| ClientError::NotActive("the sender chain cannot give this sequence"))?;
        Ok((
            KeyId {
                generation: generation.0,
                period: period.0,
                servers,
            },
            key,
        ))
    }

    /// The key start and RN1 for a Setup, Update or Rekey this member sends
    /// in a group-keyed conversation: generation `generation` of `epoch`.
    pub(super) fn new_key_start(
        &self,
        epoch: Epoch,
        generation: KeyGeneration,
        period_length: u64,
        rng: &mut impl rand::CryptoRng,
    ) -> Result<(KeyStart, Rn1), ClientError> {
        let rn1 = Rn1::generate(rng);
        let start = KeyStart::new(
            generation.0,
            period_length,
            rn1.commitment(&self.id, epoch, generation),
        )?;
        Ok((start, rn1))
    }

    /// Composes a Rekey: the next key generation of the current epoch, with
    /// a fresh RN1 for every other member (Admins only).
    pub fn rekey(
        &mut self,
        rng: &mut impl rand::CryptoRng,
        secrets: &mut Secrets,
    ) -> Result<crate::compose::Composed, ClientError> {
        self.build(crate::content::Content::Rekey, true, None, rng, secrets)
    }
}
