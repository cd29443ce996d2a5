//! The console's tenant ops (`$im/admin/console/tenants/{op}`): `list {account?, tenant?,
//! limit?}` (a developer account's tenants, or one tenant; without either, every tenant,
//! for operators' tools), `get {tenant}` (the app secret masked), `rotate_secret {tenant}`
//! (a new app secret, returned once; the old one stops working at once), `rotate_key
//! {tenant}` (a new app key; the old one stops resolving) and
//! `compat {tenant, on}` (the `compat_apis` policy). Creating a tenant is the existing
//! `create_tenant` op; webhooks and push credentials are `hooks/*` and
//! `push/credentials/*`.

use serde::Deserialize;
use serde_json::{Value, json};

use super::super::records::TenantRecord;
use super::super::{ImError, ImService, keys, random_hex};
use crate::store::{Op, Table};

/// Most tenants listed at once.
const MAX_TENANTS: usize = 1000;

/// The first four characters of a secret, the rest hidden.
pub fn mask(secret: &str) -> String {
    let head: String = secret.chars().take(4).collect();
    format!("{head}••••••••")
}

fn view(t: &TenantRecord) -> Value {
    json!({
        "tenant_id": t.id,
        "name": t.name,
        "account": t.account,
        "app_key": t.app_key,
        "app_secret": mask(&t.app_secret),
        "buin": t.buin,
        "compat_apis": t.policy.compat_apis,
        "created_ms": t.created_ms,
        "has_webhooks": t.webhooks.is_some(),
    })
}

#[derive(Deserialize)]
struct List {
    account: Option<String>,
    tenant: Option<u64>,
    limit: Option<usize>,
}

#[derive(Deserialize)]
struct One {
    tenant: u64,
}

#[derive(Deserialize)]
struct Compat {
    tenant: u64,
    on: bool,
}

impl ImService {
    pub(super) async fn console_tenants(&self, op: &str, payload: &[u8]) -> Result<Value, ImError> {
        let parse = |p: &[u8]| -> Result<Value, ImError> {
            serde_json::from_slice(p).map_err(|e| ImError::BadRequest(format!("invalid JSON: {e}")))
        };
        let body = parse(payload)?;
        match op {
            "list" => {
                let r: List = de(body)?;
                if let Some(t) = r.tenant {
                    return Ok(json!({ "tenants": [view(&*self.tenant(t)?)] }));
                }
                let limit = r.limit.unwrap_or(MAX_TENANTS).min(MAX_TENANTS);
                let mut out = Vec::new();
                let mut after: Option<Vec<u8>> = None;
                // Tenants are few (one per app of a developer): scan pages until `limit`
                // of the account's are found.
                'scan: loop {
                    let page = self
                        .store
                        .scan(Table::Tenants, b"", after.as_deref(), 500)?;
                    for (_, v) in &page {
                        let Ok(t) = serde_json::from_slice::<TenantRecord>(v) else {
                            continue;
                        };
                        if r.account.as_ref().is_none_or(|a| *a == t.account) {
                            out.push(view(&t));
                            if out.len() >= limit {
                                break 'scan;
                            }
                        }
                    }
                    match page.last() {
                        Some((k, _)) if page.len() == 500 => after = Some(k.clone()),
                        _ => break,
                    }
                }
                Ok(json!({ "tenants": out }))
            }
            "get" => {
                let r: One = de(body)?;
                Ok(view(&*self.tenant(r.tenant)?))
            }
            "rotate_secret" => {
                let r: One = de(body)?;
                let secret = random_hex(16)?;
                let s = secret.clone();
                self.update_tenant(r.tenant, move |t| t.app_secret = s)
                    .await?;
                tracing::info!(
                    tenant = r.tenant,
                    "tenant app secret rotated from the console"
                );
                Ok(json!({ "app_secret": secret }))
            }
            "rotate_key" => {
                let r: One = de(body)?;
                let key = self.console_rotate_key(r.tenant).await?;
                tracing::info!(tenant = r.tenant, "tenant app key rotated from the console");
                Ok(json!({ "app_key": key }))
            }
            "compat" => {
                let r: Compat = de(body)?;
                let on = r.on;
                self.update_tenant(r.tenant, move |t| t.policy.compat_apis = on)
                    .await?;
                Ok(json!({ "compat_apis": on }))
            }
            other => Err(ImError::NotFound(format!(
                "no such request: console/tenants/{other}"
            ))),
        }
    }
}

impl ImService {
    /// A new app key for tenant `tid`: the tenant record and the key index change in one
    /// commit, so the old key stops resolving when the new one starts.
    async fn console_rotate_key(&self, tid: u64) -> Result<String, ImError> {
        let _guard = self.admin.lock().await;
        let mut rec = (*self.tenant(tid)?).clone();
        let old = std::mem::replace(&mut rec.app_key, random_hex(12)?);
        let value = serde_json::to_vec(&rec).map_err(|e| ImError::Internal(e.to_string()))?;
        self.commit(vec![
            Op::Put {
                table: Table::Tenants,
                key: keys::tenant(tid),
                value,
            },
            Op::Delete {
                table: Table::TenantKeys,
                key: old.into_bytes(),
            },
            Op::Put {
                table: Table::TenantKeys,
                key: rec.app_key.as_bytes().to_vec(),
                value: tid.to_be_bytes().to_vec(),
            },
        ])
        .await?;
        let key = rec.app_key.clone();
        self.tenants.write().insert(tid, std::sync::Arc::new(rec));
        if let Some(c) = self.cluster() {
            c.tenant_changed(tid);
        }
        Ok(key)
    }
}

fn de<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, ImError> {
    serde_json::from_value(v).map_err(|e| ImError::BadRequest(e.to_string()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn masks_keep_four_characters() {
        assert_eq!(super::mask("abcdef0123"), "abcd••••••••");
        assert_eq!(super::mask("ab"), "ab••••••••");
    }
}
