//! Honor Push server API (Honor phones split from Huawei's services in 2020 and have their
//! own): OAuth2 client credentials (`client_id`, default the app id, and `client_secret`)
//! at the token URI for an access token, cached until a minute before it expires; then
//! `POST {base}/api/v1/{app_id}/sendMessage` with `Authorization: Bearer`, a `timestamp`
//! header (ms) and `{data, android: {ttl, notification: {title, body, tag, clickAction:
//! {type: 3} (open the app), importance, badge?}}, token: [..]}`; `importance` LOW in
//! quiet hours. Answers `{code, message, data}`: `200` sent; `80300007` (invalid tokens)
//! and `80100000` (some tokens refused) remove the token; `80200001` / `80200003` (OAuth
//! token refused or expired) renew it and retry; `81000001` (internal error), HTTP 5xx / 429
//! retry; anything else fails.

use serde::Deserialize;
use serde_json::json;

use super::https::{Https, form, post};
use super::provider::{
    Attempt, BearerCache, Device, Notification, Outcome, PushProvider, redacted_debug, transport,
    unix_ms,
};
use super::signed_auth::code_of;

/// A tenant's Honor credentials (`push/credentials/set {honor: {...}}`).
#[derive(Deserialize)]
pub struct HonorCredentials {
    pub app_id: String,
    pub client_secret: String,
    /// The OAuth client id, when it differs from the app id.
    #[serde(default)]
    pub client_id: String,
    /// The app's launcher activity, for the badge number (none: no badge).
    #[serde(default)]
    pub badge_class: String,
}

redacted_debug!(HonorCredentials { app_id, client_id, badge_class } secret { client_secret });

/// Honor Push for one tenant.
pub struct Honor {
    c: HonorCredentials,
    base: String,
    token_uri: String,
    http: Https,
    bearer: BearerCache,
}

impl Honor {
    pub fn new(c: HonorCredentials, base: &str, token_uri: &str, http: Https) -> Honor {
        Honor {
            c,
            base: base.trim_end_matches('/').to_owned(),
            token_uri: token_uri.to_owned(),
            http,
            bearer: BearerCache::default(),
        }
    }

    async fn access_token(&self) -> Result<String, Outcome> {
        let client_id = if self.c.client_id.is_empty() {
            &self.c.app_id
        } else {
            &self.c.client_id
        };
        let body = || {
            Ok(form(&[
                ("grant_type", "client_credentials"),
                ("client_id", client_id),
                ("client_secret", &self.c.client_secret),
            ]))
        };
        let (http, uri) = (&self.http, &self.token_uri);
        self.bearer.get(http, uri, "Honor", body).await
    }

    async fn attempt(&self, d: &Device, n: &Notification) -> Outcome {
        let token = match self.access_token().await {
            Ok(t) => t,
            Err(o) => return o,
        };
        let mut notification = json!({
            "title": n.title, "body": n.display_body(), "tag": n.collapse_key,
            "clickAction": {"type": 3},
            "importance": if n.silent { "LOW" } else { "NORMAL" },
        });
        if let Some(b) = n.badge
            && !self.c.badge_class.is_empty()
        {
            notification["badge"] = json!({"setNum": b, "badgeClass": self.c.badge_class});
        }
        let body = json!({
            "data": json!({"conversation": n.conversation, "seq": n.seq, "job": n.job_id})
                .to_string(),
            "android": {"ttl": "86400s", "notification": notification},
            "token": [d.token],
        });
        let url = format!("{}/api/v1/{}/sendMessage", self.base, self.c.app_id);
        let headers = [
            ("authorization", format!("Bearer {token}")),
            ("timestamp", unix_ms().to_string()),
        ];
        let req = match post(&url, "application/json", &headers, body.to_string().into()) {
            Ok(r) => r,
            Err(e) => return Outcome::Failed(e),
        };
        let a = match self.http.send(req).await {
            Ok(a) => a,
            Err(e) => return transport(e),
        };
        let v = a.json();
        let code = code_of(&v["code"]);
        let why = format!("Honor {} {code}: {}", a.status, v["message"]);
        super::huawei::push_kit_outcome(&code, "200", why, &a, &self.bearer)
    }
}

impl PushProvider for Honor {
    fn vendor(&self) -> &'static str {
        "honor"
    }

    fn send<'a>(&'a self, device: &'a Device, n: &'a Notification) -> Attempt<'a> {
        Box::pin(self.attempt(device, n))
    }
}
