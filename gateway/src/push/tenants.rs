//! Each tenant's providers, made from its credentials (`push/credentials/get`), and its
//! notification templates (`push/templates/get`), both cached for
//! [`super::PushConfig::credentials_ttl`]: when the credentials are unchanged after
//! that, the provider objects (with their connections and access tokens) are kept.
//! Unusable credentials are logged by vendor and kind of problem, never their content.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};

use super::provider::PushProvider;
use super::templates::Templates;
use super::{Worker, apns, fcm, honor, https, huawei, oppo, vivo, xiaomi};

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
        let creds = self
            .service
            .call("push/credentials/get", &json!({"tenant": tenant}))
            .await
            .map_err(|e| e.to_string())?;
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
        let c = &self.cfg;
        let http = || https::Https::new(self.tls.clone());
        let mut add = |vendor: &str, r: Result<Arc<dyn PushProvider>, String>| match r {
            Ok(p) => {
                out.insert(vendor.to_owned(), p);
            }
            Err(e) => {
                tracing::warn!(target: "push", tenant, vendor, error = %e, "unusable push credentials")
            }
        };
        let given = |v: &str| creds[v].is_object();
        if given("apns") {
            add(
                "apns",
                parse(&creds["apns"]).and_then(|a| {
                    let p = apns::Apns::new(a, &c.apns_production, &c.apns_sandbox, http())?;
                    Ok(Arc::new(p) as Arc<dyn PushProvider>)
                }),
            );
        }
        if given("fcm") {
            add(
                "fcm",
                fcm::service_account(&creds["fcm"]).and_then(|sa| {
                    let p = fcm::Fcm::new(sa, &c.fcm_base, &c.fcm_token_uri, http())?;
                    Ok(Arc::new(p) as Arc<dyn PushProvider>)
                }),
            );
        }
        if given("huawei") {
            add(
                "huawei",
                parse(&creds["huawei"]).map(|h| {
                    let p = huawei::Huawei::new(h, &c.huawei_base, &c.huawei_token_uri, http());
                    Arc::new(p) as Arc<dyn PushProvider>
                }),
            );
        }
        if given("xiaomi") {
            add(
                "xiaomi",
                parse(&creds["xiaomi"]).map(|x| {
                    Arc::new(xiaomi::Xiaomi::new(x, &c.xiaomi_base, http()))
                        as Arc<dyn PushProvider>
                }),
            );
        }
        if given("oppo") {
            add(
                "oppo",
                parse(&creds["oppo"]).map(|o| {
                    Arc::new(oppo::Oppo::new(o, &c.oppo_base, http())) as Arc<dyn PushProvider>
                }),
            );
        }
        if given("vivo") {
            add(
                "vivo",
                parse(&creds["vivo"]).map(|v| {
                    Arc::new(vivo::Vivo::new(v, &c.vivo_base, http())) as Arc<dyn PushProvider>
                }),
            );
        }
        if given("honor") {
            add(
                "honor",
                parse(&creds["honor"]).map(|h| {
                    let p = honor::Honor::new(h, &c.honor_base, &c.honor_token_uri, http());
                    Arc::new(p) as Arc<dyn PushProvider>
                }),
            );
        }
        out
    }
}

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
