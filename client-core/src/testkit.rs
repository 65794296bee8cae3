//! A small in-memory network for tests: order servers, a router that
//! orders envelopes and cuts deliveries, and members whose conversations
//! compose the honest transcript.
//!
//! The honest order servers are the real order server core
//! (`grompi_order_server::core::OrderCore` over its in-memory store): an
//! envelope a member sends is attested by each of them with the real
//! attestation rules, and honest deliveries carry the tags they returned.
//! Malicious servers are the helpers named `forged` / `forge`: they MAC
//! whatever a test asks with the servers' raw keys (forks, wrong-key tags,
//! envelopes no honest server would attest).
//!
//! Each member's secrets and conversation are snapshotted right after the
//! conversation is created, so tests can replay any feed of deliveries into
//! a fresh replica of a member ([`World::replica`]).
//!
//! Test-only (feature `testkit`): a test that misuses the world should fail
//! loudly, so it unwraps and panics freely.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use crate::compose::Composed;
use crate::content::{Change, Content, MemberEntry, UpdateContent};
use crate::conversation::{Conversation, ConversationConfig, Secrets};
use crate::delivery::Delivery;
use crate::keyring::OrderKeyring;
use crate::pairwise::{Pairwise, PairwisePickle};
use grompi_order_server::core::OrderCore;
use grompi_order_server::limits::Limits;
use grompi_order_server::mem_store::MemStore;
use grompi_order_server::request::AttestRequest;
use grompi_proto::mac::{Attestation, AttestationStatement, Tag};
use grompi_proto::{
    AccountId, ConversationId, CoreHash, Envelope, EnvelopeHash, EnvelopeKind, Epoch, Head, Index,
    MacKeys, OrderServerSecret, SlotEntry, SlotIndex, SlotKey, SlotRole, SlotSecret, SlotSet,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::collections::{BTreeMap, HashMap};

/// One ordered envelope.
#[derive(Clone, Debug)]
pub struct Ordered {
    pub index: Index,
    pub epoch: Epoch,
    pub envelope: Envelope,
    pub head: Head,
    pub prev: Head,
    /// Each honest order server's attestation, in server order (tags for
    /// every slot); `None` for an envelope ordered with forged tags.
    pub attestations: Option<Vec<Attestation>>,
}

/// An honest order server: the real core over its in-memory store.
struct HonestServer {
    core: OrderCore,
    store: MemStore,
}

/// Who holds which slot in one epoch.
#[derive(Clone, Debug)]
pub struct View {
    pub slots: SlotSet,
    pub holders: BTreeMap<usize, SlotIndex>,
    pub roles: BTreeMap<usize, SlotRole>,
}

struct Snapshot {
    pairwise: PairwisePickle,
    keys: Vec<[u8; 32]>,
    conv: Conversation,
}

pub struct World {
    pub rng: StdRng,
    /// The order servers' secrets (their raw MAC keys, for forging).
    pub servers: Vec<OrderServerSecret>,
    /// The same servers, honest: the real order server core.
    honest: Vec<HonestServer>,
    pub config: ConversationConfig,
    pub secrets: Vec<Secrets>,
    pub convs: Vec<Option<Conversation>>,
    pub accounts: Vec<AccountId>,
    spare: Vec<Vec<SlotKey>>,
    pub conversation: ConversationId,
    pub log: Vec<Ordered>,
    pub views: BTreeMap<Epoch, View>,
    pub epoch: Epoch,
    sent: Vec<Vec<(CoreHash, Content)>>,
    snapshots: Vec<Snapshot>,
    macs: HashMap<(usize, SlotKey), MacKeys>,
    /// Whether ordering an envelope delivers it to the member at once (a
    /// test that drives a member's feed itself turns this off).
    pub deliver_now: Vec<bool>,
    /// Malicious servers that check only submission tags: they attest, with
    /// forged tags, envelopes the real servers refuse (an Update from a
    /// slot that is not an Admin, or leaving no Admin), so that a test sees
    /// what the members' own rules do with them. Off unless a test turns
    /// it on before its first envelope.
    pub lax_servers: bool,
    /// Key periods of a group-keyed conversation, when [`World::setup`]
    /// should create one (`None`: pairwise-keyed, the default).
    pub group_period: Option<u64>,
    /// The history policy [`World::setup`] creates the conversation with
    /// and [`World::prepare_update`] states for the next epoch (`Joined`
    /// by default; `Shared` needs `group_period`).
    pub history: crate::content::Visibility,
    /// An order server whose tags (and key shares) the router's
    /// deliveries leave out, as if it were down: it still attests (the
    /// log stays whole), members just never hear from it.
    pub down_server: Option<u32>,
}

impl World {
    /// `members` members with all pairwise sessions, `servers` order servers.
    pub fn new(seed: u64, members: usize, servers: usize, quorum: usize) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let servers: Vec<_> = (0..servers)
            .map(|_| {
                let mut b = [0u8; 32];
                rand::Rng::fill_bytes(&mut rng, &mut b);
                OrderServerSecret::from_bytes(b)
            })
            .collect();
        let config =
            ConversationConfig::new(servers.iter().map(|s| s.public_key()).collect(), quorum);
        let honest = servers
            .iter()
            .enumerate()
            .map(|(position, s)| HonestServer {
                core: OrderCore::new(
                    OrderServerSecret::from_bytes(*s.to_bytes()),
                    position as u32,
                    Limits::default(),
                ),
                store: MemStore::new(),
            })
            .collect();
        let mut secrets: Vec<Secrets> = (0..members).map(|_| Secrets::default()).collect();
        let mut spare = Vec::new();
        for s in &mut secrets {
            spare.push(s.order_keys.generate(&mut rng, 8));
        }
        // Every member starts a session with every other, each from a
        // bundle with its own one-time key (one-time keys are used once).
        for i in 0..members {
            for j in 0..members {
                if i != j {
                    let b = secrets[j].pairwise.bundle(true);
                    secrets[i].pairwise.start_session(&b).unwrap();
                }
            }
        }
        let accounts = secrets.iter().map(|s| s.pairwise.account_id()).collect();
        let mut cid = [0u8; 32];
        rand::Rng::fill_bytes(&mut rng, &mut cid);
        Self {
            rng,
            servers,
            honest,
            config,
            convs: (0..members).map(|_| None).collect(),
            secrets,
            accounts,
            spare,
            conversation: ConversationId::from_bytes(cid),
            log: Vec::new(),
            views: BTreeMap::new(),
            epoch: Epoch(0),
            sent: (0..members).map(|_| Vec::new()).collect(),
            snapshots: Vec::new(),
            macs: HashMap::new(),
            deliver_now: vec![true; members],
            lax_servers: false,
            group_period: None,
            history: crate::content::Visibility::Joined,
            down_server: None,
        }
    }

    /// A fresh padded, shuffled slot set for `roster` (member -> role).
    /// `avoid`: current holders and their slots; joiners (members not among
    /// them) must not take those slots, as a router must ensure.
    fn assign(
        &mut self,
        roster: &BTreeMap<usize, SlotRole>,
        padding: usize,
        padding_role: SlotRole,
        avoid: &[(usize, SlotIndex)],
    ) -> (View, Vec<MemberEntry>) {
        let mut entries: Vec<(Option<usize>, SlotEntry)> = Vec::new();
        for (m, role) in roster {
            let key = self.spare[*m].remove(0);
            entries.push((Some(*m), SlotEntry { key, role: *role }));
        }
        for _ in 0..padding {
            let mut b = [0u8; 32];
            rand::Rng::fill_bytes(&mut self.rng, &mut b);
            entries.push((
                None,
                SlotEntry {
                    key: SlotSecret::from_bytes(b).public_key(),
                    role: padding_role,
                },
            ));
        }
        // Fisher-Yates with the world's RNG, until no joiner takes a slot a
        // current member holds.
        let current: Vec<usize> = avoid.iter().map(|(m, _)| *m).collect();
        loop {
            for i in (1..entries.len()).rev() {
                let j = (rand::Rng::next_u64(&mut self.rng) % (i as u64 + 1)) as usize;
                entries.swap(i, j);
            }
            let clash = entries.iter().enumerate().any(|(i, (m, _))| {
                m.is_some_and(|m| !current.contains(&m))
                    && avoid.iter().any(|(_, s)| s.0 as usize == i)
            });
            if !clash {
                break;
            }
        }
        let slots = SlotSet::new(entries.iter().map(|(_, e)| *e).collect()).unwrap();
        let mut holders = BTreeMap::new();
        let mut members = Vec::new();
        for (i, (m, e)) in entries.iter().enumerate() {
            if let Some(m) = m {
                holders.insert(*m, SlotIndex(i as u32));
                members.push(MemberEntry {
                    account: self.accounts[*m],
                    role: e.role,
                    slot: SlotIndex(i as u32),
                });
            }
        }
        (
            View {
                slots,
                holders,
                roles: roster.clone(),
            },
            members,
        )
    }

    /// Member `creator` creates the conversation with every member; the
    /// Setup is ordered and delivered to every member.
    pub fn setup(&mut self, creator: usize) {
        let all: Vec<usize> = (0..self.accounts.len()).collect();
        self.setup_with(creator, &all);
    }

    /// Like [`World::setup`] with only `initial` as members; the others
    /// wait to be added.
    pub fn setup_with(&mut self, creator: usize, initial: &[usize]) {
        let roster: BTreeMap<_, _> = initial
            .iter()
            .copied()
            .map(|m| {
                (
                    m,
                    if m == creator {
                        SlotRole::Admin
                    } else {
                        SlotRole::Member
                    },
                )
            })
            .collect();
        let (view, members) = self.assign(&roster, 1, SlotRole::Member, &[]);
        let mut rng = StdRng::seed_from_u64(rand::Rng::next_u64(&mut self.rng));
        let (conv, composed) = Conversation::create_with_history(
            self.conversation,
            self.config.clone(),
            view.slots.clone(),
            members,
            self.group_period,
            self.history,
            &mut rng,
            &mut self.secrets[creator],
        )
        .unwrap();
        for m in 0..self.accounts.len() {
            self.convs[m] = Some(if m == creator {
                conv.clone()
            } else if roster.contains_key(&m) {
                Conversation::invited(self.conversation, self.accounts[m], self.config.clone())
            } else {
                Conversation::joining(self.conversation, self.accounts[m], self.config.clone())
            });
        }
        for m in 0..self.accounts.len() {
            let s = &self.secrets[m];
            self.snapshots.push(Snapshot {
                pairwise: s.pairwise.pickle(),
                keys: s.order_keys.export().iter().map(|k| **k).collect(),
                conv: self.convs[m].clone().unwrap(),
            });
        }
        for server in &mut self.honest {
            let mut txn = server.store.begin();
            server
                .core
                .open(&mut txn, &self.conversation, &view.slots)
                .unwrap()
                .unwrap();
            txn.commit();
        }
        self.views.insert(Epoch(0), view);
        self.order_and_deliver(composed, None);
    }

    /// A fresh replica of member `m` as it was right after the Setup was
    /// composed, knowing everything it sent since.
    pub fn replica(&self, m: usize) -> (Secrets, Conversation) {
        let s = &self.snapshots[m];
        let pickle = serde_json::to_string(&s.pairwise).unwrap();
        let pairwise = Pairwise::from_pickle(serde_json::from_str(&pickle).unwrap());
        let mut order_keys = OrderKeyring::new();
        for k in &s.keys {
            order_keys.insert(SlotSecret::from_bytes(*k));
        }
        let mut conv = s.conv.clone();
        for (core, content) in &self.sent[m] {
            conv.restore_sent(*core, content.clone());
        }
        (
            Secrets {
                pairwise,
                order_keys,
            },
            conv,
        )
    }

    /// Delivers to member `m` every honest delivery from its next expected
    /// index on (a reconnect and fetch).
    pub fn catch_up(&mut self, m: usize) {
        let Some(from) = self.convs[m].as_ref().map(|c| c.next_expected()) else {
            return;
        };
        let all: Vec<u32> = (0..self.servers.len() as u32).collect();
        for i in from.0..self.log.len() as u64 {
            if let Some(d) = self.delivery(Index(i), m, &all) {
                self.receive(m, d);
            }
        }
    }

    /// Hands one delivery to member `m`.
    pub fn receive(&mut self, m: usize, d: Delivery) {
        if let Some(c) = self.convs[m].as_mut() {
            c.receive(d, &mut self.secrets[m]);
        }
    }

    /// Member `m` sends `content`; it is ordered and delivered to everyone.
    /// The sender's own rule checks are skipped: a test's member may be a
    /// compromised one.
    pub fn send(&mut self, m: usize, content: Content) -> Index {
        self.catch_up(m);
        let mut rng = StdRng::seed_from_u64(rand::Rng::next_u64(&mut self.rng));
        let conv = self.convs[m].as_mut().unwrap();
        let composed = conv
            .compose_unchecked(content.clone(), &mut rng, &mut self.secrets[m])
            .unwrap();
        let next_slots = match &content {
            Content::Update(u) => Some(u.next_slots.clone()),
            _ => None,
        };
        self.sent[m].push((composed.envelope.header().core_hash(), content));
        self.order_and_deliver(composed, next_slots)
    }

    /// The stored envelopes from index 0 through `through`, as the router's
    /// FetchHistory answers them (`docs/PROTOCOL.md` section 4.6).
    pub fn history_items(&self, through: Index) -> Vec<crate::history::HistoryItem> {
        self.log
            .iter()
            .take_while(|o| o.index <= through)
            .map(|o| crate::history::HistoryItem {
                index: o.index,
                header: o.envelope.header().clone(),
                body: o.envelope.body().to_vec(),
                block_digests: o.envelope.summary().block_digests,
                history_block: o.envelope.history_block().map(<[u8]>::to_vec),
                previous_head: Some(o.prev),
            })
            .collect()
    }

    /// Member `m` sends `content` with a history block forged as `forged`
    /// says (a compromised member); ordered and delivered like any other.
    pub fn send_forged_history(
        &mut self,
        m: usize,
        content: Content,
        forged: crate::history::ForgedHistory,
    ) -> Index {
        self.catch_up(m);
        let mut rng = StdRng::seed_from_u64(rand::Rng::next_u64(&mut self.rng));
        let conv = self.convs[m].as_mut().unwrap();
        let composed = conv
            .compose_forged_history(content.clone(), forged, &mut rng, &mut self.secrets[m])
            .unwrap();
        self.sent[m].push((composed.envelope.header().core_hash(), content));
        self.order_and_deliver(composed, None)
    }

    /// Member `m` sends an Update whose next member list is `next` (which
    /// need not follow the rules).
    pub fn update(&mut self, m: usize, change: Change, next: BTreeMap<usize, SlotRole>) -> Index {
        let content = self.prepare_update(change, next, SlotRole::Member);
        self.send_update(m, content)
    }

    /// What the router hands an Admin for an Update to `next`: fresh slots
    /// for the members, two padding slots with `padding_role`; the next
    /// epoch's view is recorded.
    pub fn prepare_update(
        &mut self,
        change: Change,
        next: BTreeMap<usize, SlotRole>,
        padding_role: SlotRole,
    ) -> UpdateContent {
        let avoid: Vec<(usize, SlotIndex)> = self.views[&self.epoch]
            .holders
            .iter()
            .map(|(m, s)| (*m, *s))
            .collect();
        let (view, members) = self.assign(&next, 2, padding_role, &avoid);
        let content = UpdateContent {
            change,
            next_slots: view.slots.clone(),
            next_members: members,
            history: self.history,
        };
        // The router prepares the next epoch before the Update is ordered.
        self.views.insert(Epoch(self.epoch.0 + 1), view);
        content
    }

    /// Member `m` sends a prepared Update (rules unchecked); the world moves
    /// to the next epoch.
    pub fn send_update(&mut self, m: usize, content: UpdateContent) -> Index {
        let next_epoch = Epoch(self.epoch.0 + 1);
        let index = self.send(m, Content::Update(content));
        self.epoch = next_epoch;
        index
    }

    /// The role of each member (by its number in the world) in the
    /// current epoch.
    pub fn roster(&self) -> BTreeMap<usize, SlotRole> {
        self.views[&self.epoch].roles.clone()
    }

    /// The honest path: every order server's real core attests the
    /// envelope at the next index (checking its submission tag and every
    /// other rule) and the router delivers it with their tags. A refusal
    /// fails the test: an envelope honest servers would not attest must be
    /// ordered with [`World::order_forged`] or by [`World::lax_servers`].
    fn order_and_deliver(&mut self, composed: Composed, next_slots: Option<SlotSet>) -> Index {
        let env = composed.envelope;
        if self.lax_servers {
            let slots = &self.views[&env.header().epoch()].slots;
            let slot_key = slots.get(env.header().sender()).unwrap().key;
            let hash = env.hash();
            for s in 0..self.servers.len() {
                let k = self.raw_mac_keys(s, slot_key);
                assert!(k.verify_submission(
                    &hash,
                    env.header().sequence(),
                    &composed.submission_tags[s]
                ));
            }
            return self.order_forged(env);
        }
        let index = Index(self.log.len() as u64);
        let previous_head = self.previous_head(index);
        let mut attestations = Vec::with_capacity(self.honest.len());
        for (s, server) in self.honest.iter_mut().enumerate() {
            let request = AttestRequest {
                envelope: env.summary(),
                submission_tag: composed.submission_tags[s],
                index,
                previous_head,
                next_slots: next_slots.clone(),
            };
            let mut txn = server.store.begin();
            match server.core.attest(&mut txn, &request).unwrap() {
                Ok(a) => attestations.push(a),
                Err(refusal) => panic!(
                    "honest order server {s} refused index {}: {refusal}",
                    index.0
                ),
            }
            txn.commit();
        }
        self.push_and_deliver(env, Some(attestations))
    }

    /// Malicious servers: orders any envelope (no check at all, no honest
    /// server sees it) and delivers it to every member's builder with tags
    /// every server forges with its raw keys. The honest servers' state no
    /// longer follows the log after this.
    pub fn order_forged(&mut self, env: Envelope) -> Index {
        self.push_and_deliver(env, None)
    }

    /// Appends `env` to the log, attested by `attestations` (forged when
    /// `None`), and delivers it to every member that takes deliveries now.
    fn push_and_deliver(&mut self, env: Envelope, attestations: Option<Vec<Attestation>>) -> Index {
        let epoch = env.header().epoch();
        let hash = env.hash();
        let index = Index(self.log.len() as u64);
        let prev = self.previous_head(index);
        let head = prev.next(&self.conversation, epoch, index, &hash);
        if let Some(a) = &attestations {
            assert!(
                a.iter().all(|a| a.index == index && a.head == head),
                "the order servers attested another head than the log's"
            );
        }
        self.log.push(Ordered {
            index,
            epoch,
            envelope: env,
            head,
            prev,
            attestations,
        });
        let all: Vec<u32> = (0..self.servers.len() as u32)
            .filter(|s| Some(*s) != self.down_server)
            .collect();
        for m in 0..self.accounts.len() {
            if !self.deliver_now[m] {
                continue;
            }
            if let Some(d) = self.delivery(index, m, &all) {
                let conv = self.convs[m].as_mut().unwrap();
                conv.receive(d, &mut self.secrets[m]);
            }
        }
        index
    }

    /// The MAC keys `server` shares with `slot`, raw: for forging tags as
    /// a malicious server, or checking what a server would accept.
    pub fn raw_mac_keys(&mut self, server: usize, slot: SlotKey) -> MacKeys {
        let servers = &self.servers;
        self.macs
            .entry((server, slot))
            .or_insert_with(|| servers[server].mac_keys(&slot).unwrap())
            .clone()
    }

    /// Member `m`'s slot key in `epoch`.
    pub fn slot_key(&self, epoch: Epoch, m: usize) -> Option<(SlotIndex, SlotKey)> {
        let v = self.views.get(&epoch)?;
        let slot = *v.holders.get(&m)?;
        Some((slot, v.slots.get(slot)?.key))
    }

    /// A forged attestation: `server` MACs `head` at `index` for member
    /// `m` with its raw keys, whatever it attested.
    pub fn forge_attestation(
        &mut self,
        server: u32,
        m: usize,
        epoch: Epoch,
        index: Index,
        head: Head,
    ) -> Option<Attestation> {
        let (_, key) = self.slot_key(epoch, m)?;
        let k = self.raw_mac_keys(server as usize, key);
        let tag = k.attest(&AttestationStatement {
            conversation: self.conversation,
            epoch,
            index,
            head,
        });
        Some(Attestation {
            server,
            index,
            head,
            tags: vec![tag],
            next_tags: vec![],
            key_shares: Vec::new(),
            log_index: None,
        })
    }

    /// The honest delivery of `index` to member `m`, with the tags
    /// `servers` returned when they attested it (forged ones for an
    /// envelope ordered with [`World::order_forged`]).
    pub fn delivery(&mut self, index: Index, m: usize, servers: &[u32]) -> Option<Delivery> {
        let o = self.log.get(index.0 as usize)?.clone();
        let Some(attested) = &o.attestations else {
            return self.cut_forged(&o.envelope, index, o.epoch, o.head, m, servers);
        };
        // Like the router: the member's own tag, by its slot in the
        // envelope's epoch and, for an Update, in the next.
        let (now, next) = self.slots_of(&o.envelope, o.epoch, m);
        let slot = now.or(next)?.0;
        let attestations = servers
            .iter()
            .map(|s| {
                let a = &attested[*s as usize];
                Attestation {
                    server: a.server,
                    index: a.index,
                    head: a.head,
                    tags: now.map(|(i, _)| a.tags[i.0 as usize]).into_iter().collect(),
                    next_tags: next
                        .map(|(i, _)| a.next_tags[i.0 as usize])
                        .into_iter()
                        .collect(),
                    // The share sealed for the member's slot: its next
                    // slot in an Update's attestation.
                    key_shares: if o.envelope.header().kind() == EnvelopeKind::Update {
                        next
                    } else {
                        now
                    }
                    .and_then(|(i, _)| a.key_shares.get(i.0 as usize).copied())
                    .into_iter()
                    .collect(),
                    log_index: a.log_index,
                }
            })
            .collect();
        Some(delivery_of(
            &o.envelope,
            self.conversation,
            index,
            slot,
            attestations,
            Some(o.prev),
        ))
    }

    /// Member `m`'s slot in `env`'s epoch and, for an Update that keeps or
    /// adds it, in the next.
    #[allow(clippy::type_complexity)]
    fn slots_of(
        &self,
        env: &Envelope,
        epoch: Epoch,
        m: usize,
    ) -> (Option<(SlotIndex, SlotKey)>, Option<(SlotIndex, SlotKey)>) {
        let now = self.slot_key(epoch, m);
        let next = if env.header().kind() == EnvelopeKind::Update {
            self.slot_key(Epoch(epoch.0 + 1), m)
        } else {
            None
        };
        (now, next)
    }

    /// A delivery of `env` at `index` to `m` on `head`, with tags `servers`
    /// forge with their raw keys (a fork, or tags for an envelope they
    /// never attested).
    pub fn cut_forged(
        &mut self,
        env: &Envelope,
        index: Index,
        epoch: Epoch,
        head: Head,
        m: usize,
        servers: &[u32],
    ) -> Option<Delivery> {
        // Like the router: the block by the member's slot in the envelope's
        // epoch or, for an Update that adds it, in the next; its tags
        // likewise (`tags` and `next_tags`).
        let (now, next) = self.slots_of(env, epoch, m);
        let slot = now.or(next)?.0;
        let mut attestations = Vec::new();
        for s in servers {
            let mut a = Attestation {
                server: *s,
                index,
                head,
                tags: vec![],
                next_tags: vec![],
                key_shares: Vec::new(),
                log_index: None,
            };
            let statement = AttestationStatement {
                conversation: self.conversation,
                epoch,
                index,
                head,
            };
            if let Some((_, key)) = now {
                a.tags
                    .push(self.raw_mac_keys(*s as usize, key).attest(&statement));
            }
            if let Some((_, key)) = next {
                a.next_tags
                    .push(self.raw_mac_keys(*s as usize, key).attest(&statement));
            }
            attestations.push(a);
        }
        // Like the router: the head before the index in its log.
        let previous = self.previous_head(index);
        Some(delivery_of(
            env,
            self.conversation,
            index,
            slot,
            attestations,
            Some(previous),
        ))
    }

    /// The head before `index` in the log (genesis for index 0).
    pub fn previous_head(&self, index: Index) -> Head {
        index
            .0
            .checked_sub(1)
            .and_then(|i| self.log.get(i as usize))
            .map_or(Head::genesis(&self.conversation), |o| o.head)
    }

    /// A copy of the envelope at `index` with a different body (a fork):
    /// its header, hash and head differ from the honest one.
    pub fn forked(&self, index: Index, salt: u8) -> Option<(Envelope, EnvelopeHash, Head)> {
        let o = self.log.get(index.0 as usize)?;
        let mut body = o.envelope.body().to_vec();
        body.push(salt);
        let mut fields = o.envelope.header().fields();
        fields.body_hash = grompi_proto::BodyHash::of(&body);
        let header = grompi_proto::EnvelopeHeader::new(fields).ok()?;
        let env = Envelope::new(header, body, o.envelope.blocks().to_vec()).ok()?;
        let hash = env.hash();
        let head = o.prev.next(&self.conversation, o.epoch, index, &hash);
        Some((env, hash, head))
    }

    /// Everything the builder of member `m` accepted.
    pub fn accepted(&self, m: usize) -> Vec<(Index, EnvelopeHash, Head)> {
        self.convs[m]
            .as_ref()
            .map(|c| {
                c.transcript()
                    .entries()
                    .iter()
                    .map(|e| (e.index, e.envelope_hash, e.head))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// An unused order key of member `m` (one the router knows: members
    /// upload them), without using it.
    pub fn spare_key(&self, m: usize, nth: usize) -> SlotKey {
        self.spare[m][nth]
    }

    /// The tag a server computes with the keys of `other`'s slot (a
    /// wrong-key tag when shown to `m`).
    pub fn wrong_key_tag(
        &mut self,
        server: u32,
        other: usize,
        epoch: Epoch,
        index: Index,
        head: Head,
    ) -> Option<Tag> {
        self.forge_attestation(server, other, epoch, index, head)
            .map(|a| a.tags[0])
    }
}

/// An account the router registers for itself: it starts Olm sessions from
/// members' published bundles and composes any envelope, with any header
/// fields, slot set, roles and member list (the router's full power).
pub struct Puppet {
    pub secrets: Secrets,
    rng: StdRng,
}

impl Puppet {
    pub fn new(seed: u64) -> Self {
        Self {
            secrets: Secrets::default(),
            rng: StdRng::seed_from_u64(seed),
        }
    }

    pub fn account(&self) -> AccountId {
        self.secrets.pairwise.account_id()
    }

    /// Starts a session with the holder of `victim` from its published
    /// bundle.
    pub fn befriend(&mut self, victim: &mut Secrets) {
        let bundle = victim.pairwise.bundle(true);
        self.secrets.pairwise.start_session(&bundle).unwrap();
    }

    /// Composes an envelope with the given header fields, addressed to
    /// `recipients` (slot, account), with submission tags from a throwaway
    /// slot key (the router's, or nobody's).
    #[allow(clippy::too_many_arguments)]
    pub fn compose(
        &mut self,
        servers: &[grompi_proto::OrderServerKey],
        conversation: ConversationId,
        epoch: Epoch,
        sender: SlotIndex,
        sequence: grompi_proto::Sequence,
        last_seen: Option<Index>,
        recipients: &[(SlotIndex, AccountId)],
        content: &Content,
    ) -> Envelope {
        let mut b = [0u8; 32];
        rand::Rng::fill_bytes(&mut self.rng, &mut b);
        let keys =
            crate::keyring::SlotMacKeys::derive(&SlotSecret::from_bytes(b), servers).unwrap();
        crate::compose::compose(
            &crate::compose::Sending {
                conversation,
                epoch,
                sender,
                sequence,
                last_seen,
                recipients,
                mac_keys: &keys,
            },
            content,
            &mut self.rng,
            &mut self.secrets.pairwise,
        )
        .unwrap()
        .envelope
    }
}

/// A delivery of `env` at `index` to a member holding `slot`, with the
/// given attestations and previous head (any of them forged or empty).
pub fn delivery_of(
    env: &Envelope,
    conversation: ConversationId,
    index: Index,
    slot: SlotIndex,
    attestations: Vec<Attestation>,
    previous_head: Option<Head>,
) -> Delivery {
    let block = env
        .blocks()
        .iter()
        .enumerate()
        .find(|(_, b)| b.recipient == slot)
        .map(|(p, b)| (p as u32, b.clone()));
    Delivery {
        conversation,
        index,
        header: env.header().clone(),
        body: env.body().to_vec(),
        block,
        block_digests: env.blocks().iter().map(|b| b.digest()).collect(),
        attestations,
        previous_head,
        history_block: env.history_block().map(<[u8]>::to_vec),
    }
}
