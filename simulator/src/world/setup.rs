//! Setting up one run: the order servers, the router core, the members
//! registered with it and their pairwise sessions, and the conversation's
//! id, all drawn from the seed.

use super::events::Event;
use super::measure::Measure;
use super::member_node::MemberNode;
use super::order_node::OrderNode;
use super::router_node::RouterNode;
use super::{SimError, World, adversary};
use crate::scenario::{OrderServerStrategy, Scenario};
use crate::schedule::Schedule;
use grompi_client_core::{ConversationConfig, Secrets};
use grompi_proto::ConversationId;
use grompi_proto::pb;
use grompi_router::core::{Command, CoreConfig, Effect, Response};
use grompi_router::limits::Limits;
use rand::rngs::ChaCha20Rng;
use std::collections::{BTreeMap, BTreeSet};

/// Every member of the run: the initial ones, then those the script adds.
fn everyone(scenario: &Scenario) -> Vec<String> {
    let mut names = scenario.network.members.clone();
    for step in &scenario.script {
        if let Some(a) = &step.add
            && !names.contains(a)
        {
            names.push(a.clone());
        }
    }
    names
}

/// 32 bytes from the seeded source.
fn random32(rng: &mut ChaCha20Rng) -> [u8; 32] {
    let mut b = [0u8; 32];
    rand::Rng::fill_bytes(rng, &mut b);
    b
}

impl World {
    /// The network of `scenario` with everything drawn from `seed`.
    pub(super) fn build(scenario: &Scenario, seed: u64) -> Result<Self, SimError> {
        let mut sched: Schedule<Event> = Schedule::new(seed);
        let n = scenario.network.order_servers;
        let mut servers = Vec::with_capacity(n);
        for s in 0..n {
            let secret = random32(sched.rng());
            let strategy = scenario
                .adversary
                .order_servers
                .iter()
                .find(|o| o.server == s)
                .map_or(OrderServerStrategy::Honest, |o| o.strategy.clone());
            let position =
                u32::try_from(s).map_err(|_| SimError::Setup("too many servers".into()))?;
            servers.push(OrderNode::new(
                secret,
                position,
                strategy,
                scenario.network.server_limits(),
            ));
        }
        let keys: Vec<_> = servers.iter().map(|s: &OrderNode| s.public_key()).collect();
        let quorum = scenario.network.quorum();
        let core_config = CoreConfig {
            servers: keys.clone(),
            quorum,
            limits: Limits {
                requests_per_second: 1_000_000,
                request_burst: 1_000_000,
                ..Limits::default()
            },
            padding_tiers: vec![4, 8, 16, 32, 64, 128],
            noise_interval_ms: None,
            max_batch: 16,
            backoff_base_ms: 50,
            backoff_max_ms: 1_000,
        };
        let mut router =
            RouterNode::new(core_config).map_err(|e| SimError::Setup(e.to_string()))?;
        let client_config = ConversationConfig::new(keys, quorum);
        let names = everyone(scenario);
        let compromised: BTreeSet<&String> =
            scenario.adversary.compromised_members.iter().collect();
        let mut members = Vec::with_capacity(names.len());
        let mut registered = Vec::with_capacity(names.len());
        for name in &names {
            let mut secrets = Secrets::default();
            let order_keys = secrets.order_keys.generate(sched.rng(), 16);
            registered.push(order_keys.clone());
            let token = register(&mut router, &mut sched, &mut secrets, &order_keys)?;
            let honest = !compromised.contains(name);
            // The adversary holds a compromised member's keys.
            let stolen: Vec<[u8; 32]> = if honest {
                Vec::new()
            } else {
                secrets.order_keys.export().iter().map(|k| **k).collect()
            };
            let mut node =
                MemberNode::new(name.clone(), honest, secrets, token, client_config.clone());
            node.stolen_order_keys = stolen;
            members.push(node);
        }
        // A server corrupting some members' key shares knows their slots
        // by the order keys they registered.
        for o in &mut servers {
            if let OrderServerStrategy::BadKeyShares { victims } = o.strategy().clone() {
                let keys = victims
                    .iter()
                    .filter_map(|v| names.iter().position(|n| n == v))
                    .filter_map(|i| registered.get(i))
                    .flatten()
                    .copied()
                    .collect();
                o.set_victim_keys(keys);
            }
        }
        // Pairwise sessions, each from a bundle with its own one-time key.
        for i in 0..members.len() {
            for j in 0..members.len() {
                if i == j {
                    continue;
                }
                let bundle = members[j].secrets_mut().pairwise.bundle(true);
                members[i]
                    .secrets_mut()
                    .pairwise
                    .start_session(&bundle)
                    .map_err(|e| SimError::Setup(e.to_string()))?;
            }
        }
        let puppets = adversary::puppets(
            &scenario.adversary.router,
            &mut router,
            &mut sched,
            &mut members,
            &client_config.servers,
        )?;
        let by_account = members
            .iter()
            .enumerate()
            .map(|(i, m)| (m.account, i))
            .collect();
        let conversation = ConversationId::from_bytes(random32(sched.rng()));
        for m in &mut members {
            m.follow(conversation);
        }
        let group_of = adversary::fork_groups(&scenario.adversary.router, &names);
        let adversary = adversary::RouterAdversary::new(&scenario.adversary.router, &names);
        Ok(Self {
            scenario: scenario.clone(),
            sched,
            router,
            servers,
            members,
            by_account,
            conversation,
            group_of,
            forked: false,
            composed: BTreeMap::new(),
            sent: Vec::new(),
            step_attempts: BTreeMap::new(),
            adversary,
            tickets: BTreeMap::new(),
            measure: Measure::default(),
            notes: Vec::new(),
            horizon: u64::MAX,
            puppets,
            streams: BTreeMap::new(),
            stream_order: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            max_in_flight: 0,
        })
    }
}

/// The network the in-process router core serves: what its accounts sign
/// their registration for, and what the core's requests are parsed for.
pub(super) fn network() -> grompi_proto::ids::NetworkBinding {
    grompi_proto::ids::NetworkBinding::of("grompi-simulator", "")
}

/// Registers an account with the router core: challenge, signature, order
/// keys. Returns the session token.
pub(super) fn register(
    router: &mut RouterNode,
    sched: &mut Schedule<Event>,
    secrets: &mut Secrets,
    order_keys: &[grompi_proto::SlotKey],
) -> Result<Vec<u8>, SimError> {
    let setup = |m: &str| SimError::Setup(m.to_owned());
    let t = router.ticket();
    let effects = router.handle_now(0, t, Command::GetChallenge, 0, sched.rng());
    let challenge = effects
        .into_iter()
        .find_map(|e| match e {
            Effect::Reply(_, Ok(Response::Challenge(c))) => Some(c.challenge),
            _ => None,
        })
        .ok_or_else(|| setup("no challenge"))?;
    let parsed = grompi_proto::Challenge::parse("challenge", &challenge)
        .map_err(|e| SimError::Setup(e.to_string()))?;
    let identity = secrets.pairwise.identity();
    let fallback = secrets.pairwise.new_fallback_prekey();
    let request = pb::RegisterRequest {
        identity: Some(pb::IdentityKeys {
            signing_key: identity.signing.to_vec(),
            session_key: identity.session.to_vec(),
        }),
        challenge: challenge.clone(),
        signature: secrets
            .pairwise
            .sign(&parsed.network_signing_message(&network()))
            .to_vec(),
        fallback_prekey: Some(pb::SignedPrekey {
            key: fallback.key.to_vec(),
            signature: fallback.signature.to_vec(),
        }),
        one_time_prekeys: vec![],
        order_keys: order_keys.iter().map(|k| k.to_vec()).collect(),
    };
    let new = grompi_router::directory::parse_register(&request, &network())
        .map_err(|e| SimError::Setup(e.to_string()))?;
    let t = router.ticket();
    let effects = router.handle_now(0, t, Command::Register(new), 0, sched.rng());
    effects
        .into_iter()
        .find_map(|e| match e {
            Effect::Reply(_, Ok(Response::Registered(r))) => Some(r.session_token),
            _ => None,
        })
        .ok_or_else(|| setup("registration refused"))
}
