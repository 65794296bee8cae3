//! What the client keeps in its encrypted local store, by namespace.
//!
//! | namespace | key | value |
//! |---|---|---|
//! | `account` | `pairwise` | the Olm account and sessions (vodozemac pickle, JSON) |
//! | `account` | `order-keys` | unused order key secrets, 32 bytes each |
//! | `account` | `profile` | [`Profile`] (JSON) |
//! | `conversation` | id | the conversation's saved state ([`grompi_client_core::Conversation::save_state`]) |
//! | `conversation-meta` | id | [`ConversationMeta`] (JSON) |
//! | `history` | id \|\| index (u64 BE) | [`super::history::Record`] (JSON) |
//! | `contacts` | name | [`super::contacts::Contact`] (JSON) |
//! | `alerts` | sequence (u64 BE) | [`AlertRecord`] (JSON) |
//! | `outbox` | id \|\| sequence (u64 BE) | [`PendingSend`] (JSON): an envelope submitted but not yet acknowledged |
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
/// Namespace of envelopes composed and saved but not yet acknowledged by
/// the router.
pub const OUTBOX: &str = "outbox";

/// The account's public facts.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Profile {
    /// Whether the router accepted the registration.
    pub registered: bool,
    /// Next sequence number for alert records.
    pub next_alert: u64,
    /// Thin terminal: no message text is kept in the store; history is
    /// fetched from the router and verified whenever it is shown.
    #[serde(default)]
    pub thin: bool,
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
    /// The index the alert concerns, when it names one.
    pub index: Option<u64>,
    /// The order server concerned (its position in the descriptor), when
    /// the alert names one.
    pub server: Option<u32>,
    /// The alert as shown to the user: its `Display` text, as recorded.
    pub text: String,
}

/// An envelope saved before its first submission and kept until the router
/// acknowledges it (or it is seen accepted): every retry resubmits these
/// exact bytes, so a send the router committed before its reply was lost
/// is never composed twice.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PendingSend {
    /// The conversation (hex).
    pub conversation: String,
    /// The `SubmitRequest` (envelope and submission tags), protobuf, hex.
    pub request: String,
    /// The envelope hash (hex).
    pub envelope_hash: String,
    /// The envelope's kind (`Message`, `Update`, ...).
    pub kind: String,
    /// The sender's sequence number in the envelope.
    pub sequence: u64,
    /// For a Message, its text (lossy UTF-8).
    pub text: Option<String>,
}

impl PendingSend {
    /// Its key in [`OUTBOX`].
    pub fn key(&self) -> Result<Vec<u8>, ApiError> {
        let id = hex::decode(&self.conversation)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| ApiError::Corrupt("pending send: conversation".into()))?;
        Ok(history_key(&id, self.sequence))
    }

    /// A short description: kind, sequence, envelope hash prefix, text.
    pub fn describe(&self) -> String {
        let hash = self.envelope_hash.get(..12).unwrap_or(&self.envelope_hash);
        let what = format!(
            "{} (sequence {}, envelope {hash})",
            self.kind.to_lowercase(),
            self.sequence
        );
        match &self.text {
            Some(t) => format!("{what} {t:?}"),
            None => what,
        }
    }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

    use super::*;

    fn pending(sequence: u64) -> PendingSend {
        PendingSend {
            conversation: hex::encode([7u8; 32]),
            request: "00".into(),
            envelope_hash: hex::encode([9u8; 32]),
            kind: "Message".into(),
            sequence,
            text: Some("hi".into()),
        }
    }

    /// Pending sends of a conversation share its id as a key prefix and
    /// sort by sequence, so the oldest is resubmitted first.
    #[test]
    fn pending_send_keys_group_by_conversation_and_sort_by_sequence() {
        let (a, b) = (pending(2).key().unwrap(), pending(10).key().unwrap());
        assert!(a.starts_with(&[7u8; 32]) && b.starts_with(&[7u8; 32]));
        assert!(a < b);
        let mut bad = pending(1);
        bad.conversation = "zz".into();
        assert!(matches!(bad.key(), Err(ApiError::Corrupt(_))));
        assert_eq!(
            pending(2).describe(),
            "message (sequence 2, envelope 090909090909) \"hi\""
        );
        let back: PendingSend = from_json(&to_json(&pending(3)).unwrap()).unwrap();
        assert_eq!(back, pending(3));
    }
}
