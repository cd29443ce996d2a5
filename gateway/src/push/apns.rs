//! Apple Push Notification service, provider API: HTTP/2 over TLS to
//! `{base}/3/device/{token}` (production or sandbox host per token), token-based auth with an
//! ES256 JWT (`kid` = key id, `iss` = team id, `iat`) signed with the tenant's `.p8` key,
//! cached and re-signed every 50 minutes (Apple refuses tokens older than an hour and
//! throttles ones renewed more often than every 20 minutes) or when Apple answers 403
//! `ExpiredProviderToken`. Headers: `apns-topic` (bundle id), `apns-push-type: alert`,
//! `apns-priority: 10`, `apns-expiration` (a day), `apns-collapse-id` (the conversation, at
//! most 64 bytes). 410 `Unregistered` and 400 `BadDeviceToken` / `DeviceTokenNotForTopic`
//! mean the token is dead; 429 and 5xx are retried.

use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::json;

use super::https::{Https, post};
use super::jwt::Es256;
use super::provider::{
    Attempt, Device, Notification, Outcome, PushProvider, excerpt, redacted_debug, transport,
};
use crate::native::auth::unix_now;

/// Re-sign the provider token after this long.
const JWT_LIFE: Duration = Duration::from_secs(50 * 60);
/// How long Apple keeps a notification for an unreachable device.
const EXPIRATION: u64 = 24 * 3600;

/// A tenant's APNs credentials (`push/credentials/set {apns: {...}}`).
#[derive(Deserialize)]
pub struct ApnsCredentials {
    /// The `.p8` key's PEM text.
    pub key_p8: String,
    pub key_id: String,
    pub team_id: String,
    /// Default `apns-topic` when a token has no bundle id.
    #[serde(default)]
    pub topic: String,
}

redacted_debug!(ApnsCredentials { key_id, team_id, topic } secret { key_p8 });

/// APNs for one tenant.
pub struct Apns {
    key: Es256,
    key_id: String,
    team_id: String,
    topic: String,
    production: String,
    sandbox: String,
    http: Https,
    jwt: Mutex<Option<(String, Instant)>>,
}

impl Apns {
    pub fn new(
        c: ApnsCredentials,
        production: &str,
        sandbox: &str,
        http: Https,
    ) -> Result<Apns, String> {
        Ok(Apns {
            key: Es256::from_pem_or_der(c.key_p8.as_bytes())?,
            key_id: c.key_id,
            team_id: c.team_id,
            topic: c.topic,
            production: production.trim_end_matches('/').to_owned(),
            sandbox: sandbox.trim_end_matches('/').to_owned(),
            http,
            jwt: Mutex::new(None),
        })
    }

    /// The current provider token, signed anew when old.
    fn token(&self) -> Result<String, String> {
        let mut cached = self.jwt.lock();
        if let Some((t, at)) = cached.as_ref()
            && at.elapsed() < JWT_LIFE
        {
            return Ok(t.clone());
        }
        let t = self.key.sign(
            &json!({"alg": "ES256", "kid": self.key_id}),
            &json!({"iss": self.team_id, "iat": unix_now()}),
        )?;
        *cached = Some((t.clone(), Instant::now()));
        Ok(t)
    }

    /// Forgets the provider token (Apple said it expired): the next attempt re-signs.
    fn forget_token(&self, used: &str) {
        let mut cached = self.jwt.lock();
        if cached.as_ref().is_some_and(|(t, _)| t == used) {
            *cached = None;
        }
    }

    async fn attempt(&self, d: &Device, n: &Notification) -> Outcome {
        let jwt = match self.token() {
            Ok(t) => t,
            Err(e) => return Outcome::Failed(e),
        };
        let base = if d.sandbox {
            &self.sandbox
        } else {
            &self.production
        };
        let topic = if d.bundle_id.is_empty() {
            &self.topic
        } else {
            &d.bundle_id
        };
        let mut body = json!({
            "aps": {
                "alert": {"title": n.title, "body": n.display_body()},
                "sound": "default",
                "thread-id": n.conversation,
            },
            "conversation": n.conversation,
            "seq": n.seq,
            "job": n.job_id,
        });
        if let Some(b) = n.badge {
            body["aps"]["badge"] = b.into();
        }
        // Quiet hours: no sound, and a passive interruption level (listed, no banner).
        if n.silent
            && let Some(aps) = body["aps"].as_object_mut()
        {
            aps.remove("sound");
            aps.insert("interruption-level".into(), "passive".into());
        }
        let priority = if n.silent { "5" } else { "10" };
        let mut headers = vec![
            ("authorization", format!("bearer {jwt}")),
            ("apns-topic", topic.clone()),
            ("apns-push-type", "alert".to_owned()),
            ("apns-priority", priority.to_owned()),
            ("apns-expiration", (unix_now() + EXPIRATION).to_string()),
        ];
        if !n.collapse_key.is_empty() {
            headers.push(("apns-collapse-id", collapse_id(&n.collapse_key)));
        }
        let url = format!("{base}/3/device/{}", d.token);
        let req = match post(&url, "application/json", &headers, body.to_string().into()) {
            Ok(r) => r,
            Err(e) => return Outcome::Dead(e),
        };
        let a = match self.http.send(req).await {
            Ok(a) => a,
            Err(e) => return transport(e),
        };
        let reason = a.json()["reason"].as_str().unwrap_or_default().to_owned();
        match (a.status, reason.as_str()) {
            (200, _) => Outcome::Sent,
            (410, _) | (400, "BadDeviceToken" | "DeviceTokenNotForTopic") => {
                Outcome::Dead(format!("APNs {}: {reason}", a.status))
            }
            (403, "ExpiredProviderToken" | "InvalidProviderToken") => {
                self.forget_token(&jwt);
                Outcome::Retry {
                    reason: format!("APNs 403: {reason}, re-signing"),
                    after: Some(Duration::ZERO),
                }
            }
            (429, _) | (500..=599, _) => Outcome::Retry {
                reason: format!("APNs {}: {reason}", a.status),
                after: a.retry_after(),
            },
            (s, _) => Outcome::Failed(format!("APNs {s}: {}", excerpt(&a.body))),
        }
    }
}

/// Apple allows 64 bytes of collapse id: longer keys are replaced by a digest.
fn collapse_id(key: &str) -> String {
    if key.len() <= 64 {
        return key.to_owned();
    }
    let d = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    crate::native::auth::hex(&d.as_ref()[..16])
}

impl PushProvider for Apns {
    fn vendor(&self) -> &'static str {
        "apns"
    }

    fn send<'a>(&'a self, device: &'a Device, n: &'a Notification) -> Attempt<'a> {
        Box::pin(self.attempt(device, n))
    }
}

#[cfg(test)]
mod tests {
    use super::collapse_id;

    #[test]
    fn collapse_ids_fit_apples_limit() {
        assert_eq!(collapse_id("u:alice"), "u:alice");
        assert_eq!(collapse_id(&"x".repeat(200)).len(), 32);
    }
}
