//! The network descriptor as the account's trust anchor, and what its
//! quorum tolerates.
//!
//! The descriptor pins the router's TLS root and every order server's
//! X25519 key, and sets the quorum: whoever can change it can re-pin the
//! network. So `init` keeps the descriptor's exact text inside the
//! encrypted local store (namespace `account`, key `network`), and every
//! later `open` uses that copy. The `network.toml` beside the store is a
//! readable copy only: if it differs from the stored descriptor (other than
//! in formatting: both are parsed and compared), opening fails with
//! [`ApiError::NetworkChanged`] and nothing is used. A new descriptor is
//! accepted only deliberately, with [`super::Client::accept_network`]
//! (`grompi network accept FILE`).
//!
//! A store made before the descriptor was kept inside it adopts the
//! `network.toml` it finds, once, and says so
//! ([`super::Client::adopted_network`]).

use super::error::{ApiError, io};
use super::store;
use crate::local_store::LocalStore;
use grompi_proto::descriptor::NetworkDescriptor;
use std::path::Path;

/// The record key (namespace [`store::ACCOUNT`]) of the trusted descriptor.
pub const NETWORK_RECORD: &[u8] = b"network";

/// What a quorum of t out of N order servers tolerates
/// (`docs/PROTOCOL.md` section 9): two different envelopes at one index
/// both gather t tags only if at least `2t - N` order servers tag both, so
/// a fork needs the router together with `2t - N` dishonest order servers.
/// At t = N that is all of them: any one honest order server is enough.
///
/// Its `Display` is the sentence the client shows, e.g. "quorum 2 of 3:
/// the router together with 1 dishonest order server can fork a
/// conversation".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForkBound {
    /// The quorum t: how many order servers must attest an index.
    pub quorum: usize,
    /// The number of order servers N.
    pub servers: usize,
}

impl ForkBound {
    /// The bound of a quorum of `quorum` out of `servers` order servers.
    pub fn new(quorum: usize, servers: usize) -> Self {
        Self { quorum, servers }
    }

    /// The bound of a descriptor's quorum.
    pub fn of(descriptor: &NetworkDescriptor) -> Self {
        Self::new(descriptor.quorum, descriptor.server_count())
    }

    /// How many dishonest (equivocating) order servers a fork needs, with
    /// the router: `2t - N` (N at t = N).
    pub fn fork_needs(&self) -> usize {
        (2 * self.quorum).saturating_sub(self.servers)
    }

    /// Whether any one honest order server is enough (t = N).
    pub fn one_honest_suffices(&self) -> bool {
        self.quorum >= self.servers
    }
}

impl std::fmt::Display for ForkBound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (t, n) = (self.quorum, self.servers);
        if self.one_honest_suffices() {
            write!(
                f,
                "quorum {t} of {n}: any one honest order server is enough \
                 (a fork needs the router together with all {n} order servers dishonest)"
            )
        } else {
            let k = self.fork_needs();
            let servers = if k == 1 {
                "order server"
            } else {
                "order servers"
            };
            write!(
                f,
                "quorum {t} of {n}: the router together with {k} dishonest {servers} \
                 can fork a conversation"
            )
        }
    }
}

/// The sentence [`ForkBound`] shows for a quorum of `quorum` out of
/// `servers` order servers.
pub fn fork_bound(quorum: usize, servers: usize) -> String {
    ForkBound::new(quorum, servers).to_string()
}

/// The trusted descriptor of an open store, checked against the readable
/// copy in `home`; and whether it was adopted from that copy just now (a
/// store from before descriptors were kept inside it).
pub(crate) fn anchored(
    store: &LocalStore,
    home: &Path,
) -> Result<(NetworkDescriptor, bool), ApiError> {
    let path = home.join(super::DESCRIPTOR_FILE);
    let on_disk = match std::fs::read_to_string(&path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io("read the network descriptor")(e)),
    };
    let Some(stored) = store.get(store::ACCOUNT, NETWORK_RECORD)? else {
        // Adopted once: from now on this copy is the anchor.
        let text = on_disk.ok_or_else(|| {
            ApiError::Corrupt(format!(
                "{} is missing and the store holds no network descriptor",
                path.display()
            ))
        })?;
        let descriptor = NetworkDescriptor::parse(&text)?;
        store.put(store::ACCOUNT, NETWORK_RECORD, text.as_bytes())?;
        return Ok((descriptor, true));
    };
    let stored = std::str::from_utf8(&stored)
        .map_err(|_| ApiError::Corrupt("the stored network descriptor is not UTF-8".into()))?;
    let descriptor = NetworkDescriptor::parse(stored)
        .map_err(|e| ApiError::Corrupt(format!("the stored network descriptor: {e}")))?;
    if let Some(text) = on_disk
        && text != stored
        && NetworkDescriptor::parse(&text).ok().as_ref() != Some(&descriptor)
    {
        return Err(ApiError::NetworkChanged {
            path: path.display().to_string(),
        });
    }
    Ok((descriptor, false))
}

/// Makes `text` the trusted descriptor of an open store and its readable
/// copy in `home`; returns the descriptor it replaces, if any.
pub(crate) fn replace(
    store: &LocalStore,
    home: &Path,
    text: &str,
) -> Result<Option<NetworkDescriptor>, ApiError> {
    NetworkDescriptor::parse(text)?;
    let previous = match store.get(store::ACCOUNT, NETWORK_RECORD)? {
        Some(old) => std::str::from_utf8(&old)
            .ok()
            .and_then(|t| NetworkDescriptor::parse(t).ok()),
        None => None,
    };
    store.put(store::ACCOUNT, NETWORK_RECORD, text.as_bytes())?;
    std::fs::write(home.join(super::DESCRIPTOR_FILE), text)
        .map_err(io("write the network descriptor"))?;
    Ok(previous)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{Client, DESCRIPTOR_FILE, STORE_FILE};
    use crate::local_store::{KdfParams, StoreSecret};
    use grompi_proto::descriptor::{OrderServerEntry, RouterEntry};
    use grompi_proto::keys::OrderServerSecret;
    use zeroize::Zeroizing;

    const PEM: &str = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";

    fn descriptor(seed: u8, quorum: usize) -> String {
        NetworkDescriptor {
            name: "test".into(),
            router: RouterEntry {
                address: "https://127.0.0.1:7000".into(),
                tls_ca_pem: PEM.into(),
            },
            order_servers: (0..3u8)
                .map(|i| OrderServerEntry {
                    name: format!("s{i}"),
                    address: format!("https://127.0.0.1:{}", 7100 + u16::from(i)),
                    public_key: OrderServerSecret::from_bytes([seed + i; 32]).public_key(),
                    tls_ca_pem: PEM.into(),
                })
                .collect(),
            quorum,
        }
        .to_toml()
    }

    fn secret() -> StoreSecret {
        StoreSecret::KeyFile(Zeroizing::new([8; 32]))
    }

    fn init(home: &Path, text: &str) {
        Client::init(home, text, &secret(), KdfParams::insecure_for_tests()).unwrap();
    }

    #[test]
    fn a_changed_descriptor_file_is_refused_after_init() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let original = descriptor(1, 3);
        init(&home, &original);
        let file = home.join(DESCRIPTOR_FILE);

        // Re-pinned order server keys, or a lowered quorum: refused.
        for forged in [descriptor(50, 3), descriptor(1, 2)] {
            std::fs::write(&file, &forged).unwrap();
            let e = Client::open(&home, &secret()).unwrap_err();
            assert!(matches!(e, ApiError::NetworkChanged { .. }), "{e}");
            let message = e.to_string();
            assert!(
                message.contains("differs from the one this account trusts"),
                "{message}"
            );
            assert!(message.contains("grompi network accept"), "{message}");
        }
        // Garbage: refused the same way.
        std::fs::write(&file, "not a descriptor").unwrap();
        assert!(matches!(
            Client::open(&home, &secret()),
            Err(ApiError::NetworkChanged { .. })
        ));

        // The same descriptor, formatted differently: accepted.
        std::fs::write(&file, format!("# a comment\n{original}\n\n")).unwrap();
        let c = Client::open(&home, &secret()).unwrap();
        assert_eq!(c.descriptor().quorum, 3);
        assert!(!c.adopted_network());
        drop(c);
        // No readable copy at all: the stored descriptor is used.
        std::fs::remove_file(&file).unwrap();
        let c = Client::open(&home, &secret()).unwrap();
        assert_eq!(
            c.descriptor(),
            &NetworkDescriptor::parse(&original).unwrap()
        );
    }

    #[test]
    fn a_new_descriptor_is_accepted_only_deliberately() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let original = descriptor(1, 3);
        init(&home, &original);
        let account = Client::open(&home, &secret()).unwrap().account();
        let new = descriptor(20, 2);
        let new_file = dir.path().join("new.toml");
        std::fs::write(&new_file, &new).unwrap();
        // Changing the file is not accepting it.
        std::fs::write(home.join(DESCRIPTOR_FILE), &new).unwrap();
        assert!(matches!(
            Client::open(&home, &secret()),
            Err(ApiError::NetworkChanged { .. })
        ));
        let (c, previous) = Client::accept_network(&home, &secret(), &new).unwrap();
        assert_eq!(c.account(), account);
        assert_eq!(previous, Some(NetworkDescriptor::parse(&original).unwrap()));
        assert_eq!(c.descriptor(), &NetworkDescriptor::parse(&new).unwrap());
        drop(c);
        let c = Client::open(&home, &secret()).unwrap();
        assert_eq!(c.descriptor().quorum, 2);
        assert_eq!(
            std::fs::read_to_string(home.join(DESCRIPTOR_FILE)).unwrap(),
            new
        );
        drop(c);
        // And the old one is now the changed one.
        std::fs::write(home.join(DESCRIPTOR_FILE), &original).unwrap();
        assert!(matches!(
            Client::open(&home, &secret()),
            Err(ApiError::NetworkChanged { .. })
        ));
        // An invalid descriptor is not accepted.
        assert!(matches!(
            Client::accept_network(&home, &secret(), "quorum = 1"),
            Err(ApiError::Descriptor(_))
        ));
        // Nor without the store's secret.
        let wrong = StoreSecret::KeyFile(Zeroizing::new([9; 32]));
        assert!(Client::accept_network(&home, &wrong, &new).is_err());
    }

    #[test]
    fn a_store_without_a_descriptor_adopts_the_file_once() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let original = descriptor(1, 3);
        init(&home, &original);
        // As stores made before the descriptor was kept inside them.
        {
            let store = crate::local_store::LocalStore::open(
                &home.join(STORE_FILE),
                &secret(),
                KdfParams::insecure_for_tests(),
                &mut rand::rng(),
            )
            .unwrap();
            store.delete(store::ACCOUNT, NETWORK_RECORD).unwrap();
        }
        let c = Client::open(&home, &secret()).unwrap();
        assert!(c.adopted_network());
        drop(c);
        let c = Client::open(&home, &secret()).unwrap();
        assert!(!c.adopted_network());
        drop(c);
        std::fs::write(home.join(DESCRIPTOR_FILE), descriptor(30, 3)).unwrap();
        assert!(matches!(
            Client::open(&home, &secret()),
            Err(ApiError::NetworkChanged { .. })
        ));
    }

    #[test]
    fn fork_bounds_follow_section_9() {
        assert_eq!(
            fork_bound(3, 3),
            "quorum 3 of 3: any one honest order server is enough \
             (a fork needs the router together with all 3 order servers dishonest)"
        );
        assert_eq!(ForkBound::new(3, 3).fork_needs(), 3);
        assert!(ForkBound::new(1, 1).one_honest_suffices());
        assert!(fork_bound(1, 1).starts_with("quorum 1 of 1: any one honest order server"));
        assert_eq!(
            fork_bound(2, 3),
            "quorum 2 of 3: the router together with 1 dishonest order server \
             can fork a conversation"
        );
        assert_eq!(
            fork_bound(3, 5),
            "quorum 3 of 5: the router together with 1 dishonest order server \
             can fork a conversation"
        );
        assert_eq!(
            fork_bound(4, 7),
            "quorum 4 of 7: the router together with 1 dishonest order server \
             can fork a conversation"
        );
        assert_eq!(
            fork_bound(4, 5),
            "quorum 4 of 5: the router together with 3 dishonest order servers \
             can fork a conversation"
        );
        assert_eq!(ForkBound::new(5, 7).fork_needs(), 3);
        assert!(!ForkBound::new(6, 7).one_honest_suffices());
        for (t, n) in [(2, 3), (3, 5), (4, 7), (5, 7), (3, 3), (7, 7)] {
            assert_eq!(ForkBound::new(t, n).fork_needs(), 2 * t - n);
        }
    }
}
