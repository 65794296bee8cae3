//! The control channel of live attacks: small TOML files that whoever runs
//! the experiment drops into a malicious server's data directory, and the
//! answers the server writes back. A server never reads anything else from
//! outside its configuration, and an honest server reads none of these.
//!
//! | file | written by | read by | says |
//! |---|---|---|---|
//! | `attack.toml` | the experimenter ([`super::devnet::Devnet::attack`]) | a malicious router | the groups to fork, the victims to drop or replay to ([`AttackPlan`]) |
//! | `attack-done.toml` | the malicious router | the experimenter | the plan with that id is in force, or why not ([`Done`]) |
//! | `fork.toml` | the experimenter | an equivocating order server | how many branches to serve ([`ForkRequest`]) |
//! | `fork-done.toml` | the equivocating order server | the experimenter | where each extra branch listens ([`Done`]) |
//!
//! Every file is written to a temporary name and renamed, so a reader
//! never sees half of one; each request carries an id that its answer
//! echoes.

use super::LiveError;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// The file a malicious router reads its plan from (in its data directory).
pub const ATTACK: &str = "attack.toml";
/// The file a malicious router answers in.
pub const ATTACK_DONE: &str = "attack-done.toml";
/// The file an equivocating order server reads a fork request from.
pub const FORK: &str = "fork.toml";
/// The file an equivocating order server answers in.
pub const FORK_DONE: &str = "fork-done.toml";

/// What a malicious router is told to do, by strategy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttackPlan {
    /// Echoed in the answer; a plan with an id already applied is ignored.
    pub id: u64,
    /// `fork`: groups of account ids (hex). Group 0 keeps the router's
    /// state as it is; every other group gets its own router core and store
    /// copied from it at the fork. Accounts in no group stay with group 0.
    #[serde(default)]
    pub groups: Vec<Vec<String>>,
    /// `fork`: per group after the first, the order servers (position as a
    /// string) that answer that branch elsewhere, with their address
    /// (`https://localhost:port`): the equivocating servers' branch
    /// listeners. Every other server gets every branch.
    #[serde(default)]
    pub branch_order_servers: Vec<BTreeMap<String, String>>,
    /// `drop`, `replay` and `substitute-join`: the accounts (hex) whose
    /// deliveries change.
    #[serde(default)]
    pub victims: Vec<String>,
    /// `drop`: the indices the victims never get (their envelopes and tag
    /// updates, in every conversation).
    #[serde(default)]
    pub indices: Vec<u64>,
    /// `substitute-join`: deliver the substituted Update with the genuine
    /// previous head (by default the field is left empty).
    #[serde(default)]
    pub keep_previous_head: bool,
}

/// An equivocating order server is told to serve this many branches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForkRequest {
    /// Fresh per request ([`fresh_id`]); echoed in the answer, so a stale one is told apart.
    pub id: u64,
    /// Branches in all, the existing one included (2 for two groups).
    pub branches: usize,
}

/// An answer to a request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Done {
    /// The request's id.
    pub id: u64,
    /// Why the request could not be carried out; empty when it was.
    #[serde(default)]
    pub error: String,
    /// For a fork request: the address of each extra branch, in order.
    #[serde(default)]
    pub addresses: Vec<String>,
}

/// Writes `value` as TOML to `dir/name`, atomically.
pub fn write<T: Serialize>(dir: &Path, name: &str, value: &T) -> Result<(), LiveError> {
    let text =
        toml::to_string(value).map_err(|e| LiveError::Setup(format!("encode {name}: {e}")))?;
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    std::fs::write(&tmp, text).map_err(LiveError::io(format!("write {}", tmp.display())))?;
    std::fs::rename(&tmp, &path).map_err(LiveError::io(format!("rename to {}", path.display())))
}

/// Reads `dir/name` if it exists and parses; `None` otherwise.
pub fn read<T: DeserializeOwned>(dir: &Path, name: &str) -> Option<T> {
    let text = std::fs::read_to_string(dir.join(name)).ok()?;
    toml::from_str(&text).ok()
}

/// Waits until `dir/name` holds the answer to request `id`, checking
/// `alive` between polls (it fails when the server exited).
pub fn wait_done(
    dir: &Path,
    name: &str,
    id: u64,
    timeout: Duration,
    mut alive: impl FnMut() -> Result<(), LiveError>,
) -> Result<Done, LiveError> {
    let deadline = Instant::now() + timeout;
    loop {
        alive()?;
        if let Some(done) = read::<Done>(dir, name)
            && done.id == id
        {
            return if done.error.is_empty() {
                Ok(done)
            } else {
                Err(LiveError::Setup(format!(
                    "{}: {}",
                    dir.join(name).display(),
                    done.error
                )))
            };
        }
        if Instant::now() > deadline {
            return Err(LiveError::Timeout(format!(
                "the answer to request {id} in {}",
                dir.join(name).display()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How often a malicious server looks for a new request.
pub const POLL: Duration = Duration::from_millis(25);

/// How long a malicious server may take to carry out a request.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// A request id above `last` and above every id of an earlier run on the
/// same directories: the time in ms, or one more than `last`.
pub fn fresh_id(last: u64) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    now.max(last.saturating_add(1))
}

/// Puts `plan` in force at the malicious router whose data directory is
/// `router_data`, and waits for its answer.
pub fn attack_router(
    router_data: &Path,
    plan: &AttackPlan,
    alive: impl FnMut() -> Result<(), LiveError>,
) -> Result<(), LiveError> {
    write(router_data, ATTACK, plan)?;
    wait_done(router_data, ATTACK_DONE, plan.id, TIMEOUT, alive).map(|_| ())
}

/// Tells each equivocating order server (position, data directory) to
/// serve `branches` branches, and waits for every answer. Returns, per
/// branch after the first, where each of them serves it: what
/// [`AttackPlan::branch_order_servers`] needs.
pub fn fork_order_servers(
    equivocating: &[(usize, &Path)],
    branches: usize,
    id: u64,
    mut alive: impl FnMut(usize) -> Result<(), LiveError>,
) -> Result<Vec<BTreeMap<String, String>>, LiveError> {
    for (_, data) in equivocating {
        write(data, FORK, &ForkRequest { id, branches })?;
    }
    let mut out = vec![BTreeMap::new(); branches.saturating_sub(1)];
    for (i, data) in equivocating {
        let done = wait_done(data, FORK_DONE, id, TIMEOUT, || alive(*i))?;
        if done.addresses.len() + 1 != branches {
            return Err(LiveError::Setup(format!(
                "order server {i} serves {} branches, not {branches}",
                done.addresses.len() + 1
            )));
        }
        for (branch, address) in out.iter_mut().zip(done.addresses) {
            branch.insert(i.to_string(), address);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_round_trips_and_unknown_keys_are_refused() {
        let dir = std::env::temp_dir().join(format!("grompi-control-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let plan = AttackPlan {
            id: 3,
            groups: vec![vec!["aa".into()], vec!["bb".into(), "cc".into()]],
            branch_order_servers: vec![[("0".to_owned(), "https://localhost:9".to_owned())].into()],
            victims: vec![],
            indices: vec![1],
            keep_previous_head: true,
        };
        write(&dir, ATTACK, &plan).unwrap();
        assert_eq!(read::<AttackPlan>(&dir, ATTACK), Some(plan));
        std::fs::write(dir.join(FORK), "id = 1\nbranches = 2\nbogus = 1\n").unwrap();
        assert_eq!(read::<ForkRequest>(&dir, FORK), None);
        write(
            &dir,
            FORK_DONE,
            &Done {
                id: 1,
                error: "no".into(),
                addresses: vec![],
            },
        )
        .unwrap();
        let e = wait_done(&dir, FORK_DONE, 1, Duration::from_secs(1), || Ok(())).unwrap_err();
        assert!(e.to_string().contains("no"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
