//! Epoch slot sets: one slot per member with its order key and role,
//! padded to the smallest configured tier with router-held padding slots,
//! shuffled, and placed so that members joining with an Update never take a
//! slot a current member holds.

use crate::error::RouterError;
use grompi_proto::{
    AccountId, Epoch, Index, SlotEntry, SlotIndex, SlotKey, SlotRole, SlotSecret, SlotSet,
};
use rand::{CryptoRng, RngExt};
use std::collections::BTreeSet;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// The secret key of a padding slot, held by the router (it sends noise
/// envelopes from padding slots). Zeroized on drop, never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct PaddingSecret([u8; 32]);

impl PaddingSecret {
    /// Wraps secret bytes.
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
    /// The bytes, for the store.
    pub fn to_vec(&self) -> Vec<u8> {
        self.0.to_vec()
    }
    /// The padding slot's secret order key, whose MAC keys with each order server tag its noise.
    pub fn slot_secret(&self) -> SlotSecret {
        SlotSecret::from_bytes(self.0)
    }
}

impl std::fmt::Debug for PaddingSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PaddingSecret(..)")
    }
}

/// One epoch's slot set and who holds each slot.
#[derive(Debug, Clone)]
pub struct EpochSlots {
    /// Its position among installed epochs; for a prepared set, the epoch it would become.
    pub epoch: Epoch,
    /// The first index in this epoch (`None` while only prepared).
    pub first_index: Option<Index>,
    /// The padded, shuffled slot set.
    pub slots: SlotSet,
    /// Per slot: the member holding it, `None` for padding.
    pub holders: Vec<Option<AccountId>>,
    /// Padding slots and their secrets.
    pub padding: Vec<(SlotIndex, PaddingSecret)>,
}

impl EpochSlots {
    /// The slot an account holds, if any.
    pub fn slot_of(&self, account: &AccountId) -> Option<SlotIndex> {
        self.holders
            .iter()
            .position(|h| h.as_ref() == Some(account))
            .and_then(|p| u32::try_from(p).ok())
            .map(SlotIndex)
    }

    /// The member holding a slot.
    pub fn holder(&self, slot: SlotIndex) -> Option<AccountId> {
        self.holders.get(slot.0 as usize).copied().flatten()
    }

    /// Members and their slots.
    pub fn members(&self) -> impl Iterator<Item = (AccountId, SlotIndex)> + '_ {
        self.holders.iter().enumerate().filter_map(|(i, h)| {
            let slot = u32::try_from(i).ok()?;
            h.map(|a| (a, SlotIndex(slot)))
        })
    }

    /// The assignments told to members.
    pub fn assignments(&self) -> Vec<grompi_proto::pb::SlotAssignment> {
        self.members()
            .filter_map(|(account, slot)| {
                self.slots
                    .get(slot)
                    .map(|e| grompi_proto::pb::SlotAssignment {
                        account: account.to_vec(),
                        slot: slot.0,
                        key: e.key.to_vec(),
                    })
            })
            .collect()
    }
}

/// The smallest tier that fits `members`, or an error naming the largest.
pub fn padded_size(members: usize, tiers: &[usize]) -> Result<usize, RouterError> {
    placed_size(members, &Placement::default(), tiers)
}

/// Where the members an Update adds may sit.
///
/// The Update is sent in the current epoch, but a joiner's block is
/// addressed by its slot in the next one (it holds no current slot). So a
/// joiner's next slot must not be a slot a current member holds, or two
/// blocks of the Update would name the same recipient.
#[derive(Debug, Clone, Default)]
pub struct Placement {
    /// Accounts that join with this epoch.
    pub joiners: BTreeSet<AccountId>,
    /// Slots joiners must not take: those held by current members.
    pub reserved: BTreeSet<SlotIndex>,
}

impl Placement {
    /// The placement for the epoch after `current`: every member of the
    /// next list that holds no slot in `current` is a joiner.
    pub fn after(current: &EpochSlots, next_members: &[(AccountId, SlotRole)]) -> Self {
        Self {
            joiners: next_members
                .iter()
                .map(|(a, _)| *a)
                .filter(|a| current.slot_of(a).is_none())
                .collect(),
            reserved: current.members().map(|(_, s)| s).collect(),
        }
    }

    fn free_slots(&self, size: usize) -> usize {
        size - self
            .reserved
            .iter()
            .filter(|s| (s.0 as usize) < size)
            .count()
    }

    fn is_reserved(&self, position: usize) -> bool {
        u32::try_from(position).is_ok_and(|p| self.reserved.contains(&SlotIndex(p)))
    }
}

/// The smallest tier that fits `members` and leaves room for the joiners
/// outside the reserved slots, or an error naming the largest tier.
fn placed_size(
    members: usize,
    placement: &Placement,
    tiers: &[usize],
) -> Result<usize, RouterError> {
    tiers
        .iter()
        .copied()
        .filter(|t| *t >= members && placement.free_slots(*t) >= placement.joiners.len())
        .min()
        .ok_or_else(|| RouterError::GroupTooLarge {
            members,
            joining: placement.joiners.len(),
            largest: tiers.iter().max().copied().unwrap_or(0),
        })
}

/// Builds an epoch's slot set: one slot per member with its order key and
/// role, padded to the tier with fresh router keys, shuffled, with every
/// joiner outside the slots `placement` reserves.
pub fn assign_slots(
    epoch: Epoch,
    members: Vec<(AccountId, SlotRole, SlotKey)>,
    placement: &Placement,
    tiers: &[usize],
    rng: &mut impl CryptoRng,
) -> Result<EpochSlots, RouterError> {
    let size = placed_size(members.len(), placement, tiers)?;
    let mut entries: Vec<(SlotEntry, Option<AccountId>, Option<PaddingSecret>)> = members
        .into_iter()
        .map(|(a, role, key)| (SlotEntry { key, role }, Some(a), None))
        .collect();
    while entries.len() < size {
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        let secret = PaddingSecret::new(bytes);
        bytes.zeroize();
        entries.push((
            SlotEntry {
                key: secret.slot_secret().public_key(),
                role: SlotRole::Member,
            },
            None,
            Some(secret),
        ));
    }
    // Fisher-Yates with the caller's RNG.
    for i in (1..entries.len()).rev() {
        let j = rng.random_range(0..=i);
        entries.swap(i, j);
    }
    // Move joiners out of reserved slots, each to a random free slot that
    // holds no joiner. `placed_size` guarantees one exists: fewer joiners
    // than free slots sit in free slots while this one is in a reserved one.
    let is_joiner =
        |h: &Option<AccountId>| h.as_ref().is_some_and(|a| placement.joiners.contains(a));
    for i in 0..entries.len() {
        if !(placement.is_reserved(i) && is_joiner(&entries[i].1)) {
            continue;
        }
        let targets: Vec<usize> = (0..entries.len())
            .filter(|j| !placement.is_reserved(*j) && !is_joiner(&entries[*j].1))
            .collect();
        if targets.is_empty() {
            return Err(RouterError::NoFreeSlot);
        }
        let j = targets[rng.random_range(0..targets.len())];
        entries.swap(i, j);
    }
    let mut holders = Vec::with_capacity(size);
    let mut padding = Vec::new();
    let mut slot_entries = Vec::with_capacity(size);
    for (i, (entry, holder, secret)) in entries.into_iter().enumerate() {
        slot_entries.push(entry);
        holders.push(holder);
        if let (Some(s), Ok(i)) = (secret, u32::try_from(i)) {
            padding.push((SlotIndex(i), s));
        }
    }
    let slots = SlotSet::new(slot_entries)?;
    Ok(EpochSlots {
        epoch,
        first_index: None,
        slots,
        holders,
        padding,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn members(n: u8) -> Vec<(AccountId, SlotRole, SlotKey)> {
        (0..n)
            .map(|i| {
                (
                    AccountId::from_bytes([i; 32]),
                    if i == 0 {
                        SlotRole::Admin
                    } else {
                        SlotRole::Member
                    },
                    SlotSecret::from_bytes([i.wrapping_add(100); 32]).public_key(),
                )
            })
            .collect()
    }

    #[test]
    fn tiers_pick_the_smallest_that_fits() {
        let tiers = [4, 8, 16];
        assert_eq!(padded_size(1, &tiers).unwrap(), 4);
        assert_eq!(padded_size(4, &tiers).unwrap(), 4);
        assert_eq!(padded_size(5, &tiers).unwrap(), 8);
        assert!(matches!(
            padded_size(17, &tiers),
            Err(RouterError::GroupTooLarge {
                members: 17,
                largest: 16,
                ..
            })
        ));
    }

    proptest! {
        #[test]
        fn slot_sets_are_padded_shuffled_and_complete(n in 1u8..20, seed in any::<u64>()) {
            let mut rng = StdRng::seed_from_u64(seed);
            let tiers = [4, 8, 16, 32];
            let m = members(n);
            let e = assign_slots(Epoch(0), m.clone(), &Placement::default(), &tiers, &mut rng).unwrap();
            prop_assert_eq!(e.slots.len(), padded_size(n as usize, &tiers).unwrap());
            prop_assert_eq!(e.holders.len(), e.slots.len());
            prop_assert_eq!(e.padding.len(), e.slots.len() - n as usize);
            for (a, role, key) in &m {
                let slot = e.slot_of(a).unwrap();
                let entry = e.slots.get(slot).unwrap();
                prop_assert_eq!(entry.key, *key);
                prop_assert_eq!(entry.role, *role);
            }
            for (slot, secret) in &e.padding {
                prop_assert!(e.holder(*slot).is_none());
                prop_assert_eq!(e.slots.get(*slot).unwrap().key, secret.slot_secret().public_key());
            }
        }
    }

    proptest! {
        /// Joiners never take a slot a current member holds, whatever the
        /// sizes, and the tier grows when the smallest one leaves no room.
        #[test]
        fn joiners_avoid_the_slots_current_members_hold(
            stay in 1u8..10, leave in 0u8..6, join in 1u8..8, seed in any::<u64>()
        ) {
            let mut rng = StdRng::seed_from_u64(seed);
            let tiers = [4, 8, 16, 32];
            let all = members(stay + leave + join);
            let current: Vec<_> = all[..(stay + leave) as usize].to_vec();
            let cur = assign_slots(Epoch(0), current, &Placement::default(), &tiers, &mut rng).unwrap();
            let next: Vec<_> = all[leave as usize..].to_vec();
            let roles: Vec<_> = next.iter().map(|(a, r, _)| (*a, *r)).collect();
            let placement = Placement::after(&cur, &roles);
            prop_assert_eq!(placement.joiners.len(), join as usize);
            let e = assign_slots(Epoch(1), next, &placement, &tiers, &mut rng).unwrap();
            for j in &placement.joiners {
                let slot = e.slot_of(j).unwrap();
                prop_assert!(cur.holder(slot).is_none(), "joiner at a current member's slot {}", slot.0);
            }
        }
    }

    #[test]
    fn padding_secrets_do_not_print() {
        let s = PaddingSecret::new([7; 32]);
        assert!(!format!("{s:?}").contains("07"));
    }
}
