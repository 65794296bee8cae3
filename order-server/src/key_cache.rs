//! MAC keys derived per slot set, cached in memory.
//!
//! Deriving the keys of one slot costs one X25519 operation (~110 us), so
//! they are derived once per slot set (when it is first used) and never per
//! message. The cache is keyed by the slot set's hash: keys depend only on
//! the slot keys, so an entry is valid wherever that set appears, even if
//! the transaction that first used it was never committed. The total
//! number of cached slots is bounded; the least recently used sets go first.

use grompi_proto::keys::KeyAgreementError;
use grompi_proto::{MacKeys, OrderServerSecret, SlotEntry, SlotIndex, SlotSet, SlotSetHash};
use std::collections::HashMap;
use std::sync::Arc;

/// The derived keys of every slot of one slot set.
pub struct SlotKeys {
    entries: Vec<(SlotEntry, MacKeys)>,
}

impl SlotKeys {
    /// Derives the keys of every slot; fails if a slot key is of low order.
    pub fn derive(secret: &OrderServerSecret, slots: &SlotSet) -> Result<Self, KeyAgreementError> {
        let entries = slots
            .entries()
            .iter()
            .map(|e| secret.mac_keys(&e.key).map(|k| (*e, k)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { entries })
    }

    /// The entry and keys of `slot`, if it exists.
    pub fn get(&self, slot: SlotIndex) -> Option<&(SlotEntry, MacKeys)> {
        self.entries.get(usize::try_from(slot.0).ok()?)
    }

    /// Every slot's keys, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = &MacKeys> {
        self.entries.iter().map(|(_, k)| k)
    }

    /// Number of slots in the set, padding included (what the cache's
    /// bound counts).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no slots (never, for a valid slot set).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A bounded cache of [`SlotKeys`] by slot set hash.
pub struct KeyCache {
    entries: HashMap<SlotSetHash, (Arc<SlotKeys>, u64)>,
    slots: usize,
    max_slots: usize,
    tick: u64,
    derivations: u64,
}

impl KeyCache {
    /// An empty cache holding the keys of at most `max_slots` slots.
    pub fn new(max_slots: usize) -> Self {
        Self {
            entries: HashMap::new(),
            slots: 0,
            max_slots,
            tick: 0,
            derivations: 0,
        }
    }

    /// The cached keys of the set with `hash`, if present.
    pub fn get(&mut self, hash: &SlotSetHash) -> Option<Arc<SlotKeys>> {
        self.tick += 1;
        let tick = self.tick;
        self.entries.get_mut(hash).map(|(k, used)| {
            *used = tick;
            Arc::clone(k)
        })
    }

    /// Derives, caches and returns the keys of `slots`.
    pub fn derive(
        &mut self,
        secret: &OrderServerSecret,
        slots: &SlotSet,
    ) -> Result<Arc<SlotKeys>, KeyAgreementError> {
        let hash = slots.hash();
        if let Some(k) = self.get(&hash) {
            return Ok(k);
        }
        let keys = Arc::new(SlotKeys::derive(secret, slots)?);
        self.derivations += 1;
        while self.slots + keys.len() > self.max_slots {
            let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(h, _)| *h)
            else {
                break;
            };
            if let Some((old, _)) = self.entries.remove(&oldest) {
                self.slots = self.slots.saturating_sub(old.len());
            }
        }
        self.tick += 1;
        self.slots += keys.len();
        self.entries.insert(hash, (Arc::clone(&keys), self.tick));
        Ok(keys)
    }

    /// How many slot sets were derived (cache misses), ever.
    pub fn derivations(&self) -> u64 {
        self.derivations
    }

    /// Number of slots whose keys are cached.
    pub fn cached_slots(&self) -> usize {
        self.slots
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use grompi_proto::{SlotRole, SlotSecret};

    fn set(seed: u8, n: u8) -> SlotSet {
        SlotSet::new(
            (0..n)
                .map(|i| SlotEntry {
                    key: SlotSecret::from_bytes([seed.wrapping_mul(31).wrapping_add(i); 32])
                        .public_key(),
                    role: SlotRole::Member,
                })
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn derives_once_and_evicts_least_recently_used() {
        let secret = OrderServerSecret::from_bytes([5; 32]);
        let mut cache = KeyCache::new(4);
        let (a, b, c) = (set(1, 2), set(2, 2), set(3, 2));
        cache.derive(&secret, &a).unwrap();
        cache.derive(&secret, &a).unwrap();
        assert_eq!(cache.derivations(), 1);
        cache.derive(&secret, &b).unwrap();
        assert!(cache.get(&a.hash()).is_some()); // a is now more recent than b
        cache.derive(&secret, &c).unwrap();
        assert_eq!(cache.cached_slots(), 4);
        assert!(cache.get(&b.hash()).is_none());
        assert!(cache.get(&a.hash()).is_some());
        let keys = cache.get(&c.hash()).unwrap();
        assert_eq!(keys.len(), 2);
        assert!(keys.get(SlotIndex(2)).is_none());
    }
}
