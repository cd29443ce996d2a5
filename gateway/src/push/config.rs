//! The push worker's settings ([`PushConfig`]): where each provider is, how hard to try,
//! how many jobs at once, the tenants' credentials given in the configuration file
//! ([`ConfiguredCredentials`]) and the clock quiet hours are judged by ([`Clock`],
//! replaceable in tests).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};

/// The wall clock the worker reads (quiet hours); tests inject a fixed one.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> SystemTime + Send + Sync>);

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock(Arc::new(SystemTime::now))
    }

    /// A clock that always reads `t`.
    pub fn fixed(t: SystemTime) -> Clock {
        Clock(Arc::new(move || t))
    }

    /// The time now.
    pub fn now(&self) -> SystemTime {
        (self.0)()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}

/// Push credentials from the configuration file (`[gateway.push.tenants.ID.VENDOR]`, the
/// files already read): by tenant, vendor → that vendor's credentials object, the JSON
/// `push/credentials/set` takes. They win over the stored ones vendor by vendor (the REST
/// API and the console refuse to change them), and they are never written to the store.
/// Its `Debug` names tenants and vendors only.
#[derive(Clone, Default)]
pub struct ConfiguredCredentials(BTreeMap<u64, Map<String, Value>>);

impl ConfiguredCredentials {
    /// Adds (or replaces) `vendor`'s credentials of `tenant`.
    pub fn insert(&mut self, tenant: u64, vendor: &str, credentials: Value) {
        self.0
            .entry(tenant)
            .or_default()
            .insert(vendor.to_owned(), credentials);
    }

    /// The vendors `tenant` has credentials for in the configuration.
    pub fn vendors(&self, tenant: u64) -> Vec<String> {
        self.0
            .get(&tenant)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Every (tenant, vendor, credentials).
    pub fn iter(&self) -> impl Iterator<Item = (u64, &str, &Value)> {
        self.0
            .iter()
            .flat_map(|(t, m)| m.iter().map(move |(v, c)| (*t, v.as_str(), c)))
    }

    /// `stored` (a tenant's credentials object from the store) with the configured vendors
    /// of `tenant` put over it.
    pub fn overlay(&self, tenant: u64, stored: &mut Value) {
        let Some(mine) = self.0.get(&tenant) else {
            return;
        };
        if !stored.is_object() {
            *stored = Value::Object(Map::new());
        }
        if let Some(o) = stored.as_object_mut() {
            for (vendor, c) in mine {
                o.insert(vendor.clone(), c.clone());
            }
        }
    }
}

impl std::fmt::Debug for ConfiguredCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(
                self.0
                    .iter()
                    .map(|(t, m)| (t, m.keys().collect::<Vec<_>>())),
            )
            .finish()
    }
}

/// Where the providers are and how hard to try.
#[derive(Debug, Clone)]
pub struct PushConfig {
    /// Run the worker at all.
    pub enabled: bool,
    pub apns_production: String,
    pub apns_sandbox: String,
    pub fcm_base: String,
    /// Overrides the service account's `token_uri` (empty: the account's).
    pub fcm_token_uri: String,
    pub huawei_base: String,
    pub huawei_token_uri: String,
    pub xiaomi_base: String,
    pub oppo_base: String,
    pub vivo_base: String,
    pub honor_base: String,
    pub meizu_base: String,
    pub honor_token_uri: String,
    /// An extra CA (PEM) to trust besides the system's roots.
    pub extra_ca_pem: Option<Vec<u8>>,
    /// Jobs handled at once per instance. A job is taken from the broker only when one of
    /// these slots is free: beyond them jobs wait in the client's bounded event queue
    /// (1024), then unacknowledged in the broker (MQTT flow control), never dropped here.
    pub max_concurrent: usize,
    /// Tries per device.
    pub max_attempts: u32,
    /// First retry delay (doubled each time, with jitter, at most 30 s).
    pub backoff: Duration,
    /// How long a tenant's credentials are cached.
    pub credentials_ttl: Duration,
    /// How long a user's devices, quiet hours and preview switch (`push/tokens`) are
    /// cached (zero: read for every job). A new token, or a changed setting, applies to
    /// pushes at most this much later; a dead token is forgotten at once.
    pub tokens_ttl: Duration,
    /// The wall clock (quiet hours).
    pub clock: Clock,
    /// Tenants' credentials from the configuration file.
    pub configured: ConfiguredCredentials,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            enabled: true,
            apns_production: "https://api.push.apple.com".into(),
            apns_sandbox: "https://api.sandbox.push.apple.com".into(),
            fcm_base: "https://fcm.googleapis.com".into(),
            fcm_token_uri: String::new(),
            huawei_base: "https://push-api.cloud.huawei.com".into(),
            huawei_token_uri: "https://oauth-login.cloud.huawei.com/oauth2/v3/token".into(),
            xiaomi_base: "https://api.xmpush.xiaomi.com".into(),
            oppo_base: "https://api.push.oppomobile.com".into(),
            vivo_base: "https://api-push.vivo.com.cn".into(),
            honor_base: "https://push-api.cloud.honor.com".into(),
            meizu_base: "https://server-api-push.meizu.com".into(),
            honor_token_uri:
                "https://iam.developer.honor.com/auth/realms/developer/protocol/openid-connect/token"
                    .into(),
            extra_ca_pem: None,
            max_concurrent: 64,
            max_attempts: 5,
            backoff: Duration::from_millis(500),
            credentials_ttl: Duration::from_secs(60),
            tokens_ttl: Duration::from_secs(2),
            clock: Clock::system(),
            configured: ConfiguredCredentials::default(),
        }
    }
}

impl PushConfig {
    /// Every provider endpoint under one base URL, laid out as the test mock serves them
    /// (`/token`, `/huawei/token`, `/honor/token` for the token endpoints): for tests and
    /// benchmarks against a local mock.
    pub fn all_at(base: &str) -> PushConfig {
        let base = base.trim_end_matches('/');
        PushConfig {
            apns_production: base.into(),
            apns_sandbox: base.into(),
            fcm_base: base.into(),
            fcm_token_uri: format!("{base}/token"),
            huawei_base: base.into(),
            huawei_token_uri: format!("{base}/huawei/token"),
            xiaomi_base: base.into(),
            oppo_base: base.into(),
            vivo_base: base.into(),
            honor_base: base.into(),
            meizu_base: base.into(),
            honor_token_uri: format!("{base}/honor/token"),
            ..PushConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_vendors_win_and_debug_shows_no_secret() {
        let mut c = ConfiguredCredentials::default();
        c.insert(7, "xiaomi", serde_json::json!({"app_secret": "S3CRET"}));
        let mut stored = serde_json::json!({"xiaomi": {"app_secret": "old"}, "fcm": {}});
        c.overlay(7, &mut stored);
        assert_eq!(stored["xiaomi"]["app_secret"], "S3CRET");
        assert!(stored["fcm"].is_object());
        let mut other = serde_json::json!({"xiaomi": {"app_secret": "old"}});
        c.overlay(8, &mut other);
        assert_eq!(other["xiaomi"]["app_secret"], "old");
        let shown = format!(
            "{:?}",
            PushConfig {
                configured: c,
                ..PushConfig::default()
            }
        );
        assert!(
            !shown.contains("S3CRET") && shown.contains("xiaomi"),
            "{shown}"
        );
    }
}
