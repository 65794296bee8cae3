//! The demo's protest conversation played by four real clients
//! (`grompi_client::client::Client`, each with its own encrypted home)
//! against a live network: Alice creates the conversation with Bob, Charlie
//! and Dave; everyone accepts the Setup; then the script of
//! `simulator/scenarios/protest-*.toml` runs (Alice, Charlie and Bob send,
//! Charlie and Dave ask for head proofs), and at the end every member
//! fetches what is left and asks every order server for a head proof (the
//! audit). What each member accepted and every alert it raised make up its
//! [`LiveView`].
//!
//! ```text
//! let mut cast = Cast::join(&descriptor_text, &homes).await?;  // Setup accepted by all
//! net.fork(&cast.groups(&PARTITION))?;                         // only for an attack
//! cast.set_partition(&PARTITION);
//! cast.play().await?;                                          // script and audit
//! let views = cast.views()?;
//! ```
//!
//! Waiting is bounded, never asserted: after a message, the members who
//! should get it fetch until they accepted it, and the sender until every
//! order server's tag arrived, for at most a few seconds each (a branch an
//! honest server refuses never gets its tag).

use super::LiveError;
use grompi_client::client::{ApiError, Client, Progress};
use grompi_client::local_store::{KdfParams, StoreSecret};
use grompi_proto::{AccountId, ConversationId, Head};
use std::path::Path;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// The members, in column order; Alice creates the conversation.
pub const MEMBERS: [&str; 4] = ["alice", "bob", "charlie", "dave"];

/// The partition of the forked run: Alice and Bob, Charlie and Dave.
pub const PARTITION: [&[usize]; 2] = [&[0, 1], &[2, 3]];

/// One step of the script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Member `.0` sends `.1`.
    Send(usize, &'static str),
    /// Member `.0` asks every order server for a head proof.
    ProveHeads(usize),
}

/// The protest script (the steps of `simulator/scenarios/protest-*.toml`).
pub const SCRIPT: [Step; 5] = [
    Step::Send(0, "Meet at the square at noon."),
    Step::Send(2, "We meet at the station instead."),
    Step::Send(1, "Square, noon. Bring water."),
    Step::ProveHeads(2),
    Step::ProveHeads(3),
];

/// How long the members who should get a message fetch before moving on.
const ACCEPT_WAIT: Duration = Duration::from_secs(10);
/// How long the sender waits for every order server's tag.
const FULL_WAIT: Duration = Duration::from_millis(1500);
/// Between two fetches while waiting.
const POLL: Duration = Duration::from_millis(50);

/// One index a member accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveEntry {
    /// Position in the conversation's total order: 0 is the Setup, dense across epochs.
    pub index: u64,
    /// `setup`, `message`, `update`, `receipt` or `noise`.
    pub kind: String,
    /// The authenticated sender's name.
    pub sender: Option<String>,
    /// A message's text.
    pub text: Option<String>,
    /// The head after this index.
    pub head: Head,
    /// How many order servers' tags the member verified for it.
    pub tags: u32,
    /// Which history the head belongs to: 'A' for the first head seen at
    /// this index (members in order), 'B' for a second one.
    pub history: char,
}

/// One alert a member raised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveAlert {
    /// The misbehaviour kind (`withheld`, `head_proof_fork`, ...).
    pub kind: &'static str,
    /// What the client said.
    pub text: String,
    /// The index the alert is about, when it names one.
    pub index: Option<u64>,
    /// Descriptor position of the order server it blames, when it names one.
    pub server: Option<u32>,
}

/// What one member saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveView {
    /// The member's name.
    pub name: String,
    /// Accepted indices, in order.
    pub accepted: Vec<LiveEntry>,
    /// Alerts raised, in order.
    pub alerts: Vec<LiveAlert>,
    /// What went wrong for this member without being an alert (a message
    /// the router never acknowledged, for instance).
    pub notes: Vec<String>,
}

impl LiveView {
    /// Whether the member accepted a message with this text.
    pub fn accepted_text(&self, text: &str) -> bool {
        self.accepted
            .iter()
            .any(|e| e.text.as_deref() == Some(text))
    }

    /// Whether the member raised an alert of `kind` about `server`.
    pub fn raised(&self, kind: &str, server: Option<u32>) -> bool {
        self.alerts
            .iter()
            .any(|a| a.kind == kind && (server.is_none() || a.server == server))
    }
}

/// The four members and their conversation.
pub struct Cast {
    clients: Vec<Client>,
    accounts: Vec<AccountId>,
    conversation: ConversationId,
    /// The group of each member (all 0 until a partition is set).
    groups: Vec<usize>,
    alerts: Vec<Vec<LiveAlert>>,
    notes: Vec<Vec<String>>,
    servers: u32,
}

fn client_error(who: &str) -> impl FnOnce(ApiError) -> LiveError + '_ {
    move |source| LiveError::Client {
        who: who.to_owned(),
        source: Box::new(source),
    }
}

impl Cast {
    /// Creates and registers the four accounts (homes under `homes`), has
    /// Alice create the conversation, and waits until every member accepted
    /// the Setup.
    pub async fn join(descriptor: &str, homes: &Path) -> Result<Self, LiveError> {
        let mut clients = Vec::new();
        for name in MEMBERS {
            let mut key = Zeroizing::new([0u8; 32]);
            rand::fill(&mut key[..]);
            let secret = StoreSecret::KeyFile(key);
            let mut c = Client::init(&homes.join(name), descriptor, &secret, KdfParams::default())
                .map_err(client_error(name))?;
            c.register().await.map_err(client_error(name))?;
            clients.push(c);
        }
        let accounts: Vec<AccountId> = clients.iter().map(Client::account).collect();
        let servers = clients
            .first()
            .map_or(0, |c| c.descriptor().server_count() as u32);
        let creator = clients
            .first_mut()
            .ok_or_else(|| LiveError::Setup("no members".into()))?;
        let conversation = creator
            .create_conversation(Some("protest"), &accounts[1..])
            .await
            .map_err(client_error(MEMBERS[0]))?;
        let mut cast = Self {
            clients,
            accounts,
            conversation,
            groups: vec![0; MEMBERS.len()],
            alerts: vec![Vec::new(); MEMBERS.len()],
            notes: vec![Vec::new(); MEMBERS.len()],
            servers,
        };
        for m in 0..MEMBERS.len() {
            cast.wait_accepted(m, 0).await?;
        }
        cast.wait_full(0, 0).await?;
        Ok(cast)
    }

    /// The account ids of each group of `partition` (member positions).
    pub fn groups(&self, partition: &[&[usize]]) -> Vec<Vec<AccountId>> {
        partition
            .iter()
            .map(|g| {
                g.iter()
                    .filter_map(|m| self.accounts.get(*m).copied())
                    .collect()
            })
            .collect()
    }

    /// From now on, members of different groups of `partition` are not
    /// expected to see each other's messages.
    pub fn set_partition(&mut self, partition: &[&[usize]]) {
        for (g, members) in partition.iter().enumerate() {
            for m in *members {
                if let Some(slot) = self.groups.get_mut(*m) {
                    *slot = g;
                }
            }
        }
    }

    /// The conversation's id.
    pub fn conversation(&self) -> ConversationId {
        self.conversation
    }

    /// Member `m`'s client.
    pub fn client(&mut self, m: usize) -> Result<&mut Client, LiveError> {
        self.clients
            .get_mut(m)
            .ok_or_else(|| LiveError::Setup(format!("no member {m}")))
    }

    fn take(&mut self, m: usize, progress: Progress) {
        if let Some(list) = self.alerts.get_mut(m) {
            list.extend(progress.alerts.into_iter().map(|a| LiveAlert {
                kind: a.kind.kind().name(),
                text: a.kind.to_string(),
                index: a.index.map(|i| i.0),
                server: a.server,
            }));
        }
    }

    /// Member `m` fetches and accepts what the router has for it.
    pub async fn sync(&mut self, m: usize) -> Result<(), LiveError> {
        let id = self.conversation;
        let name = MEMBERS.get(m).copied().unwrap_or("?");
        let p = self.client(m)?.sync(id).await.map_err(client_error(name))?;
        self.take(m, p);
        Ok(())
    }

    fn next_index(&self, m: usize) -> u64 {
        self.clients
            .get(m)
            .and_then(|c| c.summary(&self.conversation))
            .map_or(0, |s| s.next_index)
    }

    fn tags_at(&self, m: usize, index: u64) -> u32 {
        self.clients
            .get(m)
            .and_then(|c| c.conversation(&self.conversation))
            .and_then(|c| c.transcript().get(grompi_proto::Index(index)))
            .map_or(0, |e| e.attestations())
    }

    /// Member `m` fetches until it accepted `index` (bounded).
    async fn wait_accepted(&mut self, m: usize, index: u64) -> Result<(), LiveError> {
        let deadline = Instant::now() + ACCEPT_WAIT;
        loop {
            self.sync(m).await?;
            if self.next_index(m) > index || Instant::now() > deadline {
                return Ok(());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Member `m` fetches until every order server's tag for `index`
    /// arrived (bounded).
    async fn wait_full(&mut self, m: usize, index: u64) -> Result<(), LiveError> {
        let deadline = Instant::now() + FULL_WAIT;
        loop {
            self.sync(m).await?;
            if self.tags_at(m, index) >= self.servers || Instant::now() > deadline {
                return Ok(());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Member `m` sends `text`; the members of its group then fetch until
    /// they accepted it. A message the router does not acknowledge is
    /// noted, not an error (a fork can leave a group without a quorum).
    pub async fn send(&mut self, m: usize, text: &str) -> Result<(), LiveError> {
        let id = self.conversation;
        let name = MEMBERS.get(m).copied().unwrap_or("?");
        let before = self.next_index(m);
        match self.client(m)?.send(id, text).await {
            Ok(p) => self.take(m, p),
            Err(e @ ApiError::Router { .. }) => {
                if let Some(n) = self.notes.get_mut(m) {
                    n.push(format!("{text:?} was not acknowledged: {e}"));
                }
                return Ok(());
            }
            Err(e) => return Err(client_error(name)(e)),
        }
        // Its index: the first the sender accepted beyond what it had, once
        // it has accepted its own message.
        self.wait_accepted(m, before).await?;
        let index = self
            .clients
            .get(m)
            .and_then(|c| c.history(&id).ok())
            .and_then(|h| {
                h.into_iter()
                    .find(|r| r.index >= before && r.text.as_deref() == Some(text))
            })
            .map(|r| r.index);
        let Some(index) = index else {
            return Ok(());
        };
        let group = self.groups.get(m).copied().unwrap_or(0);
        for other in 0..MEMBERS.len() {
            if other != m && self.groups.get(other) == Some(&group) {
                self.wait_accepted(other, index).await?;
            }
        }
        self.wait_full(m, index).await
    }

    /// Member `m` asks every order server for a head proof.
    pub async fn prove_heads(&mut self, m: usize) -> Result<(), LiveError> {
        let id = self.conversation;
        let name = MEMBERS.get(m).copied().unwrap_or("?");
        let (_, p) = self
            .client(m)?
            .prove_heads(id)
            .await
            .map_err(client_error(name))?;
        self.take(m, p);
        Ok(())
    }

    /// Runs [`SCRIPT`], then the audit: every member fetches and asks for
    /// head proofs.
    pub async fn play(&mut self) -> Result<(), LiveError> {
        for step in SCRIPT {
            match step {
                Step::Send(m, text) => self.send(m, text).await?,
                Step::ProveHeads(m) => self.prove_heads(m).await?,
            }
        }
        for m in 0..MEMBERS.len() {
            self.sync(m).await?;
            self.prove_heads(m).await?;
        }
        Ok(())
    }

    fn name_of(&self, account_hex: &str) -> String {
        self.accounts
            .iter()
            .zip(MEMBERS)
            .find(|(a, _)| a.to_hex() == account_hex)
            .map_or_else(
                || account_hex.chars().take(12).collect(),
                |(_, n)| n.to_owned(),
            )
    }

    /// What each member accepted and raised, histories named by head.
    pub fn views(&self) -> Result<Vec<LiveView>, LiveError> {
        let id = self.conversation;
        let mut views = Vec::new();
        for (m, c) in self.clients.iter().enumerate() {
            let name = MEMBERS.get(m).copied().unwrap_or("?");
            let records = c.history(&id).map_err(client_error(name))?;
            let entries = c
                .conversation(&id)
                .map(|conv| conv.transcript().entries().to_vec())
                .unwrap_or_default();
            let accepted = entries
                .iter()
                .map(|e| {
                    let r = records.iter().find(|r| r.index == e.index.0);
                    LiveEntry {
                        index: e.index.0,
                        kind: r.map_or_else(|| "?".to_owned(), |r| r.kind.clone()),
                        sender: r.and_then(|r| r.sender.as_deref()).map(|s| self.name_of(s)),
                        text: r.and_then(|r| r.text.clone()),
                        head: e.head,
                        tags: e.attestations(),
                        history: 'A',
                    }
                })
                .collect();
            views.push(LiveView {
                name: name.to_owned(),
                accepted,
                alerts: self.alerts.get(m).cloned().unwrap_or_default(),
                notes: self.notes.get(m).cloned().unwrap_or_default(),
            });
        }
        name_histories(&mut views);
        Ok(views)
    }
}

/// Names histories by head: at each index, the first head seen (members in
/// order) is 'A', a second one 'B', and so on.
pub fn name_histories(views: &mut [LiveView]) {
    let mut seen: std::collections::BTreeMap<u64, Vec<Head>> = std::collections::BTreeMap::new();
    for v in views.iter() {
        for e in &v.accepted {
            let heads = seen.entry(e.index).or_default();
            if !heads.contains(&e.head) {
                heads.push(e.head);
            }
        }
    }
    for v in views.iter_mut() {
        for e in &mut v.accepted {
            let n = seen
                .get(&e.index)
                .and_then(|h| h.iter().position(|x| *x == e.head))
                .unwrap_or(0);
            e.history = char::from(b'A' + u8::try_from(n.min(25)).unwrap_or(25));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_is_the_protest_scenario_s() {
        for file in [
            include_str!("../../scenarios/protest-honest.toml"),
            include_str!("../../scenarios/protest-fork.toml"),
        ] {
            for step in SCRIPT {
                let needle = match step {
                    Step::Send(m, text) => format!("from = \"{}\"\nsend = \"{text}\"", MEMBERS[m]),
                    Step::ProveHeads(m) => {
                        format!("from = \"{}\"\nprove_heads = true", MEMBERS[m])
                    }
                };
                assert!(file.contains(&needle), "{needle}");
            }
        }
    }

    #[test]
    fn histories_are_named_by_head_in_member_order() {
        let entry = |index, byte| LiveEntry {
            index,
            kind: "message".into(),
            sender: None,
            text: None,
            head: Head::from_bytes([byte; 32]),
            tags: 2,
            history: '?',
        };
        let view = |name: &str, entries| LiveView {
            name: name.into(),
            accepted: entries,
            alerts: vec![],
            notes: vec![],
        };
        let mut views = vec![
            view("a", vec![entry(0, 0), entry(1, 1)]),
            view("c", vec![entry(0, 0), entry(1, 2)]),
            view("d", vec![entry(0, 0), entry(1, 1)]),
        ];
        name_histories(&mut views);
        let letters: Vec<String> = views
            .iter()
            .map(|v| v.accepted.iter().map(|e| e.history).collect())
            .collect();
        assert_eq!(letters, ["AA", "AB", "AA"]);
    }
}
