//! The one place this crate names the client's trust core: a rename of its
//! package changes only this file.

pub use grompi_client_core::Conversation;
pub use grompi_client_core::compose::{Composed, Sending, compose};
pub use grompi_client_core::content::{Change, Content, MemberEntry, UpdateContent};
pub use grompi_client_core::conversation::switches::{self, Weaken};
pub use grompi_client_core::conversation::{ConversationConfig, Phase, Secrets};
pub use grompi_client_core::delivery::{Delivery, Incoming};
pub use grompi_client_core::head_proof::HeadProofOutcome;
pub use grompi_client_core::keyring::{OrderKeyring, SlotMacKeys};
pub use grompi_client_core::pairwise::{Pairwise, PairwisePickle};
