//! What every push provider implements ([`PushProvider`]), what it is given
//! ([`Notification`], the device's [`Device`] token) and what it answers ([`Outcome`]).
//! A provider makes one attempt; the worker retries, removes dead tokens and records why.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::Deserialize;

/// A device's push registration, as `push/tokens` returns it.
#[derive(Debug, Clone, Deserialize)]
pub struct Device {
    pub vendor: String,
    pub token: String,
    #[serde(default)]
    pub bundle_id: String,
    #[serde(default)]
    pub sandbox: bool,
    /// The device's language (which templates apply).
    #[serde(default)]
    pub lang: String,
}

/// What to show on the device.
#[derive(Debug, Clone)]
pub struct Notification {
    pub job_id: String,
    pub title: String,
    /// Rendered from the tenant's templates for the device; empty shows a generic line.
    pub body: String,
    /// The user's unread total (none for a job of many users: the badge is left as is).
    pub badge: Option<u64>,
    /// One notification per conversation: a newer one replaces the older.
    pub collapse_key: String,
    pub conversation: String,
    pub seq: u64,
    pub from: String,
    /// Quiet hours: deliver without sound, vibration or banner (each provider's way).
    pub silent: bool,
}

/// The line shown when previews are hidden.
pub const HIDDEN_BODY: &str = "You have a new message";

impl Notification {
    /// The body to display.
    pub fn display_body(&self) -> &str {
        if self.body.is_empty() {
            HIDDEN_BODY
        } else {
            &self.body
        }
    }
}

/// The answer to one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted by the provider.
    Sent,
    /// The token is dead (unregistered, malformed, for another app): remove it.
    Dead(String),
    /// Worth another try, after at least `after` if the provider said so.
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    /// Refused for a reason retrying will not fix (bad credentials, bad payload).
    Failed(String),
}

/// `Debug` for a credentials type: its public fields as they are, its secret ones as
/// `<redacted>`, so a stray `{:?}` cannot leak a key into a log.
macro_rules! redacted_debug {
    ($t:ident { $($public:ident),* } secret { $($secret:ident),* }) => {
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($t))
                    $(.field(stringify!($public), &self.$public))*
                    $(.field(stringify!($secret), &"<redacted>"))*
                    .finish()
            }
        }
    };
}
pub(crate) use redacted_debug;

/// A future answering one attempt.
pub type Attempt<'a> = Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;

/// One push service, set up with one tenant's credentials.
pub trait PushProvider: Send + Sync {
    /// The vendor name of the tokens it serves (`apns`, `fcm`, ...).
    fn vendor(&self) -> &'static str;
    /// One attempt at delivering `n` to `device`.
    fn send<'a>(&'a self, device: &'a Device, n: &'a Notification) -> Attempt<'a>;
}

/// Retry on a transport error (connection refused, reset, timeout).
pub fn transport(e: String) -> Outcome {
    Outcome::Retry {
        reason: e,
        after: None,
    }
}

/// Posts form `body` to `url` and returns the answer to read, or the outcome when there is
/// none worth reading: a request that cannot be built fails; a transport error, HTTP 5xx
/// and 429 are retried (after the vendor's `Retry-After`). `who` names the vendor.
pub async fn post_form(
    http: &super::https::Https,
    url: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
    who: &str,
) -> Result<super::https::Answer, Outcome> {
    let req = super::https::post(url, "application/x-www-form-urlencoded", headers, body)
        .map_err(Outcome::Failed)?;
    let a = http.send(req).await.map_err(transport)?;
    if a.status >= 500 || a.status == 429 {
        return Err(Outcome::Retry {
            reason: format!("{who} HTTP {}", a.status),
            after: a.retry_after(),
        });
    }
    Ok(a)
}

/// A short, safe excerpt of an answer body for logs and traces.
pub fn excerpt(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned()
}

/// Exchanges an OAuth2 token request (`form` body) at `token_uri` for a bearer token;
/// 429 and 5xx are worth retrying, anything else without a token is a failure. `who` names
/// the endpoint in reasons.
pub async fn fetch_bearer(
    http: &super::https::Https,
    token_uri: &str,
    body: Vec<u8>,
    who: &str,
) -> Result<super::https::Bearer, Outcome> {
    let req = super::https::post(token_uri, "application/x-www-form-urlencoded", &[], body)
        .map_err(Outcome::Failed)?;
    let a = http.send(req).await.map_err(transport)?;
    if a.status >= 500 || a.status == 429 {
        return Err(Outcome::Retry {
            reason: format!("{who} token endpoint {}", a.status),
            after: a.retry_after(),
        });
    }
    super::https::Bearer::from_answer(&a.json()).ok_or_else(|| {
        Outcome::Failed(format!(
            "{who} token endpoint {}: {}",
            a.status,
            excerpt(&a.body)
        ))
    })
}

/// One tenant's cached OAuth2 bearer token at one vendor (FCM, Huawei, Honor): fetched
/// from the token endpoint when missing or near expiry, forgotten when the vendor rejects
/// it. Its `Debug` never shows the token.
#[derive(Default)]
pub struct BearerCache(parking_lot::Mutex<Option<super::https::Bearer>>);

impl BearerCache {
    /// The cached token while fresh, else a new one: `body()` makes the token request
    /// (form-encoded, signed now if need be) posted to `token_uri`; `who` names the vendor.
    pub async fn get(
        &self,
        http: &super::https::Https,
        token_uri: &str,
        who: &str,
        body: impl FnOnce() -> Result<Vec<u8>, String>,
    ) -> Result<String, Outcome> {
        if let Some(b) = self.0.lock().as_ref().filter(|b| b.fresh()) {
            return Ok(b.token.clone());
        }
        let b = fetch_bearer(http, token_uri, body().map_err(Outcome::Failed)?, who).await?;
        let token = b.token.clone();
        *self.0.lock() = Some(b);
        Ok(token)
    }

    /// The vendor refused the token: the next [`BearerCache::get`] fetches a new one, and
    /// the send is retried at once.
    pub fn rejected(&self, why: String) -> Outcome {
        *self.0.lock() = None;
        Outcome::Retry {
            reason: why,
            after: Some(Duration::ZERO),
        }
    }
}

impl std::fmt::Debug for BearerCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cached = self.0.lock().as_ref().is_some_and(|b| b.fresh());
        write!(f, "BearerCache {{ fresh: {cached} }}")
    }
}

/// Milliseconds since the Unix epoch (vendors' signed timestamps).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
