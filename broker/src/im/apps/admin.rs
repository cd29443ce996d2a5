//! The app-server requests on workbench apps (`$im/admin/app/{op}`, JSON): create, get,
//! list, update, delete, lookups for the gateway's dialects, notices and badges.

use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_proto::im;

use super::{
    AppFields, AppRecord, MAX_NOTICE_USERS, appkey_key, apply, check_fields, id_key, parse,
    tenant_key,
};
use crate::im::{ImError, ImService, random_hex};
use crate::store::{Op, Table};

impl ImService {
    /// `$im/admin/app/{op}`.
    pub(in crate::im) async fn app_admin(
        &self,
        op: &str,
        payload: &[u8],
    ) -> Result<Value, ImError> {
        #[derive(Deserialize)]
        struct Create {
            #[serde(default)]
            tenant: u64,
            #[serde(flatten)]
            fields: Value,
        }
        #[derive(Deserialize)]
        struct Id {
            #[serde(default)]
            tenant: u64,
            app_id: String,
        }
        #[derive(Deserialize)]
        struct Key {
            appkey: String,
        }
        #[derive(Deserialize)]
        struct Notice {
            #[serde(default)]
            tenant: u64,
            /// Or the tenant's enterprise number (imo's `cid`).
            cid: Option<u64>,
            app_id: String,
            #[serde(default)]
            users: Vec<String>,
            /// Or numeric uids (imo's `uid`).
            #[serde(default)]
            uids: Vec<u64>,
            /// And every member of these departments and their sub-departments (Youdu's
            /// `toDept`).
            #[serde(default)]
            depts: Vec<u64>,
            #[serde(default)]
            text: String,
            content: Option<Value>,
            client_msg_id: Option<String>,
        }
        #[derive(Deserialize)]
        struct SetNum {
            #[serde(default)]
            tenant: u64,
            cid: Option<u64>,
            app_id: String,
            #[serde(default)]
            user: String,
            uid: Option<u64>,
            num: Option<u64>,
        }
        match op {
            "create" => {
                let r: Create = parse(payload)?;
                let f: AppFields = serde_json::from_value(r.fields)
                    .map_err(|e| ImError::BadRequest(format!("invalid app: {e}")))?;
                Ok(self.create_app(r.tenant, f).await?.json())
            }
            "get" => {
                let r: Id = parse(payload)?;
                Ok(self.tenant_app(r.tenant, &r.app_id)?.json())
            }
            "list" => {
                let r: Create = parse(payload)?;
                let apps: Vec<Value> = self
                    .apps_of(r.tenant)?
                    .iter()
                    .map(AppRecord::json)
                    .collect();
                Ok(json!({ "apps": apps }))
            }
            "update" => {
                let r: Create = parse(payload)?;
                let mut fields = r.fields;
                let app_id = fields
                    .as_object_mut()
                    .and_then(|o| o.remove("app_id"))
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .ok_or_else(|| ImError::BadRequest("app_id is required".into()))?;
                let f: AppFields = serde_json::from_value(fields)
                    .map_err(|e| ImError::BadRequest(format!("invalid app: {e}")))?;
                check_fields(&f)?;
                let _guard = self.admin.lock().await;
                let mut app = self.app(&app_id)?;
                if app.tenant != r.tenant {
                    return Err(ImError::NotFound(format!("workbench app {app_id}")));
                }
                apply(&mut app, f);
                self.put_app(&app, false).await?;
                Ok(app.json())
            }
            "delete" => {
                let r: Id = parse(payload)?;
                let _guard = self.admin.lock().await;
                let app = self.app(&r.app_id)?;
                if app.tenant != r.tenant {
                    return Err(ImError::NotFound(format!("workbench app {}", r.app_id)));
                }
                self.commit(vec![
                    Op::Delete {
                        table: Table::Apps,
                        key: id_key(&app.app_id),
                    },
                    Op::Delete {
                        table: Table::Apps,
                        key: appkey_key(&app.appkey),
                    },
                    Op::Delete {
                        table: Table::Apps,
                        key: tenant_key(app.tenant, &app.app_id),
                    },
                ])
                .await?;
                Ok(json!({}))
            }
            "get_any" => {
                // imo and Youdu name an app by id alone (for the gateway: the key included).
                let r: Id = parse(payload)?;
                self.app_for_gateway(&self.app(&r.app_id)?)
            }
            "by_key" => {
                let r: Key = parse(payload)?;
                self.app_for_gateway(&self.app_by_key(&r.appkey)?)
            }
            "notice" => {
                let mut r: Notice = parse(payload)?;
                if let Some(cid) = r.cid {
                    r.tenant = self.compat_tenant(cid)?;
                }
                for uid in std::mem::take(&mut r.uids) {
                    match self.account_of(r.tenant, uid)? {
                        Some(a) => r.users.push(a),
                        None => return Err(ImError::NotFound(format!("uid {uid}"))),
                    }
                }
                let app = self.tenant_app(r.tenant, &r.app_id)?;
                if !r.depts.is_empty() {
                    r.users.extend(self.dept_accounts(r.tenant, &r.depts)?);
                    r.users.sort();
                    r.users.dedup();
                }
                let content = match r.content {
                    Some(c) => crate::im::json::content_from_json(&c)?,
                    None if r.text.is_empty() => {
                        return Err(ImError::BadRequest("text or content is required".into()));
                    }
                    None => im::Content {
                        body: Some(im::content::Body::Text(im::Text { text: r.text })),
                    },
                };
                if r.users.is_empty() || r.users.len() > MAX_NOTICE_USERS {
                    return Err(ImError::BadRequest(format!(
                        "a notice goes to 1..={MAX_NOTICE_USERS} users"
                    )));
                }
                let base = match r.client_msg_id {
                    Some(id) => id,
                    None => random_hex(8)?,
                };
                let (mut sent, mut unknown) = (Vec::new(), Vec::new());
                for user in &r.users {
                    let id = format!("{base}:{user}");
                    match self
                        .send_system(r.tenant, user, Some(&app.app_id), &id, content.clone())
                        .await
                    {
                        Ok(_) => sent.push(user.clone()),
                        Err(ImError::NotFound(_)) => unknown.push(user.clone()),
                        Err(e) => return Err(e),
                    }
                }
                Ok(json!({ "sent": sent, "unknown": unknown }))
            }
            "setnum" => {
                let mut r: SetNum = parse(payload)?;
                if let Some(cid) = r.cid {
                    r.tenant = self.compat_tenant(cid)?;
                }
                if let Some(uid) = r.uid {
                    r.user = self
                        .account_of(r.tenant, uid)?
                        .ok_or_else(|| ImError::NotFound(format!("uid {uid}")))?;
                }
                let app = self.tenant_app(r.tenant, &r.app_id)?;
                let unread = self
                    .lower_app_badge(r.tenant, &app.app_id, &r.user, r.num.unwrap_or(1))
                    .await?;
                Ok(json!({ "unread": unread }))
            }
            other => Err(ImError::NotFound(format!("no such request: app/{other}"))),
        }
    }
}
