//! RongCloud's push endpoints (JSON bodies, unlike the rest of its API):
//!
//! - `/user/tag/set.json` `{"userId", "tags": [...]}`: replaces a user's tags (at most 20,
//!   each at most 40 bytes), kept by the IM service per tenant (`set_tags`).
//! - `/push.json` `{platform, fromuserid?, audience: {tag?, tag_or?, userid?, is_to_all?},
//!   message?: {content, objectName}, notification: {alert, ios?: {title?, alert?},
//!   android?: {title?, alert?}}}`: the audience is `userid` when given (RongCloud: it wins
//!   over tags), otherwise the users having every `tag` and at least one `tag_or`, at most
//!   [`MAX_AUDIENCE`]. With `message` each of them receives it in their system conversation
//!   (RongCloud's stored push) and offline devices get the usual notification; without, a
//!   notification only (`push_notify`, our push worker's jobs). `is_to_all` with a message
//!   is a broadcast to everyone; a notification-only push to everyone is refused (no
//!   per-user job list for the whole tenant). `platform` (required, `ios` and/or
//!   `android`) aims the notification: users with no push token on those platforms get
//!   none, and the job names the platforms (`PushJob.platforms`) so that a user's devices
//!   on the other platform are skipped; with one platform its own `ios`/`android` alert
//!   and title win over the common `alert`. A stored `message` reaches every device of the
//!   audience (only its notification is a push).

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::State;
use axum::routing::post;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Answer, RcError, RcRequest, ok};
use crate::AppState;

/// Users one push may reach through tags (the IM service's own cap).
pub const MAX_AUDIENCE: usize = 10_000;
/// Users a push may name in `userid` (RongCloud's limit).
const MAX_USERIDS: usize = 1000;

/// The routes of this file.
pub fn routes() -> axum::Router<Arc<AppState>> {
    axum::Router::new()
        .route("/user/tag/set.json", post(set_tags))
        .route("/push.json", post(push))
}

#[derive(Deserialize)]
struct UserTag {
    #[serde(rename = "userId")]
    user_id: String,
    #[serde(default)]
    tags: Vec<String>,
}

async fn set_tags(State(s): State<Arc<AppState>>, r: RcRequest) -> Answer {
    let t: UserTag = r.json()?;
    if t.user_id.is_empty() {
        return Err(RcError::param("userId 参数为必传项 (required)"));
    }
    s.service
        .call(
            "set_tags",
            &json!({ "tenant": r.tenant.id, "user": t.user_id, "tags": t.tags }),
        )
        .await?;
    Ok(ok(json!({})))
}

#[derive(Deserialize, Default)]
struct Audience {
    #[serde(default)]
    tag: Vec<String>,
    #[serde(default)]
    tag_or: Vec<String>,
    #[serde(default)]
    userid: Vec<String>,
    #[serde(default)]
    is_to_all: bool,
}

#[derive(Deserialize, Default)]
struct PlatformNote {
    #[serde(default)]
    title: String,
    #[serde(default)]
    alert: String,
}

#[derive(Deserialize, Default)]
struct Notification {
    #[serde(default)]
    alert: String,
    #[serde(default)]
    ios: PlatformNote,
    #[serde(default)]
    android: PlatformNote,
}

#[derive(Deserialize)]
struct PushMessage {
    /// RongCloud's content JSON, as a string (or an object, which some callers send).
    content: Value,
    #[serde(rename = "objectName")]
    object_name: String,
}

#[derive(Deserialize)]
struct Push {
    #[serde(default)]
    platform: Vec<String>,
    #[serde(default)]
    fromuserid: String,
    audience: Audience,
    message: Option<PushMessage>,
    #[serde(default)]
    notification: Notification,
}

/// RongCloud's `platform`: at least one of `ios` and `android` (any case), lower-cased
/// without repeats.
fn platforms(given: &[String]) -> Result<Vec<String>, RcError> {
    let mut out: Vec<String> = Vec::new();
    for p in given {
        let p = p.trim().to_ascii_lowercase();
        if p != "ios" && p != "android" {
            return Err(RcError::param(format!(
                "platform 只能是 ios 或 android (got {p:?})"
            )));
        }
        if !out.contains(&p) {
            out.push(p);
        }
    }
    if out.is_empty() {
        return Err(RcError::param("platform 参数为必传项 (ios and/or android)"));
    }
    Ok(out)
}

/// The title and alert of a notification aimed at `platforms`: with one platform, its own
/// fields win; otherwise (or when they are empty) the common `alert`, then either
/// platform's.
fn notice_for(n: &Notification, platforms: &[String]) -> (String, String) {
    let own = match platforms {
        [p] if p == "ios" => Some(&n.ios),
        [p] if p == "android" => Some(&n.android),
        _ => None,
    };
    let first = |xs: [&String; 3]| {
        xs.into_iter()
            .find(|a| !a.is_empty())
            .cloned()
            .unwrap_or_default()
    };
    let empty = String::new();
    match own {
        Some(o) => (
            first([&o.title, &empty, &empty]),
            first([&o.alert, &n.alert, &empty]),
        ),
        None => (
            first([&n.ios.title, &n.android.title, &empty]),
            first([&n.alert, &n.ios.alert, &n.android.alert]),
        ),
    }
}

/// Accounts having the tags (`any`: one of them), every page, at most [`MAX_AUDIENCE`].
async fn tagged(
    s: &AppState,
    tenant: u64,
    tags: &[String],
    any: bool,
) -> Result<BTreeSet<String>, RcError> {
    let mut out = BTreeSet::new();
    let mut after = String::new();
    loop {
        let v = s
            .service
            .call(
                "tagged_users",
                &json!({ "tenant": tenant, "tags": tags, "any": any, "after": after }),
            )
            .await?;
        out.extend(
            v["users"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_owned),
        );
        if out.len() > MAX_AUDIENCE {
            return Err(RcError::param(format!(
                "the audience has more than {MAX_AUDIENCE} users"
            )));
        }
        match v["next"].as_str() {
            Some(n) if !n.is_empty() => after = n.to_owned(),
            _ => return Ok(out),
        }
    }
}

/// The users of a push audience (not `is_to_all`).
async fn audience(s: &AppState, tenant: u64, a: &Audience) -> Result<Vec<String>, RcError> {
    if !a.userid.is_empty() {
        if a.userid.len() > MAX_USERIDS {
            return Err(RcError::param(format!(
                "userid 数量超限 (at most {MAX_USERIDS})"
            )));
        }
        return Ok(a.userid.clone());
    }
    let all = if a.tag.is_empty() {
        None
    } else {
        Some(tagged(s, tenant, &a.tag, false).await?)
    };
    let any = if a.tag_or.is_empty() {
        None
    } else {
        Some(tagged(s, tenant, &a.tag_or, true).await?)
    };
    Ok(match (all, any) {
        (Some(x), Some(y)) => x.intersection(&y).cloned().collect(),
        (Some(x), None) | (None, Some(x)) => x.into_iter().collect(),
        (None, None) => {
            return Err(RcError::param(
                "audience needs userid, tag, tag_or or is_to_all",
            ));
        }
    })
}

async fn push(State(s): State<Arc<AppState>>, r: RcRequest) -> Answer {
    let p: Push = r.json()?;
    let platforms = platforms(&p.platform)?;
    let (title, alert) = notice_for(&p.notification, &platforms);
    let content = match &p.message {
        Some(m) => {
            let raw = match &m.content {
                Value::String(c) => c.clone(),
                other => other.to_string(),
            };
            Some(super::content::from_rongcloud(&m.object_name, &raw).map_err(RcError::param)?)
        }
        None => None,
    };
    let id = format!("{:016x}", rand::random::<u64>());
    if p.audience.is_to_all {
        let Some(content) = content else {
            return Err(RcError::param(
                "a notification-only push to everyone is not supported; name the users or tags, or send a message",
            ));
        };
        s.service
            .call(
                "broadcast/all",
                &json!({ "tenant": r.tenant.id, "from": p.fromuserid, "content": content,
                         "client_msg_id": id }),
            )
            .await?;
        return Ok(ok(json!({ "id": id })));
    }
    let users = audience(&s, r.tenant.id, &p.audience).await?;
    if users.is_empty() {
        // Nobody has these tags: nothing to do, as RongCloud answers.
        return Ok(ok(json!({ "id": id })));
    }
    match content {
        Some(content) => {
            for u in &users {
                s.service
                    .call(
                        "system_message",
                        &json!({ "tenant": r.tenant.id, "to": u, "content": content,
                                 "client_msg_id": id }),
                    )
                    .await?;
            }
        }
        None => {
            if alert.is_empty() {
                return Err(RcError::param("notification.alert 参数为必传项 (required)"));
            }
            s.service
                .call(
                    "push_notify",
                    &json!({ "tenant": r.tenant.id, "users": users, "title": title,
                             "body": alert, "from": p.fromuserid, "platforms": platforms }),
                )
                .await?;
        }
    }
    Ok(ok(json!({ "id": id })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note() -> Notification {
        Notification {
            alert: "all".into(),
            ios: PlatformNote {
                title: "iT".into(),
                alert: "iA".into(),
            },
            android: PlatformNote {
                title: String::new(),
                alert: "aA".into(),
            },
        }
    }

    #[test]
    fn one_platform_takes_its_own_alert_and_both_take_the_common_one() {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            notice_for(&note(), &v(&["ios"])),
            ("iT".into(), "iA".into())
        );
        assert_eq!(
            notice_for(&note(), &v(&["android"])),
            (String::new(), "aA".into())
        );
        assert_eq!(
            notice_for(&note(), &v(&["ios", "android"])),
            ("iT".into(), "all".into())
        );
        let bare = Notification {
            alert: "x".into(),
            ..Notification::default()
        };
        assert_eq!(
            notice_for(&bare, &v(&["android"])),
            (String::new(), "x".into())
        );
    }

    #[test]
    fn platform_is_required_and_only_ios_or_android() {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            platforms(&v(&["iOS", "android", "ios"])).ok(),
            Some(v(&["ios", "android"]))
        );
        assert!(platforms(&[]).is_err());
        assert!(platforms(&v(&["web"])).is_err());
    }
}
