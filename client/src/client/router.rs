//! The connection to the router: TLS with the router's certificate pinned
//! from the network descriptor (no client certificate: the transport stays
//! anonymous), and application-layer sign-in with a signed challenge.

use super::error::ApiError;
use grompi_client_core::pairwise::{Pairwise, SignedPrekey};
use grompi_proto::descriptor::NetworkDescriptor;
use grompi_proto::ids::NetworkBinding;
use grompi_proto::pb::{self, router_client::RouterClient};
use grompi_proto::{AccountId, Challenge};
use std::time::Duration;
use tonic::Request;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use zeroize::Zeroizing;

/// The metadata key carrying the session token (defined once, in proto).
pub use grompi_proto::SESSION_METADATA;

/// The host name in an `https://host:port` address (brackets of an IPv6
/// literal removed), to check the router's certificate against.
pub fn host_of(address: &str) -> Option<String> {
    let rest = address.strip_prefix("https://")?;
    let authority = rest.split('/').next()?;
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().map(str::to_owned);
    }
    authority.split(':').next().map(str::to_owned)
}

/// An open connection, signed in or not.
pub struct RouterConnection {
    client: RouterClient<Channel>,
    token: Option<Zeroizing<String>>,
    /// When the session was obtained.
    signed_in_at: Option<std::time::Instant>,
    /// The network every sign-in signature is bound to.
    network: NetworkBinding,
}

/// A session older than this is replaced by signing in again before it is
/// used. Routers keep sessions for at least a day (seven by default), so a
/// client that signs in again after six hours never uses an ended one.
pub const SESSION_REFRESH: std::time::Duration = std::time::Duration::from_secs(6 * 60 * 60);

impl std::fmt::Debug for RouterConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterConnection")
            .field("signed_in", &self.token.is_some())
            .finish()
    }
}

impl RouterConnection {
    /// Connects to the descriptor's router, trusting only its pinned
    /// certificate.
    pub async fn connect(descriptor: &NetworkDescriptor) -> Result<Self, ApiError> {
        grompi_ops::tls::install_crypto_provider();
        let address = descriptor.router.address.clone();
        let fail = |reason: String| ApiError::Connect {
            address: address.clone(),
            reason,
        };
        let host = host_of(&address).ok_or_else(|| fail("not an https:// address".into()))?;
        let endpoint = Endpoint::from_shared(address.clone())
            .map_err(|e| fail(e.to_string()))?
            .tls_config(grompi_ops::tls::client_config(
                &descriptor.router.tls_ca_pem,
                &host,
                None,
            ))
            .map_err(|e| fail(e.to_string()))?
            .connect_timeout(Duration::from_secs(10))
            .tcp_keepalive(Some(Duration::from_secs(30)));
        let channel = endpoint.connect().await.map_err(|e| {
            let mut reason = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                reason.push_str(": ");
                reason.push_str(&s.to_string());
                source = s.source();
            }
            fail(reason)
        })?;
        Ok(Self {
            client: RouterClient::new(channel)
                .max_decoding_message_size(64 * 1024 * 1024)
                .max_encoding_message_size(16 * 1024 * 1024),
            token: None,
            signed_in_at: None,
            network: NetworkBinding::of_descriptor(descriptor),
        })
    }

    /// The gRPC client, for calls that need no session.
    pub fn raw(&mut self) -> &mut RouterClient<Channel> {
        &mut self.client
    }

    /// A request carrying the session token.
    pub fn authed<T>(&self, body: T) -> Result<Request<T>, ApiError> {
        let token = self.token.as_ref().ok_or(ApiError::NotRegistered)?;
        let value = MetadataValue::try_from(token.as_str())
            .map_err(|_| ApiError::Malformed("session token".into()))?;
        let mut r = Request::new(body);
        r.metadata_mut().insert(SESSION_METADATA, value);
        Ok(r)
    }

    /// A fresh challenge and the signature over it, bound to this
    /// connection's network (a router of another network refuses it).
    async fn signed_challenge(
        &mut self,
        pairwise: &Pairwise,
    ) -> Result<(Vec<u8>, [u8; 64]), ApiError> {
        let challenge = self
            .client
            .get_challenge(pb::GetChallengeRequest {})
            .await
            .map_err(|s| ApiError::router("GetChallenge", s))?
            .into_inner()
            .challenge;
        let parsed = Challenge::parse("challenge", &challenge)?;
        let signature = pairwise.sign(&parsed.network_signing_message(&self.network));
        Ok((challenge, signature))
    }

    /// Registers the account with its first keys; signs in.
    pub async fn register(
        &mut self,
        pairwise: &Pairwise,
        fallback: SignedPrekey,
        one_time_prekeys: Vec<[u8; 32]>,
        order_keys: Vec<Vec<u8>>,
    ) -> Result<AccountId, ApiError> {
        let (challenge, signature) = self.signed_challenge(pairwise).await?;
        let identity = pairwise.identity();
        let r = self
            .client
            .register(pb::RegisterRequest {
                identity: Some(pb::IdentityKeys {
                    signing_key: identity.signing.to_vec(),
                    session_key: identity.session.to_vec(),
                }),
                challenge,
                signature: signature.to_vec(),
                fallback_prekey: Some(pb::SignedPrekey {
                    key: fallback.key.to_vec(),
                    signature: fallback.signature.to_vec(),
                }),
                one_time_prekeys: one_time_prekeys.iter().map(|k| k.to_vec()).collect(),
                order_keys,
            })
            .await
            .map_err(|s| ApiError::router("Register", s))?
            .into_inner();
        let account = AccountId::parse("account", &r.account)?;
        if account != pairwise.account_id() {
            return Err(ApiError::Malformed(
                "account id (not the hash of our identity keys)".into(),
            ));
        }
        self.token = Some(Zeroizing::new(hex::encode(&r.session_token)));
        self.signed_in_at = Some(std::time::Instant::now());
        Ok(account)
    }

    /// Signs in with a signed challenge.
    pub async fn sign_in(&mut self, pairwise: &Pairwise) -> Result<(), ApiError> {
        let (challenge, signature) = self.signed_challenge(pairwise).await?;
        let r = self
            .client
            .sign_in(pb::SignInRequest {
                account: pairwise.account_id().to_vec(),
                challenge,
                signature: signature.to_vec(),
            })
            .await
            .map_err(|s| ApiError::router("SignIn", s))?
            .into_inner();
        self.token = Some(Zeroizing::new(hex::encode(&r.session_token)));
        self.signed_in_at = Some(std::time::Instant::now());
        Ok(())
    }

    /// Whether a session token is held and young enough to use (see
    /// [`SESSION_REFRESH`]).
    pub fn signed_in(&self) -> bool {
        self.token.is_some()
            && self
                .signed_in_at
                .is_some_and(|at| at.elapsed() < SESSION_REFRESH)
    }
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn hosts_of_addresses() {
        assert_eq!(
            host_of("https://localhost:7000").as_deref(),
            Some("localhost")
        );
        assert_eq!(
            host_of("https://router.example.org").as_deref(),
            Some("router.example.org")
        );
        assert_eq!(host_of("https://[::1]:7000/").as_deref(), Some("::1"));
        assert_eq!(host_of("http://x:1"), None);
    }
}
