//! The router's toolkit: what a router with full power over the network
//! does beyond dropping, reordering and replaying what its core emits.
//!
//! * **Puppets.** The router registers accounts of its own with its core,
//!   exactly as a client does (a signed challenge, a fallback prekey, order
//!   keys), fetches members' published prekey bundles from its directory
//!   and starts Olm sessions with them. A puppet is then an account like
//!   any other: whatever it encrypts to a member authenticates as the
//!   puppet.
//! * **Any envelope.** A puppet composes an envelope with every header
//!   field the router chooses (conversation, epoch, sender slot, sequence
//!   number, causal context) and any content, with the client's own
//!   [`compose::compose`]: blocks only for the recipients it names.
//! * **Slot roles.** [`padding_slot`] picks a slot no member is assigned
//!   in a slot set the router handed out; [`with_role`] gives a slot of a
//!   set the role the router chooses (attack 1 makes its puppet the Admin
//!   of a padding slot it re-roles).
//! * **Any delivery.** [`delivery_of`] builds a router-to-client delivery
//!   of any envelope to the holder of any slot, with the attestations and
//!   the previous head the router chooses (empty, genuine or made up);
//!   every field of a `pb::Delivery` is the router's to empty or rewrite.
//!
//! The detection is always the real cores': the members' clients.

use super::SimError;
use super::events::Event;
use super::router_node::RouterNode;
use super::setup::register;
use crate::schedule::Schedule;
use grompi_client_core::Secrets;
use grompi_client_core::compose::{self, Composed, Sending};
use grompi_client_core::content::{Change, Content, MemberEntry, UpdateContent};
use grompi_client_core::keyring::SlotMacKeys;
use grompi_client_core::pairwise::PrekeyBundle;
use grompi_proto::{
    AccountId, ConversationId, Envelope, Epoch, Head, Index, OrderServerKey, Sequence, SlotIndex,
    SlotRole, SlotSecret, SlotSet, pb,
};
use grompi_router::core::{Call, Command, Effect, Response};
use grompi_router::delivery::{MemberSlots, view};

/// An account the router registered for itself.
pub struct Puppet {
    /// Its name in reports.
    pub name: String,
    /// Its account id, from its identity keys; a substituted Update lists it as an Admin.
    pub account: AccountId,
    /// Its secrets (Olm account and sessions, order keys).
    pub secrets: Secrets,
    /// The session token from its registration; its calls to the router core carry it.
    token: Vec<u8>,
    /// Submission MAC keys of a slot secret of its own: an envelope it
    /// composes is never offered to the order servers with them, but a
    /// composed envelope carries tags.
    mac_keys: SlotMacKeys,
}

/// The header fields of an envelope a puppet composes, chosen by the
/// router.
#[derive(Debug, Clone, Copy)]
pub struct Stamp {
    /// Conversation the header names.
    pub conversation: ConversationId,
    /// Epoch the header claims the envelope was composed in.
    pub epoch: Epoch,
    /// Sender slot the header claims: a genuine member's, not the puppet's own.
    pub sender: SlotIndex,
    /// That sender's sequence number the header claims.
    pub sequence: Sequence,
    /// Highest index the sender claims to have accepted (the causal context).
    pub last_seen: Option<Index>,
}

impl Stamp {
    /// The fields of a genuine header, to copy.
    pub fn of(header: &grompi_proto::EnvelopeHeader) -> Self {
        Self {
            conversation: header.conversation(),
            epoch: header.epoch(),
            sender: header.sender(),
            sequence: header.sequence(),
            last_seen: header.last_seen(),
        }
    }
}

/// Why the toolkit could not do what the router asked.
#[derive(Debug, thiserror::Error)]
pub enum PuppetError {
    /// The router core refused or did not answer.
    #[error("router core: {0}")]
    Core(String),
    /// The client code refused to compose.
    #[error("composing: {0}")]
    Compose(#[from] grompi_client_core::ClientError),
    /// A bundle or session failed.
    #[error("pairwise: {0}")]
    Pairwise(#[from] grompi_client_core::pairwise::PairwiseError),
}

impl From<PuppetError> for SimError {
    fn from(e: PuppetError) -> Self {
        SimError::Setup(e.to_string())
    }
}

/// One authenticated call to the router core's first branch, answered at
/// once: the router acting for its own account. Only for set-up, before
/// the run (effects other than the answer are not performed).
pub(super) fn call_core(
    router: &mut RouterNode,
    sched: &mut Schedule<Event>,
    token: &[u8],
    call: Call,
) -> Result<Response, PuppetError> {
    let t = router.ticket();
    let effects = router.handle_now(
        0,
        t,
        Command::Authed {
            token: token.to_vec(),
            call,
        },
        0,
        sched.rng(),
    );
    effects
        .into_iter()
        .find_map(|e| match e {
            Effect::Reply(ticket, r) if ticket == t => Some(r),
            _ => None,
        })
        .ok_or_else(|| PuppetError::Core("no answer".into()))?
        .map_err(|e| PuppetError::Core(e.to_string()))
}

impl Puppet {
    /// A puppet over `secrets`, registered with the router under session
    /// `token`; `servers` are the network's order servers.
    pub fn new(
        name: &str,
        secrets: Secrets,
        token: Vec<u8>,
        servers: &[OrderServerKey],
        rng: &mut impl rand::CryptoRng,
    ) -> Result<Self, PuppetError> {
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        let mac_keys = SlotMacKeys::derive(&SlotSecret::from_bytes(seed), servers)?;
        Ok(Self {
            name: name.to_owned(),
            account: secrets.pairwise.account_id(),
            secrets,
            token,
            mac_keys,
        })
    }

    /// The session token from its registration, for calls made for it.
    pub fn token(&self) -> &[u8] {
        &self.token
    }

    /// Registers a fresh account named `name` with the router core, as a
    /// client does.
    pub(super) fn register(
        name: &str,
        router: &mut RouterNode,
        sched: &mut Schedule<Event>,
        servers: &[OrderServerKey],
    ) -> Result<Self, SimError> {
        let mut secrets = Secrets::default();
        let order_keys = secrets.order_keys.generate(sched.rng(), 4);
        let token = register(router, sched, &mut secrets, &order_keys)?;
        Ok(Self::new(name, secrets, token, servers, sched.rng())?)
    }

    /// Starts an Olm session from a prekey bundle the router's directory
    /// published.
    pub fn start_session_from(&mut self, bundle: pb::PrekeyBundle) -> Result<(), PuppetError> {
        let bundle = PrekeyBundle::try_from(bundle)?;
        self.secrets.pairwise.start_session(&bundle)?;
        Ok(())
    }

    /// Starts an Olm session with `peer` from the prekey bundle the
    /// router's directory publishes for it.
    pub(super) fn start_session(
        &mut self,
        router: &mut RouterNode,
        sched: &mut Schedule<Event>,
        peer: AccountId,
    ) -> Result<(), PuppetError> {
        let answer = call_core(router, sched, &self.token, Call::GetPrekeyBundle(peer))?;
        let Response::Bundle(pb::GetPrekeyBundleResponse {
            bundle: Some(bundle),
        }) = answer
        else {
            return Err(PuppetError::Core("no bundle".into()));
        };
        self.start_session_from(bundle)
    }

    /// Composes `content` under the header fields `stamp`, with a block for
    /// each of `recipients` (slot and account; the puppet needs a session
    /// with each).
    pub fn compose(
        &mut self,
        stamp: Stamp,
        content: &Content,
        recipients: &[(SlotIndex, AccountId)],
        rng: &mut impl rand::CryptoRng,
    ) -> Result<Composed, PuppetError> {
        Ok(compose::compose(
            &Sending {
                conversation: stamp.conversation,
                epoch: stamp.epoch,
                sender: stamp.sender,
                sequence: stamp.sequence,
                last_seen: stamp.last_seen,
                recipients,
                mac_keys: &self.mac_keys,
            },
            content,
            rng,
            &mut self.secrets.pairwise,
        )?)
    }
}

/// A next slot set the router handed out (PrepareUpdate), with its
/// assignments.
pub type NextSet = (SlotSet, Vec<pb::SlotAssignment>);

/// Whether `genuine` delivers an Update to a member it adds: next-epoch
/// tags and no current ones, and a block (addressed by the joiner's next
/// slot). Returns the header and that slot.
pub fn join_delivery(genuine: &pb::Delivery) -> Option<(grompi_proto::EnvelopeHeader, SlotIndex)> {
    let header = grompi_proto::EnvelopeHeader::try_from(genuine.header.clone()?).ok()?;
    let joiner = !genuine.attestations.is_empty()
        && genuine
            .attestations
            .iter()
            .all(|a| a.tags.is_empty() && !a.next_tags.is_empty());
    if header.kind() != grompi_proto::EnvelopeKind::Update || !joiner {
        return None;
    }
    let slot = SlotIndex(genuine.block.as_ref()?.recipient_slot);
    Some((header, slot))
}

/// The member list of a slot set the router handed out, from its
/// assignments (each member's role is its slot's).
pub fn entries(slots: &SlotSet, assignments: &[pb::SlotAssignment]) -> Option<Vec<MemberEntry>> {
    assignments
        .iter()
        .map(|a| {
            Some(MemberEntry {
                account: AccountId::parse("assignment.account", &a.account).ok()?,
                role: slots.get(SlotIndex(a.slot))?.role,
                slot: SlotIndex(a.slot),
            })
        })
        .collect()
}

/// Attack 1, a substituted Update for a joiner: `genuine` delivers an
/// Update to `joiner`, which adds it, and `next` is the next slot set the
/// router handed out for it, with its assignments. Returns the same Update
/// as the puppet composes it: the genuine header fields (epoch, sender
/// slot, sequence number, causal context); the genuine next slot set with
/// its first padding slot given the Admin role (so the header's slot set
/// hash is that set's); the genuine member list plus the puppet as the
/// Admin holding that slot, so the Update passes every check a joiner can
/// make of its content (it was sent by an Admin of the list it states); a
/// block for the joiner only. It is delivered with the genuine attestations
/// and, per `keep_previous_head`, the genuine previous head or none. Also
/// returns the padding slot. `None` when `genuine` is not such a delivery
/// or the set has no padding slot.
pub fn substitute_update(
    puppet: &mut Puppet,
    genuine: &pb::Delivery,
    joiner: AccountId,
    next: &NextSet,
    keep_previous_head: bool,
    rng: &mut impl rand::CryptoRng,
) -> Result<Option<(pb::Delivery, SlotIndex)>, PuppetError> {
    let Some((header, slot)) = join_delivery(genuine) else {
        return Ok(None);
    };
    let (next_slots, assignments) = next;
    let Some(mut next_members) = entries(next_slots, assignments) else {
        return Ok(None);
    };
    let role = next_members
        .iter()
        .find(|e| e.account == joiner)
        .map_or(SlotRole::Member, |e| e.role);
    let Some((padding, _)) = padding_slot(next_slots, next_members.iter().map(|e| e.slot)) else {
        return Ok(None);
    };
    let Ok(next_slots) = SlotSet::try_from(with_role(
        &pb::SlotSet::from(next_slots),
        padding,
        SlotRole::Admin,
    )) else {
        return Ok(None);
    };
    next_members.push(MemberEntry {
        account: puppet.account,
        role: SlotRole::Admin,
        slot: padding,
    });
    let content = Content::Update(UpdateContent {
        change: Change::Add {
            account: joiner,
            role,
        },
        next_slots,
        next_members,
        history: Default::default(),
    });
    let composed = puppet.compose(Stamp::of(&header), &content, &[(slot, joiner)], rng)?;
    let previous = if keep_previous_head {
        Head::parse("previous_head", &genuine.previous_head).ok()
    } else {
        None
    };
    let Ok(conversation) = ConversationId::parse("conversation_id", &genuine.conversation_id)
    else {
        return Ok(None);
    };
    Ok(Some((
        delivery_of(
            &conversation,
            Index(genuine.index),
            &composed.envelope,
            slot,
            genuine.attestations.clone(),
            previous,
        ),
        padding,
    )))
}

/// The first slot of `slots` that no one in `assigned` holds (a padding
/// slot of a set the router handed out), with its role.
pub fn padding_slot(
    slots: &SlotSet,
    assigned: impl IntoIterator<Item = SlotIndex>,
) -> Option<(SlotIndex, SlotRole)> {
    let taken: Vec<SlotIndex> = assigned.into_iter().collect();
    slots
        .entries()
        .iter()
        .enumerate()
        .filter_map(|(i, e)| Some((SlotIndex(u32::try_from(i).ok()?), e.role)))
        .find(|(s, _)| !taken.contains(s))
}

/// `slots` with slot `slot` given `role` (a router choosing the roles of
/// the slot sets it hands out).
pub fn with_role(slots: &pb::SlotSet, slot: SlotIndex, role: SlotRole) -> pb::SlotSet {
    let mut out = slots.clone();
    if let Some(e) = out.slots.get_mut(slot.0 as usize) {
        e.role = i32::from(role.code());
    }
    out
}

/// The delivery of `envelope` at `index` to the holder of `slot` (its
/// block, if the envelope has one for that slot), with `attestations` and
/// `previous_head` (`None`: the field left empty) as the router chooses.
pub fn delivery_of(
    conversation: &ConversationId,
    index: Index,
    envelope: &Envelope,
    slot: SlotIndex,
    attestations: Vec<pb::Attestation>,
    previous_head: Option<Head>,
) -> pb::Delivery {
    let member = MemberSlots {
        slot: None,
        next_slot: Some(slot),
    };
    let head = previous_head.unwrap_or(Head::from_bytes([0; 32]));
    let mut d = view(conversation, index, envelope, &head, member, &[]);
    d.attestations = attestations;
    if previous_head.is_none() {
        d.previous_head.clear();
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use grompi_proto::{SlotEntry, SlotKey};

    fn set(roles: &[SlotRole]) -> SlotSet {
        SlotSet::new(
            roles
                .iter()
                .enumerate()
                .map(|(i, r)| SlotEntry {
                    key: SlotKey::from_bytes([i as u8 + 1; 32]),
                    role: *r,
                })
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn the_padding_slot_is_the_first_unassigned_one_with_its_role() {
        let s = set(&[SlotRole::Admin, SlotRole::Member, SlotRole::Admin]);
        assert_eq!(
            padding_slot(&s, [SlotIndex(0), SlotIndex(1)]),
            Some((SlotIndex(2), SlotRole::Admin))
        );
        assert_eq!(
            padding_slot(&s, [SlotIndex(0)]),
            Some((SlotIndex(1), SlotRole::Member))
        );
        assert_eq!(
            padding_slot(&s, [SlotIndex(0), SlotIndex(1), SlotIndex(2)]),
            None
        );
        let pb_set = pb::SlotSet::from(&s);
        let changed = with_role(&pb_set, SlotIndex(1), SlotRole::Admin);
        assert_eq!(changed.slots[1].role, i32::from(SlotRole::Admin.code()));
        assert_eq!(changed.slots[0], pb_set.slots[0]);
    }
}
