//! The model: the real cores' states, what the router has seen, and every
//! action an honest party or the adversary can take from a state.
//!
//! Members are the real [`Conversation`] with their real secrets (Olm
//! sessions pickled between steps); order servers are the real
//! `OrderCore` over a `MemStore` per server; the router is the adversary
//! itself (an honest router's behaviour is among its moves) and, when the
//! bounds say so ([`RouterMode`]), also the router's real core run by the
//! shipping driver, which forwards honest submissions ([`crate::router`]).
//! Every value
//! the adversary uses is a real value it has seen: envelopes members or
//! its puppet composed, attestations servers returned, heads, proofs. It
//! never computes a MAC it has no key for, so the crypto is Dolev-Yao by
//! construction, and every acceptance is decided by the real client code.
//!
//! Envelopes, placements and heads carry *labels* built from what they
//! mean (who composed what in which epoch with which sequence and causal
//! context; which envelope at which index after which head), not from
//! their bytes (Olm draws its own randomness). Two paths that did the same
//! things in another order reach states with the same labels, which the
//! explorer treats as one state.

use crate::cores::{
    Change, Composed, Content, Conversation, ConversationConfig, Delivery, HeadProofOutcome,
    Incoming, MemberEntry, OrderKeyring, Pairwise, PairwisePickle, Phase, Secrets, Sending,
    SlotMacKeys, UpdateContent, Weaken, compose, switches,
};
use crate::router::{Cut, Fed, HonestRouter, RouterLog, RouterMode};
use grompi_order_server::core::OrderCore;
use grompi_order_server::limits::Limits;
use grompi_order_server::mem_store::MemStore;
use grompi_order_server::request::AttestRequest;
use grompi_proto::envelope::EnvelopeSummary;
use grompi_proto::mac::{Attestation, AttestationStatement, HeadProof, Tag};
use grompi_proto::{
    AccountId, ConversationId, Envelope, EnvelopeKind, Epoch, Head, Index, OrderServerSecret,
    SlotEntry, SlotIndex, SlotKey, SlotRole, SlotSecret, SlotSet, pb,
};
use grompi_router::core::Submission;
use grompi_router::fanout::{JobResult, OpenOutcome, ServerJob};
use grompi_router::record::ConversationRecord;
use grompi_router::slots::{EpochSlots, PaddingSecret};
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::rc::Rc;

/// The bounds of one exploration and the adversary's powers in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// Order servers (N).
    pub servers: usize,
    /// The quorum (t).
    pub quorum: usize,
    /// Order servers that collude with the router: they tag whatever the
    /// router asks, at any index, after any head it has seen.
    pub equivocating: Vec<u32>,
    /// Members at the Setup; member 0 is the only Admin.
    pub members: usize,
    /// One more account that the Admin may add (one join).
    pub joiner: bool,
    /// Whether the Admin may remove the last initial member (one removal).
    pub removal: bool,
    /// Honest Messages composed in total.
    pub messages: usize,
    /// Honest Receipts composed in total.
    pub receipts: usize,
    /// The router's puppet account: substitutes Updates (any roster and
    /// slot roles from a small pool) and speaks from padding slots it holds.
    pub puppet: bool,
    /// The router offers Admins next slot sets whose padding slots have the
    /// Admin role (besides the ordinary ones).
    pub admin_padding: bool,
    /// Members ask for head proofs and the router answers with any proof it
    /// holds (fresh, replayed from an earlier round, or none).
    pub head_proofs: bool,
    /// Member 0 (the Admin) is compromised: besides its honest actions it
    /// sends an Update its keys allow but the rules do not (one that adds
    /// the joiner and also drops the last member). The properties are
    /// checked over the other members.
    pub compromised_admin: bool,
    /// Who forwards: the adversary's moves only, the shipping router
    /// driver only, or both.
    pub router: RouterMode,
    /// Maximum number of actions on a path.
    pub depth: usize,
    /// Fixes undone (test-only switches of the client core).
    pub weaken: Weaken,
}

impl Bounds {
    /// N = 2, t = 2, both honest, two members, one message: the smallest
    /// configuration with something to order.
    pub fn small() -> Self {
        Self {
            servers: 2,
            quorum: 2,
            equivocating: Vec::new(),
            members: 2,
            joiner: false,
            removal: false,
            messages: 1,
            receipts: 0,
            puppet: false,
            admin_padding: false,
            head_proofs: false,
            compromised_admin: false,
            router: RouterMode::Adversary,
            depth: 6,
            weaken: Weaken::default(),
        }
    }

    fn accounts(&self) -> usize {
        self.members + usize::from(self.joiner)
    }

    fn joiner_id(&self) -> Option<usize> {
        self.joiner.then_some(self.members)
    }

    /// The puppet's number (and its slot position in every slot set).
    fn puppet_id(&self) -> usize {
        self.accounts()
    }
}

/// Which membership change an honest Admin composes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChangeKind {
    /// Adds the joiner as a Member.
    AddJoiner,
    /// Removes the last initial member.
    RemoveLast,
}

/// One step. Numbers refer to the state's pools (envelopes, placements),
/// which a path fills deterministically, so a trace replays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// An honest member composes a Message and submits it.
    Message {
        /// The member.
        member: usize,
    },
    /// An honest member composes a Receipt for what it accepted.
    Receipt {
        /// The member.
        member: usize,
    },
    /// The honest Admin composes an Update with the next slot set the
    /// router offers (ordinary padding, or Admin-role padding).
    Update {
        /// The Admin.
        member: usize,
        /// The change.
        change: ChangeKind,
        /// Whether the router's offered set has Admin-role padding slots.
        admin_padding: bool,
    },
    /// The router asks an honest order server to attest an envelope at the
    /// server's next index (the only request it would accept).
    Attest {
        /// The server.
        server: u32,
        /// The envelope.
        env: usize,
    },
    /// The router delivers an envelope to a member with the tags on an
    /// envelope (itself, or one a puppet envelope substitutes) at the index
    /// after a placement: what the honest servers tagged there, and every
    /// colluding server's tag (they tag whatever the router asks), and,
    /// for a joiner, with or without the previous head.
    Deliver {
        /// The member.
        member: usize,
        /// The envelope delivered.
        env: usize,
        /// The envelope whose tags go with it.
        tagged: usize,
        /// The placement whose head is the previous head.
        after: usize,
        /// The previous head the delivery names.
        previous: Previous,
    },
    /// The puppet composes a substitute for an honest Update: the same
    /// header fields, the same change, the genuine next members plus
    /// itself in a padding slot (as a Member in the genuine set, or as an
    /// Admin of a slot re-roled Admin).
    Substitute {
        /// The genuine Update.
        env: usize,
        /// Whether the puppet lists itself as an Admin.
        admin: bool,
    },
    /// The puppet speaks from an Admin-role padding slot of the set an
    /// Update installs (the router holds every padding secret): an Update
    /// that adds the joiner and lists the puppet as an Admin.
    PaddingUpdate {
        /// The Update whose next set has the padding slot.
        env: usize,
    },
    /// The compromised Admin sends an Update that adds the joiner and, in
    /// the same next list, drops the last member (a list that is not the
    /// current one with the change applied).
    RogueUpdate {
        /// The compromised Admin.
        member: usize,
    },
    /// A member asks every order server for a head proof; honest servers
    /// answer the router at once.
    ProofRequest {
        /// The member.
        member: usize,
    },
    /// The router's core has a job in flight for an order server: the
    /// server answers the oldest (an honest server with its real core, a
    /// colluding one by tagging what it is asked), and the core takes the
    /// answer through the shipping driver, delivering what became quorate.
    Forward {
        /// The server.
        server: u32,
    },
    /// The router answers a member's head-proof request: per server the
    /// fresh proof, a proof of an earlier round for that member, or none.
    ProofAnswer {
        /// The member.
        member: usize,
        /// Servers answered with a proof of an earlier round.
        stale: u32,
        /// Servers not answered.
        dropped: u32,
    },
}

/// The previous head a delivery names (only a joiner reads it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Previous {
    /// The head of the placement the tags chain from.
    Genuine,
    /// None (emptied).
    Omitted,
    /// The head of another placement at the same index (rewritten to a
    /// head seen elsewhere).
    Other(usize),
}

/// An envelope the router has seen.
#[derive(Clone)]
pub struct EnvRec {
    /// What it means (see the module documentation).
    pub label: Rc<str>,
    /// The envelope.
    pub env: Envelope,
    /// Its submission tags, in server order.
    pub sub_tags: Vec<Tag>,
    /// The slot set of its epoch.
    pub slots: SlotSet,
    /// For an Update: the next slot set.
    pub next_slots: Option<SlotSet>,
    /// Who holds a slot in its epoch (account numbers; a holder's slot is
    /// its number).
    pub now: BTreeMap<usize, SlotRole>,
    /// For an Update: who holds a slot in the next epoch.
    pub next: BTreeMap<usize, SlotRole>,
    /// For an honest Update: the change it makes.
    pub change: Option<Change>,
    /// When the next set has Admin-role padding slots: its epoch (the
    /// router holds their secrets).
    pub admin_pad: Option<u64>,
    /// Composed by the puppet.
    pub by_puppet: bool,
}

/// An envelope at an index after a head, with the tags servers gave it.
#[derive(Clone)]
pub struct Placement {
    /// What it means: envelope, index, previous placement.
    pub label: Rc<str>,
    /// The envelope.
    pub env: usize,
    /// The index.
    pub index: Index,
    /// The head before.
    pub prev: Head,
    /// The head after.
    pub head: Head,
    /// The epoch after this index (the next one after an Update).
    pub epoch_after: Epoch,
    /// Per server, its attestation (all slots' tags), if it gave one.
    pub tags: Vec<Option<Attestation>>,
    /// Servers whose tags here came from the real (honest) core.
    pub genuine: u32,
}

/// A head proof the router holds.
#[derive(Clone)]
pub struct ProofRec {
    /// For which member.
    pub member: usize,
    /// In which of that member's rounds.
    pub round: u32,
    /// The proof.
    pub proof: HeadProof,
}

/// One member: the real conversation and its secrets, and what the
/// checker recorded about it.
#[derive(Clone)]
pub struct MemberState {
    /// The real conversation.
    pub conv: Conversation,
    /// Its Olm account and sessions, pickled.
    pairwise: Rc<str>,
    /// Its unused order keys.
    keys: Rc<Vec<[u8; 32]>>,
    /// Labels of the deliveries it received.
    pub delivered: BTreeSet<Rc<str>>,
    /// Every alert it raised, as text.
    pub alerts: Vec<String>,
    /// Per epoch, the roster it adopted.
    pub rosters: BTreeMap<Epoch, BTreeMap<AccountId, SlotRole>>,
    /// Head-proof rounds started.
    pub rounds: u32,
    /// Per server, the count its fresh proof of the open round proved.
    pub fresh: Option<Vec<Option<u64>>>,
    /// Set when a round read as consistent a server that had attested
    /// more than this member accepted (withholding not detected).
    pub silent: Option<String>,
    /// Deliveries cut by the router's core after which this member had
    /// accepted more indices than before (coverage only: not part of the
    /// fingerprint).
    pub from_router: usize,
}

/// A state of the whole system.
#[derive(Clone)]
pub struct State {
    /// Members by number (the joiner last).
    pub members: Vec<Rc<MemberState>>,
    /// The puppet's Olm account and sessions, pickled.
    puppet: Rc<str>,
    /// Each order server's real store.
    servers: Vec<Rc<MemStore>>,
    /// Each honest server's last placement.
    tips: Vec<usize>,
    /// Envelopes seen.
    pub envs: Vec<Rc<EnvRec>>,
    /// Placements seen.
    pub placements: Vec<Rc<Placement>>,
    /// Head proofs seen.
    pub proofs: Vec<Rc<ProofRec>>,
    /// Honest Messages composed.
    messages: usize,
    /// Honest Receipts composed.
    receipts: usize,
    /// Labels of heads (placement labels; the Setup's is "S").
    heads: BTreeMap<Head, Rc<str>>,
    /// Monotone counter for fresh randomness on a path.
    nonce: u64,
    /// What the router's core received on this path (empty unless the
    /// shipping driver runs in the model).
    pub router: RouterLog,
    /// The servers of the router core's jobs in flight, in the order sent.
    pub router_jobs: Rc<Vec<u32>>,
}

/// What stays fixed for an exploration: keys, accounts, the cores.
pub struct Model {
    /// The bounds.
    pub bounds: Bounds,
    servers: Vec<OrderServerSecret>,
    cores: Vec<OrderCore>,
    /// The members' view of the network.
    pub config: ConversationConfig,
    /// The conversation.
    pub conversation: ConversationId,
    /// Account ids by number; the puppet's last.
    pub accounts: Vec<AccountId>,
    /// Each account's order keys, one per epoch (`keys[k][e]`).
    order_keys: Vec<Vec<SlotKey>>,
    /// The compromised Admin's order key secrets, by public key.
    admin_keys: Vec<(SlotKey, [u8; 32])>,
    /// The honest router (the shipping driver), when the bounds run it.
    honest: Option<HonestRouter>,
    seed: u64,
}

/// Why a step could not be built (a bug in the checker, not a finding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelError(pub String);

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ModelError {}

fn err<T>(what: impl fmt::Display) -> Result<T, ModelError> {
    Err(ModelError(what.to_string()))
}

fn bit(s: usize) -> u32 {
    1u32 << s
}

fn secrets_of(m: &MemberState) -> Result<Secrets, ModelError> {
    let p: PairwisePickle = serde_json::from_str(&m.pairwise).or_else(err)?;
    let mut order_keys = OrderKeyring::new();
    for k in m.keys.iter() {
        order_keys.insert(SlotSecret::from_bytes(*k));
    }
    Ok(Secrets {
        pairwise: Pairwise::from_pickle(p),
        order_keys,
    })
}

fn pickle(p: &Pairwise) -> Result<Rc<str>, ModelError> {
    Ok(serde_json::to_string(&p.pickle()).or_else(err)?.into())
}

fn keys_of(s: &Secrets) -> Rc<Vec<[u8; 32]>> {
    Rc::new(s.order_keys.export().iter().map(|k| **k).collect())
}

/// A padding slot's secret, held by the router: distinct per epoch,
/// position and kind of set.
fn padding_secret(epoch: u64, position: usize, admin: bool) -> SlotSecret {
    SlotSecret::from_bytes(padding_bytes(epoch, position, admin))
}

fn padding_bytes(epoch: u64, position: usize, admin: bool) -> [u8; 32] {
    let mut b = [0x5au8; 32];
    b[0] = 0xa0 | u8::from(admin);
    b[1..9].copy_from_slice(&epoch.to_be_bytes());
    b[9] = position as u8;
    b
}

/// The slot key the puppet holds in `epoch`.
fn puppet_secret(epoch: u64) -> SlotSecret {
    let mut b = [0x3cu8; 32];
    b[1..9].copy_from_slice(&epoch.to_be_bytes());
    SlotSecret::from_bytes(b)
}

impl Model {
    /// Builds the fixed part and the initial state: the conversation
    /// created by member 0, opened at every order server, its Setup
    /// attested by all and accepted by every initial member; the joiner
    /// waits to be added; the puppet has Olm sessions with everyone.
    pub fn new(bounds: Bounds, seed: u64) -> Result<(Self, State), ModelError> {
        if bounds.servers == 0 || bounds.servers > 8 || bounds.members == 0 {
            return err("bounds out of range");
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let servers: Vec<OrderServerSecret> = (0..bounds.servers)
            .map(|_| {
                let mut b = [0u8; 32];
                rand::Rng::fill_bytes(&mut rng, &mut b);
                OrderServerSecret::from_bytes(b)
            })
            .collect();
        let cores = servers
            .iter()
            .enumerate()
            .map(|(i, s)| {
                OrderCore::new(
                    OrderServerSecret::from_bytes(*s.to_bytes()),
                    i as u32,
                    Limits::default(),
                )
            })
            .collect();
        let config = ConversationConfig::new(
            servers.iter().map(|s| s.public_key()).collect(),
            bounds.quorum,
        );
        let n = bounds.accounts();
        let mut secrets: Vec<Secrets> = (0..n).map(|_| Secrets::default()).collect();
        let mut order_keys = Vec::new();
        for s in &mut secrets {
            order_keys.push(s.order_keys.generate(&mut rng, 4));
        }
        let admin_keys = secrets[0]
            .order_keys
            .export()
            .iter()
            .map(|b| (SlotSecret::from_bytes(**b).public_key(), **b))
            .collect();
        let mut puppet = Pairwise::new();
        for i in 0..n {
            for j in 0..n {
                if i != j {
                    let b = secrets[j].pairwise.bundle(true);
                    secrets[i].pairwise.start_session(&b).or_else(err)?;
                }
            }
            let b = secrets[i].pairwise.bundle(true);
            puppet.start_session(&b).or_else(err)?;
        }
        let mut accounts: Vec<AccountId> =
            secrets.iter().map(|s| s.pairwise.account_id()).collect();
        accounts.push(puppet.account_id());
        let mut cid = [0u8; 32];
        rand::Rng::fill_bytes(&mut rng, &mut cid);
        let conversation = ConversationId::from_bytes(cid);
        let mut model = Self {
            bounds,
            servers,
            cores,
            config,
            conversation,
            accounts,
            order_keys,
            admin_keys,
            honest: None,
            seed,
        };
        let mut state = model.initial(secrets, &puppet, &mut rng)?;
        if model.bounds.router.driver() {
            let (honest, jobs) = model.honest_router(&state)?;
            model.honest = Some(honest);
            state.router_jobs = Rc::new(jobs);
        }
        Ok((model, state))
    }

    /// The honest router: starts from a session per member and the
    /// conversation with the Setup's slot set, and replays the Setup's
    /// submission by member 0 and its fan-out (every server answers with
    /// its real core: the Setup is already attested, so each answers with
    /// its stored attestation). Returns it and the servers of the jobs
    /// still in flight.
    fn honest_router(&self, init: &State) -> Result<(HonestRouter, Vec<u32>), ModelError> {
        let roster = &init.envs[0].now;
        let record = ConversationRecord {
            id: self.conversation,
            creator: self.accounts[0],
            epochs: vec![self.epoch_slots(0, roster, false, Some(Index(0)))?],
            prepared: Vec::new(),
            opened: vec![true; self.bounds.servers],
        };
        let members = &self.accounts[..self.bounds.accounts()];
        let mut router = HonestRouter::new(
            self.config.servers.clone(),
            self.bounds.quorum,
            record,
            members,
            self.seed,
        );
        let mut run = router.start()?;
        let mut base = vec![Fed::Submit {
            account: 0,
            submission: Box::new(Submission {
                envelope: init.envs[0].env.clone(),
                tags: init.envs[0].sub_tags.clone(),
            }),
        }];
        run.feed(&router, &base[0])?;
        let mut scratch = init.clone();
        for _ in 0..64 {
            let Some(job) = run.jobs.first().cloned() else {
                break;
            };
            let (result, _) = self.answer_job(&mut scratch, &job, true)?;
            let fed = Fed::JobDone(result);
            run.feed(&router, &fed)?;
            base.push(fed);
        }
        let delivered = run
            .driver()
            .core()
            .conversation(&self.conversation)
            .map(|c| c.delivered);
        if delivered != Some(Index(1)) {
            return err("the router core did not deliver the Setup");
        }
        router.set_base(base);
        let jobs = run.jobs.iter().map(|j| j.server).collect();
        Ok((router, jobs))
    }

    /// The router's record of the slot set [`Model::slot_set`] builds:
    /// who holds each slot, and the padding slots' secrets.
    fn epoch_slots(
        &self,
        epoch: u64,
        roster: &BTreeMap<usize, SlotRole>,
        padding_admin: bool,
        first_index: Option<Index>,
    ) -> Result<EpochSlots, ModelError> {
        let (slots, _) = self.slot_set(epoch, roster, padding_admin)?;
        let positions = 0..=self.bounds.puppet_id();
        Ok(EpochSlots {
            epoch: Epoch(epoch),
            first_index,
            slots,
            holders: positions
                .clone()
                .map(|k| roster.contains_key(&k).then(|| self.accounts[k]))
                .collect(),
            padding: positions
                .filter(|k| !roster.contains_key(k))
                .map(|k| {
                    (
                        SlotIndex(k as u32),
                        PaddingSecret::new(padding_bytes(epoch, k, padding_admin)),
                    )
                })
                .collect(),
        })
    }

    /// The seed the model was built from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The slot set for `roster` in `epoch` (holder k at position k; the
    /// puppet at the last position; padding elsewhere).
    fn slot_set(
        &self,
        epoch: u64,
        roster: &BTreeMap<usize, SlotRole>,
        padding_admin: bool,
    ) -> Result<(SlotSet, Vec<MemberEntry>), ModelError> {
        let puppet = self.bounds.puppet_id();
        let mut entries = Vec::new();
        let mut members = Vec::new();
        for k in 0..=puppet {
            let entry = match roster.get(&k) {
                Some(role) => {
                    let key = if k == puppet {
                        puppet_secret(epoch).public_key()
                    } else {
                        match self.order_keys[k].get(epoch as usize) {
                            Some(key) => *key,
                            None => return err("out of order keys"),
                        }
                    };
                    members.push(MemberEntry {
                        account: self.accounts[k],
                        role: *role,
                        slot: SlotIndex(k as u32),
                    });
                    SlotEntry { key, role: *role }
                }
                None => SlotEntry {
                    key: padding_secret(epoch, k, padding_admin).public_key(),
                    role: if padding_admin {
                        SlotRole::Admin
                    } else {
                        SlotRole::Member
                    },
                },
            };
            entries.push(entry);
        }
        Ok((SlotSet::new(entries).or_else(err)?, members))
    }

    fn initial(
        &self,
        mut secrets: Vec<Secrets>,
        puppet: &Pairwise,
        rng: &mut StdRng,
    ) -> Result<State, ModelError> {
        let roster: BTreeMap<usize, SlotRole> = (0..self.bounds.members)
            .map(|k| {
                (
                    k,
                    if k == 0 {
                        SlotRole::Admin
                    } else {
                        SlotRole::Member
                    },
                )
            })
            .collect();
        let (slots, members) = self.slot_set(0, &roster, false)?;
        let mut crng = StdRng::seed_from_u64(rand::Rng::next_u64(rng));
        let (creator, composed) = Conversation::create(
            self.conversation,
            self.config.clone(),
            slots.clone(),
            members,
            &mut crng,
            &mut secrets[0],
        )
        .or_else(err)?;
        let mut stores = Vec::new();
        let mut attestations = Vec::new();
        for (s, core) in self.cores.iter().enumerate() {
            let mut store = MemStore::new();
            let mut txn = store.begin();
            core.open(&mut txn, &self.conversation, &slots)
                .or_else(err)?
                .or_else(err)?;
            let a = core
                .attest(
                    &mut txn,
                    &AttestRequest {
                        envelope: composed.envelope.summary(),
                        submission_tag: composed.submission_tags[s],
                        index: Index(0),
                        previous_head: Head::genesis(&self.conversation),
                        next_slots: None,
                    },
                )
                .or_else(err)?
                .or_else(|r| err(r.reason))?;
            txn.commit();
            stores.push(Rc::new(store));
            attestations.push(Some(a));
        }
        let genesis = Head::genesis(&self.conversation);
        let hash = composed.envelope.hash();
        let head = genesis.next(&self.conversation, Epoch(0), Index(0), &hash);
        let setup = EnvRec {
            label: "Setup".into(),
            env: composed.envelope.clone(),
            sub_tags: composed.submission_tags.clone(),
            slots: slots.clone(),
            next_slots: None,
            now: roster.clone(),
            next: BTreeMap::new(),
            change: None,
            admin_pad: None,
            by_puppet: false,
        };
        let placement = Placement {
            label: "S".into(),
            env: 0,
            index: Index(0),
            prev: genesis,
            head,
            epoch_after: Epoch(0),
            tags: attestations,
            genuine: (1u32 << self.bounds.servers) - 1,
        };
        let mut members = Vec::new();
        for (k, mut s) in secrets.into_iter().enumerate() {
            let mut conv = if k == 0 {
                creator.clone()
            } else if roster.contains_key(&k) {
                Conversation::invited(self.conversation, self.accounts[k], self.config.clone())
            } else {
                Conversation::joining(self.conversation, self.accounts[k], self.config.clone())
            };
            if roster.contains_key(&k) {
                let d = self.cut(&setup, &placement, k, true);
                conv.receive(d, &mut s);
                if conv.phase() != &Phase::Active {
                    return err(format!("member {k} did not accept the Setup"));
                }
            }
            let alerts: Vec<String> = conv.drain_alerts().iter().map(|a| a.to_string()).collect();
            if !alerts.is_empty() {
                return err(format!("the Setup raised alerts: {alerts:?}"));
            }
            conv.drain_events();
            let mut m = MemberState {
                conv,
                pairwise: pickle(&s.pairwise)?,
                keys: keys_of(&s),
                delivered: BTreeSet::new(),
                alerts,
                rosters: BTreeMap::new(),
                rounds: 0,
                fresh: None,
                silent: None,
                from_router: 0,
            };
            record_roster(&mut m);
            members.push(Rc::new(m));
        }
        let mut heads = BTreeMap::new();
        heads.insert(head, Rc::from("S"));
        Ok(State {
            members,
            puppet: pickle(puppet)?,
            servers: stores,
            tips: vec![0; self.bounds.servers],
            envs: vec![Rc::new(setup)],
            placements: vec![Rc::new(placement)],
            proofs: Vec::new(),
            messages: 0,
            receipts: 0,
            heads,
            nonce: 0,
            router: RouterLog::default(),
            router_jobs: Rc::new(Vec::new()),
        })
    }

    /// The delivery the router cuts for member `m`: `rec`'s envelope with
    /// `p`'s tags for m's slot (in the tagged envelope's epoch and, for an
    /// Update, the next), m's block, and optionally the previous head.
    fn cut(&self, rec: &EnvRec, p: &Placement, m: usize, previous: bool) -> Delivery {
        self.cut_with(rec, p, None, m, previous.then_some(p.prev))
    }

    fn cut_with(
        &self,
        rec: &EnvRec,
        p: &Placement,
        tagged: Option<&EnvRec>,
        m: usize,
        previous_head: Option<Head>,
    ) -> Delivery {
        let tagged = tagged.unwrap_or(rec);
        let env = &rec.env;
        let slot = SlotIndex(m as u32);
        let block = env
            .blocks()
            .iter()
            .enumerate()
            .find(|(_, b)| b.recipient == slot)
            .map(|(i, b)| (i as u32, b.clone()));
        let now = tagged.now.contains_key(&m);
        let next = tagged.next.contains_key(&m);
        let attestations = p
            .tags
            .iter()
            .flatten()
            .map(|a| Attestation {
                server: a.server,
                index: a.index,
                head: a.head,
                tags: if now {
                    a.tags.get(m).copied().into_iter().collect()
                } else {
                    Vec::new()
                },
                next_tags: if next {
                    a.next_tags.get(m).copied().into_iter().collect()
                } else {
                    Vec::new()
                },
                // The model's conversations are pairwise-keyed: no shares.
                key_shares: Vec::new(),
                log_index: None,
            })
            .collect();
        Delivery {
            conversation: self.conversation,
            index: p.index,
            header: env.header().clone(),
            body: env.body().to_vec(),
            block,
            block_digests: env.blocks().iter().map(|b| b.digest()).collect(),
            attestations,
            previous_head,
            history_block: env.history_block().map(<[u8]>::to_vec),
        }
    }

    /// Every action enabled in `s` (some may still turn out to be no-ops
    /// when applied: a server refuses, a member refuses to compose).
    pub fn actions(&self, s: &State) -> Vec<Action> {
        let b = &self.bounds;
        let mut out = Vec::new();
        let active = |m: usize| s.members[m].conv.phase() == &Phase::Active;
        // Honest composition.
        if s.messages < b.messages {
            for m in 0..s.members.len() {
                if active(m) {
                    out.push(Action::Message { member: m });
                }
            }
        }
        if s.receipts < b.receipts {
            for m in 0..s.members.len() {
                if active(m) {
                    out.push(Action::Receipt { member: m });
                }
            }
        }
        if active(0) {
            let roster = s.members[0]
                .conv
                .membership()
                .map(|ms| ms.members().clone())
                .unwrap_or_default();
            let done = |c: ChangeKind| {
                s.envs.iter().any(|e| {
                    !e.by_puppet
                        && e.change.is_some()
                        && e.label.contains(match c {
                            ChangeKind::AddJoiner => "add",
                            ChangeKind::RemoveLast => "remove",
                        })
                })
            };
            let mut changes = Vec::new();
            if let Some(j) = b.joiner_id()
                && !roster.contains_key(&self.accounts[j])
                && !done(ChangeKind::AddJoiner)
            {
                changes.push(ChangeKind::AddJoiner);
            }
            if b.removal
                && b.members > 2
                && roster.contains_key(&self.accounts[b.members - 1])
                && !done(ChangeKind::RemoveLast)
            {
                changes.push(ChangeKind::RemoveLast);
            }
            for change in changes {
                for admin_padding in [false, true] {
                    if admin_padding && !b.admin_padding {
                        continue;
                    }
                    out.push(Action::Update {
                        member: 0,
                        change,
                        admin_padding,
                    });
                }
            }
        }
        // The shipping driver: an order server answers its oldest job.
        let mut forwarding: Vec<u32> = s.router_jobs.to_vec();
        forwarding.sort_unstable();
        forwarding.dedup();
        for server in forwarding {
            out.push(Action::Forward { server });
        }
        if !b.router.adversary() {
            self.proof_actions(s, &mut out);
            return out;
        }
        // Honest order servers: at their next index.
        for server in 0..b.servers as u32 {
            if b.equivocating.contains(&server) {
                continue;
            }
            let tip = &s.placements[s.tips[server as usize]];
            for (e, rec) in s.envs.iter().enumerate().skip(1) {
                if rec.env.header().epoch() == tip.epoch_after {
                    out.push(Action::Attest { server, env: e });
                }
            }
        }
        // Deliveries: an envelope with the tags on an envelope (itself, or
        // the one a puppet envelope substitutes) at the index after a
        // placement: the honest servers' tags there and every colluding
        // server's (they tag whatever the router asks), when they make a
        // quorum for the member's slot.
        let colluding = b.equivocating.len();
        for m in 0..s.members.len() {
            let ms = &s.members[m];
            if matches!(ms.conv.phase(), Phase::Removed | Phase::Halted(_)) {
                continue;
            }
            let joining = ms.conv.phase() == &Phase::AwaitingJoin;
            let next = ms.conv.next_expected();
            for (pi, after) in s.placements.iter().enumerate() {
                let index = Index(after.index.0 + 1);
                if !joining && index < next {
                    continue;
                }
                for (t, tagged) in s.envs.iter().enumerate().skip(1) {
                    let h = tagged.env.header();
                    if h.epoch() != after.epoch_after
                        || h.last_seen().is_some_and(|l| l > after.index)
                    {
                        continue;
                    }
                    if !tagged.now.contains_key(&m) && !tagged.next.contains_key(&m) {
                        continue;
                    }
                    let existing = s
                        .placements
                        .iter()
                        .find(|q| q.env == t && q.prev == after.head && q.index == index);
                    let honest = existing.map_or(0, |q| q.genuine.count_ones() as usize);
                    if honest + colluding < b.quorum {
                        continue;
                    }
                    let mask = existing.map_or(0, |q| q.genuine)
                        | b.equivocating.iter().fold(0, |x, sv| x | bit(*sv as usize));
                    for (e, rec) in s.envs.iter().enumerate() {
                        let substitute = rec.by_puppet
                            && rec.env.header().epoch() == h.epoch()
                            && rec.env.header().kind() == h.kind();
                        if e != t && !substitute {
                            continue;
                        }
                        let mut choices = vec![Previous::Genuine];
                        if joining {
                            choices.push(Previous::Omitted);
                            for (qi, q) in s.placements.iter().enumerate() {
                                if q.index == after.index && q.head != after.head {
                                    choices.push(Previous::Other(qi));
                                }
                            }
                        }
                        for previous in choices {
                            let plabel = placement_label(tagged, index, after);
                            let label =
                                delivery_label(rec, &plabel, mask, &previous_label(s, previous));
                            if ms.delivered.contains(label.as_str()) {
                                continue;
                            }
                            out.push(Action::Deliver {
                                member: m,
                                env: e,
                                tagged: t,
                                after: pi,
                                previous,
                            });
                        }
                    }
                }
            }
        }

        // The puppet.
        if b.puppet {
            for (e, rec) in s.envs.iter().enumerate() {
                if rec.by_puppet || rec.change.is_none() {
                    continue;
                }
                let made = |prefix: &str| {
                    s.envs
                        .iter()
                        .any(|x| x.by_puppet && *x.label == *format!("{prefix}{}", rec.label))
                };
                if b.joiner && matches!(rec.change, Some(Change::Add { .. })) {
                    for admin in [false, true] {
                        let prefix = if admin { "PA~" } else { "PM~" };
                        if !made(prefix) {
                            out.push(Action::Substitute { env: e, admin });
                        }
                    }
                }
                if rec.admin_pad.is_some()
                    && b.joiner_id().is_some_and(|j| !rec.next.contains_key(&j))
                    && !made("PU~")
                {
                    out.push(Action::PaddingUpdate { env: e });
                }
            }
        }
        // The compromised Admin.
        if b.compromised_admin
            && active(0)
            && b.members > 2
            && let Some(j) = b.joiner_id()
        {
            let roster = s.members[0]
                .conv
                .membership()
                .map(|ms| ms.members().clone())
                .unwrap_or_default();
            let done = s.envs.iter().any(|e| e.label.contains("rogue"));
            if !done
                && !roster.contains_key(&self.accounts[j])
                && roster.contains_key(&self.accounts[b.members - 1])
            {
                out.push(Action::RogueUpdate { member: 0 });
            }
        }
        self.proof_actions(s, &mut out);
        out
    }

    /// Head-proof requests and the router's answers.
    fn proof_actions(&self, s: &State, out: &mut Vec<Action>) {
        let b = &self.bounds;
        if b.head_proofs {
            for (m, ms) in s.members.iter().enumerate() {
                if ms.conv.phase() != &Phase::Active {
                    continue;
                }
                if ms.rounds < 2 {
                    out.push(Action::ProofRequest { member: m });
                }
                if ms.fresh.is_some() {
                    let n = b.servers as u32;
                    for stale in 0..(1u32 << n) {
                        for dropped in 0..(1u32 << n) {
                            if stale & dropped != 0 {
                                continue;
                            }
                            let has_stale = (0..n).all(|sv| {
                                stale & (1 << sv) == 0
                                    || s.proofs.iter().any(|p| {
                                        p.member == m
                                            && p.round + 1 < ms.rounds
                                            && p.proof.server == sv
                                    })
                            });
                            if has_stale {
                                out.push(Action::ProofAnswer {
                                    member: m,
                                    stale,
                                    dropped,
                                });
                            }
                        }
                    }
                }
            }
        }
    }

    /// Applies `a` to `s`: `Ok(None)` when it changes nothing (a server or
    /// a member refused).
    pub fn step(&self, s: &State, a: &Action) -> Result<Option<State>, ModelError> {
        switches::set(self.bounds.weaken);
        let mut s = s.clone();
        s.nonce += 1;
        let mut rng =
            StdRng::seed_from_u64(self.seed ^ s.nonce.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        match *a {
            Action::Message { member } => {
                let content = Content::Message(format!("m{member}").into_bytes());
                if !self.compose_honest(&mut s, member, content, None, &mut rng)? {
                    return Ok(None);
                }
                s.messages += 1;
                self.submit_last(&mut s, member, None)?;
            }
            Action::Receipt { member } => {
                let Some(content) = s.members[member].conv.receipt() else {
                    return Ok(None);
                };
                if !self.compose_honest(&mut s, member, content, None, &mut rng)? {
                    return Ok(None);
                }
                s.receipts += 1;
                self.submit_last(&mut s, member, None)?;
            }
            Action::Update {
                member,
                change,
                admin_padding,
            } => {
                let Some(ms) = s.members[member].conv.membership() else {
                    return Ok(None);
                };
                let epoch = ms.epoch().0;
                let mut roster: BTreeMap<usize, SlotRole> = BTreeMap::new();
                for (acc, role) in ms.members() {
                    if let Some(k) = self.accounts.iter().position(|a| a == acc) {
                        roster.insert(k, *role);
                    }
                }
                let ch = match change {
                    ChangeKind::AddJoiner => {
                        let Some(j) = self.bounds.joiner_id() else {
                            return Ok(None);
                        };
                        roster.insert(j, SlotRole::Member);
                        Change::Add {
                            account: self.accounts[j],
                            role: SlotRole::Member,
                        }
                    }
                    ChangeKind::RemoveLast => {
                        let r = self.bounds.members - 1;
                        roster.remove(&r);
                        Change::Remove {
                            account: self.accounts[r],
                        }
                    }
                };
                let (next_slots, next_members) =
                    self.slot_set(epoch + 1, &roster, admin_padding)?;
                let content = Content::Update(UpdateContent {
                    change: ch,
                    next_slots,
                    next_members,
                    history: Default::default(),
                });
                let pad = admin_padding.then_some(epoch + 1);
                let prepared = if self.honest.is_some() {
                    Some(self.epoch_slots(epoch + 1, &roster, admin_padding, None)?)
                } else {
                    None
                };
                let extra = (roster, ch, pad);
                if !self.compose_honest(&mut s, member, content, Some(extra), &mut rng)? {
                    return Ok(None);
                }
                self.submit_last(&mut s, member, prepared)?;
            }
            Action::Attest { server, env } => {
                let tip = s.placements[s.tips[server as usize]].clone();
                let rec = s.envs[env].clone();
                let index = Index(tip.index.0 + 1);
                let request = AttestRequest {
                    envelope: rec.env.summary(),
                    submission_tag: rec.sub_tags[server as usize],
                    index,
                    previous_head: tip.head,
                    next_slots: rec.next_slots.clone(),
                };
                let mut store = (*s.servers[server as usize]).clone();
                let mut txn = store.begin();
                let answer = self.cores[server as usize]
                    .attest(&mut txn, &request)
                    .or_else(err)?;
                let Ok(att) = answer else {
                    return Ok(None);
                };
                txn.commit();
                s.servers[server as usize] = Rc::new(store);
                let after = s.tips[server as usize];
                let p = self.place(&mut s, env, after, server, att, true)?;
                s.tips[server as usize] = p;
            }
            Action::Deliver {
                member,
                env,
                tagged,
                after,
                previous,
            } => {
                let mut pi = None;
                for server in self.bounds.equivocating.clone() {
                    pi = Some(self.forge(&mut s, server, tagged, after)?);
                }
                let index = Index(s.placements[after].index.0 + 1);
                let head = s.placements[after].head;
                let pi = match pi.or_else(|| {
                    s.placements
                        .iter()
                        .position(|q| q.env == tagged && q.prev == head && q.index == index)
                }) {
                    Some(pi) => pi,
                    None => return Ok(None),
                };
                let p = s.placements[pi].clone();
                let rec = s.envs[env].clone();
                let tagged_rec = s.envs[tagged].clone();
                let mask = p
                    .tags
                    .iter()
                    .enumerate()
                    .filter(|(_, t)| t.is_some())
                    .fold(0, |x, (sv, _)| x | bit(sv));
                let label = delivery_label(&rec, &p.label, mask, &previous_label(&s, previous));
                let previous_head = match previous {
                    Previous::Genuine => Some(p.prev),
                    Previous::Omitted => None,
                    Previous::Other(q) => s.placements.get(q).map(|q| q.head),
                };
                let d = self.cut_with(&rec, &p, Some(&tagged_rec), member, previous_head);
                let mut ms = (*s.members[member]).clone();
                let mut secrets = secrets_of(&ms)?;
                ms.conv.receive(d, &mut secrets);
                ms.delivered.insert(label.into());
                self.settle(&mut ms, &secrets)?;
                s.members[member] = Rc::new(ms);
            }
            Action::Substitute { env, admin } => {
                let rec = s.envs[env].clone();
                let (Some(next_slots), Some(change)) = (rec.next_slots.clone(), rec.change) else {
                    return Ok(None);
                };
                let pup = self.bounds.puppet_id();
                let role = if admin {
                    SlotRole::Admin
                } else {
                    SlotRole::Member
                };
                let mut entries = next_slots.entries().to_vec();
                let Some(e) = entries.get_mut(pup) else {
                    return Ok(None);
                };
                e.role = role;
                let next_slots = SlotSet::new(entries).or_else(err)?;
                let mut next = rec.next.clone();
                next.insert(pup, role);
                let next_members = next
                    .iter()
                    .map(|(k, r)| MemberEntry {
                        account: self.accounts[*k],
                        role: *r,
                        slot: SlotIndex(*k as u32),
                    })
                    .collect();
                let content = Content::Update(UpdateContent {
                    change,
                    next_slots: next_slots.clone(),
                    next_members,
                    history: Default::default(),
                });
                let h = rec.env.header();
                let throwaway = SlotSecret::from_bytes([0x77; 32]);
                let label = format!("{}{}", if admin { "PA~" } else { "PM~" }, rec.label);
                self.compose_puppet(
                    &mut s,
                    PuppetSend {
                        epoch: h.epoch(),
                        sender: h.sender(),
                        sequence: h.sequence(),
                        last_seen: h.last_seen(),
                        secret: &throwaway,
                        content,
                        slots: rec.slots.clone(),
                        next_slots: Some(next_slots),
                        now: rec.now.clone(),
                        next,
                        label,
                    },
                    &mut rng,
                )?;
            }
            Action::PaddingUpdate { env } => {
                let rec = s.envs[env].clone();
                let (Some(pad_epoch), Some(slots), Some(j)) = (
                    rec.admin_pad,
                    rec.next_slots.clone(),
                    self.bounds.joiner_id(),
                ) else {
                    return Ok(None);
                };
                let epoch = rec.env.header().epoch().0 + 1;
                let pup = self.bounds.puppet_id();
                let mut next = rec.next.clone();
                next.insert(j, SlotRole::Member);
                next.insert(pup, SlotRole::Admin);
                let (next_slots, next_members) = self.slot_set(epoch + 1, &next, false)?;
                let content = Content::Update(UpdateContent {
                    change: Change::Add {
                        account: self.accounts[j],
                        role: SlotRole::Member,
                    },
                    next_slots: next_slots.clone(),
                    next_members,
                    history: Default::default(),
                });
                let label = format!("PU~{}", rec.label);
                self.compose_puppet(
                    &mut s,
                    PuppetSend {
                        epoch: Epoch(epoch),
                        sender: SlotIndex(pup as u32),
                        sequence: grompi_proto::Sequence(1),
                        last_seen: None,
                        secret: &padding_secret(pad_epoch, pup, true),
                        content,
                        slots,
                        next_slots: Some(next_slots),
                        now: rec.next.clone(),
                        next,
                        label,
                    },
                    &mut rng,
                )?;
            }
            Action::RogueUpdate { member } => {
                if !self.rogue_update(&mut s, member, &mut rng)? {
                    return Ok(None);
                }
            }
            Action::Forward { server } => {
                let Some(honest) = &self.honest else {
                    return Ok(None);
                };
                let mut run = honest.replay(&s.router)?;
                let Some(job) = run.jobs.iter().find(|j| j.server == server).cloned() else {
                    return Ok(None);
                };
                let (result, label) = self.answer_job(&mut s, &job, false)?;
                let fed = Fed::JobDone(result);
                let cut = run.feed(honest, &fed)?;
                s.router = s.router.with(fed, label);
                s.router_jobs = Rc::new(run.jobs.iter().map(|j| j.server).collect());
                self.take_cut(&mut s, cut)?;
            }
            Action::ProofRequest { member } => {
                let mut ms = (*s.members[member]).clone();
                let nonce = ms.conv.head_proof_nonce(&mut rng);
                let mut fresh = vec![None; self.bounds.servers];
                for (sv, core) in self.cores.iter().enumerate() {
                    if self.bounds.equivocating.contains(&(sv as u32)) {
                        continue;
                    }
                    let proof = core
                        .prove_head(
                            &*s.servers[sv],
                            &self.conversation,
                            SlotIndex(member as u32),
                            nonce,
                        )
                        .or_else(err)?;
                    if let Ok(proof) = proof {
                        fresh[sv] = Some(proof.statement.count);
                        s.proofs.push(Rc::new(ProofRec {
                            member,
                            round: ms.rounds,
                            proof,
                        }));
                    }
                }
                ms.rounds += 1;
                ms.fresh = Some(fresh);
                s.members[member] = Rc::new(ms);
            }
            Action::ProofAnswer {
                member,
                stale,
                dropped,
            } => {
                let mut ms = (*s.members[member]).clone();
                let Some(fresh) = ms.fresh.take() else {
                    return Ok(None);
                };
                let round = ms.rounds.saturating_sub(1);
                let mut answer = Vec::new();
                for sv in 0..self.bounds.servers as u32 {
                    if dropped & (1 << sv) != 0 {
                        continue;
                    }
                    let want_stale = stale & (1 << sv) != 0;
                    let found = s.proofs.iter().rev().find(|p| {
                        p.member == member
                            && p.proof.server == sv
                            && if want_stale {
                                p.round < round
                            } else {
                                p.round == round
                            }
                    });
                    if let Some(p) = found {
                        answer.push(p.proof.clone());
                    }
                }
                let outcomes = ms.conv.check_head_proofs(&answer);
                let accepted = ms.conv.next_expected().0;
                for o in &outcomes {
                    if let HeadProofOutcome::Consistent { server, count } = o
                        && let Some(Some(attested)) = fresh.get(*server as usize)
                        && *attested > accepted
                        && ms.silent.is_none()
                    {
                        ms.silent = Some(format!(
                            "server {server} had attested {attested} indices, the member \
                             accepted {accepted}, and its answer read as consistent at {count}"
                        ));
                    }
                }
                let secrets = secrets_of(&ms)?;
                self.settle(&mut ms, &secrets)?;
                s.members[member] = Rc::new(ms);
            }
        }
        Ok(Some(s))
    }

    /// With the shipping driver in the model: the router's core receives
    /// the envelope `member` just composed (the last one seen) over the
    /// member's session, after preparing `prepared` (an Update's next slot
    /// set) and restarting from its store.
    fn submit_last(
        &self,
        s: &mut State,
        member: usize,
        prepared: Option<EpochSlots>,
    ) -> Result<(), ModelError> {
        let (Some(honest), Some(rec)) = (&self.honest, s.envs.last().cloned()) else {
            return Ok(());
        };
        let mut run = honest.replay(&s.router)?;
        let mut cut = Vec::new();
        if let Some(p) = prepared {
            let fed = Fed::Prepare(p);
            cut.extend(run.feed(honest, &fed)?);
            s.router = s.router.with(fed, format!("prepare {}", rec.label));
        }
        let fed = Fed::Submit {
            account: member,
            submission: Box::new(Submission {
                envelope: rec.env.clone(),
                tags: rec.sub_tags.clone(),
            }),
        };
        cut.extend(run.feed(honest, &fed)?);
        s.router = s.router.with(fed, format!("submit {}", rec.label));
        s.router_jobs = Rc::new(run.jobs.iter().map(|j| j.server).collect());
        self.take_cut(s, cut)
    }

    /// An order server answers a job of the router's core: each item in
    /// order, an honest server (or any server when `all_real`) with its
    /// real core in one transaction of its store, a colluding one by
    /// tagging what it is asked. Every attestation is recorded as the
    /// model records the adversary's. Returns the job's result and a label
    /// of what it says.
    fn answer_job(
        &self,
        s: &mut State,
        job: &ServerJob,
        all_real: bool,
    ) -> Result<(JobResult, String), ModelError> {
        let sv = job.server as usize;
        let colluding = !all_real && self.bounds.equivocating.contains(&job.server);
        let mut label = format!("s{}:", job.server);
        let mut results = Vec::new();
        let mut store = (*s.servers[sv]).clone();
        let mut txn = store.begin();
        for item in &job.request.items {
            let request = AttestRequest::try_from(item.clone()).or_else(err)?;
            let hash = request.envelope.hash();
            let Some(e) = s.envs.iter().position(|r| r.env.hash() == hash) else {
                return err("the router sent an envelope the model has not seen");
            };
            let answer = if colluding {
                let Some(after) = s.placements.iter().position(|p| {
                    p.head == request.previous_head && p.index.0 + 1 == request.index.0
                }) else {
                    return err("the router asked a colluding server after an unknown head");
                };
                let pi = self.forge(s, job.server, e, after)?;
                match s.placements[pi].tags[sv].clone() {
                    Some(a) => Ok(a),
                    None => return err("a forged placement without the server's tags"),
                }
            } else {
                self.cores[sv].attest(&mut txn, &request).or_else(err)?
            };
            let outcome = match answer {
                Ok(att) => {
                    let epoch = request.envelope.header.epoch();
                    let known = s
                        .placements
                        .iter()
                        .position(|p| p.env == e && p.index == att.index && p.head == att.head);
                    let pi = match known {
                        // The Setup, attested before the router started.
                        Some(pi) if att.index == Index(0) => pi,
                        _ => {
                            let Some(after) = s.placements.iter().position(|p| {
                                p.index.0 + 1 == att.index.0
                                    && p.head.next(&self.conversation, epoch, att.index, &hash)
                                        == att.head
                            }) else {
                                return err(
                                    "a server attested after a head the model has not seen",
                                );
                            };
                            self.place(s, e, after, job.server, att.clone(), !colluding)?
                        }
                    };
                    if !colluding && s.placements[s.tips[sv]].index.0 + 1 == att.index.0 {
                        s.tips[sv] = pi;
                    }
                    label.push_str(&format!(" +{}", s.placements[pi].label));
                    pb::attest_result::Outcome::Attested((&att).into())
                }
                Err(r) => {
                    label.push_str(&format!(" -{}@{}", s.envs[e].label, request.index.0));
                    pb::attest_result::Outcome::Refused(pb::Refusal::from(&r))
                }
            };
            results.push(pb::AttestResult {
                outcome: Some(outcome),
                log_index: None,
            });
        }
        txn.commit();
        if !colluding {
            s.servers[sv] = Rc::new(store);
        }
        Ok((
            JobResult {
                id: job.id,
                server: job.server,
                opens: job.opens.iter().map(|_| OpenOutcome::AlreadyOpen).collect(),
                attest: Ok(results),
            },
            label,
        ))
    }

    /// Members receive the deliveries the router's core cut (a delivery
    /// identical to one a member already received is a repeat, and left
    /// out as the adversary's are).
    fn take_cut(&self, s: &mut State, cut: Vec<Cut>) -> Result<(), ModelError> {
        for (account, wire) in cut {
            let Some(m) = self.accounts[..s.members.len()]
                .iter()
                .position(|a| *a == account)
            else {
                continue;
            };
            let incoming = Incoming::try_from(wire).or_else(err)?;
            let (env, index, attestations) = match &incoming {
                Incoming::Envelope(d) => {
                    let hash = EnvelopeSummary {
                        header: d.header.clone(),
                        block_digests: d.block_digests.clone(),
                    }
                    .hash();
                    let Some(e) = s.envs.iter().position(|r| r.env.hash() == hash) else {
                        return err("the router delivered an envelope the model has not seen");
                    };
                    (Some(e), d.index, &d.attestations)
                }
                Incoming::Tags(t) => (None, t.index, &t.attestations),
            };
            let Some(head) = attestations.first().map(|a| a.head) else {
                return err("the router delivered without attestations");
            };
            let Some(p) = s
                .placements
                .iter()
                .find(|p| env.is_none_or(|e| p.env == e) && p.index == index && p.head == head)
                .cloned()
            else {
                return err("the router delivered a placement the model has not seen");
            };
            let mask = attestations
                .iter()
                .fold(0, |x, a| x | bit(a.server as usize));
            let label = match &incoming {
                Incoming::Envelope(d) => {
                    let previous = match d.previous_head {
                        Some(h) if h == p.prev => "",
                        None => " and no previous head",
                        Some(_) => " and another previous head",
                    };
                    delivery_label(&s.envs[p.env], &p.label, mask, previous)
                }
                Incoming::Tags(_) => format!("later tags {} by {mask:#b}", p.label),
            };
            let mut ms = (*s.members[m]).clone();
            if ms.delivered.contains(label.as_str()) {
                continue;
            }
            let before = ms.conv.next_expected();
            let mut secrets = secrets_of(&ms)?;
            ms.conv.receive_incoming(incoming, &mut secrets);
            ms.delivered.insert(label.into());
            if ms.conv.next_expected() > before {
                ms.from_router += 1;
            }
            self.settle(&mut ms, &secrets)?;
            s.members[m] = Rc::new(ms);
        }
        Ok(())
    }

    /// A colluding server tags `env` at the index after placement `after`
    /// (with its raw keys, for every slot). Returns the placement.
    fn forge(
        &self,
        s: &mut State,
        server: u32,
        env: usize,
        after: usize,
    ) -> Result<usize, ModelError> {
        let prev = s.placements[after].clone();
        let rec = s.envs[env].clone();
        let index = Index(prev.index.0 + 1);
        if let Some(pi) = s.placements.iter().position(|q| {
            q.env == env
                && q.prev == prev.head
                && q.index == index
                && q.tags[server as usize].is_some()
        }) {
            return Ok(pi);
        }
        let epoch = rec.env.header().epoch();
        let head = prev
            .head
            .next(&self.conversation, epoch, index, &rec.env.hash());
        let statement = AttestationStatement {
            conversation: self.conversation,
            epoch,
            index,
            head,
        };
        let secret = &self.servers[server as usize];
        let tag = |key: &SlotKey| -> Result<Tag, ModelError> {
            Ok(secret.mac_keys(key).or_else(err)?.attest(&statement))
        };
        let tags = rec
            .slots
            .entries()
            .iter()
            .map(|e| tag(&e.key))
            .collect::<Result<Vec<_>, _>>()?;
        let next_tags = match &rec.next_slots {
            Some(n) => n
                .entries()
                .iter()
                .map(|e| tag(&e.key))
                .collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };
        let att = Attestation {
            server,
            index,
            head,
            tags,
            next_tags,
            key_shares: Vec::new(),
            log_index: None,
        };
        self.place(s, env, after, server, att, false)
    }

    /// Records a new attestation: in the placement (env at the index after
    /// `after`), creating it if needed. Returns the placement.
    fn place(
        &self,
        s: &mut State,
        env: usize,
        after: usize,
        server: u32,
        att: Attestation,
        genuine: bool,
    ) -> Result<usize, ModelError> {
        let prev = s.placements[after].clone();
        let rec = &s.envs[env];
        let index = Index(prev.index.0 + 1);
        let found = s
            .placements
            .iter()
            .position(|p| p.env == env && p.prev == prev.head && p.index == index);
        let pi = match found {
            Some(pi) => pi,
            None => {
                let head = att.head;
                let label: Rc<str> = placement_label(rec, index, &prev).into();
                let epoch = rec.env.header().epoch();
                let epoch_after = if rec.env.header().kind() == EnvelopeKind::Update {
                    Epoch(epoch.0 + 1)
                } else {
                    epoch
                };
                s.heads.insert(head, label.clone());
                s.placements.push(Rc::new(Placement {
                    label,
                    env,
                    index,
                    prev: prev.head,
                    head,
                    epoch_after,
                    tags: vec![None; self.bounds.servers],
                    genuine: 0,
                }));
                s.placements.len() - 1
            }
        };
        let mut p = (*s.placements[pi]).clone();
        if p.head != att.head {
            return err("a server tagged another head than the chain's");
        }
        p.tags[server as usize] = Some(att);
        if genuine {
            p.genuine |= bit(server as usize);
        }
        s.placements[pi] = Rc::new(p);
        Ok(pi)
    }

    /// The compromised Admin composes, outside its conversation, an Update
    /// adding the joiner whose next list also drops the last member; signed
    /// with its real slot key and Olm sessions.
    fn rogue_update(
        &self,
        s: &mut State,
        member: usize,
        rng: &mut StdRng,
    ) -> Result<bool, ModelError> {
        let ms = (*s.members[member]).clone();
        let (Some(membership), Some(j)) = (ms.conv.membership(), self.bounds.joiner_id()) else {
            return Ok(false);
        };
        let epoch = membership.epoch().0;
        let slots = membership.slots().clone();
        let my_slot = SlotIndex(member as u32);
        let Some(my_key) = slots.get(my_slot).map(|e| e.key) else {
            return Ok(false);
        };
        let Some((_, secret)) = self.admin_keys.iter().find(|(k, _)| *k == my_key) else {
            return Ok(false);
        };
        let mut now = BTreeMap::new();
        for (acc, role) in membership.members() {
            if let Some(k) = self.accounts.iter().position(|a| a == acc) {
                now.insert(k, *role);
            }
        }
        let mut next = now.clone();
        next.insert(j, SlotRole::Member);
        next.remove(&(self.bounds.members - 1));
        let (next_slots, next_members) = self.slot_set(epoch + 1, &next, false)?;
        let content = Content::Update(UpdateContent {
            change: Change::Add {
                account: self.accounts[j],
                role: SlotRole::Member,
            },
            next_slots: next_slots.clone(),
            next_members,
            history: Default::default(),
        });
        let mut recipients = ms.conv.recipients();
        recipients.push((SlotIndex(j as u32), self.accounts[j]));
        let keys = SlotMacKeys::derive(&SlotSecret::from_bytes(*secret), &self.config.servers)
            .or_else(err)?;
        let mut secrets = secrets_of(&ms)?;
        let composed = compose(
            &Sending {
                conversation: self.conversation,
                epoch: Epoch(epoch),
                sender: my_slot,
                sequence: grompi_proto::Sequence(1000),
                last_seen: ms.conv.transcript().last().map(|e| e.index),
                recipients: &recipients,
                mac_keys: &keys,
            },
            &content,
            rng,
            &mut secrets.pairwise,
        )
        .or_else(err)?;
        let label = format!(
            "X{member}rogue.e{epoch}.ls{}",
            ms.conv
                .transcript()
                .last()
                .map_or("-".to_owned(), |e| e.index.0.to_string())
        );
        s.envs.push(Rc::new(EnvRec {
            label: label.into(),
            env: composed.envelope,
            sub_tags: composed.submission_tags,
            slots,
            next_slots: Some(next_slots),
            now,
            next,
            change: None,
            admin_pad: None,
            by_puppet: false,
        }));
        let mut ms = ms;
        self.settle(&mut ms, &secrets)?;
        s.members[member] = Rc::new(ms);
        Ok(true)
    }

    /// An honest member composes `content`; false when it refuses.
    fn compose_honest(
        &self,
        s: &mut State,
        member: usize,
        content: Content,
        update: Option<(BTreeMap<usize, SlotRole>, Change, Option<u64>)>,
        rng: &mut StdRng,
    ) -> Result<bool, ModelError> {
        let mut ms = (*s.members[member]).clone();
        let Some(membership) = ms.conv.membership() else {
            return Ok(false);
        };
        let slots = membership.slots().clone();
        let mut now = BTreeMap::new();
        for (acc, role) in membership.members() {
            if let Some(k) = self.accounts.iter().position(|a| a == acc) {
                now.insert(k, *role);
            }
        }
        let next_slots = match &content {
            Content::Update(u) => Some(u.next_slots.clone()),
            _ => None,
        };
        let variant = match &update {
            Some((_, Change::Add { .. }, pad)) => {
                format!("add{}", if pad.is_some() { "/adminpad" } else { "" })
            }
            Some((_, _, pad)) => format!("remove{}", if pad.is_some() { "/adminpad" } else { "" }),
            None => String::new(),
        };
        let mut secrets = secrets_of(&ms)?;
        let composed: Composed = match ms.conv.compose(content, rng, &mut secrets) {
            Ok(c) => c,
            Err(_) => return Ok(false),
        };
        let h = composed.envelope.header();
        let label = format!(
            "{}{member}{variant}.e{}.q{}.ls{}",
            match h.kind() {
                EnvelopeKind::Update => "U",
                EnvelopeKind::Receipt => "R",
                _ => "M",
            },
            h.epoch().0,
            h.sequence().0,
            h.last_seen().map_or("-".to_owned(), |i| i.0.to_string())
        );
        let (next, change, admin_pad) = match update {
            Some((r, c, p)) => (r, Some(c), p),
            None => (BTreeMap::new(), None, None),
        };
        s.envs.push(Rc::new(EnvRec {
            label: label.into(),
            env: composed.envelope,
            sub_tags: composed.submission_tags,
            slots,
            next_slots,
            now,
            next,
            change,
            admin_pad,
            by_puppet: false,
        }));
        self.settle(&mut ms, &secrets)?;
        s.members[member] = Rc::new(ms);
        Ok(true)
    }

    fn compose_puppet(
        &self,
        s: &mut State,
        send: PuppetSend<'_>,
        rng: &mut StdRng,
    ) -> Result<(), ModelError> {
        let p: PairwisePickle = serde_json::from_str(&s.puppet).or_else(err)?;
        let mut pairwise = Pairwise::from_pickle(p);
        let keys = SlotMacKeys::derive(send.secret, &self.config.servers).or_else(err)?;
        let mut recipients: Vec<(SlotIndex, AccountId)> = Vec::new();
        for k in send.now.keys().chain(send.next.keys()) {
            if *k != self.bounds.puppet_id()
                && !recipients.iter().any(|(sl, _)| sl.0 as usize == *k)
            {
                recipients.push((SlotIndex(*k as u32), self.accounts[*k]));
            }
        }
        let composed = compose(
            &Sending {
                conversation: self.conversation,
                epoch: send.epoch,
                sender: send.sender,
                sequence: send.sequence,
                last_seen: send.last_seen,
                recipients: &recipients,
                mac_keys: &keys,
            },
            &send.content,
            rng,
            &mut pairwise,
        )
        .or_else(err)?;
        s.puppet = pickle(&pairwise)?;
        s.envs.push(Rc::new(EnvRec {
            label: send.label.into(),
            env: composed.envelope,
            sub_tags: composed.submission_tags,
            slots: send.slots,
            next_slots: send.next_slots,
            now: send.now,
            next: send.next,
            change: None,
            admin_pad: None,
            by_puppet: true,
        }));
        Ok(())
    }

    /// After a member's step: save its secrets, collect alerts, record the
    /// roster it adopted.
    fn settle(&self, ms: &mut MemberState, secrets: &Secrets) -> Result<(), ModelError> {
        ms.pairwise = pickle(&secrets.pairwise)?;
        ms.keys = keys_of(secrets);
        for a in ms.conv.drain_alerts() {
            ms.alerts.push(a.to_string());
        }
        ms.conv.drain_events();
        record_roster(ms);
        Ok(())
    }

    /// A label for each head, for printing.
    pub fn head_label<'a>(&self, s: &'a State, h: &Head) -> &'a str {
        s.heads.get(h).map_or("?", |l| l)
    }
}

struct PuppetSend<'a> {
    epoch: Epoch,
    sender: SlotIndex,
    sequence: grompi_proto::Sequence,
    last_seen: Option<Index>,
    secret: &'a SlotSecret,
    content: Content,
    slots: SlotSet,
    next_slots: Option<SlotSet>,
    now: BTreeMap<usize, SlotRole>,
    next: BTreeMap<usize, SlotRole>,
    label: String,
}

fn record_roster(ms: &mut MemberState) {
    if let Some(m) = ms.conv.membership() {
        ms.rosters
            .entry(m.epoch())
            .or_insert_with(|| m.members().clone());
    }
}

fn placement_label(rec: &EnvRec, index: Index, after: &Placement) -> String {
    format!("({}@{}<{})", rec.label, index.0, after.label)
}

fn delivery_label(rec: &EnvRec, placement: &str, servers: u32, previous: &str) -> String {
    format!(
        "{} with tags {placement} by {servers:#b}{previous}",
        rec.label
    )
}

fn previous_label(s: &State, previous: Previous) -> String {
    match previous {
        Previous::Genuine => String::new(),
        Previous::Omitted => " and no previous head".to_owned(),
        Previous::Other(q) => format!(
            " and the previous head of {}",
            s.placements.get(q).map_or("?", |q| &*q.label)
        ),
    }
}

impl State {
    /// A fingerprint of what the state means (labels, not bytes): two
    /// states with one fingerprint did the same things, in another order.
    pub fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let mut envs: Vec<&str> = self.envs.iter().map(|e| &*e.label).collect();
        envs.sort_unstable();
        envs.hash(&mut h);
        let mut places: Vec<(&str, Vec<bool>, u32)> = self
            .placements
            .iter()
            .map(|p| {
                (
                    &*p.label,
                    p.tags.iter().map(Option::is_some).collect(),
                    p.genuine,
                )
            })
            .collect();
        places.sort_unstable();
        places.hash(&mut h);
        let tips: Vec<&str> = self
            .tips
            .iter()
            .map(|t| &*self.placements[*t].label)
            .collect();
        tips.hash(&mut h);
        for m in &self.members {
            m.delivered.hash(&mut h);
            m.rounds.hash(&mut h);
            m.fresh.hash(&mut h);
            m.silent.is_some().hash(&mut h);
        }
        let mut proofs: Vec<(usize, u32, u32, u64)> = self
            .proofs
            .iter()
            .map(|p| (p.member, p.round, p.proof.server, p.proof.statement.count))
            .collect();
        proofs.sort_unstable();
        proofs.hash(&mut h);
        self.messages.hash(&mut h);
        self.receipts.hash(&mut h);
        // The order of the router core's inputs decides its indices.
        for l in self.router.labels() {
            l.hash(&mut h);
        }
        self.router_jobs.hash(&mut h);
        h.finish()
    }
}

impl fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChangeKind::AddJoiner => f.write_str("add the joiner"),
            ChangeKind::RemoveLast => f.write_str("remove the last member"),
        }
    }
}

impl Model {
    /// The action in words, with the labels it refers to in `s` (the state
    /// it is applied to).
    pub fn describe(&self, s: &State, a: &Action) -> String {
        let env = |e: usize| {
            s.envs
                .get(e)
                .map_or("?".to_owned(), |r| r.label.to_string())
        };
        let place = |p: usize| {
            s.placements
                .get(p)
                .map_or("?".to_owned(), |r| r.label.to_string())
        };
        let submits = if self.honest.is_some() {
            " and submits it to the router core"
        } else {
            ""
        };
        match *a {
            Action::Message { member } => format!("member {member} composes a Message{submits}"),
            Action::Receipt { member } => format!("member {member} composes a Receipt{submits}"),
            Action::Update {
                member,
                change,
                admin_padding,
            } => format!(
                "member {member} composes an Update to {change}{}{submits}",
                if admin_padding {
                    " in a next slot set with Admin-role padding slots"
                } else {
                    ""
                }
            ),
            Action::Attest { server, env: e } => {
                format!(
                    "honest server {server} attests {} at its next index",
                    env(e)
                )
            }
            Action::Deliver {
                member,
                env: e,
                tagged,
                after,
                previous,
            } => format!(
                "router delivers {} to member {member} with the tags on {} after {}{}{}",
                env(e),
                env(tagged),
                place(after),
                if self.bounds.equivocating.is_empty() {
                    ""
                } else {
                    " (colluding servers' included)"
                },
                previous_label(s, previous)
            ),
            Action::Substitute { env: e, admin } => format!(
                "puppet composes a substitute for {} listing itself as {}",
                env(e),
                if admin { "an Admin" } else { "a Member" }
            ),
            Action::PaddingUpdate { env: e } => format!(
                "puppet sends an Update adding the joiner from an Admin padding slot of the set {} installs",
                env(e)
            ),
            Action::ProofRequest { member } => {
                format!("member {member} asks for head proofs")
            }
            Action::Forward { server } => format!(
                "{} server {server} answers the router core's oldest job for it, and the core takes the answer",
                if self.bounds.equivocating.contains(&server) {
                    "colluding"
                } else {
                    "honest"
                }
            ),
            Action::RogueUpdate { member } => format!(
                "compromised member {member} sends an Update that adds the joiner and drops the last member"
            ),
            Action::ProofAnswer {
                member,
                stale,
                dropped,
            } => format!(
                "router answers member {member}'s head-proof request (stale servers {stale:#b}, dropped {dropped:#b})"
            ),
        }
    }
}
