//! The account at the router: connecting, registering, signing in (and
//! topping up prekeys and order keys), and fetching peers' verified
//! prekey bundles to start pairwise sessions.

use super::router::RouterConnection;
use super::{
    ApiError, Client, MAX_UNUSED_ORDER_KEYS, ORDER_KEY_BATCH, ORDER_KEY_LOW, PREKEY_BATCH,
    PREKEY_LOW,
};
use grompi_client_core::pairwise::PrekeyBundle;
use grompi_proto::AccountId;
use grompi_proto::pb;

impl Client {
    async fn connection(&mut self) -> Result<&mut RouterConnection, ApiError> {
        if self.connection.is_none() {
            self.connection = Some(RouterConnection::connect(&self.descriptor).await?);
        }
        self.connection
            .as_mut()
            .ok_or_else(|| ApiError::Refused("no connection".into()))
    }

    /// Registers the account with the router (once) and uploads its first
    /// prekeys and order keys.
    pub async fn register(&mut self) -> Result<AccountId, ApiError> {
        if self.profile.registered {
            return Err(ApiError::Refused(
                "this account is already registered".into(),
            ));
        }
        let mut rng = rand::rng();
        let secrets = self.member.secrets_mut();
        let order_keys: Vec<Vec<u8>> = secrets
            .order_keys
            .generate(&mut rng, ORDER_KEY_BATCH)
            .iter()
            .map(|k| k.to_vec())
            .collect();
        let prekeys = secrets.pairwise.new_one_time_prekeys(PREKEY_BATCH);
        let fallback = secrets.pairwise.new_fallback_prekey();
        // Keys are saved before they are uploaded: never a key at the
        // router whose secret this client does not hold.
        self.save()?;
        self.connection().await?;
        let conn = self
            .connection
            .as_mut()
            .ok_or_else(|| ApiError::Refused("no connection".into()))?;
        let account = conn
            .register(
                &self.member.secrets().pairwise,
                fallback,
                prekeys,
                order_keys,
            )
            .await?;
        self.profile.registered = true;
        self.save()?;
        Ok(account)
    }

    /// Connects and signs in if needed, and tops up prekeys and order keys
    /// at the router.
    pub async fn ensure_signed_in(&mut self) -> Result<(), ApiError> {
        if !self.profile.registered {
            return Err(ApiError::NotRegistered);
        }
        self.connection().await?;
        let Some(conn) = self.connection.as_mut() else {
            return Err(ApiError::Refused("no connection".into()));
        };
        if conn.signed_in() {
            return Ok(());
        }
        conn.sign_in(&self.member.secrets().pairwise).await?;
        let req = conn.authed(pb::GetKeyCountsRequest {})?;
        let counts = conn
            .raw()
            .get_key_counts(req)
            .await
            .map_err(|s| ApiError::router("GetKeyCounts", s))?
            .into_inner();
        let mut upload = pb::UploadKeysRequest::default();
        let mut rng = rand::rng();
        // A router that always reports a low count must not make the local
        // keyring grow without bound.
        if counts.order_keys < ORDER_KEY_LOW
            && self.member.secrets().order_keys.len() < MAX_UNUSED_ORDER_KEYS
        {
            upload.order_keys = self
                .member
                .secrets_mut()
                .order_keys
                .generate(&mut rng, ORDER_KEY_BATCH)
                .iter()
                .map(|k| k.to_vec())
                .collect();
        }
        if counts.one_time_prekeys < PREKEY_LOW {
            upload.one_time_prekeys = self
                .member
                .secrets_mut()
                .pairwise
                .new_one_time_prekeys(PREKEY_BATCH)
                .iter()
                .map(|k| k.to_vec())
                .collect();
        }
        if !upload.order_keys.is_empty() || !upload.one_time_prekeys.is_empty() {
            self.save()?;
            let conn = self.signed()?;
            let req = conn.authed(upload)?;
            conn.raw()
                .upload_keys(req)
                .await
                .map_err(|s| ApiError::router("UploadKeys", s))?;
        }
        Ok(())
    }

    pub(super) fn signed(&mut self) -> Result<&mut RouterConnection, ApiError> {
        self.connection
            .as_mut()
            .filter(|c| c.signed_in())
            .ok_or(ApiError::NotRegistered)
    }

    /// A peer's verified prekey bundle.
    pub(super) async fn fetch_bundle(
        &mut self,
        account: AccountId,
    ) -> Result<PrekeyBundle, ApiError> {
        self.ensure_signed_in().await?;
        let conn = self.signed()?;
        let req = conn.authed(pb::GetPrekeyBundleRequest {
            account: account.to_vec(),
        })?;
        let bundle = conn
            .raw()
            .get_prekey_bundle(req)
            .await
            .map_err(|s| ApiError::router("GetPrekeyBundle", s))?
            .into_inner()
            .bundle
            .ok_or_else(|| ApiError::Malformed("prekey bundle (missing)".into()))?;
        let bundle = PrekeyBundle::try_from(bundle)?;
        bundle.verify()?;
        if bundle.account != account || bundle.identity.account_id() != account {
            return Err(ApiError::Malformed(
                "prekey bundle for another account".into(),
            ));
        }
        Ok(bundle)
    }

    /// Makes sure a pairwise session exists with every peer.
    pub(super) async fn ensure_sessions(&mut self, peers: &[AccountId]) -> Result<(), ApiError> {
        for peer in peers {
            if *peer == self.account() || self.member.secrets().pairwise.has_session(peer) {
                continue;
            }
            let bundle = self.fetch_bundle(*peer).await?;
            self.member.secrets_mut().pairwise.start_session(&bundle)?;
        }
        Ok(())
    }
}
