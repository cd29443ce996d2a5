//! Developer accounts, tenants, users and tokens: the IM service's directory.
//!
//! Creations are check-then-act (unique app keys and accounts), so they run one at a time
//! under the service's admin lock; they are rare. Reads go to the store (tenants are cached:
//! there are few and every login needs one).

use std::sync::Arc;

use crate::store::{OpResult, Table};

use super::error::ImError;
use super::keys;
use super::records::{AccountRecord, TenantPolicy, TenantRecord, UserRecord};
use super::token::{self, Claims};
use super::{ImService, now_ms, random_hex};
use crate::store::{Op, unix_now};

/// Longest user account id.
pub const MAX_ACCOUNT: usize = 64;
/// Longest token lifetime an app server may ask for (seconds).
pub const MAX_TOKEN_TTL: u64 = 366 * 24 * 3600;

/// Enterprise numbers are this plus the tenant id.
pub const BUIN_BASE: u64 = 10_000_000;

/// Account ids are the app's own user ids: printable, no separators we use ourselves.
pub fn valid_account(a: &str) -> bool {
    !a.is_empty()
        && a.len() <= MAX_ACCOUNT
        && a.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '@' | '+'))
}

impl ImService {
    /// Creates a developer account with a random auth token.
    pub async fn create_account(&self) -> Result<AccountRecord, ImError> {
        let _guard = self.admin.lock().await;
        let rec = AccountRecord {
            id: format!("AC{}", random_hex(16)?),
            token: random_hex(16)?,
            created_ms: now_ms(),
        };
        self.commit(vec![Op::Put {
            table: Table::Accounts,
            key: rec.id.as_bytes().to_vec(),
            value: json(&rec)?,
        }])
        .await?;
        Ok(rec)
    }

    /// The developer account `id`.
    pub fn account(&self, id: &str) -> Result<Option<AccountRecord>, ImError> {
        self.read_json(Table::Accounts, id.as_bytes())
    }

    /// The first developer account, created if there is none (what `up` uses).
    pub async fn default_account(&self) -> Result<AccountRecord, ImError> {
        let first = self.store.scan(Table::Accounts, b"", None, 1)?;
        if let Some((_, v)) = first.first() {
            return serde_json::from_slice(v).map_err(|e| ImError::Internal(e.to_string()));
        }
        self.create_account().await
    }

    /// Creates a tenant of developer account `account` (the default account if `None`).
    pub async fn create_tenant(
        &self,
        name: &str,
        account: Option<&str>,
    ) -> Result<TenantRecord, ImError> {
        if name.is_empty() || name.len() > 128 {
            return Err(ImError::BadRequest(
                "tenant name must be 1..=128 bytes".into(),
            ));
        }
        let account = match account {
            Some(a) => self
                .account(a)?
                .ok_or_else(|| ImError::NotFound(format!("developer account {a}")))?,
            None => self.default_account().await?,
        };
        let _guard = self.admin.lock().await;
        let applied = self
            .commit(vec![Op::Increment {
                table: Table::Counters,
                key: keys::TENANT_COUNTER.to_vec(),
                by: 1,
            }])
            .await?;
        let Some(OpResult::Counter(id)) = applied.results.first().copied() else {
            return Err(ImError::Internal("no tenant id allocated".into()));
        };
        let rec = TenantRecord {
            id,
            name: name.to_owned(),
            account: account.id,
            app_key: random_hex(12)?,
            app_secret: random_hex(16)?,
            buin: BUIN_BASE + id,
            token_key: random_hex(32)?,
            created_ms: now_ms(),
            policy: TenantPolicy::default(),
            webhooks: None,
        };
        self.commit(vec![
            Op::Put {
                table: Table::Tenants,
                key: keys::tenant(id),
                value: json(&rec)?,
            },
            Op::Put {
                table: Table::TenantKeys,
                key: rec.app_key.as_bytes().to_vec(),
                value: id.to_be_bytes().to_vec(),
            },
        ])
        .await?;
        self.tenants.write().insert(id, Arc::new(rec.clone()));
        Ok(rec)
    }

    /// Tenant `id` (cached).
    pub fn tenant(&self, id: u64) -> Result<Arc<TenantRecord>, ImError> {
        if let Some(t) = self.tenants.read().get(&id) {
            return Ok(t.clone());
        }
        let generation = self.tenant_generation();
        let rec: TenantRecord = self
            .read_json(Table::Tenants, &keys::tenant(id))?
            .ok_or_else(|| ImError::NotFound(format!("tenant {id}")))?;
        let rec = Arc::new(rec);
        let mut tenants = self.tenants.write();
        if generation == self.tenant_generation() {
            tenants.insert(id, rec.clone());
        }
        Ok(rec)
    }

    /// The tenant whose app key is `app_key`.
    pub fn tenant_by_key(&self, app_key: &str) -> Result<Arc<TenantRecord>, ImError> {
        let id = self
            .store
            .get(Table::TenantKeys, app_key.as_bytes())?
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map(u64::from_be_bytes)
            .ok_or_else(|| ImError::NotFound("unknown app key".into()))?;
        self.tenant(id)
    }

    /// Replaces tenant `id`'s policy.
    pub async fn set_policy(&self, id: u64, policy: TenantPolicy) -> Result<(), ImError> {
        self.update_tenant(id, |rec| rec.policy = policy).await
    }

    /// Changes tenant `id`'s record with `change` and stores it.
    pub(super) async fn update_tenant(
        &self,
        id: u64,
        change: impl FnOnce(&mut TenantRecord),
    ) -> Result<(), ImError> {
        let _guard = self.admin.lock().await;
        let mut rec = (*self.tenant(id)?).clone();
        change(&mut rec);
        self.commit(vec![Op::Put {
            table: Table::Tenants,
            key: keys::tenant(id),
            value: json(&rec)?,
        }])
        .await?;
        self.tenants.write().insert(id, Arc::new(rec));
        if let Some(c) = self.cluster() {
            c.tenant_changed(id);
        }
        Ok(())
    }

    /// The generation of cached tenants (bumped when another node evicts one; 0 without
    /// cluster mode).
    fn tenant_generation(&self) -> u64 {
        self.cluster().map_or(0, |c| {
            c.tenant_gen.load(std::sync::atomic::Ordering::Acquire)
        })
    }

    /// Registers user `account` in tenant `tid`. An existing account is an error
    /// ([`ImError::Conflict`]) unless `upsert`, which updates the name and password.
    pub async fn create_user(
        &self,
        tid: u64,
        account: &str,
        name: &str,
        password: Option<&str>,
        upsert: bool,
    ) -> Result<UserRecord, ImError> {
        if !valid_account(account) {
            return Err(ImError::BadRequest(format!(
                "account must be 1..={MAX_ACCOUNT} bytes of letters, digits and _-.@+"
            )));
        }
        self.tenant(tid)?;
        let password = match password {
            Some(p) => {
                Some(crate::auth::hash_password(p).map_err(|e| ImError::Internal(e.to_string()))?)
            }
            None => None,
        };
        let _guard = self.admin.lock().await;
        if let Some(mut existing) = self.user(tid, account)? {
            if !upsert {
                return Err(ImError::Conflict(format!("user {account} exists")));
            }
            if !name.is_empty() {
                existing.name = name.to_owned();
            }
            if password.is_some() {
                existing.password = password;
            }
            self.put_user(tid, &existing).await?;
            return Ok(existing);
        }
        let applied = self
            .commit(vec![Op::Increment {
                table: Table::Counters,
                key: keys::uid_counter(tid),
                by: 1,
            }])
            .await?;
        let Some(OpResult::Counter(uid)) = applied.results.first().copied() else {
            return Err(ImError::Internal("no uid allocated".into()));
        };
        let rec = UserRecord {
            account: account.to_owned(),
            uid,
            name: name.to_owned(),
            password,
            banned_until: 0,
            token_epoch: 0,
            created_ms: now_ms(),
            title: String::new(),
            phone: String::new(),
            email: String::new(),
            position: String::new(),
            depts: Vec::new(),
            must_change_password: false,
            // Broadcasts to everyone from now on (not the tenant's earlier ones).
            bcast_from: self.broadcast_start(tid)?,
        };
        self.commit(vec![
            Op::Put {
                table: Table::Users,
                key: keys::user(tid, account),
                value: json(&rec)?,
            },
            Op::Put {
                table: Table::UserIds,
                key: keys::user_id(tid, uid),
                value: account.as_bytes().to_vec(),
            },
        ])
        .await?;
        Ok(rec)
    }

    async fn put_user(&self, tid: u64, rec: &UserRecord) -> Result<(), ImError> {
        self.commit(vec![Op::Put {
            table: Table::Users,
            key: keys::user(tid, &rec.account),
            value: json(rec)?,
        }])
        .await
        .map(|_| ())
    }

    /// User `account` of tenant `tid`.
    pub fn user(&self, tid: u64, account: &str) -> Result<Option<UserRecord>, ImError> {
        if !valid_account(account) {
            return Ok(None);
        }
        self.read_json(Table::Users, &keys::user(tid, account))
    }

    /// The account of user `uid` of tenant `tid`.
    pub fn account_of(&self, tid: u64, uid: u64) -> Result<Option<String>, ImError> {
        Ok(self
            .store
            .get(Table::UserIds, &keys::user_id(tid, uid))?
            .and_then(|v| String::from_utf8(v).ok()))
    }

    /// A login token for user `account` on `device` ("" for any), valid `ttl` seconds.
    pub fn issue_token(
        &self,
        tid: u64,
        account: &str,
        device: &str,
        ttl: u64,
    ) -> Result<String, ImError> {
        let tenant = self.tenant(tid)?;
        let user = self
            .user(tid, account)?
            .ok_or_else(|| ImError::NotFound(format!("user {account}")))?;
        let claims = Claims {
            t: tid,
            u: user.uid,
            a: user.account,
            d: device.to_owned(),
            e: unix_now() + ttl.clamp(1, MAX_TOKEN_TTL),
            n: user.token_epoch,
            i: random_hex(8)?,
        };
        Ok(token::sign(tenant.token_key.as_bytes(), &claims))
    }

    /// Revokes one token (recorded until it would have expired).
    pub async fn revoke_token(&self, tok: &str) -> Result<(), ImError> {
        let claims = token::peek(tok).map_err(|_| ImError::BadRequest("not a token".into()))?;
        let tenant = self.tenant(claims.t)?;
        let claims = token::verify(tenant.token_key.as_bytes(), tok, 0)
            .map_err(|e| ImError::BadRequest(e.to_string()))?;
        self.commit(vec![Op::Put {
            table: Table::UserMeta,
            key: keys::revoked(claims.t, claims.u, &claims.i),
            value: claims.e.to_be_bytes().to_vec(),
        }])
        .await?;
        self.kick_token(claims.t, claims.u, &claims.i, "token revoked");
        Ok(())
    }

    /// Revokes every token of a user issued so far and signs the user out.
    pub async fn revoke_all(&self, tid: u64, account: &str) -> Result<(), ImError> {
        let _guard = self.admin.lock().await;
        let mut user = self
            .user(tid, account)?
            .ok_or_else(|| ImError::NotFound(format!("user {account}")))?;
        user.token_epoch += 1;
        self.put_user(tid, &user).await?;
        self.kick_user(tid, user.uid, "tokens revoked");
        Ok(())
    }

    /// Bans a user until `until` (Unix seconds; 0 lifts the ban) and signs them out.
    pub async fn ban(&self, tid: u64, account: &str, until: u64) -> Result<(), ImError> {
        let _guard = self.admin.lock().await;
        let mut user = self
            .user(tid, account)?
            .ok_or_else(|| ImError::NotFound(format!("user {account}")))?;
        user.banned_until = until;
        self.put_user(tid, &user).await?;
        if until > unix_now() {
            self.kick_user(tid, user.uid, "banned");
        }
        Ok(())
    }

    /// Checks a token presented at login: signature, expiry, revocation, epoch, ban.
    pub fn check_token(&self, tok: &str) -> Result<(Claims, UserRecord), ImError> {
        let claims = token::peek(tok).map_err(|_| ImError::Unauthorized("not a token".into()))?;
        let tenant = self
            .tenant(claims.t)
            .map_err(|_| ImError::Unauthorized("unknown tenant".into()))?;
        let claims = token::verify(tenant.token_key.as_bytes(), tok, unix_now())
            .map_err(|e| ImError::Unauthorized(e.to_string()))?;
        let user = self
            .user(claims.t, &claims.a)?
            .filter(|u| u.uid == claims.u)
            .ok_or_else(|| ImError::Unauthorized("unknown user".into()))?;
        if user.token_epoch != claims.n {
            return Err(ImError::Unauthorized("token revoked".into()));
        }
        if self
            .store
            .get(
                Table::UserMeta,
                &keys::revoked(claims.t, claims.u, &claims.i),
            )?
            .is_some()
        {
            return Err(ImError::Unauthorized("token revoked".into()));
        }
        if user.banned_until > unix_now() {
            return Err(ImError::Banned);
        }
        Ok((claims, user))
    }

    fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        table: Table,
        key: &[u8],
    ) -> Result<Option<T>, ImError> {
        match self.store.get(table, key)? {
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| ImError::Internal(format!("corrupt {} record: {e}", table.name()))),
            None => Ok(None),
        }
    }
}

fn json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, ImError> {
    serde_json::to_vec(v).map_err(|e| ImError::Internal(e.to_string()))
}
