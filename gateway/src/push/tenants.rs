//! Each tenant's providers, made from its credentials (`push/credentials/get`, with the
//! configuration file's vendors put over them, [`super::ConfiguredCredentials`]), and its
//! notification templates (`push/templates/get`), both cached for
//! [`super::PushConfig::credentials_ttl`]: when the credentials are unchanged after
//! that, the provider objects (with their connections and access tokens) are kept.
//! Unusable credentials are logged by vendor and kind of problem, never their content;
//! unusable configured ones stop the worker from starting ([`Worker::check_configured`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};

use super::provider::PushProvider;
use super::templates::Templates;
use super::{Worker, apns, fcm, honor, https, huawei, meizu, oppo, vivo, xiaomi};

/// A tenant's providers, by vendor, and its notification templates.
pub struct Providers {
    pub by_vendor: HashMap<String, Arc<dyn PushProvider>>,
    pub templates: Arc<Templates>,
    /// Digest of the credentials they were made from.
    digest: Vec<u8>,
    fetched: Instant,
}

/// A vendor's credentials object, typed. The error names the kind of problem only: serde's
/// own message may quote the offending value, which may be a secret.
fn parse<T: serde::de::DeserializeOwned>(v: &Value) -> Result<T, String> {
    serde_json::from_value(v.clone()).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => "a field is missing or has the wrong type".to_owned(),
        other => format!("malformed ({other:?})"),
    })
}

impl Worker {
    /// The tenant's providers, from cache or from its credentials.
    pub(super) async fn providers(&self, tenant: u64) -> Result<Arc<Providers>, String> {
        let cached = self.tenants.lock().get(&tenant).cloned();
        if let Some(p) = &cached
            && p.fetched.elapsed() < self.cfg.credentials_ttl
        {
            return Ok(p.clone());
        }
        let mut creds = self
            .service
            .call("push/credentials/get", &json!({"tenant": tenant}))
            .await
            .map_err(|e| e.to_string())?;
        self.cfg.configured.overlay(tenant, &mut creds);
        let digest = ring::digest::digest(&ring::digest::SHA256, creds.to_string().as_bytes())
            .as_ref()
            .to_vec();
        let by_vendor = match cached {
            // Unchanged: keep the providers (and their connections and tokens).
            Some(p) if p.digest == digest => p.by_vendor.clone(),
            _ => self.build(tenant, &creds),
        };
        let stored = self
            .service
            .call("push/templates/get", &json!({"tenant": tenant}))
            .await
            .map_err(|e| e.to_string())?;
        let p = Arc::new(Providers {
            by_vendor,
            templates: Arc::new(Templates::from_stored(&stored)),
            digest,
            fetched: Instant::now(),
        });
        self.tenants.lock().insert(tenant, p.clone());
        Ok(p)
    }

    /// Providers from a tenant's credentials; bad ones are logged (not their content).
    fn build(&self, tenant: u64, creds: &Value) -> HashMap<String, Arc<dyn PushProvider>> {
        let mut out: HashMap<String, Arc<dyn PushProvider>> = HashMap::new();
        for (vendor, c) in creds.as_object().into_iter().flatten() {
            if !c.is_object() {
                continue;
            }
            match self.provider(vendor, c) {
                Ok(Some(p)) => {
                    out.insert(vendor.clone(), p);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(target: "push", tenant, vendor, error = %e, "unusable push credentials")
                }
            }
        }
        out
    }

    /// The provider for `vendor` made from its credentials object `c` (none for a vendor
    /// this worker does not speak). The error names the kind of problem, never a value.
    fn provider(&self, vendor: &str, c: &Value) -> Result<Option<Arc<dyn PushProvider>>, String> {
        let cfg = &self.cfg;
        let http = || https::Https::new(self.tls.clone());
        let p: Arc<dyn PushProvider> = match vendor {
            "apns" => Arc::new(apns::Apns::new(
                parse(c)?,
                &cfg.apns_production,
                &cfg.apns_sandbox,
                http(),
            )?),
            "fcm" => Arc::new(fcm::Fcm::new(
                fcm::service_account(c)?,
                &cfg.fcm_base,
                &cfg.fcm_token_uri,
                http(),
            )?),
            "huawei" => Arc::new(huawei::Huawei::new(
                parse(c)?,
                &cfg.huawei_base,
                &cfg.huawei_token_uri,
                http(),
            )),
            "xiaomi" => Arc::new(xiaomi::Xiaomi::new(parse(c)?, &cfg.xiaomi_base, http())),
            "oppo" => Arc::new(oppo::Oppo::new(parse(c)?, &cfg.oppo_base, http())),
            "vivo" => Arc::new(vivo::Vivo::new(parse(c)?, &cfg.vivo_base, http())),
            "honor" => Arc::new(honor::Honor::new(
                parse(c)?,
                &cfg.honor_base,
                &cfg.honor_token_uri,
                http(),
            )),
            "meizu" => Arc::new(meizu::Meizu::new(parse(c)?, &cfg.meizu_base, http())),
            _ => return Ok(None),
        };
        Ok(Some(p))
    }

    /// Every credential of the configuration file makes a provider: else an error naming
    /// the tenant, the vendor and the kind of problem (never a value).
    pub(super) fn check_configured(&self) -> Result<(), String> {
        for (tenant, vendor, c) in self.cfg.configured.iter() {
            let why = match self.provider(vendor, c) {
                Ok(Some(_)) => continue,
                Ok(None) => format!("unknown vendor (one of {})", VENDORS.join(", ")),
                Err(e) => e,
            };
            return Err(format!(
                "push credentials of tenant {tenant}, {vendor}, in the configuration: {why}"
            ));
        }
        Ok(())
    }

    /// `stored` with this worker's configured credentials of `tenant` put over it.
    pub fn overlay_configured(&self, tenant: u64, stored: &mut Value) {
        self.cfg.configured.overlay(tenant, stored);
    }

    /// The vendors whose credentials `tenant` has in this worker's configuration file
    /// (they cannot be changed through the API).
    pub fn configured_vendors(&self, tenant: u64) -> Vec<String> {
        self.cfg.configured.vendors(tenant)
    }
}

/// The vendors this worker speaks.
pub const VENDORS: [&str; 8] = [
    "apns", "fcm", "huawei", "xiaomi", "oppo", "vivo", "honor", "meizu",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_errors_never_quote_the_credentials() {
        let bad = json!({"app_id": "1", "client_secret": 987_654_321_u64});
        let e = parse::<super::super::honor::HonorCredentials>(&bad)
            .expect_err("a number is no secret string");
        assert!(!e.contains("987654321"), "{e}");
        let missing = parse::<super::super::oppo::OppoCredentials>(&json!({"app_key": "k"}))
            .expect_err("master_secret missing");
        assert!(missing.contains("missing"), "{missing}");
    }
}
