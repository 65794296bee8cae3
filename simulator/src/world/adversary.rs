//! The router's strategies, applied to what the real router core emits:
//! deliveries dropped, withheld, stripped of tags, delayed, shuffled,
//! replayed or accompanied by forgeries; crashes timed by the script. The
//! fork itself is structural (one core per history, see `router_node`).

use super::events::Event;
use super::{MS, World};
use crate::scenario::{OrderServerStrategy, RouterStrategy};
use grompi_proto::{BodyHash, pb};
use rand::RngExt;
use std::collections::{BTreeMap, BTreeSet};

/// The router adversary's state.
pub struct RouterAdversary {
    strategy: RouterStrategy,
    /// Members the strategy targets.
    targets: BTreeSet<usize>,
    /// Index -> the script step whose envelope it holds.
    index_step: BTreeMap<u64, usize>,
    /// Full deliveries made so far, per member (for replays).
    history: BTreeMap<usize, Vec<pb::Delivery>>,
    /// Indices already used for a forged submission to the order servers.
    rogue_done: BTreeSet<u64>,
    /// Replays made so far (the kind of replay cycles through all kinds).
    replays: u32,
}

impl RouterAdversary {
    /// The adversary for `strategy` in a network of `names`.
    pub fn new(strategy: &RouterStrategy, names: &[String]) -> Self {
        let listed: &[String] = match strategy {
            RouterStrategy::Drop { members, .. }
            | RouterStrategy::WithholdDelivery { members, .. } => members,
            _ => &[],
        };
        let targets = listed
            .iter()
            .filter_map(|n| names.iter().position(|m| m == n))
            .collect();
        Self {
            strategy: strategy.clone(),
            targets,
            index_step: BTreeMap::new(),
            history: BTreeMap::new(),
            rogue_done: BTreeSet::new(),
            replays: 0,
        }
    }
}

impl World {
    /// Crashes and outages due at the start of script step `k`.
    pub(super) fn adversary_step(&mut self, k: usize) {
        if let RouterStrategy::CrashRestart { after_step } = self.adversary.strategy
            && after_step == k
        {
            let at = self.sched.rng().random_range(0..=150 * MS);
            self.sched.after(at, Event::RouterCrash);
        }
        let outages: Vec<(usize, bool)> = self
            .servers
            .iter()
            .enumerate()
            .filter_map(|(s, server)| match server.strategy() {
                OrderServerStrategy::CrashRestart { after_step } if *after_step == k => {
                    Some((s, true))
                }
                OrderServerStrategy::Offline { after_step } if *after_step == k => Some((s, false)),
                _ => None,
            })
            .collect();
        for (server, restart) in outages {
            let at = if restart {
                self.sched.rng().random_range(0..=150 * MS)
            } else {
                0
            };
            self.sched.after(at, Event::ServerCrash { server, restart });
        }
    }

    /// The script step whose envelope a delivery carries, if known.
    fn step_of(&mut self, delivery: &pb::Delivery) -> Option<usize> {
        if delivery.header.is_some() {
            let hash = grompi_client::Delivery::try_from(delivery.clone())
                .ok()
                .and_then(|d| d.check().ok())
                .map(|r| r.envelope_hash);
            if let Some(step) = hash
                .and_then(|h| self.composed.get(h.as_bytes()))
                .and_then(|c| c.step)
            {
                self.adversary.index_step.insert(delivery.index, step);
            }
        }
        self.adversary.index_step.get(&delivery.index).copied()
    }

    /// Hands a delivery from the router core of `branch` to the network,
    /// through the router's strategy.
    pub(super) fn deliver(&mut self, branch: usize, to: usize, mut delivery: pb::Delivery) {
        let step = self.step_of(&delivery);
        let strategy = self.adversary.strategy.clone();
        let targeted = self.adversary.targets.contains(&to);
        match strategy {
            RouterStrategy::Honest
            | RouterStrategy::Fork { .. }
            | RouterStrategy::ForgeHeadProofs
            | RouterStrategy::CrashRestart { .. } => self.send(Event::Deliver { to, delivery }),
            RouterStrategy::CorruptDeliveries => {
                if delivery.header.is_some() {
                    let mut bad = delivery.clone();
                    let flip = self.adversary.replays.is_multiple_of(2);
                    self.adversary.replays += 1;
                    match bad.block.as_mut().and_then(|b| b.ciphertext.first_mut()) {
                        Some(byte) if flip => *byte ^= 0x01,
                        _ => bad.conversation_id.truncate(5),
                    }
                    self.send(Event::Deliver { to, delivery: bad });
                    self.send_after(5 * MS, Event::Deliver { to, delivery });
                } else {
                    self.send(Event::Deliver { to, delivery });
                }
            }
            RouterStrategy::Drop { steps, .. } => {
                if !(targeted && step.is_some_and(|s| steps.contains(&s))) {
                    self.send(Event::Deliver { to, delivery });
                }
            }
            RouterStrategy::WithholdDelivery { after_step, .. } => {
                if !(targeted && step.is_some_and(|s| s > after_step)) {
                    self.send(Event::Deliver { to, delivery });
                }
            }
            RouterStrategy::WithholdTags => {
                // The Setup goes through, so members are following the
                // conversation; every later index comes without tags.
                if step.is_some() {
                    if delivery.header.is_some() {
                        delivery.attestations.clear();
                        self.send(Event::Deliver { to, delivery });
                    }
                } else {
                    self.send(Event::Deliver { to, delivery });
                }
            }
            RouterStrategy::Reorder => {
                let extra = self.sched.rng().random_range(0..=1_500 * MS);
                self.send_after(extra, Event::Deliver { to, delivery });
            }
            RouterStrategy::Delay { max_ms } => {
                let extra = self.sched.rng().random_range(0..=max_ms.saturating_mul(MS));
                self.send_after(extra, Event::Deliver { to, delivery });
            }
            RouterStrategy::Replay => {
                if delivery.header.is_some() {
                    self.replay(branch, to, &delivery);
                    self.adversary
                        .history
                        .entry(to)
                        .or_default()
                        .push(delivery.clone());
                }
                self.send(Event::Deliver { to, delivery });
            }
            RouterStrategy::Inject => {
                if delivery.header.is_some() {
                    let fake = self.forge(&delivery);
                    self.rogue(branch, &fake, None);
                    self.send(Event::Deliver { to, delivery: fake });
                    self.send_after(5 * MS, Event::Deliver { to, delivery });
                } else {
                    self.send(Event::Deliver { to, delivery });
                }
            }
        }
    }

    /// A made-up envelope in place of `real`: another body (so another
    /// header and envelope hash) with made-up tags.
    fn forge(&mut self, real: &pb::Delivery) -> pb::Delivery {
        let mut fake = real.clone();
        let mut body = vec![0u8; 64];
        rand::Rng::fill_bytes(self.sched.rng(), &mut body);
        if let Some(h) = fake.header.as_mut() {
            h.body_hash = BodyHash::of(&body).to_vec();
        }
        fake.body = body;
        for a in &mut fake.attestations {
            for t in a.tags.iter_mut().chain(a.next_tags.iter_mut()) {
                let mut b = vec![0u8; 32];
                rand::Rng::fill_bytes(self.sched.rng(), &mut b);
                *t = b;
            }
        }
        fake
    }

    /// Old deliveries again: verbatim, relabelled to a later index, or
    /// relabelled to another conversation.
    fn replay(&mut self, branch: usize, to: usize, now: &pb::Delivery) {
        let Some(old) = self.adversary.history.get(&to).cloned() else {
            return;
        };
        if old.is_empty() {
            return;
        }
        let pick = self.sched.rng().random_range(0..old.len());
        let Some(mut copy) = old.get(pick).cloned() else {
            return;
        };
        // Which old delivery and when are drawn from the seed; the kind of
        // replay cycles, so every run exercises each kind.
        let kind = self.adversary.replays % 3;
        self.adversary.replays += 1;
        let wait = self.sched.rng().random_range(50 * MS..=1_500 * MS);
        match kind {
            0 => self.send_after(wait, Event::Deliver { to, delivery: copy }),
            1 => {
                copy.index = now.index.saturating_add(1);
                self.send_after(wait, Event::Deliver { to, delivery: copy });
            }
            _ => {
                let mut id = vec![0u8; 32];
                rand::Rng::fill_bytes(self.sched.rng(), &mut id);
                copy.conversation_id = id;
                self.send_after(wait, Event::Deliver { to, delivery: copy });
            }
        }
        // The old envelope, with its genuine submission tags, offered to
        // the order servers again at the next index.
        let tags = grompi_client::Delivery::try_from(copy_of(&old, pick))
            .ok()
            .and_then(|d| d.check().ok())
            .and_then(|r| self.composed.get(r.envelope_hash.as_bytes()))
            .map(|c| c.tags.clone());
        if let (Some(tags), Some(old)) = (tags, old.get(pick)) {
            let mut resent = old.clone();
            resent.index = now.index;
            resent.attestations = now.attestations.clone();
            self.rogue(branch, &resent, Some(tags));
        }
    }

    /// Offers an envelope to every order server serving `branch` outside
    /// the fan-out, once per index: at the index after `d`'s, on `d`'s head.
    fn rogue(&mut self, branch: usize, d: &pb::Delivery, tags: Option<Vec<grompi_proto::Tag>>) {
        if !self.adversary.rogue_done.insert(d.index) {
            return;
        }
        let Some(head) = d.attestations.first().map(|a| a.head.clone()) else {
            return;
        };
        let serves = self
            .router
            .branches
            .get(branch)
            .map(|b| b.serves.clone())
            .unwrap_or_default();
        for (s, server) in self.servers.iter_mut().enumerate() {
            if !serves.get(s).copied().unwrap_or(false) {
                continue;
            }
            let tag = match tags.as_ref().and_then(|t| t.get(s)) {
                Some(t) => t.to_vec(),
                None => {
                    let mut b = vec![0u8; 32];
                    rand::Rng::fill_bytes(self.sched.rng(), &mut b);
                    b
                }
            };
            self.measure.messages += 2;
            server.rogue_item(
                branch,
                pb::AttestItem {
                    envelope: Some(pb::EnvelopeSummary {
                        header: d.header.clone(),
                        block_digests: d.block_digests.clone(),
                    }),
                    submission_tag: tag,
                    index: d.index.saturating_add(1),
                    previous_head: head.clone(),
                    next_slots: None,
                },
            );
        }
    }
}

fn copy_of(old: &[pb::Delivery], i: usize) -> pb::Delivery {
    old.get(i).cloned().unwrap_or_default()
}
