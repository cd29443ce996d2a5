//! IM logins, in front of the broker's own authenticator.
//!
//! - **Token** (password starting with `sb1.`): a token the app server fetched for its
//!   user; the user name, if given, must be the token's account.
//! - **Directory password** (user name `{app_key}:{account}`): users created with a
//!   password (seed 001's fixed accounts; also device credentials for IoT devices).
//! - **Any account** (same user name, the app secret as password), only for tenants whose
//!   policy enables it: seed 001's "any account" mode, the user made on first login.
//! - **Service** (user name `$service`): the gateway and the push worker; the whole topic
//!   space, unmapped.
//! - anything else goes to the inner authenticator (password file, anonymous), whose
//!   clients belong to the default tenant.
//!
//! Every refusal is 0x86 (bad user name or password) or 0x8A (banned); unknown users cost a
//! password check like known ones.

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use switchboard_proto::ReasonCode;

use super::error::ImError;
use super::{ImLogin, ImService};
use crate::auth::{Authenticator, Credentials, Identity};
use crate::namespace::Namespace;

/// User name of the service credential.
pub const SERVICE_USER: &str = "$service";

/// A hash of a random password, verified for unknown users so that they cost the same as
/// known ones (made on first use).
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        let random = super::random_hex(16).unwrap_or_else(|_| "x".repeat(32));
        crate::auth::hash_password(&random).unwrap_or_default()
    })
}

/// The IM authenticator.
pub struct ImAuth {
    pub im: Arc<ImService>,
    pub inner: Arc<dyn Authenticator>,
}

impl Authenticator for ImAuth {
    fn authenticate(&self, c: &Credentials<'_>) -> Result<Identity, ReasonCode> {
        if c.username == Some(SERVICE_USER) {
            return self.service(c);
        }
        if let Some(pw) = c.password
            && pw.starts_with(super::token::PREFIX.as_bytes())
        {
            return self.token(c, pw);
        }
        if let Some((app_key, account)) = c.username.and_then(|u| u.split_once(':'))
            && let Ok(tenant) = self.im.tenant_by_key(app_key)
        {
            if tenant.policy.any_account
                && c.password.is_some_and(|p| {
                    bool::from(subtle::ConstantTimeEq::ct_eq(
                        tenant.app_secret.as_bytes(),
                        p,
                    ))
                })
            {
                return self.any_account(c, tenant.id, account);
            }
            return self.password(c, tenant.id, account);
        }
        self.inner.authenticate(c)
    }
}

impl ImAuth {
    fn service(&self, c: &Credentials<'_>) -> Result<Identity, ReasonCode> {
        let ok = match (&self.im.service_secret, c.password) {
            (Some(secret), Some(pw)) => {
                bool::from(subtle::ConstantTimeEq::ct_eq(secret.as_bytes(), pw))
            }
            _ => false,
        };
        if !ok {
            tracing::info!(client_id = c.client_id, "service login refused");
            return Err(ReasonCode::BadUserNameOrPassword);
        }
        Ok(Identity {
            username: Some(SERVICE_USER.to_owned()),
            namespace: Namespace::Service,
            ..Identity::default()
        })
    }

    fn token(&self, c: &Credentials<'_>, pw: &[u8]) -> Result<Identity, ReasonCode> {
        let tok = std::str::from_utf8(pw).map_err(|_| ReasonCode::BadUserNameOrPassword)?;
        let (claims, user) = self.im.check_token(tok).map_err(|e| refusal(c, &e))?;
        if c.username
            .is_some_and(|u| !u.is_empty() && u != user.account)
        {
            tracing::info!(
                client_id = c.client_id,
                "token of another account presented"
            );
            return Err(ReasonCode::BadUserNameOrPassword);
        }
        self.login(c, claims.t, user.uid, user.account, claims.d, claims.i)
    }

    /// Seed 001's "any account" mode: the app vouches for its user with the app secret;
    /// the user is created on first login.
    fn any_account(
        &self,
        c: &Credentials<'_>,
        tid: u64,
        account: &str,
    ) -> Result<Identity, ReasonCode> {
        let user = match self.im.user(tid, account) {
            Ok(Some(u)) => u,
            Ok(None) => {
                // Authenticators run on a blocking thread: wait for the creation's commit.
                let handle = tokio::runtime::Handle::try_current()
                    .map_err(|_| ReasonCode::ServerUnavailable)?;
                handle
                    .block_on(self.im.create_user(tid, account, "", None, true))
                    .map_err(|e| refusal(c, &e))?
            }
            Err(e) => return Err(refusal(c, &e)),
        };
        if user.banned_until > crate::store::unix_now() {
            return Err(ReasonCode::Banned);
        }
        self.login(c, tid, user.uid, user.account, String::new(), String::new())
    }

    fn password(
        &self,
        c: &Credentials<'_>,
        tid: u64,
        account: &str,
    ) -> Result<Identity, ReasonCode> {
        let user = self.im.user(tid, account).ok().flatten();
        let hash = user
            .as_ref()
            .and_then(|u| u.password.clone())
            .unwrap_or_else(|| dummy_hash().to_owned());
        let given = c.password.unwrap_or_default();
        let matches = PasswordHash::new(&hash)
            .is_ok_and(|h| argon2::Argon2::default().verify_password(given, &h).is_ok());
        let Some(user) = user.filter(|u| matches && u.password.is_some()) else {
            tracing::info!(
                client_id = c.client_id,
                tenant = tid,
                "directory login refused"
            );
            return Err(ReasonCode::BadUserNameOrPassword);
        };
        if user.banned_until > crate::store::unix_now() {
            return Err(ReasonCode::Banned);
        }
        if user.must_change_password {
            // First login with a default password: only dir/change_password until done.
            self.im.restrict_until_password_change(tid, user.uid);
        }
        self.login(c, tid, user.uid, user.account, String::new(), String::new())
    }

    fn login(
        &self,
        c: &Credentials<'_>,
        tenant: u64,
        uid: u64,
        account: String,
        platform: String,
        token_id: String,
    ) -> Result<Identity, ReasonCode> {
        if c.client_id.is_empty() {
            // A heartbeat probe (client/src/probe.rs): the SDK's throwaway connection that
            // idles for a candidate interval and pings. It is not a device (no presence, no
            // one-phone kick, no inbox), reaches no topic, and its session never persists.
            return Ok(Identity {
                username: Some(account),
                namespace: Namespace::Probe,
                ..Identity::default()
            });
        }
        // The client id becomes part of the device's response topics.
        if c.client_id.len() > 128 || c.client_id.contains(['/', '+', '#']) {
            return Err(ReasonCode::ClientIdentifierNotValid);
        }
        Ok(Identity {
            username: Some(account.clone()),
            namespace: Namespace::tenant(tenant, Some((uid, c.client_id))),
            im: Some(Arc::new(ImLogin {
                tenant,
                uid,
                account,
                platform,
                token_id,
            })),
            ..Identity::default()
        })
    }
}

fn refusal(c: &Credentials<'_>, e: &ImError) -> ReasonCode {
    tracing::info!(client_id = c.client_id, error = %e, "IM login refused");
    match e {
        ImError::Banned => ReasonCode::Banned,
        ImError::Unavailable(_) | ImError::Internal(_) => ReasonCode::ServerUnavailable,
        _ => ReasonCode::BadUserNameOrPassword,
    }
}
