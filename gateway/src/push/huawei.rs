//! Huawei Push Kit (HMS): OAuth2 client credentials (`app_id` as client id, the app's
//! `client_secret`) at the token URI for an access token, cached until a minute before it
//! expires; then `POST {base}/v1/{app_id}/messages:send` with an android notification
//! (title, body, tag = collapse key, click action "open the app", and the launcher badge
//! when the tenant names its `badge_class`). Result codes: `80000000` sent; `80100000` (a
//! token refused) and `80300007` (all tokens invalid) mean a dead token; `80200001` /
//! `80200003` (OAuth token refused or expired) drop the cached token and retry; `81000001`
//! (internal error) and HTTP 5xx / 429 retry.

use serde::Deserialize;
use serde_json::json;

use super::https::{Https, form, post};
use super::provider::{
    Attempt, BearerCache, Device, Notification, Outcome, PushProvider, redacted_debug, transport,
};

/// A tenant's Huawei credentials (`push/credentials/set {huawei: {...}}`).
#[derive(Deserialize)]
pub struct HuaweiCredentials {
    pub app_id: String,
    pub client_secret: String,
    /// The app's launcher activity, for the badge number (none: no badge).
    #[serde(default)]
    pub badge_class: String,
}

redacted_debug!(HuaweiCredentials { app_id, badge_class } secret { client_secret });

/// Huawei Push Kit for one tenant.
pub struct Huawei {
    c: HuaweiCredentials,
    base: String,
    token_uri: String,
    http: Https,
    bearer: BearerCache,
}

impl Huawei {
    pub fn new(c: HuaweiCredentials, base: &str, token_uri: &str, http: Https) -> Huawei {
        Huawei {
            c,
            base: base.trim_end_matches('/').to_owned(),
            token_uri: token_uri.to_owned(),
            http,
            bearer: BearerCache::default(),
        }
    }

    async fn access_token(&self) -> Result<String, Outcome> {
        let body = || {
            Ok(form(&[
                ("grant_type", "client_credentials"),
                ("client_id", &self.c.app_id),
                ("client_secret", &self.c.client_secret),
            ]))
        };
        let (http, uri) = (&self.http, &self.token_uri);
        self.bearer.get(http, uri, "Huawei", body).await
    }

    async fn attempt(&self, d: &Device, n: &Notification) -> Outcome {
        let token = match self.access_token().await {
            Ok(t) => t,
            Err(o) => return o,
        };
        let mut notification = json!({
            "title": n.title, "body": n.display_body(), "tag": n.collapse_key,
            "click_action": {"type": 3},
            // Quiet hours: a low-importance notification (no sound, no banner).
            "importance": if n.silent { "LOW" } else { "NORMAL" },
            "default_sound": !n.silent,
        });
        if let Some(b) = n.badge
            && !self.c.badge_class.is_empty()
        {
            notification["badge"] = json!({"set_num": b, "class": self.c.badge_class});
        }
        let body = json!({
            "validate_only": false,
            "message": {
                "data": json!({"conversation": n.conversation, "seq": n.seq, "job": n.job_id})
                    .to_string(),
                "android": {"urgency": "HIGH", "collapse_key": -1, "notification": notification},
                "token": [d.token],
            },
        });
        let url = format!("{}/v1/{}/messages:send", self.base, self.c.app_id);
        let headers = [("authorization", format!("Bearer {token}"))];
        let req = match post(&url, "application/json", &headers, body.to_string().into()) {
            Ok(r) => r,
            Err(e) => return Outcome::Failed(e),
        };
        let a = match self.http.send(req).await {
            Ok(a) => a,
            Err(e) => return transport(e),
        };
        let v = a.json();
        let code = v["code"].as_str().unwrap_or_default();
        let why = format!("Huawei {} {code}: {}", a.status, v["msg"]);
        push_kit_outcome(code, "80000000", why, &a, &self.bearer)
    }
}

impl PushProvider for Huawei {
    fn vendor(&self) -> &'static str {
        "huawei"
    }

    fn send<'a>(&'a self, device: &'a Device, n: &'a Notification) -> Attempt<'a> {
        Box::pin(self.attempt(device, n))
    }
}

/// Maps a Push Kit answer (Huawei's, and Honor's, which kept its result codes) to an
/// outcome: `success` with HTTP 200 is sent; 80100000 / 80300007 (bad or unknown token)
/// remove the token; 80200001 / 80200003 (access token invalid or expired) drop the cached
/// token and retry at once; 81000001 (flow control), 429 and 5xx retry honouring
/// `Retry-After`.
pub(super) fn push_kit_outcome(
    code: &str,
    success: &str,
    why: String,
    a: &super::https::Answer,
    bearer: &BearerCache,
) -> Outcome {
    match code {
        c if c == success && a.status == 200 => Outcome::Sent,
        "80100000" | "80300007" => Outcome::Dead(why),
        "80200001" | "80200003" => bearer.rejected(why),
        "81000001" => Outcome::Retry {
            reason: why,
            after: a.retry_after(),
        },
        _ if a.status >= 500 || a.status == 429 => Outcome::Retry {
            reason: why,
            after: a.retry_after(),
        },
        _ => Outcome::Failed(why),
    }
}
