//! What a push says: the tenant's notification templates and the preview switch.
//!
//! - Templates (`$im/admin/push/templates/set {tenant, templates, default_lang?}`,
//!   `templates/get {tenant}` → `{templates, default_lang}`): the tenant's title/body
//!   templates per language and message kind, kept
//!   whole as JSON in `UserMeta` under uid 0. The gateway checks their shape before it
//!   stores them (`gateway/src/push/templates.rs` owns the kinds, the placeholders and the
//!   built-in zh/en defaults); the broker only bounds their size. The push worker reads
//!   them with the tenant's credentials.
//! - The preview switch: per tenant (`hide_preview` in the tenant's policy: the broker
//!   leaves every preview out of its jobs) and per user (`$im/req/push/privacy` from the
//!   app, protobuf `PushPrivacyRequest`, or `$im/admin/push/privacy_set {tenant, user?,
//!   hide_preview}`; without `user` the tenant's switch). `push/tokens` tells the worker
//!   whether a user's previews are hidden (the tenant's switch or the user's own).

use prost::Message as _;
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_proto::im;

use super::{ImError, ImLogin, ImService};
use crate::store::{Op, Table};

/// Largest templates document.
const MAX_TEMPLATES: usize = 64 * 1024;

fn templates_key(tid: u64) -> Vec<u8> {
    [&tid.to_be_bytes()[..], &0u64.to_be_bytes(), b"pushtpl"].concat()
}

fn privacy_key(tid: u64, uid: u64) -> Vec<u8> {
    [&tid.to_be_bytes()[..], &uid.to_be_bytes(), b"pushprivacy"].concat()
}

impl ImService {
    /// Whether pushes to user `uid` hide the message preview (the tenant's switch or the
    /// user's own).
    pub fn push_hides_preview(&self, tid: u64, uid: u64) -> Result<bool, ImError> {
        if self.tenant(tid)?.policy.hide_preview {
            return Ok(true);
        }
        Ok(self
            .store
            .get(Table::UserMeta, &privacy_key(tid, uid))?
            .is_some())
    }

    async fn set_user_privacy(&self, tid: u64, uid: u64, hide: bool) -> Result<(), ImError> {
        let v = hide.then(|| serde_json::json!({ "hide_preview": true }));
        self.put_user_meta(privacy_key(tid, uid), v.as_ref()).await
    }

    /// `$im/req/push/privacy` from a device.
    pub(super) async fn push_privacy_request(
        &self,
        login: &ImLogin,
        payload: &[u8],
    ) -> Result<Vec<u8>, ImError> {
        let r = im::PushPrivacyRequest::decode(payload)
            .map_err(|e| ImError::BadRequest(format!("malformed protobuf: {e}")))?;
        self.set_user_privacy(login.tenant, login.uid, r.hide_preview)
            .await?;
        Ok(im::Ack {
            status: super::error::ok(),
        }
        .encode_to_vec())
    }

    /// `$im/admin/push/{privacy_set, privacy_get, templates/set, templates/get}`.
    pub(super) async fn push_prefs_admin(
        &self,
        op: &str,
        payload: &[u8],
    ) -> Result<Value, ImError> {
        #[derive(Deserialize)]
        struct Req {
            tenant: u64,
            #[serde(default)]
            user: String,
            #[serde(default)]
            hide_preview: Option<bool>,
            #[serde(default)]
            templates: Option<Value>,
            #[serde(default)]
            default_lang: String,
        }
        let r: Req = serde_json::from_slice(payload)
            .map_err(|e| ImError::BadRequest(format!("invalid JSON: {e}")))?;
        let tenant = self.tenant(r.tenant)?;
        let uid = self.admin_push_uid(r.tenant, &r.user)?;
        match op {
            "privacy_set" => {
                let hide = r.hide_preview.ok_or_else(|| {
                    ImError::BadRequest("hide_preview (true or false) is required".into())
                })?;
                if uid == 0 {
                    let mut policy = tenant.policy.clone();
                    policy.hide_preview = hide;
                    self.set_policy(r.tenant, policy).await?;
                } else {
                    self.set_user_privacy(r.tenant, uid, hide).await?;
                }
                Ok(json!({ "hide_preview": hide }))
            }
            "privacy_get" => {
                let own = uid != 0
                    && self
                        .store
                        .get(Table::UserMeta, &privacy_key(r.tenant, uid))?
                        .is_some();
                Ok(json!({
                    "tenant": tenant.policy.hide_preview,
                    "user": own,
                    "hide_preview": tenant.policy.hide_preview || own,
                }))
            }
            "templates/set" => {
                let t = r.templates.unwrap_or(Value::Null);
                if !t.is_object() {
                    return Err(ImError::BadRequest(
                        "templates must be an object {language: {kind: {title, body}}}".into(),
                    ));
                }
                if r.default_lang.len() > 35 {
                    return Err(ImError::BadRequest(
                        "default_lang: at most 35 characters".into(),
                    ));
                }
                let doc = json!({ "templates": t, "default_lang": r.default_lang });
                let bytes =
                    serde_json::to_vec(&doc).map_err(|e| ImError::Internal(e.to_string()))?;
                if bytes.len() > MAX_TEMPLATES {
                    return Err(ImError::BadRequest(format!(
                        "templates larger than {MAX_TEMPLATES} bytes"
                    )));
                }
                self.commit(vec![Op::Put {
                    table: Table::UserMeta,
                    key: templates_key(r.tenant),
                    value: bytes,
                }])
                .await?;
                Ok(json!({}))
            }
            "templates/get" => Ok(self
                .store
                .get(Table::UserMeta, &templates_key(r.tenant))?
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .unwrap_or_else(|| json!({ "templates": {}, "default_lang": "" }))),
            other => Err(ImError::NotFound(format!("no such request: push/{other}"))),
        }
    }
}
