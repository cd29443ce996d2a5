//! The web console's users and sessions, and the console's views of tenants and broker
//! operations: `$im/admin/console/{op}` for the gateway (the console is one more client of
//! the IM service; gateways stay stateless and share these through the store).
//!
//! Users (`Table::Console`, key `u/{username}`): a role (`developer` with a developer
//! account, `tenant_admin` with a tenant, `operator`), an argon2 hash, `must_change` (set
//! for one-time passwords: the first sign-in forces a change) and the per-account failure
//! count with its back-off. Sessions (key `s/{sha256(id)}`): the user and an expiry; the
//! id itself is only in the visitor's cookie.
//!
//! Sign-in failures back off twice: per address through the broker's login rate limiter
//! ([`crate::auth::Verifier::admit`] / `record`, the same one MQTT logins use) and per
//! account (after [`FREE_FAILURES`] failures, 1 s doubling up to [`MAX_LOCK_SECS`]).
//! Password checks run on blocking threads. Unknown users cost the same hash as known ones.
//!
//! Ops: `users/create {username, role, tenant?, account?, password?}` (a generated
//! one-time password is returned when none is given), `users/ensure_operator {username}`
//! (creates the first operator if there is no console user at all), `users/list`,
//! `signin {username, password, peer}` → `{session, must_change}` (401 wrong, 429 backing
//! off), `session {session}` → the user (404 when unknown or expired; sliding expiry),
//! `signout {session}`, `password {session, old, new}`. Tenants ([`tenants`]),
//! operations ([`ops`]) and the push workers' shared trace ([`push_trace`]) have their own
//! files.

pub mod ops;
pub mod push_trace;
pub mod samples;
pub mod tenants;

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{ImError, ImService, now_ms, random_hex};
use crate::store::{Op, Table};

/// Failed sign-ins an account may make before it backs off.
pub const FREE_FAILURES: u32 = 3;
/// Longest per-account wait.
pub const MAX_LOCK_SECS: u64 = 15 * 60;
/// Sessions end after this long without a request.
pub const SESSION_IDLE_MS: u64 = 8 * 3600 * 1000;
/// Most console users listed.
const MAX_LIST: usize = 1000;

/// A console user as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConsoleUserRecord {
    pub username: String,
    /// `developer`, `tenant_admin` or `operator`.
    pub role: String,
    pub tenant: Option<u64>,
    pub account: Option<String>,
    /// argon2 PHC string.
    pub hash: String,
    pub must_change: bool,
    #[serde(default)]
    pub failures: u32,
    #[serde(default)]
    pub locked_until_ms: u64,
    pub created_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SessionRecord {
    username: String,
    expires_ms: u64,
}

#[derive(Deserialize)]
struct NewUser {
    username: String,
    role: String,
    tenant: Option<u64>,
    account: Option<String>,
    password: Option<String>,
}

#[derive(Deserialize)]
struct SignIn {
    username: String,
    password: String,
    #[serde(default)]
    peer: String,
}

#[derive(Deserialize)]
struct SessionReq {
    session: String,
}

#[derive(Deserialize)]
struct PasswordReq {
    session: String,
    old: String,
    new: String,
}

fn user_key(username: &str) -> Vec<u8> {
    format!("u/{username}").into_bytes()
}

fn session_key(id: &str) -> Vec<u8> {
    let digest = crate::auth::scram::sha256(id.as_bytes());
    let mut k = b"s/".to_vec();
    k.extend_from_slice(&digest);
    k
}

fn parse<T: serde::de::DeserializeOwned>(p: &[u8]) -> Result<T, ImError> {
    serde_json::from_slice(p).map_err(|e| ImError::BadRequest(format!("invalid JSON: {e}")))
}

fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>, ImError> {
    serde_json::to_vec(v).map_err(|e| ImError::Internal(e.to_string()))
}

/// Console user names: like account ids, 1..=64 of letters, digits and `_-.@`.
pub fn valid_username(u: &str) -> bool {
    !u.is_empty()
        && u.len() <= 64
        && u.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '@'))
}

/// A fresh one-time password: 16 characters without look-alikes.
fn one_time_password() -> Result<String, ImError> {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let hex = random_hex(16)?;
    Ok(hex
        .as_bytes()
        .chunks(2)
        .map(|c| {
            let b = u8::from_str_radix(std::str::from_utf8(c).unwrap_or("0"), 16).unwrap_or(0);
            ALPHABET[b as usize % ALPHABET.len()] as char
        })
        .collect())
}

/// Argon2 on a blocking thread.
async fn hash(password: String) -> Result<String, ImError> {
    tokio::task::spawn_blocking(move || crate::auth::hash_password(&password))
        .await
        .map_err(|e| ImError::Internal(e.to_string()))?
        .map_err(|e| ImError::Internal(e.to_string()))
}

/// Whether `password` matches `hash`, on a blocking thread (a malformed hash: no).
async fn verify(hash: String, password: String) -> bool {
    tokio::task::spawn_blocking(move || {
        use argon2::password_hash::{PasswordHash, PasswordVerifier};
        PasswordHash::new(&hash).is_ok_and(|h| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
    })
    .await
    .unwrap_or(false)
}

/// A hash to verify against when the user does not exist (same cost, no enumeration).
fn dummy_hash() -> &'static str {
    static H: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    H.get_or_init(|| crate::auth::hash_password("not a password").unwrap_or_default())
}

impl ImService {
    /// `$im/admin/console/{op}`.
    pub(super) async fn console_admin(&self, op: &str, payload: &[u8]) -> Result<Value, ImError> {
        if let Some(rest) = op.strip_prefix("tenants/") {
            return self.console_tenants(rest, payload).await;
        }
        if let Some(rest) = op.strip_prefix("ops/") {
            return self.console_ops(rest, payload).await;
        }
        if let Some(rest) = op.strip_prefix("push_trace/") {
            return self.console_push_trace(rest, payload);
        }
        match op {
            "users/create" => {
                let r: NewUser = parse(payload)?;
                let (rec, password) = self
                    .create_console_user(
                        &r.username,
                        &r.role,
                        r.tenant,
                        r.account.as_deref(),
                        r.password,
                    )
                    .await?;
                Ok(
                    json!({ "username": rec.username, "role": rec.role, "tenant": rec.tenant,
                    "account": rec.account, "password": password }),
                )
            }
            "users/ensure_operator" => {
                #[derive(Deserialize)]
                struct R {
                    username: String,
                }
                let r: R = parse(payload)?;
                Ok(match self.ensure_console_operator(&r.username).await? {
                    Some(p) => json!({ "created": true, "username": r.username, "password": p }),
                    None => json!({ "created": false }),
                })
            }
            "users/list" => {
                let rows = self.store.scan(Table::Console, b"u/", None, MAX_LIST)?;
                let users: Vec<Value> = rows
                    .iter()
                    .filter_map(|(_, v)| serde_json::from_slice::<ConsoleUserRecord>(v).ok())
                    .map(|u| json!({ "username": u.username, "role": u.role, "tenant": u.tenant, "account": u.account, "must_change": u.must_change }))
                    .collect();
                Ok(json!({ "users": users }))
            }
            "signin" => {
                let r: SignIn = parse(payload)?;
                self.console_signin(r).await
            }
            "session" => {
                let r: SessionReq = parse(payload)?;
                let (u, _) = self.console_session(&r.session).await?;
                Ok(
                    json!({ "username": u.username, "role": u.role, "tenant": u.tenant,
                    "account": u.account, "must_change": u.must_change }),
                )
            }
            "signout" => {
                let r: SessionReq = parse(payload)?;
                self.commit(vec![Op::Delete {
                    table: Table::Console,
                    key: session_key(&r.session),
                }])
                .await?;
                Ok(json!({}))
            }
            "password" => {
                let r: PasswordReq = parse(payload)?;
                self.console_password(r).await
            }
            other => Err(ImError::NotFound(format!(
                "no such request: console/{other}"
            ))),
        }
    }

    fn console_user(&self, username: &str) -> Result<Option<ConsoleUserRecord>, ImError> {
        self.console_read(&user_key(username))
    }

    fn console_read<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, ImError> {
        match self.store.get(Table::Console, key)? {
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| ImError::Internal(format!("corrupt console record: {e}"))),
            None => Ok(None),
        }
    }

    /// Creates a console user; without `password`, a one-time password is made (and
    /// returned) and must be changed at the first sign-in.
    pub async fn create_console_user(
        &self,
        username: &str,
        role: &str,
        tenant: Option<u64>,
        account: Option<&str>,
        password: Option<String>,
    ) -> Result<(ConsoleUserRecord, Option<String>), ImError> {
        if !valid_username(username) {
            return Err(ImError::BadRequest(
                "username must be 1..=64 letters, digits and _-.@".into(),
            ));
        }
        let (tenant, account) = match role {
            "operator" => (None, None),
            "tenant_admin" => {
                let t = tenant.ok_or_else(|| {
                    ImError::BadRequest("a tenant administrator needs a tenant".into())
                })?;
                self.tenant(t)?;
                (Some(t), None)
            }
            "developer" => {
                let a = match account {
                    Some(a) => self
                        .account(a)?
                        .ok_or_else(|| ImError::NotFound(format!("developer account {a}")))?,
                    None => self.default_account().await?,
                };
                (None, Some(a.id))
            }
            other => {
                return Err(ImError::BadRequest(format!(
                    "role {other:?}: expected developer, tenant_admin or operator"
                )));
            }
        };
        let (plain, generated) = match password {
            Some(p) if p.chars().count() < 10 || p.len() > 128 => {
                return Err(ImError::BadRequest(
                    "password must be 10..=128 characters".into(),
                ));
            }
            Some(p) => (p, false),
            None => (one_time_password()?, true),
        };
        let rec = ConsoleUserRecord {
            username: username.to_owned(),
            role: role.to_owned(),
            tenant,
            account,
            hash: hash(plain.clone()).await?,
            must_change: true,
            failures: 0,
            locked_until_ms: 0,
            created_ms: now_ms(),
        };
        let _guard = self.admin.lock().await;
        if self.console_user(username)?.is_some() {
            return Err(ImError::Conflict(format!("console user {username} exists")));
        }
        self.commit(vec![Op::Put {
            table: Table::Console,
            key: user_key(username),
            value: to_json(&rec)?,
        }])
        .await?;
        tracing::info!(username, role, "console user created");
        Ok((rec, generated.then_some(plain)))
    }

    /// Creates operator `username` with a one-time password if there is no console user
    /// at all (what `up` does on first start); the password, once.
    pub async fn ensure_console_operator(&self, username: &str) -> Result<Option<String>, ImError> {
        if !self.store.scan(Table::Console, b"u/", None, 1)?.is_empty() {
            return Ok(None);
        }
        match self
            .create_console_user(username, "operator", None, None, None)
            .await
        {
            Ok((_, p)) => Ok(p),
            Err(ImError::Conflict(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn console_signin(&self, r: SignIn) -> Result<Value, ImError> {
        let peer: IpAddr = r
            .peer
            .parse()
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        let broker = self.broker();
        if let Some(b) = &broker
            && b.verifier.admit(peer).is_err()
        {
            return Err(ImError::RateLimited(
                "too many sign-ins from this address; retry in 5 seconds".into(),
            ));
        }
        let now = now_ms();
        let user = if valid_username(&r.username) {
            self.console_user(&r.username)?
        } else {
            None
        };
        if let Some(u) = &user
            && u.locked_until_ms > now
        {
            let secs = (u.locked_until_ms - now).div_ceil(1000);
            return Err(ImError::RateLimited(format!(
                "too many failed sign-ins; retry in {secs} seconds"
            )));
        }
        let hash = user
            .as_ref()
            .map_or_else(|| dummy_hash().to_owned(), |u| u.hash.clone());
        let ok = verify(hash, r.password).await && user.is_some();
        if let Some(b) = &broker {
            b.verifier.record(peer, ok);
        }
        let Some(mut u) = user else {
            return Err(ImError::Unauthorized("wrong username or password".into()));
        };
        // Re-read under the lock: concurrent attempts count each failure.
        let _guard = self.admin.lock().await;
        if let Some(fresh) = self.console_user(&u.username)? {
            u.failures = fresh.failures;
        }
        if !ok {
            u.failures = u.failures.saturating_add(1);
            if u.failures > FREE_FAILURES {
                let exp = (u.failures - FREE_FAILURES - 1).min(20);
                let secs = (1u64 << exp).min(MAX_LOCK_SECS);
                u.locked_until_ms = now + secs * 1000;
            }
            self.commit(vec![Op::Put {
                table: Table::Console,
                key: user_key(&u.username),
                value: to_json(&u)?,
            }])
            .await?;
            tracing::info!(username = %u.username, %peer, failures = u.failures, "console sign-in failed");
            return Err(ImError::Unauthorized("wrong username or password".into()));
        }
        let id = random_hex(32)?;
        let mut ops = vec![Op::Put {
            table: Table::Console,
            key: session_key(&id),
            value: to_json(&SessionRecord {
                username: u.username.clone(),
                expires_ms: now + SESSION_IDLE_MS,
            })?,
        }];
        if u.failures > 0 || u.locked_until_ms > 0 {
            u.failures = 0;
            u.locked_until_ms = 0;
            ops.push(Op::Put {
                table: Table::Console,
                key: user_key(&u.username),
                value: to_json(&u)?,
            });
        }
        self.commit(ops).await?;
        Ok(json!({ "session": id, "must_change": u.must_change }))
    }

    /// The user of session `id` (404 when unknown or expired); extends its expiry when
    /// less than half is left.
    async fn console_session(&self, id: &str) -> Result<(ConsoleUserRecord, Vec<u8>), ImError> {
        let key = session_key(id);
        let gone = || ImError::NotFound("no such session".into());
        let s: SessionRecord = self.console_read(&key)?.ok_or_else(gone)?;
        let now = now_ms();
        if s.expires_ms <= now {
            self.commit(vec![Op::Delete {
                table: Table::Console,
                key,
            }])
            .await?;
            return Err(gone());
        }
        let u = self.console_user(&s.username)?.ok_or_else(gone)?;
        if s.expires_ms - now < SESSION_IDLE_MS / 2 {
            self.commit(vec![Op::Put {
                table: Table::Console,
                key: key.clone(),
                value: to_json(&SessionRecord {
                    username: s.username,
                    expires_ms: now + SESSION_IDLE_MS,
                })?,
            }])
            .await?;
        }
        Ok((u, key))
    }

    async fn console_password(&self, r: PasswordReq) -> Result<Value, ImError> {
        let (u, _) = self.console_session(&r.session).await?;
        if r.new.chars().count() < 10 || r.new.len() > 128 {
            return Err(ImError::BadRequest(
                "password must be 10..=128 characters".into(),
            ));
        }
        if !verify(u.hash.clone(), r.old).await {
            return Err(ImError::Unauthorized(
                "the current password is wrong".into(),
            ));
        }
        let hashed = hash(r.new).await?;
        let _guard = self.admin.lock().await;
        let mut fresh = self.console_user(&u.username)?.unwrap_or(u);
        fresh.hash = hashed;
        fresh.must_change = false;
        self.commit(vec![Op::Put {
            table: Table::Console,
            key: user_key(&fresh.username),
            value: to_json(&fresh)?,
        }])
        .await?;
        tracing::info!(username = %fresh.username, "console password changed");
        Ok(json!({}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_time_passwords_are_long_and_differ() {
        let a = one_time_password().expect("random");
        let b = one_time_password().expect("random");
        assert_eq!(a.chars().count(), 16);
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn usernames() {
        assert!(valid_username("admin"));
        assert!(valid_username("ops.team@corp"));
        for bad in ["", "a b", "x/y", "<script>", &"a".repeat(65)] {
            assert!(!valid_username(bad), "{bad}");
        }
    }
}
