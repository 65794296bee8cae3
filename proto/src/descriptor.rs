//! The network descriptor: one TOML file that names the router and the N
//! order servers, with the order servers' long-term public keys pinned.
//!
//! Clients trust exactly the order server keys listed here; the router uses
//! the addresses and TLS roots to reach the order servers. The file is small
//! and self-contained (certificates are inlined as PEM) so it can be handed
//! to every member out of band and compared by hash.
//!
//! ```toml
//! version = 1
//! name = "example"
//! # Optional: how many order servers must attest an index before a client
//! # accepts it. Defaults to all of them. Must be a strict majority.
//! quorum = 3
//!
//! [router]
//! address = "https://127.0.0.1:7000"
//! tls_ca_pem = """-----BEGIN CERTIFICATE-----
//! ...
//! -----END CERTIFICATE-----"""
//!
//! [[order_server]]
//! name = "alpha"
//! address = "https://127.0.0.1:7101"
//! public_key = "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29"
//! tls_ca_pem = "..."
//! # Optional: the server's audit log (docs/PROTOCOL.md section 13).
//! log_key = "alpha.example.org/audit+1a2b3c4d+AR...="
//! log_url = "http://alpha.example.org:7480"
//! witness_key = "alpha.example.org/audit/witness+5e6f7a8b+BB...="
//! ```
//!
//! The audit log fields are read by [`NetworkDescriptor::audit_logs`]
//! (and checked by [`NetworkDescriptor::parse`], which leaves them out of
//! [`OrderServerEntry`]): `log_key` is the log's C2SP verifier key, whose
//! name is the log's origin line; `log_url` where its `checkpoint` and
//! `tile/...` are served; `witness_key` the cosigner key (type `0x04`) of
//! the server's witness. Parsing checks their form (name, 8 hex digit key
//! ID, base64 of the type byte and a 32-byte key); the key ID is checked
//! against the key by whoever verifies with it (`grompi-tlog`).
//!
//! Parsing checks everything a client relies on and names the offending
//! entry in the error: the format version, 1 to [`MAX_ORDER_SERVERS`] order
//! servers, distinct names and keys, keys that are 32 bytes of hex and not of
//! low order, addresses that are `https://` URLs, and a quorum that is a
//! strict majority (below that, the router alone could fork a conversation
//! by showing each half of the members a different half of the servers).

use crate::keys::OrderServerKey;
use crate::limits::{MAX_DESCRIPTOR_BYTES, MAX_ORDER_SERVERS};
use serde::Deserialize;
use std::collections::HashSet;

/// The only descriptor format version this code reads.
pub const DESCRIPTOR_VERSION: u32 = 1;

/// Why a network descriptor was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DescriptorError {
    /// The file is larger than any descriptor needs to be.
    #[error("descriptor is {got} bytes, more than the limit of {max}")]
    TooLarge {
        /// The largest descriptor read, in bytes (`MAX_DESCRIPTOR_BYTES`).
        max: usize,
        /// The size of the file offered, in bytes.
        got: usize,
    },
    /// The text is not valid TOML, or has unknown or mistyped keys.
    #[error("descriptor is not valid: {0}")]
    Syntax(String),
    /// A format version this code does not read.
    #[error("descriptor version {got} is not supported (this build reads version {supported})")]
    UnsupportedVersion {
        /// The `version` key the file declares.
        got: u32,
        /// The one version this build reads ([`DESCRIPTOR_VERSION`]).
        supported: u32,
    },
    /// No order server, or more than the protocol allows.
    #[error("descriptor lists {got} order servers; between 1 and {max} are allowed")]
    OrderServerCount {
        /// The number of `[[order_server]]` entries in the file.
        got: usize,
        /// The most order servers the protocol allows (`MAX_ORDER_SERVERS`).
        max: usize,
    },
    /// Two order servers share a name.
    #[error("order server name {0:?} appears twice")]
    DuplicateName(String),
    /// Two order servers share a public key.
    #[error("order servers {first:?} and {second:?} have the same public key")]
    DuplicateKey {
        /// The name of the earlier entry with that key.
        first: String,
        /// The name of the later entry with the same key.
        second: String,
    },
    /// An order server's public key is not 64 hex digits.
    #[error("order server {name:?}: public_key must be 64 hex digits (32 bytes): {reason}")]
    BadKey {
        /// The `name` of the entry whose key is bad.
        name: String,
        /// What was wrong.
        reason: String,
    },
    /// An order server's public key is of low order, so MACs under it would
    /// be computable by anyone.
    #[error("order server {0:?}: public_key is of low order and cannot be used")]
    LowOrderKey(String),
    /// A name is empty or has characters other than letters, digits, `-`, `_`, `.`.
    #[error("{what} name {name:?} must be 1 to 64 letters, digits, '-', '_' or '.'")]
    BadName {
        /// What the name belongs to.
        what: &'static str,
        /// The rejected name, as written in the file.
        name: String,
    },
    /// An address that is not an `https://host:port` URL.
    #[error("{what}: address {address:?} must look like https://host:port")]
    BadAddress {
        /// Whose address: `router`, or `order server "NAME"`.
        what: String,
        /// The rejected address, as written in the file.
        address: String,
    },
    /// A TLS root that is not PEM.
    #[error("{0}: tls_ca_pem must be a PEM certificate (-----BEGIN CERTIFICATE-----)")]
    BadCertificate(String),
    /// An order server's audit log fields are not usable.
    #[error("order server {name:?}: {field}: {reason}")]
    BadAuditLog {
        /// The `name` of the entry.
        name: String,
        /// The field: `log_key`, `log_url` or `witness_key`.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A quorum that is zero, larger than the number of servers, or not a
    /// strict majority.
    #[error(
        "quorum {quorum} of {servers} order servers is not allowed: it must be more than half \
         of them (at least {min}) and at most all of them"
    )]
    BadQuorum {
        /// The `quorum` key the file sets.
        quorum: usize,
        /// The number of order servers the file lists.
        servers: usize,
        /// The smallest strict majority of them: `servers / 2 + 1`.
        min: usize,
    },
}

/// The router, as the descriptor names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterEntry {
    /// Where clients reach the router: `https://host:port`.
    pub address: String,
    /// The PEM certificate clients accept as the router's TLS root.
    pub tls_ca_pem: String,
}

/// One order server, as the descriptor names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderServerEntry {
    /// A short, unique name chosen by its operator.
    pub name: String,
    /// Where the router reaches it: `https://host:port`.
    pub address: String,
    /// Its long-term X25519 key: the pin every client checks tags against.
    pub public_key: OrderServerKey,
    /// The PEM certificate the router accepts as this server's TLS root.
    pub tls_ca_pem: String,
}

/// A parsed and validated network descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkDescriptor {
    /// A name for the network, shown to users.
    pub name: String,
    /// Where clients reach the router, and the TLS root they accept for it.
    pub router: RouterEntry,
    /// The order servers, in descriptor order; an order server's position in
    /// this list is its `server` number on the wire.
    pub order_servers: Vec<OrderServerEntry>,
    /// How many order servers must attest an index before a client accepts it.
    pub quorum: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDescriptor {
    version: u32,
    name: String,
    quorum: Option<usize>,
    router: RawRouter,
    #[serde(default)]
    order_server: Vec<RawOrderServer>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRouter {
    address: String,
    tls_ca_pem: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOrderServer {
    name: String,
    address: String,
    public_key: String,
    tls_ca_pem: String,
    #[serde(default)]
    log_key: Option<String>,
    #[serde(default)]
    log_url: Option<String>,
    #[serde(default)]
    witness_key: Option<String>,
}

/// An order server's audit log, as the descriptor names it: what clients
/// and witnesses need to fetch and check its checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditLogEntry {
    /// The log's origin line: the name of `log_key`.
    pub origin: String,
    /// The log's C2SP verifier key, `<origin>+<key id>+base64(0x01 ||
    /// Ed25519 public key)`.
    pub log_key: String,
    /// Where the log's `checkpoint` and `tile/...` are served:
    /// `http://` or `https://host:port[/prefix]`.
    pub log_url: Option<String>,
    /// The server's witness cosigner key, `<name>+<key id>+base64(0x04 ||
    /// Ed25519 public key)`.
    pub witness_key: Option<String>,
}

/// The signature type byte of an Ed25519 note key (C2SP signed-note).
const ALG_ED25519: u8 = 0x01;
/// The signature type byte of a timestamped Ed25519 cosignature key.
const ALG_COSIGNATURE_V1: u8 = 0x04;

/// Decodes standard padded base64; `None` if it is not.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if b.is_empty() || !b.len().is_multiple_of(4) {
        return None;
    }
    let value = |c: u8| -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    };
    let mut out = Vec::with_capacity(b.len() / 4 * 3);
    let chunks = b.len() / 4;
    for (i, chunk) in b.chunks(4).enumerate() {
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && i + 1 != chunks) {
            return None;
        }
        let mut n = 0u32;
        for &c in chunk.get(..4 - pad)? {
            n = (n << 6) | value(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = n.to_be_bytes();
        // Unused bits of the last character must be zero (canonical form).
        let keep = 3 - pad;
        if bytes
            .get(1 + keep..)
            .is_some_and(|rest| rest.iter().any(|&x| x != 0))
        {
            return None;
        }
        out.extend_from_slice(bytes.get(1..1 + keep)?);
    }
    Some(out)
}

/// Checks a C2SP verifier key's form and returns its name.
fn check_vkey(vkey: &str, alg: u8) -> Result<String, String> {
    let mut parts = vkey.splitn(3, '+');
    let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        return Err("not <name>+<key id>+<base64 key>".into());
    };
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the name is empty or has spaces or control characters".into());
    }
    if id.len() != 8 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("the key ID is not 8 hex digits".into());
    }
    let bytes = base64_decode(key).ok_or("the key is not base64")?;
    match bytes.split_first() {
        Some((a, k)) if *a == alg && k.len() == 32 => Ok(name.to_owned()),
        Some((a, k)) if k.len() == 32 => Err(format!(
            "the key's signature type is 0x{a:02x}, expected 0x{alg:02x}"
        )),
        _ => Err("the key is not a type byte and 32 bytes".into()),
    }
}

fn check_log_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or("not an http:// or https:// URL")?;
    let authority = rest.split('/').next().unwrap_or_default();
    let port = authority.rsplit_once(':').map(|(_, p)| p);
    if authority.is_empty()
        || url.chars().any(|c| c.is_whitespace() || c.is_control())
        || url.contains(['?', '#'])
        || port.is_some_and(|p| p.parse::<u16>().map_or(true, |p| p == 0))
    {
        return Err("not an http(s)://host[:port][/prefix] URL".into());
    }
    Ok(())
}

impl RawOrderServer {
    /// The entry's audit log fields, checked.
    fn audit_log(&self) -> Result<Option<AuditLogEntry>, DescriptorError> {
        let bad = |field, reason| DescriptorError::BadAuditLog {
            name: self.name.clone(),
            field,
            reason,
        };
        let Some(log_key) = &self.log_key else {
            if self.log_url.is_some() || self.witness_key.is_some() {
                return Err(bad(
                    "log_key",
                    "missing, while log_url or witness_key is set".into(),
                ));
            }
            return Ok(None);
        };
        let log_key = log_key.trim().to_owned();
        let origin = check_vkey(&log_key, ALG_ED25519).map_err(|r| bad("log_key", r))?;
        if let Some(u) = &self.log_url {
            check_log_url(u).map_err(|r| bad("log_url", r))?;
        }
        let witness_key = self.witness_key.as_ref().map(|k| k.trim().to_owned());
        if let Some(w) = &witness_key {
            check_vkey(w, ALG_COSIGNATURE_V1).map_err(|r| bad("witness_key", r))?;
        }
        Ok(Some(AuditLogEntry {
            origin,
            log_key,
            log_url: self.log_url.clone(),
            witness_key,
        }))
    }
}

fn check_name(what: &'static str, name: &str) -> Result<(), DescriptorError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(DescriptorError::BadName {
            what,
            name: name.to_owned(),
        })
    }
}

fn check_address(what: &str, address: &str) -> Result<(), DescriptorError> {
    let bad = || DescriptorError::BadAddress {
        what: what.to_owned(),
        address: address.to_owned(),
    };
    let rest = address.strip_prefix("https://").ok_or_else(bad)?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty()
        || host.contains('/')
        || host.chars().any(char::is_whitespace)
        || port.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Err(bad());
    }
    Ok(())
}

fn check_pem(what: &str, pem: &str) -> Result<(), DescriptorError> {
    if pem.contains("-----BEGIN CERTIFICATE-----") && pem.contains("-----END CERTIFICATE-----") {
        Ok(())
    } else {
        Err(DescriptorError::BadCertificate(what.to_owned()))
    }
}

/// The smallest quorum allowed for `servers` order servers: a strict majority.
pub const fn min_quorum(servers: usize) -> usize {
    servers / 2 + 1
}

impl NetworkDescriptor {
    /// Parses and validates a descriptor from TOML text.
    pub fn parse(text: &str) -> Result<Self, DescriptorError> {
        Self::parse_with_audit_logs(text).map(|(d, _)| d)
    }

    /// The audit logs the descriptor `text` names, one per order server in
    /// descriptor order (`None` for a server that names none), after
    /// checking the whole descriptor as [`NetworkDescriptor::parse`] does.
    pub fn audit_logs(text: &str) -> Result<Vec<Option<AuditLogEntry>>, DescriptorError> {
        Self::parse_with_audit_logs(text).map(|(_, a)| a)
    }

    /// [`NetworkDescriptor::parse`] and [`NetworkDescriptor::audit_logs`]
    /// at once.
    pub fn parse_with_audit_logs(
        text: &str,
    ) -> Result<(Self, Vec<Option<AuditLogEntry>>), DescriptorError> {
        if text.len() > MAX_DESCRIPTOR_BYTES {
            return Err(DescriptorError::TooLarge {
                max: MAX_DESCRIPTOR_BYTES,
                got: text.len(),
            });
        }
        let raw: RawDescriptor =
            toml::from_str(text).map_err(|e| DescriptorError::Syntax(e.to_string()))?;
        if raw.version != DESCRIPTOR_VERSION {
            return Err(DescriptorError::UnsupportedVersion {
                got: raw.version,
                supported: DESCRIPTOR_VERSION,
            });
        }
        check_name("network", &raw.name)?;
        check_address("router", &raw.router.address)?;
        check_pem("router", &raw.router.tls_ca_pem)?;
        let n = raw.order_server.len();
        if n == 0 || n > MAX_ORDER_SERVERS {
            return Err(DescriptorError::OrderServerCount {
                got: n,
                max: MAX_ORDER_SERVERS,
            });
        }
        let mut names = HashSet::new();
        let mut origins = HashSet::new();
        let mut order_servers: Vec<OrderServerEntry> = Vec::with_capacity(n);
        let mut audit_logs = Vec::with_capacity(n);
        for s in raw.order_server {
            let audit = s.audit_log()?;
            if let Some(a) = &audit
                && !origins.insert(a.origin.clone())
            {
                return Err(DescriptorError::BadAuditLog {
                    name: s.name.clone(),
                    field: "log_key",
                    reason: format!("another order server's log has the origin {:?}", a.origin),
                });
            }
            audit_logs.push(audit);
            check_name("order server", &s.name)?;
            if !names.insert(s.name.clone()) {
                return Err(DescriptorError::DuplicateName(s.name));
            }
            let what = format!("order server {:?}", s.name);
            check_address(&what, &s.address)?;
            check_pem(&what, &s.tls_ca_pem)?;
            let bytes = hex::decode(s.public_key.trim()).map_err(|e| DescriptorError::BadKey {
                name: s.name.clone(),
                reason: e.to_string(),
            })?;
            let public_key = OrderServerKey::parse("public_key", &bytes).map_err(|e| {
                DescriptorError::BadKey {
                    name: s.name.clone(),
                    reason: e.to_string(),
                }
            })?;
            if public_key.is_low_order() {
                return Err(DescriptorError::LowOrderKey(s.name));
            }
            if let Some(first) = order_servers.iter().find(|o| o.public_key == public_key) {
                return Err(DescriptorError::DuplicateKey {
                    first: first.name.clone(),
                    second: s.name,
                });
            }
            order_servers.push(OrderServerEntry {
                name: s.name,
                address: s.address,
                public_key,
                tls_ca_pem: s.tls_ca_pem,
            });
        }
        let quorum = raw.quorum.unwrap_or(n);
        if quorum < min_quorum(n) || quorum > n {
            return Err(DescriptorError::BadQuorum {
                quorum,
                servers: n,
                min: min_quorum(n),
            });
        }
        Ok((
            Self {
                name: raw.name,
                router: RouterEntry {
                    address: raw.router.address,
                    tls_ca_pem: raw.router.tls_ca_pem,
                },
                order_servers,
                quorum,
            },
            audit_logs,
        ))
    }

    /// Writes the descriptor as TOML that [`NetworkDescriptor::parse`] reads back.
    pub fn to_toml(&self) -> String {
        self.to_toml_with_audit_logs(&[])
    }

    /// Writes the descriptor with the order servers' audit logs (`logs[i]`
    /// for the `i`-th server; missing or `None`: none), as TOML that
    /// [`NetworkDescriptor::parse_with_audit_logs`] reads back.
    pub fn to_toml_with_audit_logs(&self, logs: &[Option<AuditLogEntry>]) -> String {
        let mut out = format!(
            "version = {DESCRIPTOR_VERSION}\nname = {}\nquorum = {}\n\n[router]\naddress = {}\ntls_ca_pem = {}\n",
            toml_string(&self.name),
            self.quorum,
            toml_string(&self.router.address),
            toml_string(&self.router.tls_ca_pem),
        );
        for (i, s) in self.order_servers.iter().enumerate() {
            out.push_str(&format!(
                "\n[[order_server]]\nname = {}\naddress = {}\npublic_key = \"{}\"\ntls_ca_pem = {}\n",
                toml_string(&s.name),
                toml_string(&s.address),
                s.public_key.to_hex(),
                toml_string(&s.tls_ca_pem),
            ));
            if let Some(Some(a)) = logs.get(i) {
                out.push_str(&format!("log_key = {}\n", toml_string(&a.log_key)));
                if let Some(u) = &a.log_url {
                    out.push_str(&format!("log_url = {}\n", toml_string(u)));
                }
                if let Some(w) = &a.witness_key {
                    out.push_str(&format!("witness_key = {}\n", toml_string(w)));
                }
            }
        }
        out
    }

    /// The number of pinned order servers, from 1 to `MAX_ORDER_SERVERS`.
    pub fn server_count(&self) -> usize {
        self.order_servers.len()
    }

    /// The most order servers that may equivocate while no fork is possible
    /// at this quorum: a fork needs at least `2t - N` equivocating servers.
    pub fn tolerated_equivocators(&self) -> usize {
        (2 * self.quorum - self.server_count()).saturating_sub(1)
    }
}

/// A TOML basic string with every character that needs it escaped.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::OrderServerSecret;

    const PEM: &str = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";

    fn key(seed: u8) -> String {
        OrderServerSecret::from_bytes([seed; 32])
            .public_key()
            .to_hex()
    }

    fn sample(servers: usize, quorum: Option<usize>) -> String {
        let mut d = NetworkDescriptor {
            name: "test".into(),
            router: RouterEntry {
                address: "https://127.0.0.1:7000".into(),
                tls_ca_pem: PEM.into(),
            },
            order_servers: (0..servers)
                .map(|i| OrderServerEntry {
                    name: format!("s{i}"),
                    address: format!("https://127.0.0.1:{}", 7100 + i),
                    public_key: OrderServerSecret::from_bytes([i as u8 + 1; 32]).public_key(),
                    tls_ca_pem: PEM.into(),
                })
                .collect(),
            quorum: servers,
        }
        .to_toml();
        if let Some(q) = quorum {
            d = d.replace(&format!("quorum = {servers}"), &format!("quorum = {q}"));
        }
        d
    }

    #[test]
    fn round_trips_through_toml() {
        let text = sample(3, None);
        let d = NetworkDescriptor::parse(&text).unwrap();
        assert_eq!(d.server_count(), 3);
        assert_eq!(d.quorum, 3);
        assert_eq!(NetworkDescriptor::parse(&d.to_toml()).unwrap(), d);
    }

    #[test]
    fn quorum_defaults_to_all_and_must_be_a_majority() {
        let text = sample(3, None).replace("quorum = 3\n", "");
        assert_eq!(NetworkDescriptor::parse(&text).unwrap().quorum, 3);
        assert_eq!(
            NetworkDescriptor::parse(&sample(3, Some(2)))
                .unwrap()
                .quorum,
            2
        );
        assert!(matches!(
            NetworkDescriptor::parse(&sample(3, Some(1))),
            Err(DescriptorError::BadQuorum {
                quorum: 1,
                servers: 3,
                min: 2
            })
        ));
        assert!(matches!(
            NetworkDescriptor::parse(&sample(4, Some(2))),
            Err(DescriptorError::BadQuorum { min: 3, .. })
        ));
        assert!(matches!(
            NetworkDescriptor::parse(&sample(3, Some(4))),
            Err(DescriptorError::BadQuorum { .. })
        ));
    }

    #[test]
    fn tolerated_equivocators_follow_the_bound() {
        // N = 3: t = 3 tolerates 2 (any one honest), t = 2 tolerates 0.
        let d = NetworkDescriptor::parse(&sample(3, None)).unwrap();
        assert_eq!(d.tolerated_equivocators(), 2);
        let d = NetworkDescriptor::parse(&sample(3, Some(2))).unwrap();
        assert_eq!(d.tolerated_equivocators(), 0);
        let d = NetworkDescriptor::parse(&sample(5, Some(4))).unwrap();
        assert_eq!(d.tolerated_equivocators(), 2);
    }

    type Case = (String, fn(&DescriptorError) -> bool);

    #[test]
    fn rejections_name_what_is_wrong() {
        let good = sample(2, None);
        let cases: Vec<Case> = vec![
            (good.replace("version = 1", "version = 2"), |e| {
                matches!(e, DescriptorError::UnsupportedVersion { got: 2, .. })
            }),
            (good.replace("name = \"s1\"", "name = \"s0\""), |e| {
                matches!(e, DescriptorError::DuplicateName(n) if n == "s0")
            }),
            (good.replace(&key(2), &key(1)), |e| {
                matches!(e, DescriptorError::DuplicateKey { .. })
            }),
            (good.replace(&key(1), "abcd"), |e| {
                matches!(e, DescriptorError::BadKey { name, .. } if name == "s0")
            }),
            (good.replace(&key(1), &"zz".repeat(32)), |e| {
                matches!(e, DescriptorError::BadKey { .. })
            }),
            (good.replace(&key(1), &"00".repeat(32)), |e| {
                matches!(e, DescriptorError::LowOrderKey(n) if n == "s0")
            }),
            (good.replace("https://127.0.0.1:7000", "http://127.0.0.1:7000"), |e| {
                matches!(e, DescriptorError::BadAddress { what, .. } if what == "router")
            }),
            (good.replace("https://127.0.0.1:7100", "https://127.0.0.1:0"), |e| {
                matches!(e, DescriptorError::BadAddress { .. })
            }),
            (good.replace("https://127.0.0.1:7101", "https://127.0.0.1"), |e| {
                matches!(e, DescriptorError::BadAddress { .. })
            }),
            (good.replacen("-----BEGIN CERTIFICATE-----", "x", 1), |e| {
                matches!(e, DescriptorError::BadCertificate(w) if w == "router")
            }),
            (good.replace("name = \"test\"", "name = \"a b\""), |e| {
                matches!(e, DescriptorError::BadName { what: "network", .. })
            }),
            (format!("{good}\nextra = 1\n"), |e| matches!(e, DescriptorError::Syntax(_))),
            (good.replace("version = 1", "version = \"1\""), |e| {
                matches!(e, DescriptorError::Syntax(_))
            }),
            ("version = 1\nname = \"x\"\n[router]\naddress = \"https://r:1\"\ntls_ca_pem = \"-----BEGIN CERTIFICATE-----\\n-----END CERTIFICATE-----\"\n".to_owned(), |e| {
                matches!(e, DescriptorError::OrderServerCount { got: 0, .. })
            }),
            ("x".repeat(MAX_DESCRIPTOR_BYTES + 1), |e| {
                matches!(e, DescriptorError::TooLarge { .. })
            }),
        ];
        for (text, check) in cases {
            let err = NetworkDescriptor::parse(&text).unwrap_err();
            assert!(check(&err), "unexpected error {err:?}");
            assert!(!err.to_string().is_empty());
        }
    }

    /// A verifier key string for tests: `name`, any key ID, type `alg`.
    fn vkey(name: &str, alg: u8, fill: u8) -> String {
        let mut bytes = vec![alg];
        bytes.extend_from_slice(&[fill; 32]);
        format!("{name}+0a1b2c3d+{}", b64(&bytes))
    }

    /// A test-only base64 encoder (the crate has none).
    fn b64(bytes: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for c in bytes.chunks(3) {
            let n = (u32::from(c[0]) << 16)
                | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                | u32::from(*c.get(2).unwrap_or(&0));
            for i in 0..4 {
                if i <= c.len() {
                    out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    #[test]
    fn base64_decoding_is_strict() {
        for len in 0..40u8 {
            let bytes: Vec<u8> = (0..len).map(|i| i.wrapping_mul(37)).collect();
            let text = b64(&bytes);
            if len == 0 {
                assert_eq!(base64_decode(&text), None);
            } else {
                assert_eq!(base64_decode(&text), Some(bytes), "{text}");
            }
        }
        for bad in ["A", "AB=C", "A===", "AB==AAAA", "AB!=", "AB=", "AR=="] {
            assert_eq!(base64_decode(bad), None, "{bad}");
        }
        assert_eq!(base64_decode("AQ=="), Some(vec![1]));
    }

    proptest::proptest! {
        /// The base64 and verifier key checks never panic on file input,
        /// and every byte string round-trips through base64.
        #[test]
        fn key_checks_are_total(
            text in ".{0,80}",
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..64),
        ) {
            let _ = base64_decode(&text);
            let _ = check_vkey(&text, ALG_ED25519);
            let _ = check_log_url(&text);
            proptest::prop_assert_eq!(base64_decode(&b64(&bytes)), Some(bytes));
        }
    }

    #[test]
    fn audit_logs_are_read_checked_and_written_back() {
        let text = sample(3, None);
        let log0 = vkey("o0.example/log", 0x01, 7);
        let wit0 = vkey("o0.example/log/witness", 0x04, 8);
        let with = text.replacen(
            &format!("public_key = \"{}\"\n", key(1)),
            &format!(
                "public_key = \"{}\"\nlog_key = \"{log0}\"\nlog_url = \"http://o0.example:7480\"\n\
                 witness_key = \"{wit0}\"\n",
                key(1)
            ),
            1,
        );
        let (d, logs) = NetworkDescriptor::parse_with_audit_logs(&with).unwrap();
        assert_eq!(d, NetworkDescriptor::parse(&text).unwrap());
        assert_eq!(logs.len(), 3);
        let a = logs[0].clone().unwrap();
        assert_eq!(a.origin, "o0.example/log");
        assert_eq!(a.log_url.as_deref(), Some("http://o0.example:7480"));
        assert_eq!(a.witness_key.as_deref(), Some(wit0.as_str()));
        assert_eq!((&logs[1], &logs[2]), (&None, &None));
        let again = d.to_toml_with_audit_logs(&logs);
        assert_eq!(NetworkDescriptor::audit_logs(&again).unwrap(), logs);
        // Without the audit logs, to_toml leaves them out.
        assert_eq!(
            NetworkDescriptor::audit_logs(&d.to_toml()).unwrap(),
            vec![None; 3]
        );

        let refused = |from: &str, to: &str| {
            NetworkDescriptor::parse(&with.replacen(from, to, 1)).unwrap_err()
        };
        let field_of = |e: DescriptorError| match e {
            DescriptorError::BadAuditLog { name, field, .. } => (name, field),
            other => panic!("{other:?}"),
        };
        assert_eq!(field_of(refused(&log0, &wit0)), ("s0".into(), "log_key"));
        assert_eq!(
            field_of(refused(&wit0, &log0)),
            ("s0".into(), "witness_key")
        );
        assert_eq!(
            field_of(refused(&log0, &log0.replace("+0a1b2c3d+", "+0a1b+"))),
            ("s0".into(), "log_key")
        );
        assert_eq!(
            field_of(refused(
                &log0,
                &log0.replace("o0.example/log", "o0 example")
            )),
            ("s0".into(), "log_key")
        );
        assert_eq!(
            field_of(refused("http://o0.example:7480", "ftp://o0.example")),
            ("s0".into(), "log_url")
        );
        assert_eq!(
            field_of(refused(&format!("log_key = \"{log0}\"\n"), "")),
            ("s0".into(), "log_key")
        );
        // Two servers with one origin.
        let twice = with.replacen(
            &format!("public_key = \"{}\"\n", key(2)),
            &format!(
                "public_key = \"{}\"\nlog_key = \"{}\"\n",
                key(2),
                vkey("o0.example/log", 1, 9)
            ),
            1,
        );
        let err = NetworkDescriptor::parse(&twice).unwrap_err();
        assert!(err.to_string().contains("origin"), "{err}");
        assert_eq!(field_of(err), ("s1".into(), "log_key"));
    }

    #[test]
    fn too_many_servers_are_refused() {
        let err = NetworkDescriptor::parse(&sample(MAX_ORDER_SERVERS + 1, None)).unwrap_err();
        assert!(matches!(
            err,
            DescriptorError::OrderServerCount { got: 17, max: 16 }
        ));
    }

    #[test]
    fn strings_with_quotes_and_newlines_round_trip() {
        let mut d = NetworkDescriptor::parse(&sample(1, None)).unwrap();
        d.router.tls_ca_pem = format!("{PEM}\"\\\t\u{1}");
        assert_eq!(NetworkDescriptor::parse(&d.to_toml()).unwrap(), d);
    }
}
