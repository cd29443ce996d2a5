//! A tenant's settings as its developer account reads and changes them
//! (`$im/admin/tenant_settings`, JSON, `$service` only; the gateway's `GET`/`PUT
//! /v1/tenants/{id}/settings` after checking the account's credentials):
//! `{account, tenant, set?: {upload_bytes_per_hour?, upload_files_per_hour?,
//! upload_max_file_bytes?}}` → the settings after the change. Only the tenant's owning
//! account may call it (others get 404, as for a tenant that does not exist). Fields left
//! out keep their value; the device upload budgets are the only settings here today (the
//! rest of the policy is the operator's: `PUT /api/v1/im/tenants/{id}/policy`).
//!
//! `rotate_secret {account, tenant}` (the gateway's `POST /v1/tenants/{id}/secret`): a new
//! app secret for the owning account, answered once as `{app_key, app_secret}`; the old one stops
//! working at once on this broker (gateways cache a tenant's secret for up to a minute).

use serde::Deserialize;
use serde_json::{Value, json};

use super::records::TenantPolicy;
use super::records::TenantRecord;
use super::{ImError, ImService, random_hex};

/// The ceiling of `upload_max_file_bytes` (the gateway's own bound on a device upload).
pub const MAX_UPLOAD_FILE: u64 = 20 * 1024 * 1024;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Changes {
    upload_bytes_per_hour: Option<u64>,
    upload_files_per_hour: Option<u32>,
    upload_max_file_bytes: Option<u64>,
}

#[derive(Deserialize)]
struct Owned {
    account: String,
    tenant: u64,
}

#[derive(Deserialize)]
struct TenantSettings {
    account: String,
    tenant: u64,
    #[serde(default)]
    set: Option<Changes>,
}

/// The settings a developer account sees (`check_token` gives the gateway the same).
pub(super) fn settings_json(p: &TenantPolicy) -> Value {
    json!({
        "upload_bytes_per_hour": p.upload_bytes_per_hour,
        "upload_files_per_hour": p.upload_files_per_hour,
        "upload_max_file_bytes": p.upload_max_file_bytes,
    })
}

impl ImService {
    /// `tenant_settings`.
    pub(super) async fn tenant_settings(&self, payload: &[u8]) -> Result<Value, ImError> {
        let r: TenantSettings = serde_json::from_slice(payload)
            .map_err(|e| ImError::BadRequest(format!("invalid JSON: {e}")))?;
        let t = self.owned_tenant(&r.account, r.tenant)?;
        let Some(c) = r.set else {
            return Ok(settings_json(&t.policy));
        };
        if let Some(n) = c.upload_max_file_bytes
            && !(1..=MAX_UPLOAD_FILE).contains(&n)
        {
            return Err(ImError::BadRequest(format!(
                "upload_max_file_bytes must be 1..={MAX_UPLOAD_FILE}"
            )));
        }
        let mut policy = t.policy.clone();
        if let Some(n) = c.upload_bytes_per_hour {
            policy.upload_bytes_per_hour = n;
        }
        if let Some(n) = c.upload_files_per_hour {
            policy.upload_files_per_hour = n;
        }
        if let Some(n) = c.upload_max_file_bytes {
            policy.upload_max_file_bytes = n;
        }
        let out = settings_json(&policy);
        self.set_policy(r.tenant, policy).await?;
        tracing::info!(tenant = r.tenant, account = %r.account, settings = %out, "tenant settings changed");
        Ok(out)
    }

    /// `rotate_secret`.
    pub(super) async fn rotate_own_secret(&self, payload: &[u8]) -> Result<Value, ImError> {
        let r: Owned = serde_json::from_slice(payload)
            .map_err(|e| ImError::BadRequest(format!("invalid JSON: {e}")))?;
        let t = self.owned_tenant(&r.account, r.tenant)?;
        let secret = random_hex(16)?;
        let s = secret.clone();
        self.update_tenant(r.tenant, move |t| t.app_secret = s)
            .await?;
        tracing::info!(tenant = r.tenant, account = %r.account, "tenant app secret rotated by its account");
        Ok(json!({ "app_key": t.app_key, "app_secret": secret }))
    }

    /// Tenant `tid` if developer account `account` owns it (else 404, as for no tenant).
    fn owned_tenant(
        &self,
        account: &str,
        tid: u64,
    ) -> Result<std::sync::Arc<TenantRecord>, ImError> {
        let t = self.tenant(tid)?;
        if t.account != account {
            return Err(ImError::NotFound(format!("tenant {tid}")));
        }
        Ok(t)
    }
}
