//! Xiaomi MiPush server API: `POST {base}/v3/message/regid`, authenticated by the header
//! `Authorization: key={app_secret}`, form-encoded (`registration_id`,
//! `restricted_package_name`, `title`, `description`, `payload`, `pass_through=0`,
//! `notify_type=-1`, `notify_id` derived from the collapse key so a conversation keeps one
//! notification, `time_to_live`). Answer `{"result": "ok", "code": 0}` means sent; a
//! token listed in `data.bad_regids`, or an error whose reason names the registration id,
//! means a dead token; HTTP 5xx / 429 are retried; other errors are failures. (MIUI counts
//! the badge itself from the notifications shown, so no badge field is sent.)

use serde::Deserialize;
use serde_json::json;

use super::https::{Https, form};
use super::provider::{
    Attempt, Device, Notification, Outcome, PushProvider, post_form, redacted_debug,
};

/// Time to live of a notification on Xiaomi's servers (ms).
const TTL_MS: &str = "86400000";

/// A tenant's Xiaomi credentials (`push/credentials/set {xiaomi: {...}}`).
#[derive(Deserialize)]
pub struct XiaomiCredentials {
    pub app_secret: String,
    /// The Android package (when the token has no bundle id).
    #[serde(default)]
    pub package_name: String,
}

redacted_debug!(XiaomiCredentials { package_name } secret { app_secret });

/// Xiaomi MiPush for one tenant.
pub struct Xiaomi {
    c: XiaomiCredentials,
    base: String,
    http: Https,
}

impl Xiaomi {
    pub fn new(c: XiaomiCredentials, base: &str, http: Https) -> Xiaomi {
        Xiaomi {
            c,
            base: base.trim_end_matches('/').to_owned(),
            http,
        }
    }

    async fn attempt(&self, d: &Device, n: &Notification) -> Outcome {
        let package = if d.bundle_id.is_empty() {
            &self.c.package_name
        } else {
            &d.bundle_id
        };
        let digest = ring::digest::digest(&ring::digest::SHA256, n.collapse_key.as_bytes());
        let notify_id = u32::from_be_bytes([0, 0, digest.as_ref()[0], digest.as_ref()[1]]);
        let payload = json!({"conversation": n.conversation, "seq": n.seq, "job": n.job_id});
        let (payload, notify_id) = (payload.to_string(), notify_id.to_string());
        let body = form(&[
            ("registration_id", &d.token),
            ("restricted_package_name", package),
            ("title", &n.title),
            ("description", n.display_body()),
            ("payload", &payload),
            ("pass_through", "0"),
            // -1: sound, vibration and light; quiet hours: light only (4).
            ("notify_type", if n.silent { "4" } else { "-1" }),
            ("notify_id", &notify_id),
            ("time_to_live", TTL_MS),
        ]);
        let url = format!("{}/v3/message/regid", self.base);
        let headers = [("authorization", format!("key={}", self.c.app_secret))];
        let a = match post_form(&self.http, &url, &headers, body, "Xiaomi").await {
            Ok(a) => a,
            Err(o) => return o,
        };
        let v = a.json();
        let bad = v["data"]["bad_regids"].as_str().unwrap_or_default();
        let reason = v["reason"].as_str().unwrap_or_default();
        let why = format!("Xiaomi {} code {}: {reason}", a.status, v["code"]);
        if bad.split(',').any(|t| t.trim() == d.token) {
            return Outcome::Dead(why);
        }
        if v["result"] == "ok" && v["code"] == 0 {
            return Outcome::Sent;
        }
        let r = reason.to_ascii_lowercase();
        if r.contains("regid") || r.contains("registration") {
            Outcome::Dead(why)
        } else {
            Outcome::Failed(why)
        }
    }
}

impl PushProvider for Xiaomi {
    fn vendor(&self) -> &'static str {
        "xiaomi"
    }

    fn send<'a>(&'a self, device: &'a Device, n: &'a Notification) -> Attempt<'a> {
        Box::pin(self.attempt(device, n))
    }
}
