//! Scenario files: the network, the adversary, the conversation script and
//! the expected outcome, in TOML.
//!
//! ```toml
//! name = "protest-fork"
//! description = "The router forks the group, colluding with two of three order servers."
//!
//! [network]
//! order_servers = 3
//! quorum = 3                       # optional; defaults to all
//! members = ["alice", "bob", "charlie", "dave"]
//! admins = ["alice"]               # optional; defaults to the first member
//!
//! [adversary]
//! router = { strategy = "fork", partition = [["alice", "bob"], ["charlie", "dave"]] }
//! order_servers = [
//!   { server = 0, strategy = "equivocate" },
//!   { server = 1, strategy = "equivocate" },
//! ]
//!
//! [[script]]
//! from = "alice"
//! send = "Meet at the square at noon."
//!
//! [[script]]
//! from = "alice"
//! remove = "dave"
//!
//! [expect]
//! outcome = "detected"
//! integrity = true
//! alerts = ["conflicting_heads"]
//! ```

use crate::verdict::Outcome;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// Why a scenario file was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// Not valid TOML, or unknown or mistyped keys.
    #[error("scenario {file}: {message}")]
    Syntax {
        /// The file.
        file: String,
        /// What the parser said.
        message: String,
    },
    /// Valid TOML that describes an impossible scenario.
    #[error("scenario {file}: {message}")]
    Invalid {
        /// The file.
        file: String,
        /// What is wrong.
        message: String,
    },
}

/// What the router does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "strategy", rename_all = "snake_case", deny_unknown_fields)]
pub enum RouterStrategy {
    /// Follows the protocol.
    Honest,
    /// Shows each group of members its own history: the
    /// protest example. Needs colluding order servers to get tags.
    Fork {
        /// The groups; every member in exactly one.
        partition: Vec<Vec<String>>,
        /// A careless fork: the router also passes each group the other
        /// histories' tags (as late tags), so members see valid tags on a
        /// head that is not theirs.
        #[serde(default)]
        leak_tags: bool,
        /// A naive fork: every history is sent to every order server
        /// (instead of sharing the honest ones out), so honest servers see
        /// and refuse the second history.
        #[serde(default)]
        naive: bool,
        /// Head proofs reach members from every order server, not only
        /// from those serving the member's history (members that can reach
        /// servers by another path).
        #[serde(default)]
        relay_all_proofs: bool,
    },
    /// Never delivers some indices to some members.
    Drop {
        /// Who is denied.
        members: Vec<String>,
        /// Which script steps' envelopes are dropped (0-based).
        steps: Vec<usize>,
    },
    /// Delivers in a shuffled order.
    Reorder,
    /// Delivers old envelopes again, also from other conversations and epochs.
    Replay,
    /// Delivers envelopes it made up, with made-up tags.
    Inject,
    /// Stops delivering to some members after a step.
    WithholdDelivery {
        /// Who is cut off.
        members: Vec<String>,
        /// From which script step on.
        after_step: usize,
    },
    /// Delivers envelopes without the order servers' tags.
    WithholdTags,
    /// Delays every delivery by a random time.
    Delay {
        /// Largest delay, in virtual milliseconds.
        max_ms: u64,
    },
    /// Crashes and restarts.
    CrashRestart {
        /// After which script step.
        after_step: usize,
    },
    /// Before each real delivery, delivers a damaged copy: alternately a
    /// block that does not match its digest and a malformed conversation id.
    CorruptDeliveries,
    /// Relays head proofs with a damaged tag.
    ForgeHeadProofs,
}

/// What one order server does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "strategy", rename_all = "snake_case", deny_unknown_fields)]
pub enum OrderServerStrategy {
    /// Follows the protocol.
    Honest,
    /// Attests whatever the router asks, including two envelopes at one index.
    Equivocate,
    /// Attests, but its tags never reach members.
    WithholdTags,
    /// Returns tags that do not verify.
    ForgeTags,
    /// Attests envelopes without a valid submission tag (helps injection).
    SkipSenderCheck,
    /// Crashes and restarts, keeping what it committed.
    CrashRestart {
        /// After which script step.
        after_step: usize,
    },
    /// Stays down from a step on.
    Offline {
        /// From which script step.
        after_step: usize,
    },
}

/// One order server that is not honest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawOrderServerAdversary")]
pub struct OrderServerAdversary {
    /// Its position in the network descriptor.
    pub server: usize,
    /// What it does.
    pub strategy: OrderServerStrategy,
}

/// The file form of [`OrderServerAdversary`]: `{ server = 0, strategy =
/// "crash_restart", after_step = 2 }`. (serde's `flatten` would lose the
/// refusal of unknown keys.)
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOrderServerAdversary {
    server: usize,
    strategy: String,
    after_step: Option<usize>,
}

impl TryFrom<RawOrderServerAdversary> for OrderServerAdversary {
    type Error = String;

    fn try_from(raw: RawOrderServerAdversary) -> Result<Self, String> {
        let step = |name: &str| {
            raw.after_step
                .ok_or_else(|| format!("strategy {name} needs after_step"))
        };
        let strategy = match raw.strategy.as_str() {
            "honest" => OrderServerStrategy::Honest,
            "equivocate" => OrderServerStrategy::Equivocate,
            "withhold_tags" => OrderServerStrategy::WithholdTags,
            "forge_tags" => OrderServerStrategy::ForgeTags,
            "skip_sender_check" => OrderServerStrategy::SkipSenderCheck,
            "crash_restart" => OrderServerStrategy::CrashRestart {
                after_step: step("crash_restart")?,
            },
            "offline" => OrderServerStrategy::Offline {
                after_step: step("offline")?,
            },
            other => return Err(format!("unknown order server strategy {other:?}")),
        };
        if raw.after_step.is_some()
            && !matches!(
                strategy,
                OrderServerStrategy::CrashRestart { .. } | OrderServerStrategy::Offline { .. }
            )
        {
            return Err(format!("strategy {} takes no after_step", raw.strategy));
        }
        Ok(Self {
            server: raw.server,
            strategy,
        })
    }
}

/// The adversary of a scenario.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Adversary {
    /// The router's strategy.
    #[serde(default = "honest_router")]
    pub router: RouterStrategy,
    /// The order servers that are not honest.
    #[serde(default)]
    pub order_servers: Vec<OrderServerAdversary>,
    /// Members whose keys the adversary holds (they are not judged).
    #[serde(default)]
    pub compromised_members: Vec<String>,
}

fn honest_router() -> RouterStrategy {
    RouterStrategy::Honest
}

impl Default for Adversary {
    fn default() -> Self {
        Self {
            router: RouterStrategy::Honest,
            order_servers: Vec::new(),
            compromised_members: Vec::new(),
        }
    }
}

impl Adversary {
    /// The number of order servers that deviate from the protocol.
    pub fn dishonest_servers(&self) -> usize {
        self.order_servers
            .iter()
            .filter(|o| o.strategy != OrderServerStrategy::Honest)
            .count()
    }

    /// A one-line description for reports.
    pub fn describe(&self) -> String {
        let router = match &self.router {
            RouterStrategy::Honest => "honest router".to_owned(),
            other => format!("router: {}", strategy_name(other)),
        };
        let servers: Vec<String> = self
            .order_servers
            .iter()
            .map(|o| {
                format!(
                    "order server {}: {}",
                    o.server,
                    server_strategy_name(&o.strategy)
                )
            })
            .collect();
        if servers.is_empty() {
            format!("{router}; all order servers honest")
        } else {
            format!("{router}; {}", servers.join(", "))
        }
    }
}

fn strategy_name(s: &RouterStrategy) -> &'static str {
    match s {
        RouterStrategy::Honest => "honest",
        RouterStrategy::Fork { .. } => "fork",
        RouterStrategy::Drop { .. } => "drop",
        RouterStrategy::Reorder => "reorder",
        RouterStrategy::Replay => "replay",
        RouterStrategy::Inject => "inject",
        RouterStrategy::WithholdDelivery { .. } => "withhold delivery",
        RouterStrategy::WithholdTags => "withhold tags",
        RouterStrategy::Delay { .. } => "delay",
        RouterStrategy::CrashRestart { .. } => "crash and restart",
        RouterStrategy::CorruptDeliveries => "corrupt deliveries",
        RouterStrategy::ForgeHeadProofs => "forge head proofs",
    }
}

fn server_strategy_name(s: &OrderServerStrategy) -> &'static str {
    match s {
        OrderServerStrategy::Honest => "honest",
        OrderServerStrategy::Equivocate => "equivocate",
        OrderServerStrategy::WithholdTags => "withhold tags",
        OrderServerStrategy::ForgeTags => "forge tags",
        OrderServerStrategy::SkipSenderCheck => "skip sender check",
        OrderServerStrategy::CrashRestart { .. } => "crash and restart",
        OrderServerStrategy::Offline { .. } => "offline",
    }
}

/// The network of a scenario.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// N.
    pub order_servers: usize,
    /// t; defaults to N.
    pub quorum: Option<usize>,
    /// The members, by name, in the order they are created.
    pub members: Vec<String>,
    /// The admins; defaults to the first member.
    pub admins: Option<Vec<String>>,
}

impl Network {
    /// The quorum in force.
    pub fn quorum(&self) -> usize {
        self.quorum.unwrap_or(self.order_servers)
    }

    /// The admins in force.
    pub fn admins(&self) -> Vec<String> {
        self.admins
            .clone()
            .unwrap_or_else(|| self.members.iter().take(1).cloned().collect())
    }
}

/// One step of the conversation script: exactly one action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Who acts.
    pub from: String,
    /// A message to send.
    pub send: Option<String>,
    /// A member to add (must be a name not yet in the conversation).
    pub add: Option<String>,
    /// A member to remove.
    pub remove: Option<String>,
    /// The actor leaves.
    #[serde(default)]
    pub leave: bool,
    /// The actor sends a receipt.
    #[serde(default)]
    pub receipt: bool,
    /// The actor asks every order server for a head proof.
    #[serde(default)]
    pub prove_heads: bool,
}

impl Step {
    fn actions(&self) -> usize {
        usize::from(self.send.is_some())
            + usize::from(self.add.is_some())
            + usize::from(self.remove.is_some())
            + usize::from(self.leave)
            + usize::from(self.receipt)
            + usize::from(self.prove_heads)
    }
}

/// What the scenario expects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// The attack's outcome.
    pub outcome: Outcome,
    /// Whether integrity holds among honest members.
    pub integrity: bool,
    /// Alert kinds at least one honest member must raise.
    #[serde(default)]
    pub alerts: Vec<String>,
    /// Refusal kinds at least one order server must give.
    #[serde(default)]
    pub refusals: Vec<String>,
}

/// A parsed, validated scenario.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// A short name, also the file's stem.
    pub name: String,
    /// What it shows.
    pub description: String,
    /// The network.
    pub network: Network,
    /// The adversary.
    #[serde(default)]
    pub adversary: Adversary,
    /// The conversation script, after the Setup.
    #[serde(default)]
    pub script: Vec<Step>,
    /// The expected outcome.
    pub expect: Expectation,
}

impl Scenario {
    /// Parses and validates a scenario; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self, ScenarioError> {
        let s: Scenario = toml::from_str(text).map_err(|e| ScenarioError::Syntax {
            file: file.to_owned(),
            message: e.to_string(),
        })?;
        s.validate().map_err(|message| ScenarioError::Invalid {
            file: file.to_owned(),
            message,
        })?;
        Ok(s)
    }

    fn validate(&self) -> Result<(), String> {
        let n = self.network.order_servers;
        if n == 0 || n > grompi_proto::limits::MAX_ORDER_SERVERS {
            return Err(format!("order_servers must be 1 to 16, not {n}"));
        }
        let t = self.network.quorum();
        if t == 0 || t > n {
            return Err(format!("quorum {t} must be between 1 and {n}"));
        }
        let mut names = HashSet::new();
        for m in &self.network.members {
            if !names.insert(m.as_str()) {
                return Err(format!("member {m:?} is listed twice"));
            }
        }
        if self.network.members.len() < 2 {
            return Err("a conversation needs at least two members".into());
        }
        let mut everyone: HashSet<&str> = names.clone();
        for step in &self.script {
            if let Some(added) = &step.add {
                everyone.insert(added.as_str());
            }
        }
        for admin in self.network.admins() {
            if !names.contains(admin.as_str()) {
                return Err(format!("admin {admin:?} is not a member"));
            }
        }
        for (i, step) in self.script.iter().enumerate() {
            if step.actions() != 1 {
                return Err(format!("script step {i} must have exactly one action"));
            }
            if !everyone.contains(step.from.as_str()) {
                return Err(format!("script step {i}: {:?} is not a member", step.from));
            }
        }
        let mut seen_servers = HashSet::new();
        for o in &self.adversary.order_servers {
            if o.server >= n {
                return Err(format!("adversary names order server {} of {n}", o.server));
            }
            if !seen_servers.insert(o.server) {
                return Err(format!("order server {} has two strategies", o.server));
            }
        }
        if let RouterStrategy::Fork { partition, .. } = &self.adversary.router {
            let listed: Vec<&str> = partition.iter().flatten().map(String::as_str).collect();
            let unique: HashSet<&str> = listed.iter().copied().collect();
            if partition.len() < 2 || unique.len() != listed.len() || unique != names {
                return Err(
                    "a fork's partition must split every member into 2 or more groups".into(),
                );
            }
        }
        for m in &self.adversary.compromised_members {
            if !everyone.contains(m.as_str()) {
                return Err(format!("compromised member {m:?} is not a member"));
            }
        }
        for a in self.expect.alerts.iter().chain(&self.expect.refusals) {
            if grompi_proto::MisbehaviourKind::from_name(a).is_none() {
                return Err(format!("expected alert {a:?} is not a misbehaviour kind"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROTEST: &str = r#"
name = "protest-fork"
description = "fork"
[network]
order_servers = 3
members = ["alice", "bob", "charlie", "dave"]
[adversary]
router = { strategy = "fork", partition = [["alice", "bob"], ["charlie", "dave"]] }
order_servers = [ { server = 0, strategy = "equivocate" }, { server = 1, strategy = "equivocate" } ]
[[script]]
from = "alice"
send = "Meet at the square at noon."
[[script]]
from = "alice"
remove = "dave"
[expect]
outcome = "detected"
integrity = true
alerts = ["conflicting_heads"]
"#;

    #[test]
    fn the_protest_scenario_parses() {
        let s = Scenario::parse("protest.toml", PROTEST).unwrap();
        assert_eq!(s.network.quorum(), 3);
        assert_eq!(s.network.admins(), vec!["alice".to_owned()]);
        assert_eq!(s.adversary.dishonest_servers(), 2);
        assert_eq!(s.expect.outcome, Outcome::Detected);
        assert_eq!(
            s.adversary.describe(),
            "router: fork; order server 0: equivocate, order server 1: equivocate"
        );
    }

    #[test]
    fn impossible_scenarios_are_refused_with_a_reason() {
        let cases = [
            (
                PROTEST.replace("order_servers = 3", "order_servers = 0"),
                "order_servers",
            ),
            (
                PROTEST.replace("[\"alice\", \"bob\"], [", "[\"alice\"], ["),
                "partition",
            ),
            (
                PROTEST.replace("server = 1", "server = 0"),
                "two strategies",
            ),
            (
                PROTEST.replace("server = 1", "server = 7"),
                "order server 7",
            ),
            (PROTEST.replace("conflicting_heads", "nonsense"), "nonsense"),
            (
                PROTEST.replace("remove = \"dave\"", "remove = \"dave\"\nleave = true"),
                "exactly one action",
            ),
            (
                PROTEST.replace("from = \"alice\"\nsend", "from = \"zed\"\nsend"),
                "zed",
            ),
        ];
        for (text, needle) in cases {
            let err = Scenario::parse("x.toml", &text).unwrap_err().to_string();
            assert!(err.contains(needle), "{err} should mention {needle}");
        }
        let unknown_key = PROTEST.replace("server = 1,", "server = 1, bogus = 2,");
        assert!(Scenario::parse("x.toml", &unknown_key).is_err());
        assert!(matches!(
            Scenario::parse("x.toml", "name = 1"),
            Err(ScenarioError::Syntax { .. })
        ));
    }
}
