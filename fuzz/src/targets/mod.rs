//! Every fuzz target, one per decoder of untrusted bytes.

pub mod client;
pub mod order;
pub mod proto;
pub mod router;
pub mod samples;

use crate::target::Target;

/// All targets, in a stable order.
pub fn all() -> Vec<Target> {
    let mut v = proto::targets();
    v.extend(client::targets());
    v.extend(order::targets());
    v.extend(router::targets());
    v
}

/// The target called `name`.
pub fn find(name: &str) -> Option<Target> {
    all().into_iter().find(|t| t.name == name)
}
