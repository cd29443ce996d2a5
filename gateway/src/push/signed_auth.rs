//! What OPPO and vivo share: an auth token obtained with a signed timestamp (OPPO: SHA-256,
//! vivo: MD5, each vendor's own fields), valid a day and cached 23 hours; a send request
//! answered with a JSON result code; and the same handling around them (HTTP 5xx / 429
//! retried with the vendor's `Retry-After`, a rejected auth token forgotten and the send
//! retried at once with a new one). Each vendor file keeps only its own fields, signature
//! and codes.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use parking_lot::Mutex;
use serde_json::Value;

use super::https::{Answer, Https};
use super::provider::{Outcome, excerpt, transport};

/// A day-long token is renewed after this.
pub const TOKEN_LIFE: Duration = Duration::from_secs(23 * 3600);

/// A vendor's result code as text, whether it came as a number or a string.
pub fn code_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The cached auth token of one tenant's credentials at one vendor.
#[derive(Default)]
pub struct DayToken {
    slot: Mutex<Option<(String, Instant)>>,
}

impl DayToken {
    /// The token, from the cache or from the auth request `make()` builds (signed now);
    /// `pick` finds the token in the vendor's JSON answer when its result says success.
    /// `who` names the vendor in reasons.
    pub async fn get(
        &self,
        http: &Https,
        who: &str,
        make: impl FnOnce() -> Result<hyper::Request<Full<Bytes>>, String>,
        pick: impl FnOnce(&Value) -> Option<String>,
    ) -> Result<String, Outcome> {
        if let Some((t, at)) = self.slot.lock().as_ref()
            && at.elapsed() < TOKEN_LIFE
        {
            return Ok(t.clone());
        }
        let a = http
            .send(make().map_err(Outcome::Failed)?)
            .await
            .map_err(transport)?;
        if a.status >= 500 || a.status == 429 {
            return Err(Outcome::Retry {
                reason: format!("{who} auth HTTP {}", a.status),
                after: a.retry_after(),
            });
        }
        match pick(&a.json()) {
            Some(t) => {
                *self.slot.lock() = Some((t.clone(), Instant::now()));
                Ok(t)
            }
            None => Err(Outcome::Failed(format!(
                "{who} auth {}: {}",
                a.status,
                excerpt(&a.body)
            ))),
        }
    }

    /// The vendor rejected `token`: forget it (unless a newer one replaced it meanwhile)
    /// and retry at once.
    pub fn rejected(&self, token: &str, why: String) -> Outcome {
        let mut t = self.slot.lock();
        if t.as_ref().is_some_and(|(cached, _)| cached == token) {
            *t = None;
        }
        Outcome::Retry {
            reason: why,
            after: Some(Duration::ZERO),
        }
    }
}

/// Sends one push request; a transport error is worth a retry.
pub async fn exchange(
    http: &Https,
    req: Result<hyper::Request<Full<Bytes>>, String>,
) -> Result<(Answer, Value), Outcome> {
    let a = http
        .send(req.map_err(Outcome::Failed)?)
        .await
        .map_err(transport)?;
    let v = a.json();
    Ok((a, v))
}

/// What an answer whose code the vendor's table did not place means: HTTP 5xx / 429 are
/// retried (with `Retry-After`), anything else fails.
pub fn otherwise(a: &Answer, why: String) -> Outcome {
    if a.status >= 500 || a.status == 429 {
        retry(a, why)
    } else {
        Outcome::Failed(why)
    }
}

/// Retry, after the vendor's `Retry-After` if it gave one.
pub fn retry(a: &Answer, why: String) -> Outcome {
    Outcome::Retry {
        reason: why,
        after: a.retry_after(),
    }
}
