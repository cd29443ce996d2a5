//! Firebase Cloud Messaging, HTTP v1 API. The tenant's service-account JSON gives the
//! project, the client email, the RSA key and the token URI; an RS256 JWT (scope
//! `firebase.messaging`, audience the token URI) is exchanged there for an OAuth2 access
//! token (grant `urn:ietf:params:oauth:grant-type:jwt-bearer`), cached until a minute before
//! it expires. Sends `POST {base}/v1/projects/{project}/messages:send` with a notification,
//! data, and android (collapse key, tag, notification count) and apns (collapse id, badge)
//! overrides. `UNREGISTERED`, and `INVALID_ARGUMENT` about the token, mean a dead token;
//! `QUOTA_EXCEEDED` (429), `UNAVAILABLE` (503) and `INTERNAL` (500) are retried honouring
//! `Retry-After`; a 401 drops the cached access token and retries.

use serde::Deserialize;
use serde_json::{Value, json};

use super::https::{Https, form, post};
use super::jwt::Rs256;
use super::provider::{
    Attempt, BearerCache, Device, Notification, Outcome, PushProvider, redacted_debug, transport,
};
use crate::native::auth::unix_now;

/// The OAuth2 scope for sending.
pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

/// The fields of a Google service-account JSON that matter here.
#[derive(Deserialize)]
pub struct ServiceAccount {
    pub project_id: String,
    pub private_key: String,
    pub client_email: String,
    #[serde(default)]
    pub token_uri: String,
}

redacted_debug!(ServiceAccount { project_id, client_email, token_uri } secret { private_key });

/// A tenant's FCM credentials: `{service_account_json: "<the JSON, as a string or object>"}`.
pub fn service_account(c: &Value) -> Result<ServiceAccount, String> {
    let sa = &c["service_account_json"];
    // Errors name the kind and place of the problem, never quote the (secret) content.
    let why = |e: serde_json::Error| {
        format!(
            "service account: {:?} error at line {} column {}",
            e.classify(),
            e.line(),
            e.column()
        )
    };
    let v = match sa {
        Value::String(s) => serde_json::from_str(s).map_err(why)?,
        Value::Object(_) => sa.clone(),
        _ => return Err("fcm: service_account_json is required".into()),
    };
    serde_json::from_value(v).map_err(why)
}

/// FCM for one tenant.
pub struct Fcm {
    key: Rs256,
    account: ServiceAccount,
    token_uri: String,
    base: String,
    http: Https,
    bearer: BearerCache,
}

impl Fcm {
    /// `token_uri` overrides the account's (empty: the account's, else Google's).
    pub fn new(
        account: ServiceAccount,
        base: &str,
        token_uri: &str,
        http: Https,
    ) -> Result<Fcm, String> {
        let token_uri = [token_uri, &account.token_uri]
            .into_iter()
            .find(|u| !u.is_empty())
            .unwrap_or("https://oauth2.googleapis.com/token")
            .to_owned();
        Ok(Fcm {
            key: Rs256::from_pem(&account.private_key)?,
            account,
            token_uri,
            base: base.trim_end_matches('/').to_owned(),
            http,
            bearer: BearerCache::default(),
        })
    }

    async fn access_token(&self) -> Result<String, Outcome> {
        let body = || {
            let now = unix_now();
            let assertion = self.key.sign(
                &json!({"alg": "RS256", "typ": "JWT"}),
                &json!({"iss": self.account.client_email, "scope": SCOPE,
                        "aud": self.token_uri, "iat": now, "exp": now + 3600}),
            )?;
            Ok(form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", &assertion),
            ]))
        };
        let (http, uri) = (&self.http, &self.token_uri);
        self.bearer.get(http, uri, "FCM", body).await
    }

    async fn attempt(&self, d: &Device, n: &Notification) -> Outcome {
        let token = match self.access_token().await {
            Ok(t) => t,
            Err(o) => return o,
        };
        let mut body = json!({"message": {
            "token": d.token,
            "notification": {"title": n.title, "body": n.display_body()},
            "data": {"conversation": n.conversation, "seq": n.seq.to_string(), "job": n.job_id},
            "android": {
                "collapse_key": n.collapse_key,
                "priority": "high",
                "notification": {"tag": n.collapse_key},
            },
            "apns": {
                "headers": {"apns-collapse-id": n.collapse_key},
                "payload": {"aps": {}},
            },
        }});
        let m = &mut body["message"];
        if n.silent {
            // Quiet hours: listed, but no sound or heads-up (Android), passive (iOS).
            m["android"]["notification"]["notification_priority"] = "PRIORITY_MIN".into();
            m["apns"]["payload"]["aps"]["interruption-level"] = "passive".into();
        } else {
            m["android"]["notification"]["default_sound"] = true.into();
            m["apns"]["payload"]["aps"]["sound"] = "default".into();
        }
        if let Some(b) = n.badge {
            m["data"]["badge"] = b.to_string().into();
            m["android"]["notification"]["notification_count"] = b.into();
            m["apns"]["payload"]["aps"]["badge"] = b.into();
        }
        let url = format!(
            "{}/v1/projects/{}/messages:send",
            self.base, self.account.project_id
        );
        let headers = [("authorization", format!("Bearer {token}"))];
        let req = match post(&url, "application/json", &headers, body.to_string().into()) {
            Ok(r) => r,
            Err(e) => return Outcome::Failed(e),
        };
        let a = match self.http.send(req).await {
            Ok(a) => a,
            Err(e) => return transport(e),
        };
        if a.status == 200 {
            return Outcome::Sent;
        }
        let v = a.json();
        let status = v["error"]["status"].as_str().unwrap_or_default();
        let code = error_code(&v).unwrap_or(status).to_owned();
        let message = v["error"]["message"].as_str().unwrap_or_default();
        let why = format!("FCM {}: {code} {message}", a.status);
        match code.as_str() {
            "UNREGISTERED" => Outcome::Dead(why),
            "INVALID_ARGUMENT" if message.to_ascii_lowercase().contains("token") => {
                Outcome::Dead(why)
            }
            "QUOTA_EXCEEDED" | "UNAVAILABLE" | "INTERNAL" => Outcome::Retry {
                reason: why,
                after: a.retry_after(),
            },
            _ if a.status == 401 => self.bearer.rejected(why),
            _ if a.status >= 500 || a.status == 429 => Outcome::Retry {
                reason: why,
                after: a.retry_after(),
            },
            _ => Outcome::Failed(why),
        }
    }
}

/// The FCM error code in `error.details[].errorCode`.
fn error_code(v: &Value) -> Option<&str> {
    v["error"]["details"]
        .as_array()?
        .iter()
        .find_map(|d| d["errorCode"].as_str())
}

impl PushProvider for Fcm {
    fn vendor(&self) -> &'static str {
        "fcm"
    }

    fn send<'a>(&'a self, device: &'a Device, n: &'a Notification) -> Attempt<'a> {
        Box::pin(self.attempt(device, n))
    }
}
