//! OPPO PUSH server API. Auth: `POST {base}/server/v1/auth` (form `app_key`, `timestamp` in
//! ms, `sign` = hex SHA-256 of app_key + timestamp + master_secret) answers an
//! `auth_token` valid 24 hours (cached 23). Send: `POST
//! {base}/server/v1/message/notification/unicast` with the `auth_token` header and the form
//! field `message` = JSON `{target_type: 2 (registration id), target_value, notification:
//! {title, content, click_action_type: 0 (open the app), notify_level, channel_id?,
//! action_parameters}}`; `notify_level` 2 (notification bar and lock screen), 1 (the bar
//! only) in quiet hours. Answers `{code, message, data}`: `0` sent; `11` (invalid
//! auth_token) and `28` (auth_token expired) re-authenticate and retry; `-1` (service
//! unavailable), `-2` (flow control), `13` (calls too frequent) and HTTP 5xx / 429 retry;
//! `10000` (invalid registration id) or a message naming the registration id removes the
//! token; anything else fails.

use serde::Deserialize;
use serde_json::json;

use super::https::{Https, form, post};
use super::provider::{
    Attempt, Device, Notification, Outcome, PushProvider, redacted_debug, unix_ms,
};
use super::signed_auth::{DayToken, code_of, exchange, otherwise, retry};

/// A tenant's OPPO credentials (`push/credentials/set {oppo: {...}}`).
#[derive(Deserialize)]
pub struct OppoCredentials {
    pub app_key: String,
    pub master_secret: String,
    /// The app's notification channel (Android 8+), if it registered one with OPPO.
    #[serde(default)]
    pub channel_id: String,
}

redacted_debug!(OppoCredentials { app_key, channel_id } secret { master_secret });

/// OPPO PUSH for one tenant.
pub struct Oppo {
    c: OppoCredentials,
    base: String,
    http: Https,
    token: DayToken,
}

impl Oppo {
    pub fn new(c: OppoCredentials, base: &str, http: Https) -> Oppo {
        Oppo {
            c,
            base: base.trim_end_matches('/').to_owned(),
            http,
            token: DayToken::default(),
        }
    }

    async fn auth_token(&self) -> Result<String, Outcome> {
        let make = || {
            let ts = unix_ms().to_string();
            let sign = ring::digest::digest(
                &ring::digest::SHA256,
                format!("{}{ts}{}", self.c.app_key, self.c.master_secret).as_bytes(),
            );
            let sign = crate::native::auth::hex(sign.as_ref());
            let body = form(&[
                ("app_key", &self.c.app_key),
                ("sign", &sign),
                ("timestamp", &ts),
            ]);
            let url = format!("{}/server/v1/auth", self.base);
            post(&url, "application/x-www-form-urlencoded", &[], body)
        };
        let pick = |v: &serde_json::Value| {
            let t = v["data"]["auth_token"].as_str()?;
            (code_of(&v["code"]) == "0").then(|| t.to_owned())
        };
        self.token.get(&self.http, "OPPO", make, pick).await
    }

    async fn attempt(&self, d: &Device, n: &Notification) -> Outcome {
        let token = match self.auth_token().await {
            Ok(t) => t,
            Err(o) => return o,
        };
        let params = json!({"conversation": n.conversation, "seq": n.seq, "job": n.job_id});
        let mut notification = json!({
            "title": n.title, "content": n.display_body(),
            "click_action_type": 0,
            "action_parameters": params.to_string(),
            "notify_level": if n.silent { 1 } else { 2 },
        });
        if !self.c.channel_id.is_empty() {
            notification["channel_id"] = self.c.channel_id.clone().into();
        }
        let message = json!({"target_type": 2, "target_value": d.token,
            "notification": notification});
        let body = form(&[("message", &message.to_string())]);
        let url = format!("{}/server/v1/message/notification/unicast", self.base);
        let headers = [("auth_token", token.clone())];
        let req = post(&url, "application/x-www-form-urlencoded", &headers, body);
        let (a, v) = match exchange(&self.http, req).await {
            Ok(x) => x,
            Err(o) => return o,
        };
        let code = code_of(&v["code"]);
        let msg = v["message"].as_str().unwrap_or_default();
        let why = format!("OPPO {} code {code}: {msg}", a.status);
        let lower = msg.to_ascii_lowercase();
        match code.as_str() {
            "0" if a.status == 200 => Outcome::Sent,
            "11" | "28" => self.token.rejected(&token, why),
            "-1" | "-2" | "13" => retry(&a, why),
            "10000" => Outcome::Dead(why),
            _ if lower.contains("registration") || lower.contains("regid") => Outcome::Dead(why),
            _ => otherwise(&a, why),
        }
    }
}

impl PushProvider for Oppo {
    fn vendor(&self) -> &'static str {
        "oppo"
    }

    fn send<'a>(&'a self, device: &'a Device, n: &'a Notification) -> Attempt<'a> {
        Box::pin(self.attempt(device, n))
    }
}
