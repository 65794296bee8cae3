//! The one place this crate names the client's trust core: a rename of its
//! package changes only this file.

pub use grompi_client::Conversation;
pub use grompi_client::compose::{Composed, Sending, compose};
pub use grompi_client::content::{Change, Content, MemberEntry, UpdateContent};
pub use grompi_client::conversation::switches::{self, Weaken};
pub use grompi_client::conversation::{ConversationConfig, Phase, Secrets};
pub use grompi_client::delivery::Delivery;
pub use grompi_client::head_proof::HeadProofOutcome;
pub use grompi_client::keyring::{OrderKeyring, SlotMacKeys};
pub use grompi_client::pairwise::{Pairwise, PairwisePickle};
