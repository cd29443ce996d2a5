//! Meizu (Flyme) push server API: a notification to one device, `POST
//! {base}/garcia/api/server/push/varnished/pushByPushId`, form-encoded `appId`, `pushIds`
//! (the device's pushId), `messageJson` (the notification bar's title and content, "open
//! the app" on click with the conversation as parameters, kept offline up to a day) and
//! `sign`: the lower-case hex MD5 of every other parameter as `key=value`, keys sorted,
//! concatenated without separators, then the app secret. Answers `{code, message, value}`
//! with `code` a string: `"200"` sent, unless `value` (or `value.respTarget`) lists the
//! pushId under `110002` (invalid) or `110003` (illegal), which removes the token; `1003`
//! (server busy), `110010` (sending too fast), `500` / `1001` and HTTP 5xx / 429 retry;
//! anything else (bad sign `1006`, bad app id `110000`, blacklisted app `110009`, ...)
//! fails. Flyme draws the badge itself, so none is sent; quiet hours turn sound,
//! vibration and light off.

use md5::Digest as _;
use serde::Deserialize;
use serde_json::{Value, json};

use super::https::{Https, form};
use super::provider::{
    Attempt, Device, Notification, Outcome, PushProvider, excerpt, post_form, redacted_debug,
};
use super::signed_auth::code_of;

/// Hours a notification waits on Meizu's servers for an offline device.
const VALID_HOURS: u64 = 24;

/// Codes in an answer's `value` that list dead pushIds (invalid, illegal).
const DEAD_CODES: [&str; 2] = ["110002", "110003"];

/// A tenant's Meizu credentials (`push/credentials/set {meizu: {...}}`).
#[derive(Deserialize)]
pub struct MeizuCredentials {
    pub app_id: String,
    pub app_secret: String,
}

redacted_debug!(MeizuCredentials { app_id } secret { app_secret });

/// Meizu push for one tenant.
pub struct Meizu {
    c: MeizuCredentials,
    base: String,
    http: Https,
}

/// The `sign` of `params`: MD5 (lower-case hex) of `k=v` pairs sorted by key, then the
/// secret.
pub fn sign(params: &[(&str, &str)], secret: &str) -> String {
    let mut sorted: Vec<&(&str, &str)> = params.iter().collect();
    sorted.sort_by_key(|(k, _)| *k);
    let mut h = md5::Md5::new();
    for (k, v) in sorted {
        h.update(k.as_bytes());
        h.update(b"=");
        h.update(v.as_bytes());
    }
    h.update(secret.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

impl Meizu {
    pub fn new(c: MeizuCredentials, base: &str, http: Https) -> Meizu {
        Meizu {
            c,
            base: base.trim_end_matches('/').to_owned(),
            http,
        }
    }

    /// The notification as Meizu's `messageJson`.
    fn message(n: &Notification) -> String {
        let on = u8::from(!n.silent);
        json!({
            "noticeBarInfo": {"noticeBarType": 0, "title": n.title, "content": n.display_body()},
            "clickTypeInfo": {
                "clickType": 0,
                "parameters": {"conversation": n.conversation, "seq": n.seq.to_string(),
                               "job": n.job_id},
            },
            "pushTimeInfo": {"offLine": 1, "validTime": VALID_HOURS},
            "advanceInfo": {"notificationType": {"vibrate": on, "lights": on, "sound": on}},
        })
        .to_string()
    }

    async fn attempt(&self, d: &Device, n: &Notification) -> Outcome {
        let message = Meizu::message(n);
        let mut params = vec![
            ("appId", self.c.app_id.as_str()),
            ("pushIds", d.token.as_str()),
            ("messageJson", message.as_str()),
        ];
        let signature = sign(&params, &self.c.app_secret);
        params.push(("sign", &signature));
        let url = format!(
            "{}/garcia/api/server/push/varnished/pushByPushId",
            self.base
        );
        let a = match post_form(&self.http, &url, &[], form(&params), "Meizu").await {
            Ok(a) => a,
            Err(o) => return o,
        };
        let v = a.json();
        let code = code_of(&v["code"]);
        let why = format!(
            "Meizu {} code {code}: {}",
            a.status,
            v["message"]
                .as_str()
                .map_or_else(|| excerpt(&a.body), str::to_owned)
        );
        match code.as_str() {
            "200" if lists_dead(&v["value"], &d.token) => Outcome::Dead(why),
            "200" => Outcome::Sent,
            "500" | "1001" | "1003" | "110010" => Outcome::Retry {
                reason: why,
                after: None,
            },
            _ => Outcome::Failed(why),
        }
    }
}

/// Whether an answer's `value` lists `token` as an invalid or illegal pushId (directly, or
/// under `respTarget` as newer answers put it).
fn lists_dead(value: &Value, token: &str) -> bool {
    [value, &value["respTarget"]].iter().any(|m| {
        DEAD_CODES.iter().any(|c| {
            m[*c]
                .as_array()
                .is_some_and(|ids| ids.iter().any(|id| id.as_str() == Some(token)))
        })
    })
}

impl PushProvider for Meizu {
    fn vendor(&self) -> &'static str {
        "meizu"
    }

    fn send<'a>(&'a self, device: &'a Device, n: &'a Notification) -> Attempt<'a> {
        Box::pin(self.attempt(device, n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_sorts_the_keys_and_appends_the_secret() {
        // md5("a=1b=2c=3S") with the pairs given out of order.
        let got = sign(&[("c", "3"), ("a", "1"), ("b", "2")], "S");
        let want: String = md5::Md5::digest(b"a=1b=2c=3S")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn dead_push_ids_are_found_in_either_answer_shape() {
        let old = json!({"110003": ["p1", "p2"]});
        let new = json!({"msgId": "m", "respTarget": {"110002": ["p3"]}});
        assert!(lists_dead(&old, "p2"));
        assert!(lists_dead(&new, "p3"));
        assert!(!lists_dead(&old, "p3"));
        assert!(!lists_dead(&json!({}), "p1"));
        assert!(!lists_dead(&json!({"110010": ["p1"]}), "p1"));
    }
}
