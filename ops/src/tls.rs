//! TLS material and pinned mutual-TLS configurations for tonic.
//!
//! Every server identity is a self-signed certificate. A peer trusts it by
//! pinning that exact certificate as its only trust anchor: there is no
//! certificate authority whose compromise would let a third party in. The
//! order server additionally compares the client's presented certificate
//! byte for byte with the pinned one ([`is_pinned_peer`]).
//!
//! Files: `<stem>.crt` (PEM certificate, world-readable) and `<stem>.key`
//! (PEM PKCS#8 private key, mode `0600`, written by
//! [`crate::secret_file::write_secret`]).

use crate::secret_file::{self, SecretFileError};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::path::{Path, PathBuf};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
use zeroize::Zeroizing;

/// Names a certificate is valid for when none are given.
pub const DEFAULT_NAMES: &[&str] = &["localhost", "127.0.0.1"];

/// Why TLS material could not be generated, written or read.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Certificate generation failed.
    #[error("cannot generate a TLS certificate: {0}")]
    Generate(String),
    /// A certificate file could not be written or read.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The private key file could not be written or read, or the
    /// certificate could not be written.
    #[error(transparent)]
    Secret(#[from] SecretFileError),
    /// A file's contents are not what they should be.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file (or a description of the value).
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// A TLS identity: a self-signed certificate and its private key.
#[derive(Clone)]
pub struct TlsIdentity {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PEM (PKCS#8); zeroized on drop.
    pub key_pem: Zeroizing<String>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"..")
            .finish()
    }
}

impl TlsIdentity {
    /// Generates a fresh key pair (ECDSA P-256) and a self-signed certificate
    /// for `subject_alt_names` (DNS names or IP addresses), or for
    /// [`DEFAULT_NAMES`] when the list is empty.
    pub fn generate(subject_alt_names: &[String]) -> Result<TlsIdentity, TlsError> {
        let names: Vec<String> = if subject_alt_names.is_empty() {
            DEFAULT_NAMES.iter().map(|s| (*s).to_owned()).collect()
        } else {
            subject_alt_names.to_vec()
        };
        let certified = rcgen::generate_simple_self_signed(names)
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        Ok(TlsIdentity {
            cert_pem: certified.cert.pem(),
            key_pem: Zeroizing::new(certified.signing_key.serialize_pem()),
        })
    }

    /// The path of the certificate file for `stem` in `dir`.
    pub fn cert_path(dir: &Path, stem: &str) -> PathBuf {
        dir.join(format!("{stem}.crt"))
    }

    /// The path of the private key file for `stem` in `dir`.
    pub fn key_path(dir: &Path, stem: &str) -> PathBuf {
        dir.join(format!("{stem}.key"))
    }

    /// Writes `<stem>.crt` and `<stem>.key` (mode `0600`) into `dir`.
    pub fn write_to(&self, dir: &Path, stem: &str) -> Result<(), TlsError> {
        secret_file::write_secret(&Self::key_path(dir, stem), self.key_pem.as_bytes())?;
        // Durably too: a server whose certificate a power loss emptied
        // could not start, and the router pins this one.
        secret_file::write_public(&Self::cert_path(dir, stem), self.cert_pem.as_bytes())?;
        Ok(())
    }

    /// Reads `<stem>.crt` and `<stem>.key` from `dir`, checking that both
    /// hold PEM of the right kind.
    pub fn read_from(dir: &Path, stem: &str) -> Result<TlsIdentity, TlsError> {
        let cert = Self::cert_path(dir, stem);
        let cert_pem = read_cert_pem(&cert)?;
        let key = Self::key_path(dir, stem);
        let key_bytes = secret_file::read_secret(&key)?;
        let key_pem = Zeroizing::new(
            std::str::from_utf8(&key_bytes)
                .map_err(|_| TlsError::Invalid {
                    path: key.display().to_string(),
                    reason: "not UTF-8 PEM".into(),
                })?
                .to_owned(),
        );
        if rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).is_err() {
            return Err(TlsError::Invalid {
                path: key.display().to_string(),
                reason: "no PEM private key in it".into(),
            });
        }
        Ok(TlsIdentity { cert_pem, key_pem })
    }

    /// The DER bytes of the certificate.
    pub fn cert_der(&self) -> Result<Vec<u8>, TlsError> {
        cert_der("certificate", &self.cert_pem)
    }
}

/// Reads a PEM certificate file (for example a pinned peer certificate),
/// checking that it holds exactly one certificate.
pub fn read_cert_pem(path: &Path) -> Result<String, TlsError> {
    let pem = std::fs::read_to_string(path).map_err(|source| TlsError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    })?;
    let n = CertificateDer::pem_slice_iter(pem.as_bytes()).count();
    if n != 1 {
        return Err(TlsError::Invalid {
            path: path.display().to_string(),
            reason: format!("expected exactly one PEM certificate, found {n}"),
        });
    }
    Ok(pem)
}

/// The DER bytes of the single certificate in `pem`; `what` names it in
/// errors.
pub fn cert_der(what: &str, pem: &str) -> Result<Vec<u8>, TlsError> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map(|c| c.as_ref().to_vec())
        .map_err(|e| TlsError::Invalid {
            path: what.to_owned(),
            reason: format!("not a PEM certificate: {e}"),
        })
}

/// Installs rustls's `ring` crypto provider as the process default.
/// Idempotent; call it at the start of every binary and test that uses TLS.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// How long a server waits for a client to complete the TLS handshake
/// before closing the connection. Without it a client that connects and
/// sends nothing would hold one of the server's capped connection slots
/// (see [`crate::conn_limit`]) forever.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A tonic server TLS config presenting `identity`, with a
/// [`HANDSHAKE_TIMEOUT`]. With `client_ca_pem`, clients must present a
/// certificate that chains to it (mutual TLS; pin a client by passing its
/// own self-signed certificate).
pub fn server_config(identity: &TlsIdentity, client_ca_pem: Option<&str>) -> ServerTlsConfig {
    let config = ServerTlsConfig::new()
        .identity(Identity::from_pem(
            identity.cert_pem.as_bytes(),
            identity.key_pem.as_bytes(),
        ))
        .timeout(HANDSHAKE_TIMEOUT);
    match client_ca_pem {
        Some(ca) => config.client_ca_root(Certificate::from_pem(ca)),
        None => config,
    }
}

/// A tonic client TLS config that trusts only `server_ca_pem` (the pinned
/// server certificate), checks the server name `domain`, and presents
/// `identity` as a client certificate when given.
pub fn client_config(
    server_ca_pem: &str,
    domain: &str,
    identity: Option<&TlsIdentity>,
) -> ClientTlsConfig {
    let config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(server_ca_pem))
        .domain_name(domain);
    match identity {
        Some(id) => config.identity(Identity::from_pem(
            id.cert_pem.as_bytes(),
            id.key_pem.as_bytes(),
        )),
        None => config,
    }
}

/// Whether the end-entity certificate a TLS client presented (as tonic's
/// `Request::peer_certs` returns them) is byte for byte `pinned_der`.
/// `None` (no TLS, or no client certificate) is never pinned.
pub fn is_pinned_peer(peer_certs: Option<&[CertificateDer<'static>]>, pinned_der: &[u8]) -> bool {
    // Certificates are public: a plain comparison is fine.
    match peer_certs.and_then(|c| c.first()) {
        Some(leaf) => leaf.as_ref() == pinned_der,
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_write_read_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let id = TlsIdentity::generate(&[]).unwrap();
        id.write_to(dir.path(), "server").unwrap();
        let back = TlsIdentity::read_from(dir.path(), "server").unwrap();
        assert_eq!(back.cert_pem, id.cert_pem);
        assert_eq!(*back.key_pem, *id.key_pem);
        assert!(!format!("{id:?}").contains("PRIVATE KEY"));
        let der = id.cert_der().unwrap();
        assert!(is_pinned_peer(
            Some(&[CertificateDer::from(der.clone())]),
            &der
        ));
        let other = TlsIdentity::generate(&[]).unwrap().cert_der().unwrap();
        assert!(!is_pinned_peer(Some(&[CertificateDer::from(other)]), &der));
        assert!(!is_pinned_peer(None, &der));
    }

    /// A self-signed leaf works as the only trust anchor in both directions
    /// with tonic's rustls, and a client with another certificate is refused.
    #[tokio::test]
    async fn pinned_mutual_tls_with_self_signed_leaves() {
        install_crypto_provider();
        let server = TlsIdentity::generate(&[]).unwrap();
        let client = TlsIdentity::generate(&[]).unwrap();
        let stranger = TlsIdentity::generate(&[]).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_reporter, health) = tonic_health::server::health_reporter();
        let tls = server_config(&server, Some(&client.cert_pem));
        tokio::spawn(
            tonic::transport::Server::builder()
                .tls_config(tls)
                .unwrap()
                .add_service(health)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        let check = |id: Option<TlsIdentity>, ca: String| async move {
            let endpoint = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
                .unwrap()
                .tls_config(client_config(&ca, "localhost", id.as_ref()))
                .unwrap();
            let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
            let mut c = tonic_health::pb::health_client::HealthClient::new(channel);
            c.check(tonic_health::pb::HealthCheckRequest::default())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        check(Some(client.clone()), server.cert_pem.clone())
            .await
            .unwrap();
        assert!(
            check(Some(stranger), server.cert_pem.clone())
                .await
                .is_err()
        );
        assert!(check(None, server.cert_pem.clone()).await.is_err());
        // A client pinning another server certificate refuses this server.
        assert!(check(Some(client), client_ca_other()).await.is_err());
    }

    fn client_ca_other() -> String {
        TlsIdentity::generate(&[]).unwrap().cert_pem
    }

    #[test]
    fn a_file_without_a_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.crt");
        std::fs::write(&p, "hello").unwrap();
        let err = read_cert_pem(&p).unwrap_err();
        assert!(err.to_string().contains("found 0"), "{err}");
    }
}
