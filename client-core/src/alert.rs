//! Alerts: every misbehaviour the client detects, as a typed value the
//! application can show. Detection never only logs; it queues an [`Alert`].

use grompi_proto::{ConversationId, Index, Misbehaviour};

/// One detected misbehaviour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// The conversation whose deliveries, tags or proofs showed the
    /// misbehaviour; the application shows the alert with that conversation.
    pub conversation: ConversationId,
    /// The misbehaviour detected, with the details it carries.
    pub kind: Misbehaviour,
    /// The index concerned, when there is one.
    pub index: Option<Index>,
    /// The order server concerned (its position in the descriptor), when
    /// the misbehaviour is attributable to one.
    pub server: Option<u32>,
}

impl std::fmt::Display for Alert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "conversation {}: {}",
            &self.conversation.to_hex()[..12],
            self.kind
        )?;
        if let Some(i) = self.index {
            write!(f, " (index {i})")?;
        }
        if let Some(s) = self.server {
            write!(f, " (order server {s})")?;
        }
        Ok(())
    }
}
