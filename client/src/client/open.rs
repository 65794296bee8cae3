//! Creating, opening and restoring an account's state from its home
//! directory, and saving it (every change in one durable transaction).

use super::error::io;
use super::network;
use super::store::{self, ConversationMeta, Profile};
use super::{ApiError, Client, DESCRIPTOR_FILE, STORE_FILE};
use crate::local_store::{KdfParams, LocalStore, StoreSecret};
use grompi_client_core::conversation::{Conversation, ConversationConfig, Secrets};
use grompi_client_core::keyring::OrderKeyring;
use grompi_client_core::member::Member;
use grompi_client_core::pairwise::{Pairwise, PairwisePickle};
use grompi_proto::descriptor::NetworkDescriptor;
use grompi_proto::{ConversationId, SlotSecret};
use std::collections::BTreeMap;
use std::path::Path;

/// A record to write: namespace, key, value.
type OwnedRecord = (&'static str, Vec<u8>, zeroize::Zeroizing<Vec<u8>>);

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
    pub(super) fn save_all_with(&self, extra: Vec<OwnedRecord>) -> Result<(), ApiError> {
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
    pub(super) fn save(&mut self) -> Result<(), ApiError> {
        self.save_all()?;
        self.dirty_history.clear();
        self.new_alerts.clear();
        Ok(())
    }
}
