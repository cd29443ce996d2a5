//! Device push tokens: where the push worker reaches a user's phone when it is asleep
//! (APNs, FCM, Android vendor channels). Registered by the app on the device
//! (`$im/req/push/register`, protobuf) or by the app server (`$im/admin/push/{op}`, JSON:
//! `register`, `unregister`, `tokens`); stored per user in `UserMeta`
//! (`{tenant}{uid}push:{token hash}`), at most [`MAX_TOKENS_PER_USER`] per user (the oldest
//! goes). The push worker reads them with `push/tokens` (with the user's quiet hours,
//! `push_quiet.rs`) and removes dead ones with `push/unregister`.
//!
//! Per-tenant provider credentials (`push/credentials/set {tenant, apns?, fcm?, huawei?,
//! xiaomi?, ...}`, `push/credentials/get {tenant}`) are kept whole as JSON in `UserMeta`
//! under uid 0 (no user has it); only the gateway's `$service` login can read them.

use prost::Message as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use switchboard_proto::im;

use super::{ImError, ImLogin, ImService, now_ms};
use crate::store::{Op, Table};

/// Tokens kept per user (devices); registering one more drops the oldest.
pub const MAX_TOKENS_PER_USER: usize = 10;
/// Push services a token may belong to.
pub const VENDORS: [&str; 8] = [
    "apns", "fcm", "huawei", "xiaomi", "oppo", "vivo", "honor", "meizu",
];

/// One device's push registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushToken {
    pub vendor: String,
    pub token: String,
    /// iOS bundle id / Android package name.
    #[serde(default)]
    pub bundle_id: String,
    /// APNs sandbox (development) rather than production.
    #[serde(default)]
    pub sandbox: bool,
    /// The MQTT client id of the device, if it registered itself.
    #[serde(default)]
    pub device: String,
    #[serde(default)]
    pub updated_ms: u64,
}

fn prefix(tid: u64, uid: u64) -> Vec<u8> {
    [&tid.to_be_bytes()[..], &uid.to_be_bytes(), b"push:"].concat()
}

fn key(tid: u64, uid: u64, token: &str) -> Vec<u8> {
    let h = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    [prefix(tid, uid), h.as_ref()[..16].to_vec()].concat()
}

/// Where a tenant's push credentials are kept.
fn credentials_key(tid: u64) -> Vec<u8> {
    [&tid.to_be_bytes()[..], &0u64.to_be_bytes(), b"pushcreds"].concat()
}

/// Largest credentials document (keys, service-account JSON).
const MAX_CREDENTIALS: usize = 64 * 1024;

fn check(t: &PushToken) -> Result<(), ImError> {
    if !VENDORS.contains(&t.vendor.as_str()) {
        return Err(ImError::BadRequest(format!(
            "vendor must be one of {}",
            VENDORS.join(", ")
        )));
    }
    if t.token.is_empty() || t.token.len() > 512 || t.bundle_id.len() > 256 {
        return Err(ImError::BadRequest(
            "token must be 1..=512 bytes, bundle_id ≤ 256".into(),
        ));
    }
    Ok(())
}

impl ImService {
    /// The push tokens of user `uid`, newest first.
    pub fn push_tokens(&self, tid: u64, uid: u64) -> Result<Vec<PushToken>, ImError> {
        let rows = self.store.scan(
            Table::UserMeta,
            &prefix(tid, uid),
            None,
            MAX_TOKENS_PER_USER * 2,
        )?;
        let mut out: Vec<PushToken> = rows
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect();
        out.sort_by_key(|t| std::cmp::Reverse(t.updated_ms));
        Ok(out)
    }

    /// Registers (or refreshes) a token of user `uid`.
    pub async fn register_push_token(
        &self,
        tid: u64,
        uid: u64,
        mut t: PushToken,
    ) -> Result<(), ImError> {
        check(&t)?;
        t.updated_ms = now_ms();
        let mut ops = Vec::new();
        let existing = self.push_tokens(tid, uid)?;
        let others: Vec<&PushToken> = existing.iter().filter(|e| e.token != t.token).collect();
        for old in others.iter().skip(MAX_TOKENS_PER_USER - 1) {
            ops.push(Op::Delete {
                table: Table::UserMeta,
                key: key(tid, uid, &old.token),
            });
        }
        ops.push(Op::Put {
            table: Table::UserMeta,
            key: key(tid, uid, &t.token),
            value: serde_json::to_vec(&t).map_err(|e| ImError::Internal(e.to_string()))?,
        });
        self.commit(ops).await.map(|_| ())
    }

    /// Removes a token of user `uid` (logout on the device, or a dead token).
    pub async fn unregister_push_token(
        &self,
        tid: u64,
        uid: u64,
        token: &str,
    ) -> Result<(), ImError> {
        self.commit(vec![Op::Delete {
            table: Table::UserMeta,
            key: key(tid, uid, token),
        }])
        .await
        .map(|_| ())
    }

    /// `$im/req/push/{op}` from a device: `register`, `unregister`.
    pub(super) async fn push_request(
        &self,
        login: &ImLogin,
        client_id: &str,
        op: &str,
        payload: &[u8],
    ) -> Result<Vec<u8>, ImError> {
        if op == "quiet" {
            return self.push_quiet_request(login, payload).await;
        }
        let req = im::PushTokenRequest::decode(payload)
            .map_err(|e| ImError::BadRequest(format!("malformed protobuf: {e}")))?;
        match op {
            "register" => {
                let t = PushToken {
                    vendor: req.vendor,
                    token: req.token,
                    bundle_id: req.bundle_id,
                    sandbox: req.sandbox,
                    device: client_id.to_owned(),
                    updated_ms: 0,
                };
                self.register_push_token(login.tenant, login.uid, t).await?;
            }
            "unregister" => {
                self.unregister_push_token(login.tenant, login.uid, &req.token)
                    .await?;
            }
            other => return Err(ImError::NotFound(format!("no such request: push/{other}"))),
        }
        Ok(im::Ack {
            status: super::error::ok(),
        }
        .encode_to_vec())
    }

    /// `$im/admin/push/{op}`: `register {tenant, user, vendor, token, bundle_id?, sandbox?}`,
    /// `unregister {tenant, user, token}`, `tokens {tenant, user, platforms?}` (`platforms`:
    /// only the tokens of those platforms, `ios` or `android`, as a job's `platforms` asks).
    pub(super) async fn push_admin(&self, op: &str, payload: &[u8]) -> Result<Value, ImError> {
        if let Some(cop) = op.strip_prefix("credentials/") {
            return self.push_credentials(cop, payload).await;
        }
        if matches!(op, "quiet_set" | "quiet_get") {
            return self.push_quiet_admin(op, payload).await;
        }
        #[derive(Deserialize)]
        struct Req {
            tenant: u64,
            user: String,
            #[serde(default)]
            vendor: String,
            #[serde(default)]
            token: String,
            #[serde(default)]
            bundle_id: String,
            #[serde(default)]
            sandbox: bool,
            /// `tokens`: only those of these platforms (`PushJob.platforms`); empty: all.
            #[serde(default)]
            platforms: Vec<String>,
        }
        let r: Req = serde_json::from_slice(payload)
            .map_err(|e| ImError::BadRequest(format!("invalid JSON: {e}")))?;
        let user = self
            .user(r.tenant, &r.user)?
            .ok_or_else(|| ImError::NotFound(format!("user {}", r.user)))?;
        match op {
            "register" => {
                let t = PushToken {
                    vendor: r.vendor,
                    token: r.token,
                    bundle_id: r.bundle_id,
                    sandbox: r.sandbox,
                    device: String::new(),
                    updated_ms: 0,
                };
                self.register_push_token(r.tenant, user.uid, t).await?;
                Ok(json!({}))
            }
            "unregister" => {
                self.unregister_push_token(r.tenant, user.uid, &r.token)
                    .await?;
                Ok(json!({}))
            }
            "tokens" => Ok(json!({
                "tokens": self.push_tokens(r.tenant, user.uid)?.into_iter().filter(|t| {
                    r.platforms.is_empty()
                        || r.platforms.iter().any(|p| p == super::service_gateway::token_platform(&t.vendor))
                }).collect::<Vec<_>>(),
                "quiet": self.push_quiet(r.tenant, user.uid)?,
            })),
            other => Err(ImError::NotFound(format!("no such request: push/{other}"))),
        }
    }
}

impl ImService {
    /// `$im/admin/push/credentials/{op}`: `set {tenant, apns?, fcm?, huawei?, xiaomi?, oppo?,
    /// vivo?, honor?, meizu?}` (each an object; replaces the whole set; a provider left out
    /// has no credentials) and `get {tenant}` (the stored object, `{}` when none).
    async fn push_credentials(&self, op: &str, payload: &[u8]) -> Result<Value, ImError> {
        let mut v: Value = serde_json::from_slice(payload)
            .map_err(|e| ImError::BadRequest(format!("invalid JSON: {e}")))?;
        let tid = v["tenant"]
            .as_u64()
            .ok_or_else(|| ImError::BadRequest("tenant (a number) is required".into()))?;
        self.tenant(tid)?;
        match op {
            "set" => {
                let Some(o) = v.as_object_mut() else {
                    return Err(ImError::BadRequest("expected an object".into()));
                };
                o.remove("tenant");
                if let Some((k, _)) = o
                    .iter()
                    .find(|(k, v)| !VENDORS.contains(&k.as_str()) || !v.is_object())
                {
                    return Err(ImError::BadRequest(format!(
                        "{k:?}: expected an object under one of {}",
                        VENDORS.join(", ")
                    )));
                }
                let bytes = serde_json::to_vec(&v).map_err(|e| ImError::Internal(e.to_string()))?;
                if bytes.len() > MAX_CREDENTIALS {
                    return Err(ImError::BadRequest(format!(
                        "credentials larger than {MAX_CREDENTIALS} bytes"
                    )));
                }
                self.commit(vec![Op::Put {
                    table: Table::UserMeta,
                    key: credentials_key(tid),
                    value: bytes,
                }])
                .await?;
                Ok(json!({}))
            }
            "get" => Ok(self
                .store
                .get(Table::UserMeta, &credentials_key(tid))?
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_else(|| json!({}))),
            other => Err(ImError::NotFound(format!(
                "no such request: push/credentials/{other}"
            ))),
        }
    }
}
