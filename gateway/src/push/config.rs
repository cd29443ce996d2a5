//! The push worker's settings ([`PushConfig`]): where each provider is, how hard to try,
//! how many jobs at once, and the clock quiet hours are judged by ([`Clock`], replaceable
//! in tests).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

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
            honor_token_uri: format!("{base}/honor/token"),
            ..PushConfig::default()
        }
    }
}
