//! What the client keeps in its encrypted local store, by namespace.
//!
//! | namespace | key | value |
//! |---|---|---|
//! | `account` | `pairwise` | the Olm account and sessions (vodozemac pickle, JSON) |
//! | `account` | `order-keys` | unused order key secrets, 32 bytes each |
//! | `account` | `profile` | [`Profile`] (JSON) |
//! | `conversation` | id | the conversation's saved state ([`crate::Conversation::save_state`]) |
//! | `conversation-meta` | id | [`ConversationMeta`] (JSON) |
//! | `history` | id \|\| index (u64 BE) | [`super::history::Record`] (JSON) |
//! | `contacts` | name | [`super::contacts::Contact`] (JSON) |
//! | `alerts` | sequence (u64 BE) | [`AlertRecord`] (JSON) |
//!
//! Every save writes all changed records in one durable transaction, so a
//! crash leaves either the state before an operation or after it.

use super::error::ApiError;
use crate::local_store::LocalStore;
use serde::{Serialize, de::DeserializeOwned};

/// Namespace of the account's secrets and profile.
pub const ACCOUNT: &str = "account";
/// Namespace of saved conversation states.
pub const CONVERSATION: &str = "conversation";
/// Namespace of conversation names.
pub const CONVERSATION_META: &str = "conversation-meta";
/// Namespace of transcript records.
pub const HISTORY: &str = "history";
/// Namespace of contacts.
pub const CONTACTS: &str = "contacts";
/// Namespace of recorded alerts.
pub const ALERTS: &str = "alerts";

/// The account's public facts.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Profile {
    /// Whether the router accepted the registration.
    pub registered: bool,
    /// Next sequence number for alert records.
    pub next_alert: u64,
}

/// A conversation's local name.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConversationMeta {
    /// The name given locally, if any.
    pub name: Option<String>,
}

/// One alert, as recorded.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AlertRecord {
    /// The conversation (hex).
    pub conversation: String,
    /// The index concerned.
    pub index: Option<u64>,
    /// The order server concerned.
    pub server: Option<u32>,
    /// What happened.
    pub text: String,
}

/// The key of a history record.
pub fn history_key(conversation: &[u8; 32], index: u64) -> Vec<u8> {
    let mut k = conversation.to_vec();
    k.extend_from_slice(&index.to_be_bytes());
    k
}

/// Encodes a JSON record.
pub fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(value).map_err(|e| ApiError::Corrupt(e.to_string()))
}

/// Decodes a JSON record.
pub fn from_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::Corrupt(e.to_string()))
}

/// Reads one JSON record.
pub fn get_json<T: DeserializeOwned>(
    store: &LocalStore,
    namespace: &str,
    key: &[u8],
) -> Result<Option<T>, ApiError> {
    store
        .get(namespace, key)?
        .map(|v| from_json(&v))
        .transpose()
}

/// Reads every JSON record of a namespace, with its key.
pub fn list_json<T: DeserializeOwned>(
    store: &LocalStore,
    namespace: &str,
) -> Result<Vec<(Vec<u8>, T)>, ApiError> {
    store
        .list(namespace)?
        .into_iter()
        .map(|(k, v)| from_json(&v).map(|t| (k, t)))
        .collect()
}
