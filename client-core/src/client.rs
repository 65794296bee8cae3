//! The async client API for programs: an account in a home directory, its
//! state encrypted at rest, talking to the router over pinned TLS.
//!
//! ```text
//! Client::init(home, descriptor, secret)   create the account locally
//! client.register()                        register it with the router
//! client.create_conversation(name, peers)  Setup, returns the id
//! client.send(conv, text)                  a Message
//! client.sync(conv) / sync_all()           fetch and accept what arrived
//! client.subscribe() + client.receive(d)   live deliveries
//! client.update_members(conv, change)      an Update (add, remove, leave)
//! client.send_receipt(conv)                a Receipt
//! client.prove_heads(conv)                 head proofs from every order server
//! client.verify(contact)                   the safety number with a contact
//! ```
//!
//! Every operation saves everything it changed in one durable transaction
//! before it returns, and before anything it composed leaves the process
//! (an Olm ratchet step that was sent is never forgotten). One process at
//! a time may use a home directory (the store is locked while open).
//!
//! Trust decisions stay in the sans-IO core ([`crate::Member`]): this layer
//! only moves bytes, keeps state and shows what the core decided.

pub mod contacts;
pub mod error;
pub mod history;
pub mod network;
pub mod router;
pub mod store;

pub use contacts::{Binding, Contact, safety_number};
pub use error::ApiError;
pub use history::{Record, Status};
pub use network::{ForkBound, fork_bound};

use crate::alert::Alert;
use crate::compose::Composed;
use crate::content::{Change, Content, MemberEntry, UpdateContent};
use crate::conversation::{Conversation, ConversationConfig, Event, Phase, Secrets};
use crate::head_proof::HeadProofOutcome;
use crate::keyring::OrderKeyring;
use crate::local_store::{KdfParams, LocalStore, StoreSecret};
use crate::member::Member;
use crate::pairwise::{IdentityKeys, Pairwise, PairwisePickle, PrekeyBundle};
use error::io;
use grompi_proto::descriptor::NetworkDescriptor;
use grompi_proto::pb;
use grompi_proto::{
    AccountId, ConversationId, Index, ProofNonce, SlotIndex, SlotRole, SlotSecret, SlotSet,
};
use router::RouterConnection;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use store::{AlertRecord, ConversationMeta, PendingSend, Profile};

/// The descriptor file in a home directory.
pub const DESCRIPTOR_FILE: &str = "network.toml";
/// The store file in a home directory.
pub const STORE_FILE: &str = "state.redb";
/// Order keys uploaded per batch.
pub const ORDER_KEY_BATCH: usize = 16;
/// Below this many order keys at the router, a new batch is uploaded.
pub const ORDER_KEY_LOW: u32 = 8;
/// Most unused order keys kept locally: past this no more are generated,
/// whatever the router reports.
pub const MAX_UNUSED_ORDER_KEYS: usize = 1024;
/// One-time prekeys uploaded per batch.
pub const PREKEY_BATCH: usize = 10;
/// Below this many one-time prekeys at the router, a new batch is uploaded.
pub const PREKEY_LOW: u32 = 4;
/// Deliveries asked for per Fetch.
pub const FETCH_LIMIT: u32 = 256;

/// What the client reports after taking in deliveries.
#[derive(Debug, Default)]
pub struct Progress {
    /// Events, per conversation, in order.
    pub events: Vec<(ConversationId, Event)>,
    /// Alerts raised.
    pub alerts: Vec<Alert>,
    /// Earlier sends that were still unacknowledged and were resumed.
    pub resumed: Vec<Resumed>,
}

impl Progress {
    fn extend(&mut self, other: Progress) {
        self.events.extend(other.events);
        self.alerts.extend(other.alerts);
        self.resumed.extend(other.resumed);
    }
}

/// An earlier send, saved but not acknowledged by the router, that was
/// resubmitted (the identical envelope) or found accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resumed {
    /// The conversation.
    pub conversation: ConversationId,
    /// The saved envelope.
    pub send: PendingSend,
    /// What became of it.
    pub outcome: ResumeOutcome,
}

/// What became of a resumed send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResumeOutcome {
    /// The router acknowledged the resubmission (a router that already held
    /// the envelope answers it as a success and keeps it once).
    Acknowledged,
    /// The envelope was already accepted at this index of the transcript.
    AlreadyAccepted(Index),
    /// The router refused it (it never stored it, e.g. the epoch moved on):
    /// it was not sent and is forgotten. Compose it again to send it.
    Refused(String),
}

impl std::fmt::Display for ResumeOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Acknowledged => f.write_str("acknowledged by the router"),
            Self::AlreadyAccepted(i) => write!(f, "already accepted as #{}", i.0),
            Self::Refused(why) => write!(f, "refused by the router, not sent: {why}"),
        }
    }
}

/// Whether a router refusal of a resubmission is final: the router did not
/// store the envelope and never will (a router that stored it answers a
/// resubmission as a success). Anything else (unreachable, overloaded,
/// timed out) leaves the envelope saved for the next attempt.
fn is_final_refusal(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::InvalidArgument
            | tonic::Code::FailedPrecondition
            | tonic::Code::PermissionDenied
            | tonic::Code::NotFound
            | tonic::Code::AlreadyExists
            | tonic::Code::OutOfRange
    )
}

/// A summary of one conversation.
#[derive(Clone, Debug)]
pub struct Summary {
    /// The id.
    pub id: ConversationId,
    /// The local name.
    pub name: Option<String>,
    /// The phase.
    pub phase: Phase,
    /// The current epoch, once the conversation is established.
    pub epoch: Option<u64>,
    /// Members and roles.
    pub members: Vec<(AccountId, SlotRole)>,
    /// The next index to accept.
    pub next_index: u64,
    /// Per member, the last index its receipts say it processed.
    pub processed: BTreeMap<AccountId, Index>,
    /// Indices this member could not open.
    pub undecryptable: Vec<u64>,
    /// Accepted indices per status: quorum, fully attested.
    pub quorum_only: u64,
    /// Fully attested indices.
    pub fully_attested: u64,
}

/// An account in a home directory.
pub struct Client {
    home: PathBuf,
    store: LocalStore,
    descriptor: NetworkDescriptor,
    member: Member,
    meta: BTreeMap<ConversationId, ConversationMeta>,
    profile: Profile,
    connection: Option<RouterConnection>,
    dirty_history: BTreeMap<(ConversationId, u64), Record>,
    new_alerts: Vec<AlertRecord>,
    /// Whether `open` adopted the descriptor file just now (a store from
    /// before the descriptor was kept inside it).
    adopted_network: bool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("home", &self.home)
            .field("account", &self.member.account())
            .finish_non_exhaustive()
    }
}

/// A record to write: namespace, key, value.
type OwnedRecord = (&'static str, Vec<u8>, zeroize::Zeroizing<Vec<u8>>);

fn random32() -> [u8; 32] {
    let mut b = [0u8; 32];
    rand::Rng::fill_bytes(&mut rand::rng(), &mut b);
    b
}

fn role_code(role: SlotRole) -> i32 {
    i32::from(role.code())
}

/// Member entries from a router's slot assignments; each assigned key
/// must be the key of its slot, each account one of `roster`.
fn entries(
    slots: &SlotSet,
    assignments: &[pb::SlotAssignment],
    roster: &BTreeMap<AccountId, SlotRole>,
) -> Result<Vec<MemberEntry>, ApiError> {
    let mut out = Vec::new();
    for a in assignments {
        let account = AccountId::parse("assignment.account", &a.account)?;
        let slot = SlotIndex(a.slot);
        let key = slots
            .get(slot)
            .ok_or_else(|| ApiError::Malformed("assignment outside the slot set".into()))?;
        if key.key.to_vec() != a.key {
            return Err(ApiError::Malformed(
                "assignment key differs from its slot".into(),
            ));
        }
        let role = *roster
            .get(&account)
            .ok_or_else(|| ApiError::Malformed("assignment for a non-member".into()))?;
        out.push(MemberEntry {
            account,
            role,
            slot,
        });
    }
    if out.len() != roster.len() {
        return Err(ApiError::Malformed(
            "assignments do not cover every member".into(),
        ));
    }
    Ok(out)
}

impl Client {
    // ---- Opening --------------------------------------------------------

    /// Creates an account in `home` for the network `descriptor_text`
    /// (TOML), encrypted under `secret`. The descriptor's text is kept in
    /// the encrypted store: it is the account's trust anchor
    /// ([`network`]), and `network.toml` beside the store is a readable copy.
    pub fn init(
        home: &Path,
        descriptor_text: &str,
        secret: &StoreSecret,
        kdf: KdfParams,
    ) -> Result<Self, ApiError> {
        let descriptor = NetworkDescriptor::parse(descriptor_text)?;
        let store_path = home.join(STORE_FILE);
        if store_path.exists() {
            return Err(ApiError::AlreadyInitialized(home.display().to_string()));
        }
        std::fs::create_dir_all(home).map_err(io(format!("create {}", home.display())))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o700))
                .map_err(io(format!("chmod {}", home.display())))?;
        }
        std::fs::write(home.join(DESCRIPTOR_FILE), descriptor_text)
            .map_err(io("write the network descriptor"))?;
        let store = LocalStore::open(&store_path, secret, kdf, &mut rand::rng())?;
        store.put(
            store::ACCOUNT,
            network::NETWORK_RECORD,
            descriptor_text.as_bytes(),
        )?;
        let config = ConversationConfig::from_descriptor(&descriptor);
        let secrets = Secrets {
            pairwise: Pairwise::new(),
            order_keys: OrderKeyring::new(),
        };
        let client = Self {
            home: home.to_path_buf(),
            store,
            descriptor,
            member: Member::new(secrets, config),
            meta: BTreeMap::new(),
            profile: Profile::default(),
            connection: None,
            dirty_history: BTreeMap::new(),
            new_alerts: Vec::new(),
            adopted_network: false,
        };
        client.save_all()?;
        Ok(client)
    }

    /// Opens the account in `home`, with the network descriptor kept in its
    /// encrypted store. Fails with [`ApiError::NetworkChanged`] if the
    /// `network.toml` in `home` says something else ([`network`]).
    pub fn open(home: &Path, secret: &StoreSecret) -> Result<Self, ApiError> {
        let store = Self::open_store(home, secret)?;
        let (descriptor, adopted) = network::anchored(&store, home)?;
        let mut client = Self::restore(home, store, descriptor)?;
        client.adopted_network = adopted;
        Ok(client)
    }

    /// Deliberately makes `descriptor_text` the network this account
    /// trusts (replacing the one kept since `init`, and `network.toml`),
    /// then opens the account. Returns the client and the descriptor it
    /// replaced. Existing conversations are checked against the new
    /// descriptor's order server keys and quorum from now on.
    pub fn accept_network(
        home: &Path,
        secret: &StoreSecret,
        descriptor_text: &str,
    ) -> Result<(Self, Option<NetworkDescriptor>), ApiError> {
        let descriptor = NetworkDescriptor::parse(descriptor_text)?;
        let store = Self::open_store(home, secret)?;
        let previous = network::replace(&store, home, descriptor_text)?;
        Ok((Self::restore(home, store, descriptor)?, previous))
    }

    /// Whether this `open` adopted `network.toml` as the trusted descriptor
    /// (the store was made before descriptors were kept inside it). Later
    /// opens compare the file with the adopted copy.
    pub fn adopted_network(&self) -> bool {
        self.adopted_network
    }

    /// Unlocks the store of the account in `home`.
    fn open_store(home: &Path, secret: &StoreSecret) -> Result<LocalStore, ApiError> {
        let store_path = home.join(STORE_FILE);
        if !store_path.exists() {
            return Err(ApiError::NotInitialized(home.display().to_string()));
        }
        Ok(LocalStore::open(
            &store_path,
            secret,
            KdfParams::default(),
            &mut rand::rng(),
        )?)
    }

    /// The account in an unlocked store, for the network `descriptor`.
    fn restore(
        home: &Path,
        store: LocalStore,
        descriptor: NetworkDescriptor,
    ) -> Result<Self, ApiError> {
        let config = ConversationConfig::from_descriptor(&descriptor);
        let pickle = store
            .get(store::ACCOUNT, b"pairwise")?
            .ok_or_else(|| ApiError::Corrupt("the account record is missing".into()))?;
        let pickle: PairwisePickle = store::from_json(&pickle)?;
        let mut order_keys = OrderKeyring::new();
        if let Some(keys) = store.get(store::ACCOUNT, b"order-keys")? {
            if keys.len() % 32 != 0 {
                return Err(ApiError::Corrupt("order keys".into()));
            }
            for chunk in keys.chunks_exact(32) {
                let mut b = zeroize::Zeroizing::new([0u8; 32]);
                b.copy_from_slice(chunk);
                order_keys.insert(SlotSecret::from_bytes(*b));
            }
        }
        let profile: Profile =
            store::get_json(&store, store::ACCOUNT, b"profile")?.unwrap_or_default();
        let mut conversations = Vec::new();
        for (_, bytes) in store.list(store::CONVERSATION)? {
            conversations.push(Conversation::restore_state(&bytes, config.clone())?);
        }
        let mut meta = BTreeMap::new();
        for (k, m) in store::list_json::<ConversationMeta>(&store, store::CONVERSATION_META)? {
            let id = ConversationId::parse("conversation", &k)
                .map_err(|_| ApiError::Corrupt("conversation name key".into()))?;
            meta.insert(id, m);
        }
        let secrets = Secrets {
            pairwise: Pairwise::from_pickle(pickle),
            order_keys,
        };
        Ok(Self {
            home: home.to_path_buf(),
            store,
            descriptor,
            member: Member::restore(secrets, config, conversations),
            meta,
            profile,
            connection: None,
            dirty_history: BTreeMap::new(),
            new_alerts: Vec::new(),
            adopted_network: false,
        })
    }

    // ---- Saving ---------------------------------------------------------

    /// Writes the account, every conversation, and new history and alert
    /// records in one durable transaction.
    fn save_all(&self) -> Result<(), ApiError> {
        self.save_all_with(Vec::new())
    }

    /// [`Client::save_all`] with `extra` records in the same transaction.
    fn save_all_with(&self, extra: Vec<OwnedRecord>) -> Result<(), ApiError> {
        let mut records: Vec<OwnedRecord> = extra;
        let secrets = self.member.secrets();
        let pickle = serde_json::to_vec(&secrets.pairwise.pickle())
            .map_err(|e| ApiError::Corrupt(e.to_string()))?;
        records.push((store::ACCOUNT, b"pairwise".to_vec(), pickle.into()));
        let mut keys = zeroize::Zeroizing::new(Vec::new());
        for k in secrets.order_keys.export() {
            keys.extend_from_slice(&k[..]);
        }
        records.push((store::ACCOUNT, b"order-keys".to_vec(), keys));
        records.push((
            store::ACCOUNT,
            b"profile".to_vec(),
            store::to_json(&self.profile)?.into(),
        ));
        for (id, c) in self.member.conversations() {
            records.push((store::CONVERSATION, id.to_vec(), c.save_state()));
        }
        for (id, m) in &self.meta {
            records.push((
                store::CONVERSATION_META,
                id.to_vec(),
                store::to_json(m)?.into(),
            ));
        }
        for ((id, index), r) in &self.dirty_history {
            records.push((
                store::HISTORY,
                store::history_key(id.as_bytes(), *index),
                store::to_json(r)?.into(),
            ));
        }
        let first_alert = self
            .profile
            .next_alert
            .saturating_sub(self.new_alerts.len() as u64);
        for (i, a) in self.new_alerts.iter().enumerate() {
            let seq = first_alert.saturating_add(i as u64);
            records.push((
                store::ALERTS,
                seq.to_be_bytes().to_vec(),
                store::to_json(a)?.into(),
            ));
        }
        let refs: Vec<(&str, &[u8], &[u8])> = records
            .iter()
            .map(|(n, k, v)| (*n, k.as_slice(), v.as_slice()))
            .collect();
        self.store.put_all(&refs)?;
        Ok(())
    }

    /// Saves and forgets what was saved.
    fn save(&mut self) -> Result<(), ApiError> {
        self.save_all()?;
        self.dirty_history.clear();
        self.new_alerts.clear();
        Ok(())
    }

    // ---- Accessors ------------------------------------------------------

    /// This account's id.
    pub fn account(&self) -> AccountId {
        self.member.account()
    }

    /// This account's identity keys.
    pub fn identity(&self) -> IdentityKeys {
        self.member.secrets().pairwise.identity()
    }

    /// The home directory.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The network descriptor.
    pub fn descriptor(&self) -> &NetworkDescriptor {
        &self.descriptor
    }

    /// Whether the router accepted the registration.
    pub fn registered(&self) -> bool {
        self.profile.registered
    }

    /// A conversation's state.
    pub fn conversation(&self, id: &ConversationId) -> Option<&Conversation> {
        self.member.conversation(id)
    }

    /// The local name of a conversation.
    pub fn conversation_name(&self, id: &ConversationId) -> Option<&str> {
        self.meta.get(id).and_then(|m| m.name.as_deref())
    }

    /// Every conversation id, with its local name.
    pub fn conversations(&self) -> Vec<(ConversationId, Option<String>)> {
        self.member
            .conversations()
            .keys()
            .map(|id| (*id, self.conversation_name(id).map(str::to_owned)))
            .collect()
    }

    /// Finds a conversation by local name, full id or unique id prefix (hex).
    pub fn resolve_conversation(&self, what: &str) -> Result<ConversationId, ApiError> {
        if let Some((id, _)) = self
            .meta
            .iter()
            .find(|(_, m)| m.name.as_deref() == Some(what))
        {
            return Ok(*id);
        }
        let lower = what.to_ascii_lowercase();
        let found: Vec<ConversationId> = self
            .member
            .conversations()
            .keys()
            .filter(|id| !lower.is_empty() && id.to_hex().starts_with(&lower))
            .copied()
            .collect();
        match found.as_slice() {
            [one] => Ok(*one),
            [] => Err(ApiError::UnknownConversation(what.to_owned())),
            _ => Err(ApiError::Ambiguous(what.to_owned())),
        }
    }

    /// Gives a conversation a local name.
    pub fn name_conversation(&mut self, id: ConversationId, name: &str) -> Result<(), ApiError> {
        if let Some((other, _)) = self
            .meta
            .iter()
            .find(|(i, m)| **i != id && m.name.as_deref() == Some(name))
        {
            return Err(ApiError::Refused(format!(
                "the name {name:?} is already used by conversation {}",
                &other.to_hex()[..12]
            )));
        }
        self.meta.entry(id).or_default().name = Some(name.to_owned());
        self.save()
    }

    /// A summary of a conversation.
    pub fn summary(&self, id: &ConversationId) -> Option<Summary> {
        let c = self.member.conversation(id)?;
        let config = ConversationConfig::from_descriptor(&self.descriptor);
        let mut quorum_only = 0;
        let mut fully_attested = 0;
        for e in c.transcript().entries() {
            match config.status(e.attested_by) {
                crate::transcript::AttestationStatus::Full => fully_attested += 1,
                crate::transcript::AttestationStatus::Quorum => quorum_only += 1,
                crate::transcript::AttestationStatus::Pending => {}
            }
        }
        Some(Summary {
            id: *id,
            name: self.conversation_name(id).map(str::to_owned),
            phase: c.phase().clone(),
            epoch: c.membership().map(|m| m.epoch().0),
            members: c
                .membership()
                .map(|m| m.members().iter().map(|(a, r)| (*a, *r)).collect())
                .unwrap_or_default(),
            next_index: c.next_expected().0,
            processed: c.processed().clone(),
            undecryptable: c.undecryptable().iter().map(|i| i.0).collect(),
            quorum_only,
            fully_attested,
        })
    }

    /// The readable transcript of a conversation, in index order.
    pub fn history(&self, id: &ConversationId) -> Result<Vec<Record>, ApiError> {
        let prefix = id.as_bytes();
        let mut out: Vec<Record> = store::list_json::<Record>(&self.store, store::HISTORY)?
            .into_iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, r)| r)
            .collect();
        out.sort_by_key(|r| r.index);
        Ok(out)
    }

    /// Every alert recorded, oldest first.
    pub fn alerts(&self) -> Result<Vec<AlertRecord>, ApiError> {
        let mut all = store::list_json::<AlertRecord>(&self.store, store::ALERTS)?;
        all.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(all.into_iter().map(|(_, a)| a).collect())
    }

    // ---- Contacts -------------------------------------------------------

    /// Every contact, by name.
    pub fn contacts(&self) -> Result<Vec<Contact>, ApiError> {
        let mut all: Vec<Contact> = store::list_json::<Contact>(&self.store, store::CONTACTS)?
            .into_iter()
            .map(|(_, c)| c)
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    /// A contact by name, or by account id (hex, or a unique prefix).
    pub fn contact(&self, what: &str) -> Result<Option<Contact>, ApiError> {
        if let Some(c) = store::get_json::<Contact>(&self.store, store::CONTACTS, what.as_bytes())?
        {
            return Ok(Some(c));
        }
        let lower = what.to_ascii_lowercase();
        let found: Vec<Contact> = self
            .contacts()?
            .into_iter()
            .filter(|c| lower.len() >= 8 && c.account.starts_with(&lower))
            .collect();
        match found.len() {
            0 | 1 => Ok(found.into_iter().next()),
            _ => Err(ApiError::Ambiguous(what.to_owned())),
        }
    }

    /// The local name of an account, when it is a contact (or this account).
    pub fn name_of(&self, account: &AccountId) -> Option<String> {
        if *account == self.account() {
            return Some("me".to_owned());
        }
        let hex = account.to_hex();
        self.contacts()
            .ok()?
            .into_iter()
            .find(|c| c.account == hex)
            .map(|c| c.name)
    }

    /// Resolves a contact name or account id (hex) to an account id.
    pub fn resolve_account(&self, what: &str) -> Result<AccountId, ApiError> {
        if let Some(c) = self.contact(what)? {
            return c
                .account_id()
                .ok_or_else(|| ApiError::Corrupt(format!("contact {what:?}")));
        }
        let bytes = hex::decode(what).map_err(|_| ApiError::UnknownContact(what.to_owned()))?;
        AccountId::parse("account", &bytes).map_err(|_| ApiError::UnknownContact(what.to_owned()))
    }

    /// Binds `name` to `account` (trust on first use): fetches the
    /// account's identity keys from the router and checks that they hash to
    /// the account id. A name bound to another identity is replaced only
    /// with `replace`; the result says what happened.
    pub async fn add_contact(
        &mut self,
        name: &str,
        account: AccountId,
        replace: bool,
    ) -> Result<Binding, ApiError> {
        if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
            return Err(ApiError::Refused(
                "a contact name is 1 to 64 printable characters".into(),
            ));
        }
        let bundle = self.fetch_bundle(account).await?;
        let existing = store::get_json::<Contact>(&self.store, store::CONTACTS, name.as_bytes())?;
        let binding = contacts::bind(existing, name, &bundle.identity, replace);
        match &binding {
            Binding::New(c) | Binding::Replaced { contact: c, .. } => {
                self.store
                    .put(store::CONTACTS, name.as_bytes(), &store::to_json(c)?)?;
            }
            Binding::Unchanged(_) | Binding::Conflict { .. } => {}
        }
        Ok(binding)
    }

    /// The safety number with a contact: the same 60 digits on both sides
    /// when neither identity was substituted. Compare it out of band.
    pub fn safety_number(&self, contact: &Contact) -> Result<String, ApiError> {
        let theirs = contact
            .identity()
            .ok_or_else(|| ApiError::Corrupt(format!("contact {:?}", contact.name)))?;
        Ok(safety_number(&self.identity(), &theirs))
    }

    /// Marks a contact verified (the user compared the safety number).
    pub fn mark_verified(&mut self, name: &str) -> Result<Contact, ApiError> {
        let mut c = self
            .contact(name)?
            .ok_or_else(|| ApiError::UnknownContact(name.to_owned()))?;
        c.verified = true;
        self.store
            .put(store::CONTACTS, c.name.as_bytes(), &store::to_json(&c)?)?;
        Ok(c)
    }

    // ---- Router ---------------------------------------------------------

    async fn connection(&mut self) -> Result<&mut RouterConnection, ApiError> {
        if self.connection.is_none() {
            self.connection = Some(RouterConnection::connect(&self.descriptor).await?);
        }
        self.connection
            .as_mut()
            .ok_or_else(|| ApiError::Refused("no connection".into()))
    }

    /// Registers the account with the router (once) and uploads its first
    /// prekeys and order keys.
    pub async fn register(&mut self) -> Result<AccountId, ApiError> {
        if self.profile.registered {
            return Err(ApiError::Refused(
                "this account is already registered".into(),
            ));
        }
        let mut rng = rand::rng();
        let secrets = self.member.secrets_mut();
        let order_keys: Vec<Vec<u8>> = secrets
            .order_keys
            .generate(&mut rng, ORDER_KEY_BATCH)
            .iter()
            .map(|k| k.to_vec())
            .collect();
        let prekeys = secrets.pairwise.new_one_time_prekeys(PREKEY_BATCH);
        let fallback = secrets.pairwise.new_fallback_prekey();
        // Keys are saved before they are uploaded: never a key at the
        // router whose secret this client does not hold.
        self.save()?;
        self.connection().await?;
        let conn = self
            .connection
            .as_mut()
            .ok_or_else(|| ApiError::Refused("no connection".into()))?;
        let account = conn
            .register(
                &self.member.secrets().pairwise,
                fallback,
                prekeys,
                order_keys,
            )
            .await?;
        self.profile.registered = true;
        self.save()?;
        Ok(account)
    }

    /// Connects and signs in if needed, and tops up prekeys and order keys
    /// at the router.
    pub async fn ensure_signed_in(&mut self) -> Result<(), ApiError> {
        if !self.profile.registered {
            return Err(ApiError::NotRegistered);
        }
        self.connection().await?;
        let Some(conn) = self.connection.as_mut() else {
            return Err(ApiError::Refused("no connection".into()));
        };
        if conn.signed_in() {
            return Ok(());
        }
        conn.sign_in(&self.member.secrets().pairwise).await?;
        let req = conn.authed(pb::GetKeyCountsRequest {})?;
        let counts = conn
            .raw()
            .get_key_counts(req)
            .await
            .map_err(|s| ApiError::router("GetKeyCounts", s))?
            .into_inner();
        let mut upload = pb::UploadKeysRequest::default();
        let mut rng = rand::rng();
        // A router that always reports a low count must not make the local
        // keyring grow without bound.
        if counts.order_keys < ORDER_KEY_LOW
            && self.member.secrets().order_keys.len() < MAX_UNUSED_ORDER_KEYS
        {
            upload.order_keys = self
                .member
                .secrets_mut()
                .order_keys
                .generate(&mut rng, ORDER_KEY_BATCH)
                .iter()
                .map(|k| k.to_vec())
                .collect();
        }
        if counts.one_time_prekeys < PREKEY_LOW {
            upload.one_time_prekeys = self
                .member
                .secrets_mut()
                .pairwise
                .new_one_time_prekeys(PREKEY_BATCH)
                .iter()
                .map(|k| k.to_vec())
                .collect();
        }
        if !upload.order_keys.is_empty() || !upload.one_time_prekeys.is_empty() {
            self.save()?;
            let conn = self.signed()?;
            let req = conn.authed(upload)?;
            conn.raw()
                .upload_keys(req)
                .await
                .map_err(|s| ApiError::router("UploadKeys", s))?;
        }
        Ok(())
    }

    fn signed(&mut self) -> Result<&mut RouterConnection, ApiError> {
        self.connection
            .as_mut()
            .filter(|c| c.signed_in())
            .ok_or(ApiError::NotRegistered)
    }

    /// A peer's verified prekey bundle.
    async fn fetch_bundle(&mut self, account: AccountId) -> Result<PrekeyBundle, ApiError> {
        self.ensure_signed_in().await?;
        let conn = self.signed()?;
        let req = conn.authed(pb::GetPrekeyBundleRequest {
            account: account.to_vec(),
        })?;
        let bundle = conn
            .raw()
            .get_prekey_bundle(req)
            .await
            .map_err(|s| ApiError::router("GetPrekeyBundle", s))?
            .into_inner()
            .bundle
            .ok_or_else(|| ApiError::Malformed("prekey bundle (missing)".into()))?;
        let bundle = PrekeyBundle::try_from(bundle)?;
        bundle.verify()?;
        if bundle.account != account || bundle.identity.account_id() != account {
            return Err(ApiError::Malformed(
                "prekey bundle for another account".into(),
            ));
        }
        Ok(bundle)
    }

    /// Makes sure a pairwise session exists with every peer.
    async fn ensure_sessions(&mut self, peers: &[AccountId]) -> Result<(), ApiError> {
        for peer in peers {
            if *peer == self.account() || self.member.secrets().pairwise.has_session(peer) {
                continue;
            }
            let bundle = self.fetch_bundle(*peer).await?;
            self.member.secrets_mut().pairwise.start_session(&bundle)?;
        }
        Ok(())
    }

    /// Saves everything, and `composed` as a pending send of `id`, in one
    /// transaction: before the envelope leaves, so that it is resubmitted
    /// (never composed again) until the router acknowledges it.
    fn save_pending(
        &mut self,
        id: ConversationId,
        composed: &Composed,
        text: Option<String>,
    ) -> Result<PendingSend, ApiError> {
        use prost::Message as _;
        let header = composed.envelope.header();
        let request = pb::SubmitRequest {
            envelope: Some(pb::Envelope::from(&composed.envelope)),
            submission_tags: composed
                .submission_tags
                .iter()
                .map(|t| t.to_vec())
                .collect(),
        };
        let pending = PendingSend {
            conversation: id.to_hex(),
            request: hex::encode(request.encode_to_vec()),
            envelope_hash: composed.envelope.hash().to_hex(),
            kind: format!("{:?}", header.kind()),
            sequence: header.sequence().0,
            text,
        };
        let record = (
            store::OUTBOX,
            pending.key()?,
            store::to_json(&pending)?.into(),
        );
        self.save_all_with(vec![record])?;
        self.dirty_history.clear();
        self.new_alerts.clear();
        Ok(pending)
    }

    /// The sends saved but not yet acknowledged, of one conversation or of
    /// all, oldest first.
    pub fn pending_sends(&self, id: Option<ConversationId>) -> Result<Vec<PendingSend>, ApiError> {
        let mut all: Vec<(Vec<u8>, PendingSend)> =
            store::list_json::<PendingSend>(&self.store, store::OUTBOX)?;
        if let Some(id) = id {
            all.retain(|(k, _)| k.starts_with(id.as_bytes()));
        }
        all.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(all.into_iter().map(|(_, p)| p).collect())
    }

    /// Submits a saved envelope (the same bytes every time) and forgets it
    /// once the router acknowledges it.
    async fn submit_pending(&mut self, pending: &PendingSend) -> Result<(), ApiError> {
        use prost::Message as _;
        let bytes = hex::decode(&pending.request)
            .map_err(|_| ApiError::Corrupt("pending send: request".into()))?;
        let request = pb::SubmitRequest::decode(bytes.as_slice())
            .map_err(|e| ApiError::Corrupt(format!("pending send: {e}")))?;
        self.ensure_signed_in().await?;
        let conn = self.signed()?;
        let req = conn.authed(request)?;
        let reply = conn
            .raw()
            .submit(req)
            .await
            .map_err(|s| ApiError::router("Submit", s))?
            .into_inner();
        // An acknowledgement names the envelope it acknowledges; one for
        // another envelope acknowledges nothing, and the send stays saved.
        if hex::encode(&reply.envelope_hash) != pending.envelope_hash {
            return Err(ApiError::Malformed(
                "the router acknowledged another envelope than the one submitted".into(),
            ));
        }
        self.store.delete(store::OUTBOX, &pending.key()?)?;
        Ok(())
    }

    /// Resumes every send of `id` that was saved but not acknowledged: one
    /// already accepted in the transcript is forgotten, any other is
    /// resubmitted byte for byte until the router acknowledges it. Runs at
    /// the start of every sync, so every command that talks to the router
    /// resumes first. An error (router unreachable, ...) leaves the send
    /// saved for the next attempt.
    pub async fn resume_pending(&mut self, id: ConversationId) -> Result<Vec<Resumed>, ApiError> {
        let mut out = Vec::new();
        for send in self.pending_sends(Some(id))? {
            let accepted = self.member.conversation(&id).and_then(|c| {
                c.transcript()
                    .entries()
                    .iter()
                    .rev()
                    .find(|e| e.envelope_hash.to_hex() == send.envelope_hash)
                    .map(|e| e.index)
            });
            let outcome = if let Some(index) = accepted {
                self.store.delete(store::OUTBOX, &send.key()?)?;
                ResumeOutcome::AlreadyAccepted(index)
            } else {
                match self.submit_pending(&send).await {
                    Ok(()) => ResumeOutcome::Acknowledged,
                    Err(ApiError::Router { status, .. }) if is_final_refusal(status.code()) => {
                        self.store.delete(store::OUTBOX, &send.key()?)?;
                        ResumeOutcome::Refused(status.message().to_owned())
                    }
                    Err(e) => return Err(e),
                }
            };
            out.push(Resumed {
                conversation: id,
                send,
                outcome,
            });
        }
        Ok(out)
    }

    // ---- Conversations --------------------------------------------------

    /// Creates a conversation with `peers` (this account is its Admin),
    /// submits its Setup and accepts it. Returns its id.
    pub async fn create_conversation(
        &mut self,
        name: Option<&str>,
        peers: &[AccountId],
    ) -> Result<ConversationId, ApiError> {
        self.ensure_signed_in().await?;
        if let Some(n) = name
            && self.meta.values().any(|m| m.name.as_deref() == Some(n))
        {
            return Err(ApiError::Refused(format!(
                "a conversation is already named {n:?}"
            )));
        }
        let me = self.account();
        let mut roster = BTreeMap::new();
        roster.insert(me, SlotRole::Admin);
        for p in peers {
            if roster.insert(*p, SlotRole::Member).is_some() {
                return Err(ApiError::Refused("a member is listed twice".into()));
            }
        }
        let id = ConversationId::from_bytes(random32());
        self.ensure_signed_in().await?;
        let conn = self.signed()?;
        let req = conn.authed(pb::CreateConversationRequest {
            conversation_id: id.to_vec(),
            members: roster
                .iter()
                .map(|(a, r)| pb::MemberSpec {
                    account: a.to_vec(),
                    role: role_code(*r),
                })
                .collect(),
        })?;
        let created = conn
            .raw()
            .create_conversation(req)
            .await
            .map_err(|s| ApiError::router("CreateConversation", s))?
            .into_inner();
        let slots = SlotSet::try_from(
            created
                .slots
                .ok_or_else(|| ApiError::Malformed("slot set (missing)".into()))?,
        )?;
        let members = entries(&slots, &created.assignments, &roster)?;
        self.ensure_sessions(peers).await?;
        let composed = self
            .member
            .create_conversation(id, slots, members, &mut rand::rng())?;
        self.meta.entry(id).or_default().name = name.map(str::to_owned);
        let pending = self.save_pending(id, &composed, None)?;
        self.submit_pending(&pending).await?;
        self.sync(id).await?;
        Ok(id)
    }

    /// Sends a text message; returns the index it was accepted at, when it
    /// was accepted before this returns. An earlier send of the
    /// conversation still unacknowledged is resubmitted first
    /// ([`Progress::resumed`]); when this fails after the envelope was
    /// saved, [`Client::pending_sends`] lists it and the next sync
    /// resubmits it (call that, not `send` again, to send it exactly once).
    pub async fn send(&mut self, id: ConversationId, text: &str) -> Result<Progress, ApiError> {
        self.send_content(id, Content::Message(text.as_bytes().to_vec()), &[])
            .await
    }

    /// Sends a receipt for everything accepted so far.
    pub async fn send_receipt(&mut self, id: ConversationId) -> Result<Progress, ApiError> {
        let mut progress = self.sync(id).await?;
        let receipt = self
            .member
            .conversation(&id)
            .and_then(Conversation::receipt)
            .ok_or_else(|| ApiError::Refused("nothing accepted yet".into()))?;
        progress.extend(self.send_content(id, receipt, &[]).await?);
        Ok(progress)
    }

    async fn send_content(
        &mut self,
        id: ConversationId,
        content: Content,
        extra_recipients: &[AccountId],
    ) -> Result<Progress, ApiError> {
        let mut progress = self.sync(id).await?;
        let conv = self
            .member
            .conversation(&id)
            .ok_or_else(|| ApiError::UnknownConversation(id.to_hex()))?;
        match conv.phase() {
            Phase::Active => {}
            Phase::Removed => {
                return Err(ApiError::Refused(
                    "you are no longer a member of this conversation".into(),
                ));
            }
            other => {
                return Err(ApiError::Refused(format!(
                    "the conversation cannot be written to now ({other:?})"
                )));
            }
        }
        let mut peers: Vec<AccountId> = conv.recipients().into_iter().map(|(_, a)| a).collect();
        peers.extend_from_slice(extra_recipients);
        self.ensure_sessions(&peers).await?;
        let text = match &content {
            Content::Message(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        };
        let composed = self.member.compose(&id, content, &mut rand::rng())?;
        // Saved before it leaves, with the envelope itself: the Olm ratchet
        // step and the sequence number are never reused after a crash, and
        // a send whose acknowledgement was lost is resubmitted as it is
        // (never composed again) by the next command.
        let pending = self.save_pending(id, &composed, text)?;
        self.submit_pending(&pending).await?;
        // Acknowledged: the send succeeded even if this sync does not (the
        // next one shows the index).
        if let Ok(p) = self.sync(id).await {
            progress.extend(p);
        }
        Ok(progress)
    }

    /// Changes the member list: `Add`, `Remove`, `Leave` or `SetRole`.
    pub async fn update_members(
        &mut self,
        id: ConversationId,
        change: Change,
    ) -> Result<Progress, ApiError> {
        let mut progress = self.sync(id).await?;
        let me = self.account();
        let conv = self
            .member
            .conversation(&id)
            .ok_or_else(|| ApiError::UnknownConversation(id.to_hex()))?;
        let membership = conv
            .membership()
            .ok_or_else(|| ApiError::Refused("the conversation is not established yet".into()))?;
        let next = membership
            .roster_after(&me, &change)
            .map_err(|m| ApiError::Refused(m.to_string()))?;
        let added: Vec<AccountId> = next
            .keys()
            .filter(|a| membership.role(a).is_none())
            .copied()
            .collect();
        self.ensure_signed_in().await?;
        let conn = self.signed()?;
        let req = conn.authed(pb::PrepareUpdateRequest {
            conversation_id: id.to_vec(),
            members: next
                .iter()
                .map(|(a, r)| pb::MemberSpec {
                    account: a.to_vec(),
                    role: role_code(*r),
                })
                .collect(),
        })?;
        let prepared = conn
            .raw()
            .prepare_update(req)
            .await
            .map_err(|s| ApiError::router("PrepareUpdate", s))?
            .into_inner();
        let next_slots = SlotSet::try_from(
            prepared
                .slots
                .ok_or_else(|| ApiError::Malformed("next slot set (missing)".into()))?,
        )?;
        let next_members = entries(&next_slots, &prepared.assignments, &next)?;
        let content = Content::Update(UpdateContent {
            change,
            next_slots,
            next_members,
        });
        progress.extend(self.send_content(id, content, &added).await?);
        Ok(progress)
    }

    // ---- Receiving ------------------------------------------------------

    /// Takes in one delivery (from a subscription) and saves.
    pub fn receive(&mut self, delivery: pb::Delivery) -> Result<Progress, ApiError> {
        self.member.receive(delivery);
        let p = self.collect();
        self.save()?;
        Ok(p)
    }

    /// Conversations with deliveries buffered behind a missing index.
    pub fn gaps(&self) -> Vec<ConversationId> {
        self.member
            .conversations()
            .iter()
            .filter(|(_, c)| !c.missing_indices(1).is_empty())
            .map(|(id, _)| *id)
            .collect()
    }

    /// Takes events and alerts out of the core into history and alert
    /// records.
    fn collect(&mut self) -> Progress {
        let events = self.member.drain_events();
        let alerts = self.member.drain_alerts();
        for (id, e) in &events {
            let index = history::event_index(e).0;
            let existing = self.dirty_history.remove(&(*id, index)).or_else(|| {
                store::get_json::<Record>(
                    &self.store,
                    store::HISTORY,
                    &store::history_key(id.as_bytes(), index),
                )
                .ok()
                .flatten()
            });
            if let Some(r) = history::apply(existing, e) {
                self.dirty_history.insert((*id, index), r);
            }
        }
        // Indices that could not be opened.
        for (id, c) in self.member.conversations() {
            for i in c.undecryptable() {
                if let Some(r) = self.dirty_history.get_mut(&(*id, i.0)) {
                    r.undecryptable = true;
                }
            }
        }
        for a in &alerts {
            self.new_alerts.push(AlertRecord {
                conversation: a.conversation.to_hex(),
                index: a.index.map(|i| i.0),
                server: a.server,
                text: a.to_string(),
            });
            self.profile.next_alert = self.profile.next_alert.saturating_add(1);
        }
        Progress {
            events,
            alerts,
            resumed: Vec::new(),
        }
    }

    /// Where to fetch a conversation from: its next index, or with
    /// `rewind` its first index not fully attested (late tags upgrade it).
    fn fetch_from(&self, id: &ConversationId, rewind: bool) -> Option<Index> {
        let Some(c) = self.member.conversation(id) else {
            return Some(Index(0));
        };
        match c.phase() {
            Phase::Removed | Phase::Halted(_) => return None,
            Phase::AwaitingSetup | Phase::AwaitingJoin => return Some(Index(0)),
            Phase::Active if !rewind => return Some(c.next_expected()),
            Phase::Active => {}
        }
        let config = ConversationConfig::from_descriptor(&self.descriptor);
        let first_partial = c
            .transcript()
            .entries()
            .iter()
            .find(|e| config.status(e.attested_by) != crate::transcript::AttestationStatus::Full)
            .map(|e| e.index);
        Some(first_partial.unwrap_or(c.next_expected()))
    }

    /// The conversations the router says this account holds a slot in
    /// (what it claims is checked when each is fetched and accepted).
    pub async fn remote_conversations(&mut self) -> Result<Vec<pb::ListedConversation>, ApiError> {
        self.ensure_signed_in().await?;
        let conn = self.signed()?;
        let req = conn.authed(pb::ListConversationsRequest {})?;
        Ok(conn
            .raw()
            .list_conversations(req)
            .await
            .map_err(|s| ApiError::router("ListConversations", s))?
            .into_inner()
            .conversations)
    }

    /// Fetches and accepts everything the router holds for a conversation
    /// from the next index on (a conversation not known yet is joined:
    /// fetched from its start). Saves.
    pub async fn sync(&mut self, id: ConversationId) -> Result<Progress, ApiError> {
        self.ensure_signed_in().await?;
        let mut progress = Progress {
            resumed: self.resume_pending(id).await?,
            ..Progress::default()
        };
        let mut rounds = 0u32;
        // A member added late scans forward for the Update that adds it:
        // pages before it hold nothing for this member.
        let mut scan: Option<Index> = None;
        while let Some(start) = self.fetch_from(&id, rounds == 0) {
            rounds += 1;
            let from = scan.filter(|s| *s > start).unwrap_or(start);
            let before = self
                .member
                .conversation(&id)
                .map(Conversation::next_expected);
            self.ensure_signed_in().await?;
            let conn = self.signed()?;
            let req = conn.authed(pb::FetchRequest {
                conversation_id: id.to_vec(),
                from_index: from.0,
                limit: FETCH_LIMIT,
            })?;
            let page = conn
                .raw()
                .fetch(req)
                .await
                .map_err(|s| ApiError::router("Fetch", s))?
                .into_inner();
            let next = Index(page.next_index);
            if page.deliveries.is_empty() && next <= from {
                break;
            }
            for d in page.deliveries {
                self.member.receive(d);
            }
            progress.extend(self.collect());
            let conv = self.member.conversation(&id);
            let after = conv.map(Conversation::next_expected);
            // Unknown until a delivery for this member arrives.
            let joining = conv.is_none_or(|c| c.phase() == &Phase::AwaitingJoin);
            if joining && next > from && rounds <= 1_000_000 {
                scan = Some(next);
                continue;
            }
            if after == before || rounds > 1_000_000 {
                break;
            }
        }
        if self.member.conversation(&id).is_none() {
            return Err(ApiError::UnknownConversation(id.to_hex()));
        }
        // The router served later indices but not the next one, even when
        // asked from it: the index was dropped. (The router delivers in
        // order, so an honest one never leaves such a hole.)
        // Likewise when it holds the next index (or later ones) but cannot
        // accept it: tags missing after a full fetch are withheld, not in
        // flight, and the next head proofs say by whom.
        if let Some(c) = self.member.conversation_mut(&id)
            && c.stuck()
        {
            c.report_stall();
            progress.extend(self.collect());
        }
        self.save()?;
        Ok(progress)
    }

    /// Syncs every conversation this account knows, and joins those the
    /// router lists that it does not know yet.
    pub async fn sync_all(&mut self) -> Result<Progress, ApiError> {
        let mut progress = Progress::default();
        let mut ids: Vec<ConversationId> = self.member.conversations().keys().copied().collect();
        // Conversations this account was invited to or added to while away.
        let known = ids.len();
        for listed in self.remote_conversations().await? {
            if let Ok(id) = ConversationId::parse("conversation_id", &listed.conversation_id)
                && !ids.contains(&id)
            {
                ids.push(id);
            }
        }
        for (n, id) in ids.into_iter().enumerate() {
            match self.sync(id).await {
                Ok(p) => progress.extend(p),
                // A listed id that holds nothing for this account (the
                // router's list is not trusted) must not stop the others.
                Err(ApiError::UnknownConversation(_)) if n >= known => {}
                Err(e) => return Err(e),
            }
        }
        Ok(progress)
    }

    /// Opens the live stream of deliveries for every conversation of this
    /// account (pass each one to [`Client::receive`]).
    pub async fn subscribe(&mut self) -> Result<tonic::Streaming<pb::Delivery>, ApiError> {
        self.ensure_signed_in().await?;
        let conn = self.signed()?;
        let req = conn.authed(pb::SubscribeRequest {})?;
        Ok(conn
            .raw()
            .subscribe(req)
            .await
            .map_err(|s| ApiError::router("Subscribe", s))?
            .into_inner())
    }

    /// Asks every order server, through the router and with a fresh
    /// nonce, how far it has attested the conversation, and checks each
    /// answer against the transcript (forks and withholding become
    /// alerts). Saves.
    pub async fn prove_heads(
        &mut self,
        id: ConversationId,
    ) -> Result<(Vec<HeadProofOutcome>, Progress), ApiError> {
        let mut progress = self.sync(id).await?;
        let conv = self
            .member
            .conversation_mut(&id)
            .ok_or_else(|| ApiError::UnknownConversation(id.to_hex()))?;
        if conv.phase() != &Phase::Active {
            return Ok((Vec::new(), progress));
        }
        let nonce: ProofNonce = conv.head_proof_nonce(&mut rand::rng());
        self.ensure_signed_in().await?;
        let conn = self.signed()?;
        let req = conn.authed(pb::ProveHeadsRequest {
            conversation_id: id.to_vec(),
            nonce: nonce.to_vec(),
        })?;
        let proofs = conn
            .raw()
            .prove_heads(req)
            .await
            .map_err(|s| ApiError::router("ProveHeads", s))?
            .into_inner()
            .proofs;
        // Every answer is checked, and a pinned server without one is
        // reported: nothing the router returns (or leaves out) is dropped.
        let outcomes = self
            .member
            .conversation_mut(&id)
            .map(|c| c.check_head_proof_answers(proofs))
            .unwrap_or_default();
        progress.extend(self.collect());
        self.save()?;
        Ok((outcomes, progress))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use grompi_proto::SlotEntry;

    fn acct(n: u8) -> AccountId {
        AccountId::from_bytes([n; 32])
    }

    /// Slots 0 (Admin) and 1 (Member), a roster of accounts 1 and 2, and
    /// the assignments a router should return.
    fn fixture() -> (
        SlotSet,
        BTreeMap<AccountId, SlotRole>,
        Vec<pb::SlotAssignment>,
    ) {
        let slots = SlotSet::new(vec![
            SlotEntry {
                key: grompi_proto::SlotKey::from_bytes([1; 32]),
                role: SlotRole::Admin,
            },
            SlotEntry {
                key: grompi_proto::SlotKey::from_bytes([2; 32]),
                role: SlotRole::Member,
            },
        ])
        .unwrap();
        let roster = [(acct(1), SlotRole::Admin), (acct(2), SlotRole::Member)]
            .into_iter()
            .collect();
        let assignments = vec![
            pb::SlotAssignment {
                account: acct(1).to_vec(),
                slot: 0,
                key: vec![1; 32],
            },
            pb::SlotAssignment {
                account: acct(2).to_vec(),
                slot: 1,
                key: vec![2; 32],
            },
        ];
        (slots, roster, assignments)
    }

    /// What the router returns from CreateConversation or PrepareUpdate is
    /// checked against the creator's own roster and the slot set it came
    /// with: roles come from the roster, never from the router.
    #[test]
    fn slot_assignments_from_the_router_are_checked() {
        let (slots, roster, good) = fixture();
        let entries_ok = entries(&slots, &good, &roster).unwrap();
        assert_eq!(entries_ok.len(), 2);
        assert_eq!(entries_ok[0].role, SlotRole::Admin);
        let refused = |assignments: Vec<pb::SlotAssignment>, why: &str| match entries(
            &slots,
            &assignments,
            &roster,
        ) {
            Err(ApiError::Malformed(m)) => assert!(m.contains(why), "{m}"),
            other => panic!("{why}: {other:?}"),
        };
        // An account not in the roster.
        let mut a = good.clone();
        a[1].account = acct(9).to_vec();
        refused(a, "non-member");
        // A key other than its slot's.
        let mut a = good.clone();
        a[1].key = vec![7; 32];
        refused(a, "differs from its slot");
        // A slot outside the set.
        let mut a = good.clone();
        a[1].slot = 5;
        refused(a, "outside the slot set");
        // A member left out.
        refused(good[..1].to_vec(), "do not cover every member");
    }
}
