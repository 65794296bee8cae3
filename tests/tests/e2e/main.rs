//! Every end-to-end test in one binary, so that one link serves them all
//! and tests of different components run side by side.
//!
//! | module | what it starts and checks |
//! |---|---|
//! | [`order_server`] | one real order server: every rejection, crash safety under SIGKILL |
//! | [`router`] | the real router and three order servers: delivery, catch-up, SIGKILL |
//! | [`client_api`] | the client library: a member added after many fetch pages |
//! | [`history`] | shared history: a later member reads it byte for byte; `joined` shows nothing earlier; a thin terminal keeps no text |
//! | [`retention`] | a router keeping the last 16 indices: a later member reads the kept suffix of the shared history, verified |
//! | [`cli`] | four people using the `grompi` CLI; members added, removed, leaving |
//! | [`devnet`] | `devnet` and the benchmark on a tiny grid |
//! | [`faults`] | random kills of every server under load; nothing acknowledged lost |
//! | [`malicious`] | malicious order servers and routers over real gRPC against the real client; the live demo |
//! | [`member_audit`] | three order servers keeping audit logs: `grompi audit CONVERSATION` finds every accepted index in every log, proved |
//! | [`member_rollback`] | a rolled-back order server among three witnessing ones, with members: refused by every witness, `grompi audit` and `status` alert, no member accepts two envelopes at one index |
//! | [`witness`] | three order servers witnessing each other's audit logs: a rolled-back server and a forked log refused |

/// Accounts `names` in homes under `dir`, each with its own key-file store
/// secret (`key_base` + position) and registered at the network whose
/// descriptor text is `descriptor`, in the order given.
#[allow(clippy::unwrap_used)]
pub async fn registered_clients(
    dir: &std::path::Path,
    descriptor: &str,
    names: &[&str],
    key_base: u8,
) -> Vec<grompi_client::client::Client> {
    use grompi_client::local_store::{KdfParams, StoreSecret};
    let mut out = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let secret = StoreSecret::KeyFile(zeroize::Zeroizing::new([key_base + i as u8; 32]));
        let mut c = grompi_client::client::Client::init(
            &dir.join(name),
            descriptor,
            &secret,
            KdfParams::default(),
        )
        .unwrap();
        c.register().await.unwrap();
        out.push(c);
    }
    out
}

mod cli;
mod client_api;
mod devnet;
mod exactly_once;
mod faults;
mod history;
mod malicious;
mod member_audit;
mod member_rollback;
mod order_server;
mod retention;
mod router;
mod witness;
