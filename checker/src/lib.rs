//! A bounded model checker over the real cores.
//!
//! The simulator samples; this crate enumerates. From a conversation whose
//! Setup every initial member accepted, it visits, breadth first, every
//! state reachable within a bound on the number of actions: honest members
//! composing (Messages, an Update that adds the joiner, one that removes a
//! member), honest order servers attesting (the real `OrderCore`), and a
//! Dolev-Yao router that delivers any envelope it has seen with the tags of
//! any placement at the same index, with or without the previous head,
//! drops and reorders (by never or later delivering), lets colluding order
//! servers tag anything after any head it has seen, registers a puppet
//! account that composes substitutes and speaks from padding slots it
//! holds, and answers head-proof requests with any proof it holds. Every
//! acceptance is decided by the real client code (`Conversation`).
//!
//! The honest router's forwarding can also run through the router's own
//! core and the driver `router serve` runs ([`router`], [`RouterMode`]):
//! honest members submit to it, order servers answer its jobs, and members
//! receive the deliveries it cuts, alone or interleaved with every move of
//! the adversary.
//!
//! In every state it checks the properties of [`props::Property`]; the
//! first violation comes with a shortest trace ([`trace::Trace`]) that
//! replays step by step. `docs/MODEL-CHECKING.md` states the bounds, the
//! figures and what is out of scope.
#![forbid(unsafe_code)]

pub mod cores;
pub mod explore;
pub mod model;
pub mod props;
pub mod router;
pub mod trace;

pub use explore::{Report, explore};
pub use model::{Action, Bounds, ChangeKind, Model, Previous};
pub use props::{Property, Violation};
pub use router::RouterMode;
pub use trace::Trace;
