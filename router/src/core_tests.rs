//! Tests of the core, driven through the production driver, against the
//! real order server cores (`tests/support/order_servers.rs`), with an
//! in-memory store that forgets uncommitted writes on a simulated crash.

use super::*;
use crate::driver::{CommitBatch, Driver, DriverConfig, fold};
use crate::error::PendingScope;
use crate::fanout::OpenOutcome;
use crate::request::{parse_register, parse_upload};
use crate::store::{Durability, EnvelopeReader, MemStore, Store};
use ed25519_dalek::{Signer, SigningKey};
use grompi_proto::envelope::HeaderFields;
use grompi_proto::ids::{NetworkBinding, prekey_signing_message};
use grompi_proto::mac::AttestationStatement;
use grompi_proto::pb::RefusalReason;
use grompi_proto::{
    BodyHash, Challenge, EnvelopeHeader, Head, KeyCommitment, RecipientBlock, Sequence, SlotKey,
    SlotSecret, SlotSet, SlotSetHash, Tag,
};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

// ------------------------------------------------------- order servers ---

#[path = "../tests/support/order_servers.rs"]
mod order_servers;
use order_servers::OrderServer;

/// A member: identity, session, order key secrets, slots per conversation.
struct Member {
    signing: SigningKey,
    account: AccountId,
    token: Vec<u8>,
    order_secrets: HashMap<SlotKey, SlotSecret>,
    sequence: u64,
}

/// The network the core under test serves: what its members sign their
/// registration for (the core is reached with requests parsed for it).
fn network() -> NetworkBinding {
    NetworkBinding::of("core-tests", "")
}

// ---------------------------------------------------------------- world ---

struct World {
    store: MemStore,
    /// The core, run by the loop every shell runs.
    driver: Driver,
    config: CoreConfig,
    servers: Vec<OrderServer>,
    down: Vec<bool>,
    rng: StdRng,
    now: Millis,
    next_ticket: u64,
    replies: HashMap<Ticket, Result<Response, RouterError>>,
    jobs: Vec<ServerJob>,
    deliveries: Vec<(AccountId, pb::Delivery)>,
    /// Whether closed batches wait for [`World::commit`] (group commit)
    /// instead of being committed by [`World::flush`].
    group_commit: bool,
    /// Closed batches waiting for the commit; a crash loses them.
    queued: Vec<CommitBatch>,
    /// Each server's ordered stream, as the router's worker keeps it.
    streams: Vec<crate::fanout::StreamOrder>,
    /// Resubmissions answered from storage ([`Effect::Lookup`]).
    lookups: usize,
}

fn config(n: usize, quorum: usize) -> (CoreConfig, Vec<OrderServer>) {
    let servers: Vec<OrderServer> = (0..n)
        .map(|i| OrderServer::new(i as u32, 40 + i as u8))
        .collect();
    (
        CoreConfig {
            servers: servers.iter().map(|s| s.secret.public_key()).collect(),
            quorum,
            limits: Limits {
                requests_per_second: 1_000_000,
                request_burst: 1_000_000,
                ..Limits::default()
            },
            padding_tiers: vec![4, 8, 16],
            noise_interval_ms: None,
            max_batch: 4,
            backoff_base_ms: 10,
            backoff_max_ms: 100,
        },
        servers,
    )
}

impl World {
    fn new(n: usize, quorum: usize, seed: u64) -> Self {
        let (config, servers) = config(n, quorum);
        let store = MemStore::new();
        let core = RouterCore::restore(config.clone(), store.load().unwrap()).unwrap();
        Self {
            store,
            // Production's loop, one job in flight per server unless a test
            // asks for more (`pipelined`).
            driver: Driver::new(core, DriverConfig::PRODUCTION.with_pipeline_depth(1)),
            config,
            servers,
            down: vec![false; n],
            rng: StdRng::seed_from_u64(seed),
            now: 1,
            next_ticket: 1,
            replies: HashMap::new(),
            jobs: Vec::new(),
            deliveries: Vec::new(),
            group_commit: false,
            queued: Vec::new(),
            streams: vec![crate::fanout::StreamOrder::default(); n],
            lookups: 0,
        }
    }

    /// Lets up to `depth` jobs per server be in flight, as over an ordered
    /// stream: [`World::run_job`] runs each server's jobs in the order sent,
    /// and a failure loses every job in flight to that server.
    fn pipelined(mut self, depth: usize) -> Self {
        let config = self.driver.config().with_pipeline_depth(depth);
        self.driver = Driver::new(self.driver.into_core(), config);
        self
    }

    /// The driver's core: its state includes what was fed and not yet flushed.
    fn core(&self) -> &RouterCore {
        self.driver.core()
    }

    /// The batch being built: fed and not yet flushed (a crash loses it).
    fn uncommitted(&self) -> &Output {
        self.driver.building()
    }

    /// Restarts the core from the store, with the same driver
    /// configuration; what was not flushed is lost.
    fn restart(&mut self) {
        let core = RouterCore::restore(self.config.clone(), self.store.load().unwrap()).unwrap();
        self.driver = Driver::new(core, self.driver.config());
    }

    /// Feeds a command without committing.
    fn feed(&mut self, cmd: Command) -> Ticket {
        let t = Ticket(self.next_ticket);
        self.next_ticket += 1;
        self.driver.handle(t, cmd, self.now, &mut self.rng);
        t
    }

    /// Closes the batch (the driver polls), performs the early effects,
    /// commits, then performs the other effects: the shell's loop. With
    /// group commit the closed batch waits for [`World::commit`].
    fn flush(&mut self) {
        let step = self.driver.finish(self.now, &mut self.rng);
        self.perform(step.early);
        self.queued.push(step.commit);
        if !self.group_commit {
            self.commit();
        }
    }

    /// Folds every closed batch into one commit, commits, then performs
    /// their effects: the committer's loop.
    fn commit(&mut self) {
        let batch = fold(std::mem::take(&mut self.queued));
        batch.commit_to(&mut self.store).unwrap();
        self.perform(batch.effects);
    }

    /// Performs effects: replies, jobs and deliveries are recorded.
    fn perform(&mut self, effects: Vec<Effect>) {
        for e in effects {
            match e {
                Effect::Reply(t, r) => {
                    self.replies.insert(t, r);
                }
                Effect::Job(j) => self.jobs.push(j),
                Effect::Lookup(t, l) => {
                    // The shell's storage read, then the answer.
                    self.lookups += 1;
                    let stored = self
                        .store
                        .admitted(&l.conversation, l.epoch, l.slot, l.sequence);
                    self.replies.insert(t, l.answer(stored));
                }
                Effect::Deliver { account, delivery } => self.deliveries.push((account, *delivery)),
            }
        }
    }

    fn call(&mut self, cmd: Command) -> Ticket {
        let t = self.feed(cmd);
        self.flush();
        t
    }

    fn reply(&self, t: Ticket) -> Option<&Result<Response, RouterError>> {
        self.replies.get(&t)
    }

    /// Runs one pending job; `lose` drops the server's answer after it acted.
    fn run_job(&mut self, k: usize, lose: bool) {
        if k >= self.jobs.len() {
            return;
        }
        for result in self.job_results(k, lose) {
            self.call(Command::JobDone(result));
        }
    }

    /// Runs one pending job and feeds its result without committing.
    fn run_job_uncommitted(&mut self, k: usize) {
        for result in self.job_results(k, false) {
            self.feed(Command::JobDone(result));
        }
    }

    /// Lets the server of job `k` act on its oldest job (a server's jobs
    /// arrive in the order sent). When that fails (server down, answer
    /// lost), the server's other jobs in flight fail with it, unseen.
    fn job_results(&mut self, k: usize, lose: bool) -> Vec<JobResult> {
        let server = self.jobs[k].server;
        let k = self
            .jobs
            .iter()
            .position(|j| j.server == server)
            .unwrap_or(k);
        if !self.streams[server as usize].admits(&self.jobs[k]) {
            // Its predecessor went on a stream that broke since: the
            // worker fails it unsent, and the current stream goes on.
            let job = self.jobs.remove(k);
            return vec![crate::fanout::StreamOrder::unsent(&job)];
        }
        let first = self.job_result(k, lose);
        let mut results = vec![first];
        if results[0].attest.is_err() {
            self.servers[server as usize].reset_stream();
            self.streams[server as usize].broke();
            while let Some(k) = self.jobs.iter().position(|j| j.server == server) {
                let job = self.jobs.remove(k);
                results.push(JobResult {
                    id: job.id,
                    server: job.server,
                    opens: job
                        .opens
                        .iter()
                        .map(|_| OpenOutcome::Failed("stream broke".into()))
                        .collect(),
                    attest: Err("stream broke".into()),
                });
            }
        }
        results
    }

    /// Takes job `k` and lets its server act on it.
    fn job_result(&mut self, k: usize, lose: bool) -> JobResult {
        let job = self.jobs.remove(k);
        let s = job.server as usize;
        if !job.request.items.is_empty() {
            self.streams[s].sent(&job);
        }
        if self.down[s] {
            JobResult {
                id: job.id,
                server: job.server,
                opens: job
                    .opens
                    .iter()
                    .map(|_| OpenOutcome::Failed("down".into()))
                    .collect(),
                attest: Err("connection refused".into()),
            }
        } else {
            let opens = job
                .opens
                .iter()
                .map(|o| match self.servers[s].open(o) {
                    Ok(r) => OpenOutcome::Opened(r.genesis_head),
                    Err(_) => OpenOutcome::AlreadyOpen,
                })
                .collect();
            let attest = if job.request.items.is_empty() {
                Ok(Vec::new())
            } else {
                Ok(self.servers[s].attest(&job.request))
            };
            if lose {
                JobResult {
                    id: job.id,
                    server: job.server,
                    opens: job
                        .opens
                        .iter()
                        .map(|_| OpenOutcome::Failed("lost".into()))
                        .collect(),
                    attest: Err("response lost".into()),
                }
            } else {
                JobResult {
                    id: job.id,
                    server: job.server,
                    opens,
                    attest,
                }
            }
        }
    }

    /// Runs jobs and advances time until nothing is left to do (or, while a
    /// server is down or noise is on, for a bounded number of rounds).
    fn settle(&mut self) {
        for _ in 0..2_000 {
            self.commit();
            if self.jobs.is_empty() {
                self.now += 200;
                self.flush();
                self.commit();
                if self.jobs.is_empty() {
                    return;
                }
            }
            self.run_job(0, false);
        }
    }

    /// Runs one pending job and crashes after the early effects of its
    /// result, before their commit.
    fn run_job_then_crash(&mut self, k: usize) {
        if k >= self.jobs.len() {
            return;
        }
        let before = self.jobs.len();
        self.run_job_uncommitted(k);
        debug_assert!(self.jobs.len() < before);
        self.driver.poll(self.now, &mut self.rng);
        let early = self.driver.take_early();
        self.perform(early);
        self.crash();
    }

    /// Simulated crash: uncommitted output and unfinished jobs are lost; a
    /// new core restarts from the store.
    fn crash(&mut self) {
        self.queued.clear();
        self.store.lose_deferred().unwrap();
        self.jobs.clear();
        for s in &mut self.servers {
            s.reset_stream();
        }
        for s in &mut self.streams {
            s.broke();
        }
        self.restart();
    }

    fn register(&mut self, seed: u8, order_keys: usize) -> Member {
        let t = self.call(Command::GetChallenge);
        let Some(Ok(Response::Challenge(c))) = self.reply(t) else {
            panic!("no challenge")
        };
        let challenge = Challenge::parse("c", &c.challenge).unwrap();
        let signing = SigningKey::from_bytes(&[seed; 32]);
        let secrets: Vec<SlotSecret> = (0..order_keys)
            .map(|i| SlotSecret::from_bytes([seed.wrapping_mul(31).wrapping_add(i as u8 + 1); 32]))
            .collect();
        let prekey = [seed; 32];
        let req = pb::RegisterRequest {
            identity: Some(pb::IdentityKeys {
                signing_key: signing.verifying_key().to_bytes().to_vec(),
                session_key: vec![seed; 32],
            }),
            challenge: challenge.to_vec(),
            signature: signing
                .sign(&challenge.network_signing_message(&network()))
                .to_bytes()
                .to_vec(),
            fallback_prekey: Some(pb::SignedPrekey {
                key: prekey.to_vec(),
                signature: signing
                    .sign(&prekey_signing_message(&prekey))
                    .to_bytes()
                    .to_vec(),
            }),
            one_time_prekeys: vec![],
            order_keys: secrets.iter().map(|s| s.public_key().to_vec()).collect(),
        };
        let t = self.call(Command::Register(parse_register(&req, &network()).unwrap()));
        let Some(Ok(Response::Registered(r))) = self.reply(t) else {
            panic!("register failed: {:?}", self.reply(t))
        };
        Member {
            signing,
            account: AccountId::parse("a", &r.account).unwrap(),
            token: r.session_token.clone(),
            order_secrets: secrets.into_iter().map(|s| (s.public_key(), s)).collect(),
            sequence: 0,
        }
    }

    fn authed(&mut self, m: &Member, call: Call) -> Ticket {
        self.call(Command::Authed {
            token: m.token.clone(),
            call,
        })
    }

    fn create(
        &mut self,
        members: &[&Member],
        id: ConversationId,
    ) -> pb::CreateConversationResponse {
        let spec = members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                (
                    m.account,
                    if i == 0 {
                        SlotRole::Admin
                    } else {
                        SlotRole::Member
                    },
                )
            })
            .collect();
        let t = self.authed(members[0], Call::CreateConversation(id, spec));
        self.settle();
        match self.reply(t) {
            Some(Ok(Response::Created(r))) => r.clone(),
            other => panic!("create failed: {other:?}"),
        }
    }
}

fn slot_of(created: &pb::CreateConversationResponse, m: &Member) -> (SlotIndex, SlotKey) {
    let a = created
        .assignments
        .iter()
        .find(|a| a.account == m.account.to_vec())
        .unwrap();
    (SlotIndex(a.slot), SlotKey::parse("k", &a.key).unwrap())
}

/// Builds an envelope from `m` at `slot`, with one block per other slot.
#[allow(clippy::too_many_arguments)]
fn envelope(
    m: &mut Member,
    conv: ConversationId,
    epoch: Epoch,
    slot: (SlotIndex, SlotKey),
    kind: EnvelopeKind,
    slot_set_hash: Option<SlotSetHash>,
    servers: &[OrderServerKey],
    good_tags: bool,
    body: &[u8],
) -> pb::SubmitRequest {
    m.sequence += 1;
    let header = EnvelopeHeader::new(HeaderFields {
        conversation: conv,
        epoch,
        kind,
        sender: slot.0,
        sequence: Sequence(m.sequence),
        last_seen: None,
        body_hash: BodyHash::of(body),
        key_commitment: KeyCommitment::from_bytes([7; 32]),
        slot_set_hash,
    })
    .unwrap();
    let blocks = (0..4u32)
        .filter(|s| *s != slot.0.0)
        .map(|s| RecipientBlock {
            recipient: SlotIndex(s),
            ciphertext: vec![s as u8; 16],
        })
        .collect();
    let e = Envelope::new(header, body.to_vec(), blocks).unwrap();
    let hash = e.hash();
    let secret = &m.order_secrets[&slot.1];
    let tags = servers
        .iter()
        .map(|k| {
            let mut t = secret
                .mac_keys(k)
                .unwrap()
                .submit(&hash, Sequence(m.sequence))
                .to_vec();
            if !good_tags {
                t[0] ^= 1;
            }
            t
        })
        .collect();
    pb::SubmitRequest {
        envelope: Some(pb::Envelope::from(&e)),
        submission_tags: tags,
    }
}

/// A Message in epoch 0 from `members[m]` in the slot `created` gave it,
/// with valid submission tags when `good`.
fn message(
    members: &mut [Member],
    created: &pb::CreateConversationResponse,
    id: ConversationId,
    servers: &[OrderServerKey],
    m: usize,
    good: bool,
    body: &[u8],
) -> pb::SubmitRequest {
    let slot = slot_of(created, &members[m]);
    envelope(
        &mut members[m],
        id,
        Epoch(0),
        slot,
        EnvelopeKind::Message,
        None,
        servers,
        good,
        body,
    )
}

fn submit(w: &mut World, m: &Member, req: pb::SubmitRequest) -> Ticket {
    let s = parse_submit(req, w.config.servers.len(), &w.config.limits).unwrap();
    w.authed(m, Call::Submit(s))
}

/// Checks a delivery as a member would: own block only, own tags verify.
fn check_delivery(w: &World, m: &Member, d: &pb::Delivery, slot: (SlotIndex, SlotKey)) {
    if let Some(b) = &d.block {
        assert_eq!(
            b.recipient_slot, slot.0.0,
            "a delivery carried another member's block"
        );
    }
    let secret = &m.order_secrets[&slot.1];
    for a in &d.attestations {
        assert!(
            a.tags.len() <= 1,
            "a delivery carried more than the member's own tag"
        );
        let server = w.config.servers[a.server as usize];
        let st = AttestationStatement {
            conversation: ConversationId::parse("c", &d.conversation_id).unwrap(),
            epoch: Epoch(d.header.as_ref().map_or(0, |h| h.epoch)),
            index: Index(a.index),
            head: Head::parse("h", &a.head).unwrap(),
        };
        let tag = Tag::parse("t", &a.tags[0]).unwrap();
        assert!(
            secret
                .mac_keys(&server)
                .unwrap()
                .verify_attestation(&st, &tag),
            "the member's tag from server {} does not verify",
            a.server
        );
    }
}

fn setup(
    w: &mut World,
    members: &mut [Member],
    id: ConversationId,
) -> pb::CreateConversationResponse {
    let refs: Vec<&Member> = members.iter().collect();
    let created = w.create(&refs, id);
    let set = SlotSet::try_from(created.slots.clone().unwrap()).unwrap();
    let servers = w.config.servers.clone();
    let slot = slot_of(&created, &members[0]);
    let req = envelope(
        &mut members[0],
        id,
        Epoch(0),
        slot,
        EnvelopeKind::Setup,
        Some(set.hash()),
        &servers,
        true,
        b"setup",
    );
    let t = submit(w, &members[0], req);
    w.settle();
    assert!(
        matches!(w.reply(t), Some(Ok(Response::Submitted(_)))),
        "{:?}",
        w.reply(t)
    );
    created
}

// ---------------------------------------------------------------- tests ---

#[test]
fn setup_messages_delivery_and_fetch() {
    let mut w = World::new(3, 3, 1);
    let mut members = vec![w.register(1, 4), w.register(2, 4), w.register(3, 4)];
    let id = ConversationId::from_bytes([9; 32]);
    let created = setup(&mut w, &mut members, id);
    assert_eq!(
        created.slots.as_ref().unwrap().slots.len(),
        4,
        "padded to the tier of 4"
    );
    let servers = w.config.servers.clone();
    let req = message(&mut members, &created, id, &servers, 1, true, b"hello");
    let t = submit(&mut w, &members[1], req);
    assert!(
        w.reply(t).is_none(),
        "no acknowledgement before the quorum attested"
    );
    w.settle();
    assert!(matches!(w.reply(t), Some(Ok(Response::Submitted(_)))));
    // Each member got indices 0 and 1 once, with only its own block and tags.
    for m in &members {
        let slot = slot_of(&created, m);
        let mine: Vec<_> = w
            .deliveries
            .iter()
            .filter(|(a, _)| *a == m.account)
            .collect();
        assert_eq!(
            mine.iter().map(|(_, d)| d.index).collect::<Vec<_>>(),
            vec![0, 1]
        );
        for (_, d) in mine {
            assert_eq!(d.attestations.len(), 3);
            check_delivery(&w, m, d, slot);
        }
    }
    // Servers got the position overwritten.
    assert!(
        w.deliveries
            .iter()
            .all(|(_, d)| d.attestations.iter().all(|a| a.server < 3))
    );
    // Fetch plan + store read gives the same views.
    let t = w.authed(
        &members[2],
        Call::Fetch {
            conversation: id,
            from: Index(0),
            limit: 10,
        },
    );
    let Some(Ok(Response::Fetch(plan))) = w.reply(t).cloned() else {
        panic!()
    };
    assert_eq!((plan.from, plan.to), (Index(0), Index(2)));
    let rows = w.store.read(&id, plan.from, plan.to).unwrap();
    assert_eq!(rows.len(), 2);
    for (i, stored, atts) in rows {
        assert_eq!(atts.len(), 3);
        let d = stored_view(&id, i, &stored, plan.member(&stored.envelope), &atts);
        check_delivery(&w, &members[2], &d, slot_of(&created, &members[2]));
    }
    // A non-member may not fetch.
    let outsider = w.register(50, 1);
    let t = w.authed(
        &outsider,
        Call::Fetch {
            conversation: id,
            from: Index(0),
            limit: 10,
        },
    );
    assert!(matches!(
        w.reply(t),
        Some(Err(RouterError::NotAMember(c))) if *c == id
    ));
    for s in &w.servers {
        assert!(s.violations.is_empty(), "{:?}", s.violations);
    }
}

#[test]
fn rejections_say_what_was_wrong() {
    let mut w = World::new(3, 3, 2);
    let mut members = vec![w.register(1, 4), w.register(2, 4)];
    let id = ConversationId::from_bytes([9; 32]);
    let created = setup(&mut w, &mut members, id);
    let servers = w.config.servers.clone();
    let slot0 = slot_of(&created, &members[0]);
    let slot1 = slot_of(&created, &members[1]);
    // Sender slot held by someone else.
    let req = envelope(
        &mut members[1],
        id,
        Epoch(0),
        (slot0.0, slot1.1),
        EnvelopeKind::Message,
        None,
        &servers,
        true,
        b"x",
    );
    let t = submit(&mut w, &members[1], req);
    assert!(
        matches!(w.reply(t), Some(Err(RouterError::NotTheSlotHolder { slot, epoch: Epoch(0) })) if *slot == slot0.0)
    );
    // Wrong epoch.
    let req = envelope(
        &mut members[1],
        id,
        Epoch(1),
        slot1,
        EnvelopeKind::Message,
        None,
        &servers,
        true,
        b"x",
    );
    let t = submit(&mut w, &members[1], req);
    assert!(matches!(
        w.reply(t),
        Some(Err(RouterError::Inadmissible(
            grompi_proto::Misbehaviour::WrongEpoch {
                expected: Epoch(0),
                got: Epoch(1)
            }
        )))
    ));
    // A second Setup.
    let set = SlotSet::try_from(created.slots.clone().unwrap()).unwrap();
    let req = envelope(
        &mut members[1],
        id,
        Epoch(0),
        slot1,
        EnvelopeKind::Setup,
        Some(set.hash()),
        &servers,
        true,
        b"x",
    );
    let t = submit(&mut w, &members[1], req);
    assert!(
        matches!(w.reply(t), Some(Err(RouterError::Inadmissible(grompi_proto::Misbehaviour::UnexpectedKind(k)))) if *k == grompi_proto::admission::SETUP_ONLY_AT_INDEX_0)
    );
    // Replay: an old sequence.
    members[1].sequence = 0;
    let req = message(&mut members, &created, id, &servers, 1, true, b"a");
    let t = submit(&mut w, &members[1], req);
    w.settle();
    assert!(matches!(w.reply(t), Some(Ok(_))));
    members[1].sequence = 0;
    let req = message(&mut members, &created, id, &servers, 1, true, b"b");
    let t = submit(&mut w, &members[1], req);
    assert!(matches!(
        w.reply(t),
        Some(Err(RouterError::Inadmissible(
            grompi_proto::Misbehaviour::SequenceNotIncreasing { slot, .. }
        ))) if *slot == slot1.0
    ));
    // Update without PrepareUpdate.
    let req = envelope(
        &mut members[0],
        id,
        Epoch(0),
        slot0,
        EnvelopeKind::Update,
        Some(SlotSetHash::from_bytes([1; 32])),
        &servers,
        true,
        b"u",
    );
    let t = submit(&mut w, &members[0], req);
    assert!(matches!(
        w.reply(t),
        Some(Err(RouterError::UpdateNotPrepared))
    ));
    // Unknown conversation.
    let req = envelope(
        &mut members[0],
        ConversationId::from_bytes([1; 32]),
        Epoch(0),
        slot0,
        EnvelopeKind::Message,
        None,
        &servers,
        true,
        b"u",
    );
    let t = submit(&mut w, &members[0], req);
    assert!(
        matches!(w.reply(t), Some(Err(RouterError::UnknownConversation(c))) if *c == ConversationId::from_bytes([1; 32]))
    );
    // Wrong number of tags, and oversized.
    let mut req = message(&mut members, &created, id, &servers, 0, true, b"u");
    req.submission_tags.pop();
    assert!(matches!(
        parse_submit(req, 3, &w.config.limits),
        Err(RouterError::SubmissionTagCount { got: 2, servers: 3 })
    ));
    let big = vec![0u8; w.config.limits.max_envelope_bytes + 1];
    let req = message(&mut members, &created, id, &servers, 0, true, &big);
    assert!(
        matches!(parse_submit(req, 3, &w.config.limits), Err(RouterError::EnvelopeTooLarge { size, max }) if max == w.config.limits.max_envelope_bytes && size > max)
    );
    // Unauthenticated.
    let t = w.call(Command::Authed {
        token: vec![0; 32],
        call: Call::GetKeyCounts,
    });
    assert!(matches!(w.reply(t), Some(Err(RouterError::UnknownSession))));
    // Creating with a member that has no order keys left.
    let poor = w.register(60, 0);
    let t = w.authed(
        &members[0],
        Call::CreateConversation(
            ConversationId::from_bytes([2; 32]),
            vec![
                (members[0].account, SlotRole::Admin),
                (poor.account, SlotRole::Member),
            ],
        ),
    );
    assert!(matches!(w.reply(t), Some(Err(RouterError::NoOrderKeys(a))) if *a == poor.account));
    // Same id again.
    let t = w.authed(
        &members[1],
        Call::CreateConversation(id, vec![(members[1].account, SlotRole::Admin)]),
    );
    assert!(matches!(
        w.reply(t),
        Some(Err(RouterError::ConversationExists(c))) if *c == id
    ));
    // Key upload works and counts.
    let up = pb::UploadKeysRequest {
        one_time_prekeys: vec![vec![3; 32]],
        order_keys: vec![],
        fallback_prekey: None,
    };
    let (u, f) = parse_upload(&up).unwrap();
    let t = w.authed(&poor, Call::UploadKeys(u, f));
    assert!(matches!(w.reply(t), Some(Ok(Response::Uploaded))));
    let _ = &poor.signing;
}

#[test]
fn an_envelope_every_server_refuses_is_dropped_and_the_index_reused() {
    let mut w = World::new(3, 3, 3);
    let mut members = vec![w.register(1, 4), w.register(2, 4)];
    let id = ConversationId::from_bytes([9; 32]);
    let created = setup(&mut w, &mut members, id);
    let servers = w.config.servers.clone();
    let bad = message(&mut members, &created, id, &servers, 1, false, b"forged");
    let good = message(&mut members, &created, id, &servers, 1, true, b"real");
    let tb = submit(&mut w, &members[1], bad);
    let tg = submit(&mut w, &members[1], good);
    w.settle();
    assert!(
        matches!(w.reply(tb), Some(Err(RouterError::RefusedByEveryServer(r)))
            if r.len() == 3 && r.iter().all(|r| r.reason == RefusalReason::BadSubmissionTag))
    );
    assert!(matches!(w.reply(tg), Some(Ok(_))));
    let conv = w.core().conversation(&id).unwrap();
    assert_eq!(
        conv.next(),
        Index(2),
        "the good envelope took the freed index 1"
    );
    for s in &w.servers {
        assert_eq!(s.convs[&id].chain.len(), 2);
        assert!(s.violations.is_empty(), "{:?}", s.violations);
    }
}

/// What order servers answered (tags, progress) may be committed without
/// a sync; dropping an envelope every server refused, which re-admits the
/// ones after it at new indices, may not.
#[test]
fn answers_commit_deferred_but_a_drop_that_moves_envelopes_commits_now() {
    let mut w = World::new(3, 3, 3);
    let mut members = vec![w.register(1, 4), w.register(2, 4)];
    let id = ConversationId::from_bytes([9; 32]);
    let created = setup(&mut w, &mut members, id);
    let servers = w.config.servers.clone();
    let mut send = |w: &mut World, good: bool, body: &[u8]| {
        let req = message(&mut members, &created, id, &servers, 1, good, body);
        let s = parse_submit(req, 3, &w.config.limits).unwrap();
        let t = w.feed(Command::Authed {
            token: members[1].token.clone(),
            call: Call::Submit(s),
        });
        assert_eq!(
            w.uncommitted().durability(),
            Durability::Now,
            "an admission"
        );
        w.flush();
        t
    };
    send(&mut w, false, b"forged");
    send(&mut w, true, b"real");
    let (mut deferred_tags, mut synced_drops) = (0, 0);
    for _ in 0..200 {
        if w.jobs.is_empty() {
            w.now += 200;
            w.flush();
            if w.jobs.is_empty() {
                break;
            }
        }
        w.run_job_uncommitted(0);
        let moves_envelopes = w
            .uncommitted()
            .records
            .iter()
            .any(|r| matches!(r, Record::Envelope { .. } | Record::Tail { .. }));
        let tags = w
            .uncommitted()
            .records
            .iter()
            .any(|r| matches!(r, Record::Attestation { .. }));
        match w.uncommitted().durability() {
            Durability::Now => {
                assert!(moves_envelopes, "only a moved envelope needs a sync");
                synced_drops += 1;
            }
            Durability::Deferred => {
                assert!(!moves_envelopes, "a moved envelope is never deferred");
                deferred_tags += usize::from(tags);
            }
        }
        w.flush();
    }
    assert_eq!(synced_drops, 1, "one drop, committed with a sync");
    assert!(deferred_tags >= 3, "the good envelope's tags, deferred");
    for s in &w.servers {
        assert_eq!(s.convs[&id].chain.len(), 2);
    }
}

#[test]
fn quorum_stalls_at_n_and_progresses_at_two_of_three_with_late_tags() {
    for quorum in [3, 2] {
        let mut w = World::new(3, quorum, 4);
        let mut members = vec![w.register(1, 4), w.register(2, 4)];
        let id = ConversationId::from_bytes([9; 32]);
        let created = setup(&mut w, &mut members, id);
        let servers = w.config.servers.clone();
        w.down[2] = true;
        let req = message(&mut members, &created, id, &servers, 1, true, b"m");
        let t = submit(&mut w, &members[1], req);
        w.settle();
        if quorum == 3 {
            assert!(w.reply(t).is_none(), "t = N stalls while a server is down");
        } else {
            assert!(matches!(w.reply(t), Some(Ok(_))), "t = 2 of 3 progresses");
            let first = w.deliveries.iter().filter(|(_, d)| d.index == 1).count();
            assert_eq!(first, 2);
        }
        w.down[2] = false;
        w.now += 1000;
        w.settle();
        assert!(matches!(w.reply(t), Some(Ok(_))));
        // Both members end up with all three tags for index 1.
        for m in &members {
            let tags: usize = w
                .deliveries
                .iter()
                .filter(|(a, d)| *a == m.account && d.index == 1)
                .map(|(_, d)| d.attestations.len())
                .sum();
            assert_eq!(tags, 3, "quorum {quorum}");
            let headers = w
                .deliveries
                .iter()
                .filter(|(a, d)| *a == m.account && d.index == 1 && d.header.is_some())
                .count();
            assert_eq!(headers, 1, "delivered exactly once");
        }
        assert_eq!(w.servers[2].convs[&id].chain.len(), 2, "caught up in order");
        assert!(w.servers.iter().all(|s| s.violations.is_empty()));
    }
}

/// With an ordered stream per server, jobs are pipelined: the router sends
/// index i+1 before i is answered, each server still sees the indices in
/// order, and a lost answer (the stream breaks) loses every job in flight,
/// which are sent again from the server's progress.
#[test]
fn pipelined_jobs_keep_each_server_in_order_and_recover_from_a_broken_stream() {
    let mut w = World::new(3, 3, 6).pipelined(4);
    let mut members = vec![w.register(1, 4), w.register(2, 4)];
    let id = ConversationId::from_bytes([9; 32]);
    let created = setup(&mut w, &mut members, id);
    let servers = w.config.servers.clone();
    let mut tickets = Vec::new();
    for k in 0..4 {
        let req = message(
            &mut members,
            &created,
            id,
            &servers,
            1,
            true,
            format!("m{k}").as_bytes(),
        );
        tickets.push(submit(&mut w, &members[1], req));
    }
    let to_server_0 = w.jobs.iter().filter(|j| j.server == 0).count();
    assert_eq!(to_server_0, 4, "four jobs in flight to one server");
    // Server 0 answers its first job, then its answer to the second is lost:
    // the stream breaks and the last two jobs are lost with it.
    let k = w.jobs.iter().position(|j| j.server == 0).unwrap();
    w.run_job(k, false);
    let k = w.jobs.iter().position(|j| j.server == 0).unwrap();
    w.run_job(k, true);
    assert_eq!(w.jobs.iter().filter(|j| j.server == 0).count(), 0);
    w.now += 1000;
    w.settle();
    for t in &tickets {
        assert!(matches!(w.reply(*t), Some(Ok(Response::Submitted(_)))));
    }
    for s in &w.servers {
        assert!(s.violations.is_empty(), "{:?}", s.violations);
        assert_eq!(s.convs[&id].chain.len(), 5, "the Setup and four messages");
    }
    let chain: Vec<_> = w.servers[0].convs[&id]
        .chain
        .iter()
        .map(|(h, _)| *h)
        .collect();
    for s in &w.servers[1..] {
        let other: Vec<_> = s.convs[&id].chain.iter().map(|(h, _)| *h).collect();
        assert_eq!(chain, other);
    }
}

/// Deliveries and acknowledgements that follow from order servers' answers
/// leave before the commit (early); the admission they rest on was
/// committed before the job was sent. A crash in between loses nothing a
/// member saw: the restarted router asks again and shows the same.
#[test]
fn attested_deliveries_leave_before_the_commit_and_survive_a_crash() {
    let mut w = World::new(3, 2, 5);
    let mut members = vec![w.register(1, 4), w.register(2, 4)];
    let id = ConversationId::from_bytes([9; 32]);
    let created = setup(&mut w, &mut members, id);
    let servers = w.config.servers.clone();
    let req = message(&mut members, &created, id, &servers, 1, true, b"m");
    let t = submit(&mut w, &members[1], req);
    assert!(
        w.reply(t).is_none(),
        "no acknowledgement before attestation"
    );
    assert_eq!(
        w.jobs.len(),
        3,
        "one job per server, after the admission's commit"
    );
    // Two servers answer; the second answer makes index 1 quorate.
    w.run_job_uncommitted(0);
    w.driver.poll(w.now, &mut w.rng);
    assert!(
        w.uncommitted().early.is_empty(),
        "one tag of two: nothing to send"
    );
    w.flush();
    w.run_job_uncommitted(0);
    assert!(
        !w.uncommitted().records.is_empty(),
        "the tags are still to be committed"
    );
    let early_deliveries = w
        .uncommitted()
        .early
        .iter()
        .filter(|e| matches!(e, Effect::Deliver { delivery, .. } if delivery.index == 1))
        .count();
    assert_eq!(early_deliveries, 2, "both members' deliveries are early");
    assert!(
        w.uncommitted()
            .early
            .iter()
            .any(|e| matches!(e, Effect::Reply(r, Ok(Response::Submitted(_))) if *r == t)),
        "the sender's acknowledgement is early"
    );
    assert!(
        !w.uncommitted()
            .effects
            .iter()
            .any(|e| matches!(e, Effect::Deliver { .. } | Effect::Reply(..))),
        "nothing of the job's result waits for the commit"
    );
    // Perform the early effects, then crash before the commit.
    let early = w.driver.take_early();
    w.perform(early);
    let shown: Vec<(AccountId, pb::Delivery)> = w.deliveries.clone();
    w.crash();
    w.deliveries.clear();
    w.now += 1000;
    w.settle();
    for (account, d) in shown.iter().filter(|(_, d)| d.index == 1) {
        let again = w
            .deliveries
            .iter()
            .find(|(a, x)| a == account && x.index == 1 && x.header.is_some())
            .map(|(_, x)| x);
        let again = again.expect("redelivered after the restart");
        assert_eq!(again.header, d.header, "the same envelope at index 1");
        for a in &d.attestations {
            let same = again
                .attestations
                .iter()
                .chain(
                    w.deliveries
                        .iter()
                        .filter(|(x, y)| x == account && y.index == 1 && y.header.is_none())
                        .flat_map(|(_, y)| y.attestations.iter()),
                )
                .any(|b| b.server == a.server && b.tags == a.tags && b.head == a.head);
            assert!(
                same,
                "server {}'s tag is the same after the restart",
                a.server
            );
        }
    }
    assert!(w.servers.iter().all(|s| s.violations.is_empty()));
}

/// What a Fetch from 0 shows `m`: the plan's range and each index's
/// delivery as read from the store.
fn fetched(w: &mut World, m: &Member, id: ConversationId) -> (Index, Vec<pb::Delivery>) {
    let t = w.authed(
        m,
        Call::Fetch {
            conversation: id,
            from: Index(0),
            limit: 1000,
        },
    );
    let Some(Ok(Response::Fetch(plan))) = w.reply(t).cloned() else {
        panic!("no fetch plan: {:?}", w.reply(t))
    };
    let rows = w.store.read(&id, plan.from, plan.to).unwrap();
    let views = rows
        .iter()
        .map(|(i, stored, atts)| stored_view(&id, *i, stored, plan.member(&stored.envelope), atts))
        .collect();
    (plan.to, views)
}

/// `delivered` after a crash. Deliveries of attested indices leave before
/// the deferred commit of the tags and progress that make them
/// deliverable; a crash that loses those records restarts the router with
/// a lower `delivered` (recomputed from the durable progress), so Fetch
/// briefly ends earlier than what members were shown. Once the order
/// servers answer the repeated requests (identically), `delivered` is back
/// where it was and Fetch returns the same envelopes with the same tags:
/// nothing acknowledged stays hidden.
#[test]
fn delivered_catches_up_after_a_crash_that_lost_the_deferred_tags() {
    let mut w = World::new(3, 2, 14);
    let mut members = vec![w.register(1, 4), w.register(2, 4), w.register(3, 4)];
    let id = ConversationId::from_bytes([9; 32]);
    let created = setup(&mut w, &mut members, id);
    let servers = w.config.servers.clone();
    let mut tickets = Vec::new();
    for k in 0..5 {
        let body = format!("message {k}");
        let req = message(
            &mut members,
            &created,
            id,
            &servers,
            1,
            true,
            body.as_bytes(),
        );
        tickets.push(submit(&mut w, &members[1], req));
    }
    // The order servers answer; their tags and progress are committed
    // deferred, after the deliveries and acknowledgements left.
    w.settle();
    for t in &tickets {
        submitted_hash(w.reply(*t));
    }
    let delivered = w.core().conversations[&id].delivered;
    assert_eq!(delivered, Index(6));
    let shown: Vec<u64> = w
        .deliveries
        .iter()
        .filter(|(a, d)| *a == members[2].account && d.header.is_some())
        .map(|(_, d)| d.index)
        .collect();
    assert_eq!(shown, (0..6).collect::<Vec<_>>(), "members were shown 0..6");
    let (to, before) = fetched(&mut w, &members[2], id);
    assert_eq!(to, delivered);
    assert!(before.iter().all(|d| d.attestations.len() == 3));

    // A crash loses every deferred commit since the last synced one.
    w.crash();
    let after_crash = w.core().conversations[&id].delivered;
    assert!(
        after_crash < delivered,
        "the test needs the crash to lose tags: delivered {} after it",
        after_crash.0
    );
    let (to, _) = fetched(&mut w, &members[2], id);
    assert_eq!(to, after_crash, "until the servers answer again");

    // The servers answer the repeated requests with the same tags.
    w.now += 1000;
    w.settle();
    assert!(w.core().conversations[&id].delivered >= delivered);
    let (to, after) = fetched(&mut w, &members[2], id);
    assert!(to >= delivered);
    assert_eq!(
        after[..before.len()],
        before[..],
        "the same envelopes with the same tags"
    );
    assert!(w.servers.iter().all(|s| s.violations.is_empty()));
}

/// The envelope hash a Submit was answered with.
fn submitted_hash(r: Option<&Result<Response, RouterError>>) -> Vec<u8> {
    match r {
        Some(Ok(Response::Submitted(s))) => s.envelope_hash.clone(),
        other => panic!("not acknowledged: {other:?}"),
    }
}

/// A client that lost the router's reply resubmits the identical envelope:
/// the router answers it as a success, never admits it twice, while it
/// waits for attestation, once delivered, and after a restart when every
/// server attested it and it left memory (only its slot's last sequence,
/// index and hash stay). A different envelope with the same slot and
/// sequence is still refused.
#[test]
fn resubmitting_an_identical_envelope_is_idempotent_also_after_a_restart() {
    let mut w = World::new(3, 2, 11);
    let mut members = vec![w.register(1, 4), w.register(2, 4)];
    let id = ConversationId::from_bytes([9; 32]);
    let created = setup(&mut w, &mut members, id);
    let servers = w.config.servers.clone();
    let req = message(&mut members, &created, id, &servers, 1, true, b"once");
    let first = submit(&mut w, &members[1], req.clone());
    let waiting = submit(&mut w, &members[1], req.clone());
    w.settle();
    let hash = submitted_hash(w.reply(first));
    assert_eq!(
        submitted_hash(w.reply(waiting)),
        hash,
        "resubmitted while pending"
    );
    let delivered = submit(&mut w, &members[1], req.clone());
    assert_eq!(
        submitted_hash(w.reply(delivered)),
        hash,
        "resubmitted once delivered"
    );
    assert_eq!(
        w.core().conversations[&id].next(),
        Index(2),
        "admitted once"
    );

    // Every server attested index 1 and a later durable commit carried
    // their progress: after a restart index 1 is no longer in memory.
    w.store.commit(&[], Durability::Now).unwrap();
    w.crash();
    w.settle();
    assert!(
        !w.core().conversations[&id].pending.contains_key(&Index(1)),
        "the test needs index 1 out of memory"
    );
    let delivered_before = w.deliveries.len();
    let after_restart = submit(&mut w, &members[1], req.clone());
    w.settle();
    assert_eq!(
        submitted_hash(w.reply(after_restart)),
        hash,
        "resubmitted after a restart"
    );
    assert_eq!(
        w.core().conversations[&id].next(),
        Index(2),
        "not admitted again"
    );
    assert_eq!(w.deliveries.len(), delivered_before, "not delivered again");

    // Another envelope with the same slot and sequence: refused.
    members[1].sequence -= 1;
    let other = message(&mut members, &created, id, &servers, 1, true, b"twice");
    let t = submit(&mut w, &members[1], other);
    w.settle();
    assert!(
        matches!(
            w.reply(t),
            Some(Err(RouterError::Inadmissible(
                grompi_proto::Misbehaviour::SequenceNotIncreasing { .. }
            )))
        ),
        "{:?}",
        w.reply(t)
    );
    assert_eq!(w.core().conversations[&id].next(), Index(2));
    // The next envelope from the slot is admitted as usual.
    let next = message(&mut members, &created, id, &servers, 1, true, b"next");
    let t = submit(&mut w, &members[1], next);
    w.settle();
    assert_ne!(submitted_hash(w.reply(t)), hash);
    assert_eq!(w.core().conversations[&id].next(), Index(3));
    assert!(w.servers.iter().all(|s| s.violations.is_empty()));
}

/// Older envelopes of a slot, not only its last, stay recognisable after
/// they left memory: a member sends sequences 1, 2 and 3, every server
/// attests them, the router restarts; resubmitting 1 and 2 is answered
/// from storage with their original hashes, nothing is admitted, attested
/// or delivered again, and a different envelope with sequence 2 (or 1) is
/// refused.
#[test]
fn resubmitting_older_envelopes_after_a_restart_is_answered_from_storage() {
    let mut w = World::new(3, 2, 12);
    let mut members = vec![w.register(1, 4), w.register(2, 4)];
    let id = ConversationId::from_bytes([9; 32]);
    let created = setup(&mut w, &mut members, id);
    let servers = w.config.servers.clone();
    let slot = slot_of(&created, &members[1]).0;
    let mut sent = Vec::new();
    for body in [&b"one"[..], b"two", b"three"] {
        let req = message(&mut members, &created, id, &servers, 1, true, body);
        let t = submit(&mut w, &members[1], req.clone());
        w.settle();
        sent.push((req, submitted_hash(w.reply(t))));
    }
    assert_eq!(members[1].sequence, 3, "sequences 1, 2 and 3");
    assert_eq!(w.core().conversations[&id].next(), Index(4));
    // Each admission stored where its sequence went.
    for (k, (_, hash)) in sent.iter().enumerate() {
        let row = w
            .store
            .admitted(&id, Epoch(0), slot, Sequence(k as u64 + 1))
            .unwrap();
        assert_eq!(
            row,
            Some(crate::record::Admitted {
                index: Index(k as u64 + 1),
                hash: EnvelopeHash::from_bytes(hash.as_slice().try_into().unwrap()),
            })
        );
    }

    // A later durable commit carries every server's progress; after the
    // restart none of the three is in memory.
    w.store.commit(&[], Durability::Now).unwrap();
    w.crash();
    w.settle();
    let conv = &w.core().conversations[&id];
    assert!(
        (1..4).all(|i| !conv.pending.contains_key(&Index(i))),
        "the test needs indices 1 to 3 out of memory"
    );
    assert_eq!(conv.known_len(), conv.pending.len());
    let delivered_before = w.deliveries.len();
    let lookups_before = w.lookups;
    for (req, hash) in &sent[..2] {
        let t = submit(&mut w, &members[1], req.clone());
        w.settle();
        assert_eq!(
            submitted_hash(w.reply(t)),
            *hash,
            "an older envelope resubmitted after a restart"
        );
    }
    assert_eq!(
        w.lookups,
        lookups_before + 2,
        "both were answered from storage"
    );
    // The slot's last one is answered from memory, as before.
    let t = submit(&mut w, &members[1], sent[2].0.clone());
    w.settle();
    assert_eq!(submitted_hash(w.reply(t)), sent[2].1);
    assert_eq!(w.lookups, lookups_before + 2);
    assert_eq!(
        w.core().conversations[&id].next(),
        Index(4),
        "nothing admitted again"
    );
    assert_eq!(
        w.deliveries.len(),
        delivered_before,
        "nothing delivered again"
    );
    for s in &w.servers {
        assert_eq!(s.convs[&id].chain.len(), 4, "nothing attested again");
    }

    // Different envelopes with sequence 2 and 1: refused, from storage.
    for sequence in [2u64, 1] {
        members[1].sequence = sequence - 1;
        let other = message(&mut members, &created, id, &servers, 1, true, b"another");
        let t = submit(&mut w, &members[1], other);
        w.settle();
        assert!(
            matches!(
                w.reply(t),
                Some(Err(RouterError::Inadmissible(
                    grompi_proto::Misbehaviour::SequenceNotIncreasing { last, got, .. }
                ))) if *last == Sequence(3) && *got == Sequence(sequence)
            ),
            "sequence {sequence}: {:?}",
            w.reply(t)
        );
    }
    assert_eq!(w.lookups, lookups_before + 4);
    // Another member cannot have them answered: the slot is not its own.
    let t = submit(&mut w, &members[0], sent[0].0.clone());
    w.settle();
    assert!(
        matches!(w.reply(t), Some(Err(RouterError::NotTheSlotHolder { .. }))),
        "{:?}",
        w.reply(t)
    );
    assert_eq!(w.lookups, lookups_before + 4);
    assert_eq!(w.core().conversations[&id].next(), Index(4));
    assert!(w.servers.iter().all(|s| s.violations.is_empty()));
}

/// The hashes kept for idempotent resubmission are those of the envelopes
/// in memory only: after 500 messages delivered and attested by every
/// server the map is empty again, and while a server lags it holds
/// exactly what waits for it.
#[test]
fn the_known_envelopes_are_only_those_in_memory() {
    let mut w = World::new(3, 2, 13);
    let mut members = vec![w.register(1, 4), w.register(2, 4)];
    let id = ConversationId::from_bytes([9; 32]);
    let created = setup(&mut w, &mut members, id);
    let servers = w.config.servers.clone();
    let mut most = 0;
    for k in 0..500 {
        let body = format!("message {k}");
        let req = message(
            &mut members,
            &created,
            id,
            &servers,
            1,
            true,
            body.as_bytes(),
        );
        let t = submit(&mut w, &members[1], req);
        w.settle();
        submitted_hash(w.reply(t));
        let conv = &w.core().conversations[&id];
        assert_eq!(conv.known_len(), conv.pending.len(), "after message {k}");
        most = most.max(conv.known_len());
    }
    let conv = &w.core().conversations[&id];
    assert_eq!(conv.delivered, Index(501));
    assert_eq!(
        conv.known_len(),
        0,
        "every message attested by every server"
    );
    assert!(most <= 1, "at most the message in flight: {most}");
    // A lagging server: what waits for it, and nothing else.
    w.down[2] = true;
    for k in 0..20 {
        let body = format!("late {k}");
        let req = message(
            &mut members,
            &created,
            id,
            &servers,
            1,
            true,
            body.as_bytes(),
        );
        submit(&mut w, &members[1], req);
        w.settle();
    }
    let conv = &w.core().conversations[&id];
    assert_eq!(conv.pending.len(), 20);
    assert_eq!(conv.known_len(), 20);
    w.down[2] = false;
    w.now += 10_000;
    w.settle();
    assert_eq!(w.core().conversations[&id].known_len(), 0);
}

#[test]
fn updates_install_the_prepared_epoch_and_reach_new_members() {
    let mut w = World::new(2, 2, 5);
    let mut members = [w.register(1, 4), w.register(2, 4), w.register(3, 4)];
    let id = ConversationId::from_bytes([9; 32]);
    let (first, rest) = members.split_at_mut(2);
    let mut two = vec![
        std::mem::replace(&mut first[0], w.register(70, 1)),
        std::mem::replace(&mut first[1], w.register(71, 1)),
    ];
    let created = setup(&mut w, &mut two, id);
    let servers = w.config.servers.clone();
    let next_members = vec![
        (two[0].account, SlotRole::Admin),
        (two[1].account, SlotRole::Member),
        (rest[0].account, SlotRole::Member),
    ];
    let t = w.authed(&two[0], Call::PrepareUpdate(id, next_members));
    let Some(Ok(Response::Prepared(p))) = w.reply(t).cloned() else {
        panic!("{:?}", w.reply(t))
    };
    assert_eq!(p.next_epoch, 1);
    let next_set = SlotSet::try_from(p.slots.clone().unwrap()).unwrap();
    let slot0 = slot_of(&created, &two[0]);
    let req = envelope(
        &mut two[0],
        id,
        Epoch(0),
        slot0,
        EnvelopeKind::Update,
        Some(next_set.hash()),
        &servers,
        true,
        b"add",
    );
    let t = submit(&mut w, &two[0], req);
    w.settle();
    assert!(matches!(w.reply(t), Some(Ok(_))), "{:?}", w.reply(t));
    // The new member got the Update with only a next-epoch tag.
    let newcomer: Vec<_> = w
        .deliveries
        .iter()
        .filter(|(a, _)| *a == rest[0].account)
        .collect();
    assert_eq!(newcomer.len(), 1);
    let d = &newcomer[0].1;
    assert_eq!(d.index, 1);
    assert!(
        d.attestations
            .iter()
            .all(|a| a.tags.is_empty() && a.next_tags.len() == 1)
    );
    // The old members got their old-epoch tag and their next-epoch tag.
    let old: Vec<_> = w
        .deliveries
        .iter()
        .filter(|(a, d)| *a == two[1].account && d.index == 1)
        .collect();
    assert!(
        old[0]
            .1
            .attestations
            .iter()
            .all(|a| a.tags.len() == 1 && a.next_tags.len() == 1)
    );
    // A message in epoch 1 from the newcomer.
    let a = p
        .assignments
        .iter()
        .find(|a| a.account == rest[0].account.to_vec())
        .unwrap();
    let slot = (SlotIndex(a.slot), SlotKey::parse("k", &a.key).unwrap());
    let req = envelope(
        &mut rest[0],
        id,
        Epoch(1),
        slot,
        EnvelopeKind::Message,
        None,
        &servers,
        true,
        b"hi",
    );
    let t = submit(&mut w, &rest[0], req);
    w.settle();
    assert!(matches!(w.reply(t), Some(Ok(_))), "{:?}", w.reply(t));
    // The removed-nobody old member still gets epoch-1 messages.
    assert!(
        w.deliveries
            .iter()
            .any(|(a, d)| *a == two[1].account && d.index == 2)
    );
}

#[test]
fn noise_envelopes_come_from_padding_slots_and_are_attested() {
    let mut w = World::new(2, 2, 6);
    w.config.noise_interval_ms = Some(100);
    w.restart();
    let mut members = vec![w.register(1, 4)];
    let id = ConversationId::from_bytes([9; 32]);
    let created = setup(&mut w, &mut members, id);
    w.now += 1000;
    w.flush();
    w.settle();
    let noise: Vec<_> = w
        .deliveries
        .iter()
        .filter(|(_, d)| {
            d.header
                .as_ref()
                .is_some_and(|h| h.kind == EnvelopeKind::Noise.code() as i32)
        })
        .collect();
    assert!(!noise.is_empty(), "noise was sent");
    let mine = slot_of(&created, &members[0]).0;
    for (_, d) in noise {
        assert_ne!(d.header.as_ref().unwrap().sender_slot, mine.0);
        assert_eq!(d.attestations.len(), 2);
    }
}

/// One step of the random schedule.
#[derive(Debug, Clone)]
enum Step {
    Submit {
        sender: usize,
        good: bool,
    },
    RunJob {
        pick: usize,
        lose: bool,
    },
    ToggleDown(usize),
    Tick,
    CrashBeforeCommit,
    /// A job's result is applied and its early effects (tags, deliveries,
    /// acknowledgements) performed, then the router crashes before the
    /// commit.
    CrashAfterEarly(usize),
    Crash,
    /// The committer commits every batch closed so far, folded (with
    /// group commit; otherwise every flush has committed already).
    Commit,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0usize..3, prop::bool::weighted(0.85)).prop_map(|(sender, good)| Step::Submit { sender, good }),
        6 => (0usize..8, prop::bool::weighted(0.1)).prop_map(|(pick, lose)| Step::RunJob { pick, lose }),
        1 => (0usize..3).prop_map(Step::ToggleDown),
        1 => Just(Step::Tick),
        1 => Just(Step::CrashBeforeCommit),
        2 => (0usize..8).prop_map(Step::CrashAfterEarly),
        1 => Just(Step::Crash),
        3 => Just(Step::Commit),
    ]
}

/// Checks that no member is shown two different envelopes at one index,
/// crashes included (deliveries performed before a crash stay shown).
fn record_shown(
    w: &World,
    shown: &mut HashMap<(AccountId, u64), pb::EnvelopeHeader>,
) -> Result<(), TestCaseError> {
    for (account, d) in &w.deliveries {
        if let Some(h) = &d.header {
            let before = shown
                .entry((*account, d.index))
                .or_insert_with(|| h.clone());
            prop_assert_eq!(
                &*before,
                h,
                "index {} shown with two different envelopes",
                d.index
            );
        }
    }
    Ok(())
}

/// Each server's progress as a restart reads it from the store (derived
/// from the attestation rows: no progress rows are written) never runs
/// ahead of what the core knows, and equals it once `exact` (everything
/// committed).
fn stored_progress_matches_the_core(
    w: &World,
    id: &ConversationId,
    exact: bool,
) -> Result<(), TestCaseError> {
    use crate::record::Table;
    use crate::store::KvRead;
    prop_assert!(
        w.store.scan(Table::Progress, &[], &[]).unwrap().is_empty(),
        "a progress row was written"
    );
    let Some(conv) = w.core().conversation(id) else {
        return Ok(());
    };
    let mut stored = vec![Index(0); conv.progress.len()];
    for (c, server, next) in w.store.load().unwrap().progress {
        prop_assert_eq!(c, *id);
        prop_assert!((server as usize) < stored.len(), "server {}", server);
        stored[server as usize] = next;
    }
    if exact {
        prop_assert_eq!(&stored, &conv.progress);
    } else {
        for (s, m) in stored.iter().zip(&conv.progress) {
            prop_assert!(
                s <= m,
                "stored progress {:?} ahead of the core's {:?}",
                stored,
                conv.progress
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Under random interleavings of submissions, server failures, lost
    /// responses and crashes, with or without group commit (closed batches
    /// waiting to be folded into one commit while early effects leave, and
    /// lost with them in a crash): no server is ever sent i+1 before i; every
    /// acknowledged envelope ends up at exactly one index, at every server;
    /// every delivery holds only the member's own block and verifying tags,
    /// and no member gets an index's content twice between crashes.
    #[test]
    fn fanout_order_durability_and_views_under_random_schedules(
        steps in prop::collection::vec(step(), 1..60),
        quorum in 2usize..=3,
        depth in 1usize..=3,
        group_commit in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut w = World::new(3, quorum, seed).pipelined(depth);
        let mut members = vec![w.register(1, 4), w.register(2, 4), w.register(3, 4)];
        let id = ConversationId::from_bytes([9; 32]);
        let created = setup(&mut w, &mut members, id);
        w.group_commit = group_commit;
        let servers = w.config.servers.clone();
        let mut submitted: Vec<(Ticket, EnvelopeHash, bool)> = Vec::new();
        // What each member was shown at each index, across crashes.
        let mut shown: HashMap<(AccountId, u64), pb::EnvelopeHeader> = HashMap::new();
        for s in steps {
            match s {
                Step::Submit { sender, good } => {
                    let slot = slot_of(&created, &members[sender]);
                    let req = envelope(&mut members[sender], id, Epoch(0), slot, EnvelopeKind::Message, None, &servers, good, b"m");
                    let hash = Envelope::try_from(req.envelope.clone().unwrap()).unwrap().hash();
                    let s = parse_submit(req, 3, &w.config.limits).unwrap();
                    let t = w.feed(Command::Authed { token: members[sender].token.clone(), call: Call::Submit(s) });
                    submitted.push((t, hash, good));
                    w.flush();
                }
                Step::RunJob { pick, lose } => {
                    if !w.jobs.is_empty() {
                        let k = pick % w.jobs.len();
                        w.run_job(k, lose);
                    }
                }
                Step::ToggleDown(s) => w.down[s] = !w.down[s],
                Step::Tick => { w.now += 50; w.flush(); }
                Step::CrashBeforeCommit => {
                    let slot = slot_of(&created, &members[0]);
                    let req = envelope(&mut members[0], id, Epoch(0), slot, EnvelopeKind::Message, None, &servers, true, b"lost");
                    let s = parse_submit(req, 3, &w.config.limits).unwrap();
                    let _ = w.feed(Command::Authed { token: members[0].token.clone(), call: Call::Submit(s) });
                    w.crash();
                    w.deliveries.clear();
                }
                Step::CrashAfterEarly(pick) => {
                    if !w.jobs.is_empty() {
                        let k = pick % w.jobs.len();
                        w.run_job_then_crash(k);
                        record_shown(&w, &mut shown)?;
                        w.deliveries.clear();
                    }
                }
                Step::Crash => { w.crash(); w.deliveries.clear(); }
                Step::Commit => w.commit(),
            }
            record_shown(&w, &mut shown)?;
            stored_progress_matches_the_core(&w, &id, false)?;
            // The bytes held are what the entries weigh, and only what was
            // delivered is summarised.
            if let Err(e) = w.core().audit_held() {
                prop_assert!(false, "{}", e);
            }
            // Views are always the member's own.
            for (account, d) in &w.deliveries {
                let m = members.iter().find(|m| m.account == *account).unwrap();
                check_delivery(&w, m, d, slot_of(&created, m));
            }
            let mut seen = BTreeSet::new();
            for (account, d) in &w.deliveries {
                if d.header.is_some() {
                    prop_assert!(seen.insert((*account, d.index)), "index {} delivered twice", d.index);
                }
            }
        }
        for d in &mut w.down { *d = false; }
        w.now += 10_000;
        w.settle();
        for s in &w.servers {
            prop_assert!(s.violations.is_empty(), "{:?}", s.violations);
        }
        stored_progress_matches_the_core(&w, &id, true)?;
        let chain: Vec<EnvelopeHash> = w.servers[0].convs[&id].chain.iter().map(|(h, _)| *h).collect();
        for s in &w.servers[1..] {
            let other: Vec<EnvelopeHash> = s.convs[&id].chain.iter().map(|(h, _)| *h).collect();
            prop_assert_eq!(&chain, &other, "servers agree after catch-up");
        }
        for (t, hash, good) in &submitted {
            let acked = matches!(w.reply(*t), Some(Ok(Response::Submitted(_))));
            let count = chain.iter().filter(|h| *h == hash).count();
            if acked {
                prop_assert_eq!(count, 1, "an acknowledged envelope is at exactly one index");
            }
            if !good {
                prop_assert_eq!(count, 0, "a forged envelope is never attested");
            }
        }
        // Attested by every server: nothing is held any more.
        prop_assert_eq!(w.core().held_bytes(), 0);
        // Everything stored is fetchable and matches the servers' chain.
        let conv = w.core().conversation(&id).unwrap();
        prop_assert_eq!(conv.delivered.0 as usize, chain.len());
        let rows = w.store.read(&id, Index(0), conv.delivered).unwrap();
        prop_assert_eq!(rows.len(), chain.len());
        for (i, stored, atts) in rows {
            prop_assert_eq!(stored.envelope.hash(), chain[i.0 as usize]);
            prop_assert_eq!(atts.len(), 3);
        }
    }
}

/// Relay-only mode (no order servers, quorum 0) is the benchmark baseline:
/// every reply and delivery leaves with the commit of its own request,
/// without any job and without tags.
#[test]
fn relay_only_delivers_with_the_commit_and_no_jobs() {
    let mut w = World::new(0, 0, 5);
    let mut members = vec![w.register(1, 4), w.register(2, 4)];
    let id = ConversationId::from_bytes([4; 32]);
    let refs: Vec<&Member> = members.iter().collect();
    let spec = vec![
        (refs[0].account, SlotRole::Admin),
        (refs[1].account, SlotRole::Member),
    ];
    let t = w.authed(&members[0], Call::CreateConversation(id, spec));
    let created = match w.reply(t) {
        Some(Ok(Response::Created(r))) => r.clone(),
        other => panic!("create not answered with its own commit: {other:?}"),
    };
    let set = SlotSet::try_from(created.slots.clone().unwrap()).unwrap();
    for (i, kind) in [(0u64, EnvelopeKind::Setup), (1, EnvelopeKind::Message)] {
        let slot = slot_of(&created, &members[0]);
        let req = envelope(
            &mut members[0],
            id,
            Epoch(0),
            slot,
            kind,
            (kind == EnvelopeKind::Setup).then(|| set.hash()),
            &[],
            true,
            b"plain",
        );
        assert!(req.submission_tags.is_empty());
        let t = submit(&mut w, &members[0], req);
        assert!(
            matches!(w.reply(t), Some(Ok(Response::Submitted(_)))),
            "index {i} not acknowledged with its commit: {:?}",
            w.reply(t)
        );
    }
    assert!(w.jobs.is_empty(), "relay-only mode sent jobs");
    for m in &members {
        let mine: Vec<u64> = w
            .deliveries
            .iter()
            .filter(|(a, _)| *a == m.account)
            .map(|(_, d)| {
                assert!(d.attestations.is_empty());
                d.index
            })
            .collect();
        assert_eq!(mine, vec![0, 1]);
    }
}

/// ListConversations names exactly the conversations the caller holds a
/// slot in, with how far they were delivered; an outsider gets none.
#[test]
fn list_conversations_names_only_the_caller_s() {
    let mut w = World::new(3, 3, 9);
    let mut members = vec![w.register(1, 4), w.register(2, 4)];
    let outsider = w.register(3, 4);
    let id = ConversationId::from_bytes([6; 32]);
    setup(&mut w, &mut members, id);
    let list = |w: &mut World, m: &Member| {
        let t = w.authed(m, Call::ListConversations);
        match w.reply(t) {
            Some(Ok(Response::Conversations(r))) => r.conversations.clone(),
            other => panic!("{other:?}"),
        }
    };
    for m in &members {
        let l = list(&mut w, m);
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].conversation_id, id.to_vec());
        assert_eq!(l[0].delivered, 1);
        assert_eq!(l[0].first_index, 0);
    }
    assert!(list(&mut w, &outsider).is_empty());
    // A second conversation of one member only; the per-account index
    // survives a restart (it is rebuilt from the stored conversations).
    let other = ConversationId::from_bytes([7; 32]);
    setup(&mut w, &mut members[..1], other);
    w.crash();
    w.settle();
    let l = list(&mut w, &members[0]);
    let ids: Vec<Vec<u8>> = l.iter().map(|c| c.conversation_id.clone()).collect();
    assert_eq!(ids, vec![id.to_vec(), other.to_vec()], "in id order");
    assert_eq!(list(&mut w, &members[1]).len(), 1);
    assert!(list(&mut w, &outsider).is_empty());
}

// ------------------------------------------------------------------ caps ---

impl World {
    /// The World's limits changed by `f`, applied with a restart.
    fn with_limits(mut self, f: impl FnOnce(&mut Limits)) -> Self {
        f(&mut self.config.limits);
        self.restart();
        self
    }

    fn challenge(&mut self) -> Challenge {
        let t = self.call(Command::GetChallenge);
        let Some(Ok(Response::Challenge(c))) = self.reply(t) else {
            panic!("no challenge: {:?}", self.reply(t))
        };
        Challenge::parse("c", &c.challenge).unwrap()
    }

    /// Registers an account with `one_time` one-time prekeys and `order`
    /// order keys (distinct per seed; not usable for slots), as a sign-up
    /// flood would.
    fn try_register(
        &mut self,
        seed: u16,
        one_time: usize,
        order: usize,
    ) -> Result<(AccountId, Vec<u8>), RouterError> {
        let challenge = self.challenge();
        let mut sk = [0u8; 32];
        sk[..2].copy_from_slice(&seed.to_be_bytes());
        sk[2] = 0xA5;
        let signing = SigningKey::from_bytes(&sk);
        let key = |kind: u8, i: usize| -> Vec<u8> {
            let mut h = blake3::Hasher::new();
            h.update(&[kind]);
            h.update(&seed.to_be_bytes());
            h.update(&(i as u64).to_be_bytes());
            h.finalize().as_bytes().to_vec()
        };
        let prekey = [7u8; 32];
        let req = pb::RegisterRequest {
            identity: Some(pb::IdentityKeys {
                signing_key: signing.verifying_key().to_bytes().to_vec(),
                session_key: sk.to_vec(),
            }),
            challenge: challenge.to_vec(),
            signature: signing
                .sign(&challenge.network_signing_message(&network()))
                .to_bytes()
                .to_vec(),
            fallback_prekey: Some(pb::SignedPrekey {
                key: prekey.to_vec(),
                signature: signing
                    .sign(&prekey_signing_message(&prekey))
                    .to_bytes()
                    .to_vec(),
            }),
            one_time_prekeys: (0..one_time).map(|i| key(1, i)).collect(),
            order_keys: (0..order).map(|i| key(2, i)).collect(),
        };
        let t = self.call(Command::Register(parse_register(&req, &network()).unwrap()));
        match self.reply(t) {
            Some(Ok(Response::Registered(r))) => Ok((
                AccountId::parse("a", &r.account).unwrap(),
                r.session_token.clone(),
            )),
            Some(Err(e)) => Err(e.clone()),
            other => panic!("unexpected answer: {other:?}"),
        }
    }

    /// Signs `m` in again; returns the new token.
    fn try_sign_in(&mut self, m: &Member) -> Result<Vec<u8>, RouterError> {
        let challenge = self.challenge();
        let req = pb::SignInRequest {
            account: m.account.to_vec(),
            challenge: challenge.to_vec(),
            signature: m
                .signing
                .sign(&challenge.network_signing_message(&network()))
                .to_bytes()
                .to_vec(),
        };
        let s = crate::request::parse_sign_in(&req, &network()).unwrap();
        let t = self.call(Command::SignIn(s));
        match self.reply(t) {
            Some(Ok(Response::SignedIn(r))) => Ok(r.session_token.clone()),
            Some(Err(e)) => Err(e.clone()),
            other => panic!("unexpected answer: {other:?}"),
        }
    }

    fn answer(&mut self, m: &Member, call: Call) -> Result<Response, RouterError> {
        let t = self.authed(m, call);
        self.settle();
        self.reply(t).cloned().expect("an answer")
    }
}

#[test]
fn a_sign_up_flood_with_maximal_keys_stops_at_the_caps_and_others_are_served() {
    let max = grompi_proto::limits::MAX_KEYS_PER_UPLOAD;
    let mut w = World::new(2, 2, 21).with_limits(|l| {
        l.max_accounts = 8;
        l.max_unused_keys = 5 * 2 * max;
    });
    let mut members = vec![w.register(1, 4), w.register(2, 4)];
    let held = |w: &World| w.core().directory().unused_key_count();
    assert_eq!(held(&w), 8);
    let mut accepted = 0;
    let mut key_refusals = 0;
    for seed in 100..120u16 {
        match w.try_register(seed, max, max) {
            Ok(_) => accepted += 1,
            Err(RouterError::KeyStoreFull { max: m, adding, .. }) => {
                assert_eq!((m, adding), (5 * 2 * max, 2 * max));
                key_refusals += 1;
            }
            Err(e) => panic!("unexpected refusal: {e}"),
        }
        assert!(held(&w) <= 5 * 2 * max, "unused keys over the cap");
    }
    // 8 keys held by the members: four maximal sign-ups fit, not a fifth.
    assert_eq!(accepted, 4);
    assert_eq!(key_refusals, 16);
    // Accounts without keys still fit, up to the account cap.
    assert!(w.try_register(200, 0, 0).is_ok());
    assert!(w.try_register(201, 0, 0).is_ok());
    let e = w.try_register(202, 0, 0).unwrap_err();
    assert_eq!(e, RouterError::TooManyAccounts { max: 8 });
    assert_eq!(e.code(), tonic::Code::ResourceExhausted);
    assert!(e.status().message().contains("limits.max_accounts"), "{e}");
    assert_eq!(w.core().directory().account_count(), 8);
    // The members are still served: a conversation and a message.
    let id = ConversationId::from_bytes([3; 32]);
    let created = setup(&mut w, &mut members, id);
    let servers = w.config.servers.clone();
    let req = message(&mut members, &created, id, &servers, 1, true, b"still here");
    let t = submit(&mut w, &members[1], req);
    w.settle();
    assert!(matches!(w.reply(t), Some(Ok(Response::Submitted(_)))));
    // The caps hold across a restart.
    w.restart();
    assert_eq!(w.core().directory().account_count(), 8);
    assert!(held(&w) <= 5 * 2 * max);
    assert_eq!(
        w.try_register(203, 0, 0).unwrap_err(),
        RouterError::TooManyAccounts { max: 8 }
    );
}

#[test]
fn sessions_are_capped_per_account_and_in_total() {
    let mut w = World::new(2, 2, 22).with_limits(|l| {
        l.max_sessions_per_account = 3;
        l.max_sessions = 6;
    });
    let a = w.register(1, 1);
    let b = w.register(2, 1);
    // a: its registration session and 4 sign-ins; only the last 3 live.
    let tokens: Vec<Vec<u8>> = (0..4).map(|_| w.try_sign_in(&a).unwrap()).collect();
    assert_eq!(w.core().directory().sessions_of(&a.account), 3);
    for (token, live) in [
        (a.token.clone(), false),
        (tokens[0].clone(), false),
        (tokens[1].clone(), true),
        (tokens[3].clone(), true),
    ] {
        let t = w.call(Command::Authed {
            token,
            call: Call::GetKeyCounts,
        });
        match w.reply(t) {
            Some(Ok(_)) => assert!(live, "an ended session was accepted"),
            Some(Err(RouterError::UnknownSession)) => assert!(!live, "a live session was refused"),
            other => panic!("{other:?}"),
        }
    }
    // b: 1 + 2 sign-ins make 6 sessions in all; the router is full.
    w.try_sign_in(&b).unwrap();
    w.try_sign_in(&b).unwrap();
    assert_eq!(w.core().directory().session_count(), 6);
    let e = w.try_register(300, 0, 0).unwrap_err();
    assert_eq!(e, RouterError::TooManySessions { max: 6 });
    // A sign-in of an account at its own cap replaces its oldest session.
    w.try_sign_in(&b).unwrap();
    assert_eq!(w.core().directory().session_count(), 6);
    // Ended sessions make room.
    w.now += w.config.limits.session_ttl_ms + 1;
    assert!(w.try_register(300, 0, 0).is_ok());
}

#[test]
fn conversations_are_capped_per_creator_and_in_total() {
    let mut w = World::new(2, 2, 23).with_limits(|l| {
        l.max_conversations_per_account = 2;
        l.max_conversations = 3;
    });
    let a = w.register(1, 8);
    let b = w.register(2, 8);
    let spec = |m: &Member| vec![(m.account, SlotRole::Admin)];
    for k in 0..2u8 {
        let r = w.answer(
            &a,
            Call::CreateConversation(ConversationId::from_bytes([k; 32]), spec(&a)),
        );
        assert!(matches!(r, Ok(Response::Created(_))), "{r:?}");
    }
    let r = w.answer(
        &a,
        Call::CreateConversation(ConversationId::from_bytes([2; 32]), spec(&a)),
    );
    assert_eq!(
        r.unwrap_err(),
        RouterError::TooManyConversationsCreated { created: 2 }
    );
    let r = w.answer(
        &b,
        Call::CreateConversation(ConversationId::from_bytes([3; 32]), spec(&b)),
    );
    assert!(matches!(r, Ok(Response::Created(_))), "{r:?}");
    let r = w.answer(
        &b,
        Call::CreateConversation(ConversationId::from_bytes([4; 32]), spec(&b)),
    );
    let e = r.unwrap_err();
    assert_eq!(e, RouterError::TooManyConversations { max: 3 });
    assert_eq!(e.cap(), Some("max_conversations"));
    assert_eq!(w.core().conversation_count(), 3);
    // Counted again after a restart.
    w.restart();
    let r = w.answer(
        &a,
        Call::CreateConversation(ConversationId::from_bytes([5; 32]), spec(&a)),
    );
    assert!(r.is_err());
}

#[test]
fn noise_stops_in_idle_conversations_and_resumes_with_a_submission() {
    let mut w = World::new(2, 2, 24).with_limits(|l| l.noise_idle_ms = 2_000);
    w.config.noise_interval_ms = Some(100);
    w.restart();
    let mut members = vec![w.register(1, 4)];
    let id = ConversationId::from_bytes([9; 32]);
    let created = setup(&mut w, &mut members, id);
    let next = |w: &World| w.core().conversation(&id).unwrap().next().0;
    for _ in 0..40 {
        w.now += 100;
        w.flush();
        w.settle();
    }
    let idle_at = next(&w);
    assert!(
        idle_at > 2,
        "noise was sent while the conversation was active"
    );
    for _ in 0..40 {
        w.now += 100;
        w.flush();
        w.settle();
    }
    assert_eq!(next(&w), idle_at, "noise went on in an idle conversation");
    let servers = w.config.servers.clone();
    let req = message(&mut members, &created, id, &servers, 0, true, b"back");
    submit(&mut w, &members[0], req);
    w.settle();
    for _ in 0..5 {
        w.now += 100;
        w.flush();
        w.settle();
    }
    assert!(next(&w) > idle_at + 1, "noise did not resume");
}

#[test]
fn a_low_disk_refuses_new_writes_and_keeps_serving_reads() {
    let mut w = World::new(2, 2, 25);
    let mut members = vec![w.register(1, 8), w.register(2, 8)];
    let id = ConversationId::from_bytes([9; 32]);
    let created = setup(&mut w, &mut members, id);
    let servers = w.config.servers.clone();
    let sent = message(&mut members, &created, id, &servers, 1, true, b"before");
    let t = submit(&mut w, &members[1], sent.clone());
    w.settle();
    assert!(matches!(w.reply(t), Some(Ok(Response::Submitted(_)))));
    let reserve = w.config.limits.disk_reserve_bytes;
    // The shell measured less free space than the reserve.
    w.call(Command::DiskSpace { free: reserve - 1 });
    assert!(w.core().disk_low());
    let low = RouterError::DiskLow {
        free: reserve - 1,
        reserve,
    };
    let req = message(&mut members, &created, id, &servers, 0, true, b"refused");
    let t = submit(&mut w, &members[0], req.clone());
    assert_eq!(w.reply(t).cloned().unwrap().unwrap_err(), low);
    assert_eq!(low.code(), tonic::Code::ResourceExhausted);
    assert!(low.status().message().contains("disk is nearly full"));
    let r = w.answer(
        &members[0],
        Call::CreateConversation(
            ConversationId::from_bytes([8; 32]),
            vec![(members[0].account, SlotRole::Admin)],
        ),
    );
    assert_eq!(r.unwrap_err(), low);
    assert_eq!(w.try_register(400, 0, 0).unwrap_err(), low);
    let (upload, fallback) = parse_upload(&pb::UploadKeysRequest {
        one_time_prekeys: vec![vec![77; 32]],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        w.answer(&members[0], Call::UploadKeys(upload, fallback))
            .unwrap_err(),
        low
    );
    // Reads go on: fetch, list, sign-in, and the answer to a resubmission.
    let r = w.answer(
        &members[1],
        Call::Fetch {
            conversation: id,
            from: Index(0),
            limit: 10,
        },
    );
    assert!(
        matches!(r, Ok(Response::Fetch(ref p)) if p.to == Index(2)),
        "{r:?}"
    );
    assert!(matches!(
        w.answer(&members[1], Call::ListConversations),
        Ok(Response::Conversations(_))
    ));
    let token = w.try_sign_in(&members[0]).unwrap();
    members[0].token = token;
    let t = submit(&mut w, &members[1], sent);
    assert!(matches!(w.reply(t), Some(Ok(Response::Submitted(_)))));
    // Space freed: accepted again.
    w.call(Command::DiskSpace { free: reserve });
    assert!(!w.core().disk_low());
    let t = submit(&mut w, &members[0], req);
    w.settle();
    assert!(
        matches!(w.reply(t), Some(Ok(Response::Submitted(_)))),
        "{:?}",
        w.reply(t)
    );
}

// ------------------------------------------------- bytes held in memory ---

/// A Message of `body` bytes from `members[m]`.
fn big_message(
    w: &World,
    members: &mut [Member],
    created: &pb::CreateConversationResponse,
    id: ConversationId,
    m: usize,
    body: usize,
) -> pb::SubmitRequest {
    let servers = w.config.servers.clone();
    let fill = vec![members[m].sequence as u8; body];
    message(members, created, id, &servers, m, true, &fill)
}

#[test]
fn a_server_refusing_the_setup_does_not_keep_large_envelopes_in_memory() {
    // Three servers, two needed. Server 2 refuses the Setup (its
    // submission tag is bad), so it never attests anything in this
    // conversation: every envelope waits for it for ever.
    let mut w = World::new(3, 2, 31).with_limits(|l| {
        l.max_pending_bytes_per_conversation = 4 << 20;
        l.max_pending_bytes = 8 << 20;
    });
    let mut members = vec![w.register(1, 8), w.register(2, 8)];
    let id = ConversationId::from_bytes([9; 32]);
    let refs: Vec<&Member> = members.iter().collect();
    let created = w.create(&refs, id);
    let set = SlotSet::try_from(created.slots.clone().unwrap()).unwrap();
    let servers = w.config.servers.clone();
    let slot = slot_of(&created, &members[0]);
    let mut req = envelope(
        &mut members[0],
        id,
        Epoch(0),
        slot,
        EnvelopeKind::Setup,
        Some(set.hash()),
        &servers,
        true,
        b"setup",
    );
    req.submission_tags[2][0] ^= 1;
    let t = submit(&mut w, &members[0], req);
    w.settle();
    assert!(matches!(w.reply(t), Some(Ok(Response::Submitted(_)))));
    // 40 envelopes of 200 KiB: 8 MiB through the router.
    let count = 40;
    for k in 0..count {
        let req = big_message(&w, &mut members, &created, id, k % 2, 200 * 1024);
        let t = submit(&mut w, &members[k % 2], req);
        w.settle();
        assert!(
            matches!(w.reply(t), Some(Ok(Response::Submitted(_)))),
            "envelope {k}: {:?}",
            w.reply(t)
        );
    }
    let conv = w.core().conversation(&id).unwrap();
    assert_eq!(conv.pending.len(), count + 1, "all wait for server 2");
    assert_eq!(conv.progress[2], Index(0));
    // What waits for server 2 is the summaries, not the bodies.
    let held = w.core().held_bytes();
    assert_eq!(held, conv.held_bytes());
    assert!(
        held < 64 * 1024,
        "{held} bytes held for {count} envelopes of 200 KiB"
    );
    assert!(
        conv.pending
            .values()
            .all(|p| p.stored.envelope.whole().is_none())
    );
    for m in &members {
        assert_eq!(w.core().pending_bytes_of(&m.account), 0);
    }
    // Members still fetch every body from storage.
    let reader = w.store.reader();
    let rows = reader.read(&id, Index(1), Index(3)).unwrap();
    assert_eq!(rows[0].1.envelope.body().len(), 200 * 1024);
    // A restart reloads them as summaries.
    w.restart();
    let after = w.core().held_bytes();
    assert!(after < 64 * 1024, "{after} bytes held after a restart");
    assert_eq!(after, w.core().conversation(&id).unwrap().held_bytes());
    // And the conversation goes on.
    let req = big_message(&w, &mut members, &created, id, 1, 1024);
    let t = submit(&mut w, &members[1], req);
    w.settle();
    assert!(matches!(w.reply(t), Some(Ok(Response::Submitted(_)))));
}

#[test]
fn envelopes_below_the_quorum_are_bounded_by_bytes_per_account_and_conversation() {
    let mut w = World::new(2, 2, 32).with_limits(|l| {
        l.max_pending_bytes_per_account = 700 * 1024;
        l.max_pending_bytes_per_conversation = 1024 * 1024;
    });
    let mut members = vec![w.register(1, 8), w.register(2, 8)];
    let id = ConversationId::from_bytes([9; 32]);
    let created = setup(&mut w, &mut members, id);
    // Server 1 goes down: nothing reaches the quorum.
    w.down[1] = true;
    let refusal = |w: &mut World, members: &mut Vec<Member>, m: usize| -> (usize, RouterError) {
        for accepted in 0..100 {
            let req = big_message(w, members, &created, id, m, 200 * 1024);
            let t = submit(w, &members[m], req);
            w.settle();
            if let Some(Err(e)) = w.reply(t) {
                return (accepted, e.clone());
            }
            assert!(w.reply(t).is_none(), "{:?}", w.reply(t));
        }
        panic!("never refused");
    };
    let (accepted, e) = refusal(&mut w, &mut members, 0);
    assert_eq!(accepted, 3);
    assert!(
        matches!(e, RouterError::PendingBytesFull { scope: PendingScope::Account, max, .. } if max == 700 * 1024),
        "{e}"
    );
    assert_eq!(e.code(), tonic::Code::ResourceExhausted);
    assert!(
        e.status()
            .message()
            .contains("max_pending_bytes_per_account"),
        "{e}"
    );
    assert!(w.core().pending_bytes_of(&members[0].account) <= 700 * 1024);
    let (accepted, e) = refusal(&mut w, &mut members, 1);
    assert_eq!(accepted, 2);
    assert!(
        matches!(
            e,
            RouterError::PendingBytesFull {
                scope: PendingScope::Conversation,
                ..
            }
        ),
        "{e}"
    );
    let held = w.core().conversation(&id).unwrap().held_bytes();
    assert!(held <= 1024 * 1024, "{held}");
    assert_eq!(held, w.core().held_bytes());
    // Server 1 returns: everything is delivered and attested by both, and
    // nothing is held any more.
    w.down[1] = false;
    w.settle();
    assert_eq!(w.core().pending_bytes_of(&members[0].account), 0);
    assert_eq!(w.core().held_bytes(), 0);
    let req = big_message(&w, &mut members, &created, id, 0, 200 * 1024);
    let t = submit(&mut w, &members[0], req);
    w.settle();
    assert!(matches!(w.reply(t), Some(Ok(Response::Submitted(_)))));
}

#[path = "retention_tests.rs"]
mod retention;
