//! vivo push server API. Auth: `POST {base}/message/auth` (JSON `appId`, `appKey`,
//! `timestamp` in ms, `sign` = lower-case hex MD5 of appId + appKey + timestamp +
//! appSecret) answers an `authToken` valid a day (cached 23 hours). Send: `POST
//! {base}/message/send` with the `authToken` header and JSON `{appId, regId, notifyType,
//! title, content, timeToLive, skipType: 1 (open the app), networkType: -1, classification:
//! 1 (a system message: IM, not marketing), requestId, clientCustomMap}`; `notifyType` 4
//! (ring and vibrate), 1 (neither) in quiet hours. Answers `{result, desc}`: `0` sent; an
//! error about the authToken (`10000`, or `desc` naming it) re-authenticates and retries;
//! an error naming the regId (`desc`) removes the token; `10070` / `10071` (the day's
//! quota, sending too fast) and HTTP 5xx / 429 retry; anything else fails.

use md5::Digest as _;
use serde::Deserialize;
use serde_json::{Value, json};

use super::https::{Https, post};
use super::provider::{
    Attempt, Device, Notification, Outcome, PushProvider, redacted_debug, unix_ms,
};
use super::signed_auth::{DayToken, code_of, exchange, otherwise, retry};

/// A tenant's vivo credentials (`push/credentials/set {vivo: {...}}`).
#[derive(Deserialize)]
pub struct VivoCredentials {
    pub app_id: String,
    pub app_key: String,
    pub app_secret: String,
}

redacted_debug!(VivoCredentials { app_id, app_key } secret { app_secret });

/// vivo push for one tenant.
pub struct Vivo {
    c: VivoCredentials,
    base: String,
    http: Https,
    token: DayToken,
}

impl Vivo {
    pub fn new(c: VivoCredentials, base: &str, http: Https) -> Vivo {
        Vivo {
            c,
            base: base.trim_end_matches('/').to_owned(),
            http,
            token: DayToken::default(),
        }
    }

    /// The app id as vivo's API types it (a number), or as given.
    fn app_id(&self) -> Value {
        self.c
            .app_id
            .parse::<u64>()
            .map_or_else(|_| Value::from(self.c.app_id.clone()), Value::from)
    }

    async fn auth_token(&self) -> Result<String, Outcome> {
        let make = || {
            let ts = unix_ms();
            let c = &self.c;
            let sign = md5::Md5::digest(
                format!(
                    "{}{}{ts}{}",
                    c.app_id.trim(),
                    c.app_key.trim(),
                    c.app_secret.trim()
                )
                .as_bytes(),
            );
            let body = json!({"appId": self.app_id(), "appKey": c.app_key, "timestamp": ts,
                "sign": crate::native::auth::hex(&sign)});
            let url = format!("{}/message/auth", self.base);
            post(&url, "application/json", &[], body.to_string().into())
        };
        let pick = |v: &Value| {
            let t = v["authToken"].as_str()?;
            (code_of(&v["result"]) == "0").then(|| t.to_owned())
        };
        self.token.get(&self.http, "vivo", make, pick).await
    }

    async fn attempt(&self, d: &Device, n: &Notification) -> Outcome {
        let token = match self.auth_token().await {
            Ok(t) => t,
            Err(o) => return o,
        };
        // Unique per message and device, the same across retries (vivo drops repeats).
        let rid = ring::digest::digest(
            &ring::digest::SHA256,
            format!("{}\n{}", n.job_id, d.token).as_bytes(),
        );
        let body = json!({
            "appId": self.app_id(), "regId": d.token,
            "notifyType": if n.silent { 1 } else { 4 },
            "title": n.title, "content": n.display_body(),
            "timeToLive": 86400, "skipType": 1, "networkType": -1, "classification": 1,
            "requestId": crate::native::auth::hex(&rid.as_ref()[..16]),
            "clientCustomMap": {"conversation": n.conversation, "seq": n.seq.to_string(),
                                "job": n.job_id},
        });
        let url = format!("{}/message/send", self.base);
        let headers = [("authToken", token.clone())];
        let req = post(&url, "application/json", &headers, body.to_string().into());
        let (a, v) = match exchange(&self.http, req).await {
            Ok(x) => x,
            Err(o) => return o,
        };
        let code = code_of(&v["result"]);
        let desc = v["desc"].as_str().unwrap_or_default();
        let why = format!("vivo {} result {code}: {desc}", a.status);
        let lower = desc.to_ascii_lowercase();
        match code.as_str() {
            "0" if a.status == 200 => Outcome::Sent,
            _ if code == "10000" || lower.contains("authtoken") => self.token.rejected(&token, why),
            _ if lower.contains("regid") => Outcome::Dead(why),
            "10070" | "10071" => retry(&a, why),
            _ => otherwise(&a, why),
        }
    }
}

impl PushProvider for Vivo {
    fn vendor(&self) -> &'static str {
        "vivo"
    }

    fn send<'a>(&'a self, device: &'a Device, n: &'a Notification) -> Attempt<'a> {
        Box::pin(self.attempt(device, n))
    }
}
