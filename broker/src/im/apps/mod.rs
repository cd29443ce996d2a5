//! Workbench apps [Youdu 企业应用, imo 集成应用, sipsys 轻应用] (seeds 000, 002, 004): apps a
//! tenant registers for its users (or the platform operator for several tenants), each
//! with a numeric app id, an appkey (unique across the deployment) and an EncodingAESKey.
//! They send messages and notices to users (conversation `a:{app_id}:{uid}`, with an
//! unread badge per app, see `messaging::send_system`), and users' clients list the apps
//! visible to them with their badges.
//!
//! App-server requests `$im/admin/app/{op}` (JSON): `create`, `get`, `list`, `update`,
//! `delete`, `by_key`, `notice` (a message to users, badge +1), `setnum` (badge −num). Client
//! request `$im/req/app/list` (protobuf `WorkbenchRequest` → `WorkbenchResponse`).
//!
//! Files: this one (records, validation, storage, badges, the workbench list), [`admin`]
//! (the app-server ops), [`sso`] (auto-login parameters filled for the user).

mod admin;
mod sso;

use prost::Message as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use switchboard_proto::im;

use super::keys::{self, ConvId};
use super::{ImError, ImLogin, ImService, now_ms, random_hex};
use crate::store::{Op, OpResult, Table};

/// Counter key of app ids.
const APP_COUNTER: &[u8] = b"app";
/// First app id (ids are numeric strings: imo's `app_id`, Youdu's `appId`).
const FIRST_APP_ID: u64 = 100;
/// Most users one notice reaches (departments included).
const MAX_NOTICE_USERS: usize = 10_000;
/// Most apps one tenant registers.
const MAX_APPS_PER_TENANT: usize = 500;

/// How an app opens on one platform.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlatformEntry {
    /// A web app: its URL.
    pub web_url: String,
    /// Open the URL in the system browser rather than the embedded one.
    pub external_browser: bool,
    /// A native app: how to launch it and where to get it.
    pub launch_path: String,
    pub download_url: String,
}

/// Who sees an app.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Visibility {
    /// "all" (default), "all_but" (everyone but the listed tenants), "only" (the listed
    /// tenants, departments and users).
    pub mode: String,
    pub tenants: Vec<u64>,
    pub departments: Vec<u64>,
    pub users: Vec<String>,
}

/// A workbench app as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AppRecord {
    pub app_id: String,
    /// Owner tenant; 0: the platform operator's (visible per `visibility`).
    pub tenant: u64,
    pub name: String,
    /// 4–20 letters.
    pub identifier: String,
    pub appkey: String,
    /// 43 characters of base64 (32 bytes once decoded): Youdu's message encryption key.
    pub encoding_aes_key: String,
    /// "enterprise", "system" or "custom".
    pub kind: String,
    pub group: String,
    pub category: String,
    pub icon_url: String,
    /// The icon uploaded through the gateway (a file id of its file store); when set,
    /// clients get a signed link to it instead of `icon_url`.
    pub icon_file: String,
    /// Per platform ("pc", "android", "ios", "web").
    pub platforms: std::collections::BTreeMap<String, PlatformEntry>,
    pub user_deletable: bool,
    /// Auto-login parameters appended to the URL, e.g. `&account={account}&token={token}`.
    pub sso_template: String,
    pub visibility: Visibility,
    pub created_ms: u64,
}

impl Default for AppRecord {
    fn default() -> Self {
        AppRecord {
            app_id: String::new(),
            tenant: 0,
            name: String::new(),
            identifier: String::new(),
            appkey: String::new(),
            encoding_aes_key: String::new(),
            kind: "enterprise".into(),
            group: String::new(),
            category: String::new(),
            icon_url: String::new(),
            icon_file: String::new(),
            platforms: Default::default(),
            user_deletable: true,
            sso_template: String::new(),
            visibility: Visibility::default(),
            created_ms: 0,
        }
    }
}

/// The editable part of an app (create and update).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppFields {
    name: Option<String>,
    identifier: Option<String>,
    kind: Option<String>,
    group: Option<String>,
    category: Option<String>,
    icon_url: Option<String>,
    icon_file: Option<String>,
    platforms: Option<std::collections::BTreeMap<String, PlatformEntry>>,
    user_deletable: Option<bool>,
    sso_template: Option<String>,
    visibility: Option<Visibility>,
}

/// The width of an app name as the seeds count it: two Latin letters (or digits) count
/// as one character, anything else (CJK) as one.
pub fn name_width(name: &str) -> f64 {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { 0.5 } else { 1.0 })
        .sum()
}

fn check_fields(f: &AppFields) -> Result<(), ImError> {
    if let Some(n) = &f.name {
        let w = name_width(n);
        if !(2.0..=10.0).contains(&w) || n.trim() != n {
            return Err(ImError::BadRequest(
                "app name must be 2–10 characters (two Latin letters count as one)".into(),
            ));
        }
    }
    if let Some(i) = &f.identifier
        && (!(4..=20).contains(&i.len()) || !i.chars().all(|c| c.is_ascii_alphabetic()))
    {
        return Err(ImError::BadRequest(
            "identifier must be 4–20 letters".into(),
        ));
    }
    if let Some(k) = &f.kind
        && !["enterprise", "system", "custom"].contains(&k.as_str())
    {
        return Err(ImError::BadRequest(
            "kind must be enterprise, system or custom".into(),
        ));
    }
    if let Some(p) = &f.platforms
        && let Some(bad) = p
            .keys()
            .find(|k| !["pc", "android", "ios", "web"].contains(&k.as_str()))
    {
        return Err(ImError::BadRequest(format!(
            "unknown platform {bad:?} (pc, android, ios, web)"
        )));
    }
    if let Some(v) = &f.visibility
        && !["", "all", "all_but", "only"].contains(&v.mode.as_str())
    {
        return Err(ImError::BadRequest(
            "visibility.mode must be all, all_but or only".into(),
        ));
    }
    if let Some(id) = &f.icon_file
        && !(id.is_empty() || (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())))
    {
        return Err(ImError::BadRequest(
            "icon_file must be a file id (64 hex digits) or empty".into(),
        ));
    }
    let long = [&f.group, &f.category, &f.icon_url, &f.sso_template]
        .into_iter()
        .flatten()
        .any(|s| s.len() > 1024);
    if long {
        return Err(ImError::BadRequest(
            "a field is longer than 1,024 bytes".into(),
        ));
    }
    Ok(())
}

fn apply(rec: &mut AppRecord, f: AppFields) {
    macro_rules! set {
        ($($field:ident),*) => { $( if let Some(v) = f.$field { rec.$field = v; } )* };
    }
    set!(
        name,
        identifier,
        kind,
        group,
        category,
        icon_url,
        icon_file,
        platforms,
        user_deletable,
        sso_template,
        visibility
    );
}

fn parse<T: serde::de::DeserializeOwned>(p: &[u8]) -> Result<T, ImError> {
    serde_json::from_slice(p).map_err(|e| ImError::BadRequest(format!("invalid JSON: {e}")))
}

fn id_key(app_id: &str) -> Vec<u8> {
    [b"id:".as_slice(), app_id.as_bytes()].concat()
}

fn appkey_key(appkey: &str) -> Vec<u8> {
    [b"key:".as_slice(), appkey.as_bytes()].concat()
}

fn tenant_prefix(tid: u64) -> Vec<u8> {
    [b"t:".as_slice(), &tid.to_be_bytes()].concat()
}

fn tenant_key(tid: u64, app_id: &str) -> Vec<u8> {
    [tenant_prefix(tid).as_slice(), app_id.as_bytes()].concat()
}

/// 32 random bytes as the 43 characters of base64 Youdu's EncodingAESKey is (no padding).
fn new_aes_key() -> Result<String, ImError> {
    use base64ct::{Base64Unpadded, Encoding};
    let hex = random_hex(32)?;
    let bytes: Vec<u8> = (0..32)
        .filter_map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
        .collect();
    Ok(Base64Unpadded::encode_string(&bytes))
}

impl AppRecord {
    fn json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Whether user `account` of tenant `tid` (in departments `depts`) sees the app.
    pub fn visible_to(&self, tid: u64, account: &str, depts: &[u64]) -> bool {
        let v = &self.visibility;
        let listed = v.tenants.contains(&tid)
            || v.users.iter().any(|u| u == account)
            || depts.iter().any(|d| v.departments.contains(d));
        let owner_ok = self.tenant == 0 || self.tenant == tid;
        owner_ok
            && match v.mode.as_str() {
                "all_but" => !v.tenants.contains(&tid),
                "only" => listed,
                _ => true,
            }
    }
}

impl ImService {
    /// App `app_id`, 404 if there is none.
    pub fn app(&self, app_id: &str) -> Result<AppRecord, ImError> {
        let v = self
            .store
            .get(Table::Apps, &id_key(app_id))?
            .ok_or_else(|| ImError::NotFound(format!("workbench app {app_id}")))?;
        serde_json::from_slice(&v).map_err(|e| ImError::Internal(format!("corrupt app: {e}")))
    }

    /// The app with `appkey`.
    pub fn app_by_key(&self, appkey: &str) -> Result<AppRecord, ImError> {
        let id = self
            .store
            .get(Table::Apps, &appkey_key(appkey))?
            .ok_or_else(|| ImError::NotFound("unknown appkey".into()))?;
        self.app(&String::from_utf8_lossy(&id))
    }

    /// The apps of tenant `tid` (its own; platform apps are tenant 0).
    pub fn apps_of(&self, tid: u64) -> Result<Vec<AppRecord>, ImError> {
        let rows = self.store.scan(
            Table::Apps,
            &tenant_prefix(tid),
            None,
            MAX_APPS_PER_TENANT + 1,
        )?;
        let mut out = Vec::new();
        for (k, _) in rows {
            let id = String::from_utf8_lossy(&k[tenant_prefix(tid).len()..]).into_owned();
            out.push(self.app(&id)?);
        }
        Ok(out)
    }

    /// Registers an app of tenant `tid` (0: the platform's).
    async fn create_app(&self, tid: u64, f: AppFields) -> Result<AppRecord, ImError> {
        check_fields(&f)?;
        if f.name.is_none() || f.identifier.is_none() {
            return Err(ImError::BadRequest(
                "name and identifier are required".into(),
            ));
        }
        if tid != 0 {
            self.tenant(tid)?;
        }
        let _guard = self.admin.lock().await;
        if self.apps_of(tid)?.len() >= MAX_APPS_PER_TENANT {
            return Err(ImError::Conflict(format!(
                "at most {MAX_APPS_PER_TENANT} apps per tenant"
            )));
        }
        let applied = self
            .commit(vec![Op::Increment {
                table: Table::Counters,
                key: APP_COUNTER.to_vec(),
                by: 1,
            }])
            .await?;
        let Some(OpResult::Counter(n)) = applied.results.first().copied() else {
            return Err(ImError::Internal("no app id allocated".into()));
        };
        let mut rec = AppRecord {
            app_id: (FIRST_APP_ID + n - 1).to_string(),
            tenant: tid,
            appkey: random_hex(16)?,
            encoding_aes_key: new_aes_key()?,
            created_ms: now_ms(),
            ..AppRecord::default()
        };
        apply(&mut rec, f);
        self.put_app(&rec, true).await?;
        Ok(rec)
    }

    async fn put_app(&self, rec: &AppRecord, new: bool) -> Result<(), ImError> {
        let mut ops = vec![Op::Put {
            table: Table::Apps,
            key: id_key(&rec.app_id),
            value: serde_json::to_vec(rec).map_err(|e| ImError::Internal(e.to_string()))?,
        }];
        if new {
            ops.push(Op::Put {
                table: Table::Apps,
                key: appkey_key(&rec.appkey),
                value: rec.app_id.as_bytes().to_vec(),
            });
            ops.push(Op::Put {
                table: Table::Apps,
                key: tenant_key(rec.tenant, &rec.app_id),
                value: Vec::new(),
            });
        }
        self.commit(ops).await.map(|_| ())
    }

    /// The tenant of enterprise number `cid` as imo's API names it (`notice` and `setnum`
    /// with `cid`): refused (403) when the tenant turned the compat APIs off.
    pub(super) fn compat_tenant(&self, cid: u64) -> Result<u64, ImError> {
        let t = self.tenant_by_buin(cid)?;
        if !t.policy.compat_apis {
            return Err(ImError::Forbidden(format!(
                "enterprise {cid} turned the compat APIs off"
            )));
        }
        Ok(t.id)
    }

    /// The tenant whose enterprise number (Youdu `buin`, imo `cid`) is `buin`.
    pub fn tenant_by_buin(
        &self,
        buin: u64,
    ) -> Result<std::sync::Arc<super::records::TenantRecord>, ImError> {
        // Enterprise numbers are allocated as BUIN_BASE + tenant id (directory.rs).
        let unknown = || ImError::NotFound(format!("enterprise {buin}"));
        let tid = buin
            .checked_sub(super::directory::BUIN_BASE)
            .ok_or_else(unknown)?;
        let t = self.tenant(tid).map_err(|_| unknown())?;
        if t.buin != buin {
            return Err(unknown());
        }
        Ok(t)
    }

    /// App `app_id` if tenant `tid` owns it (or it is a platform app `tid` may address).
    fn tenant_app(&self, tid: u64, app_id: &str) -> Result<AppRecord, ImError> {
        let app = self.app(app_id)?;
        if app.tenant != tid && !(app.tenant == 0 && app.visible_to(tid, "", &[])) {
            return Err(ImError::NotFound(format!("workbench app {app_id}")));
        }
        Ok(app)
    }

    /// Marks `num` more of the app's messages read for the user (every device's badge goes
    /// down); returns the unread count left.
    async fn lower_app_badge(
        &self,
        tid: u64,
        app_id: &str,
        account: &str,
        num: u64,
    ) -> Result<u64, ImError> {
        let user = self
            .user(tid, account)?
            .ok_or_else(|| ImError::NotFound(format!("user {account}")))?;
        let conv = ConvId::App(app_id.to_owned(), user.uid);
        let Some(row) = self.user_conv(tid, user.uid, &conv)? else {
            return Ok(0);
        };
        let max = self.store.log_last(&keys::log(tid, &conv))?;
        let read = row.read_seq.max(row.min_seq);
        let to = read.saturating_add(num).min(max);
        if to > read {
            let login = ImLogin {
                tenant: tid,
                uid: user.uid,
                account: user.account.clone(),
                platform: "server".into(),
                token_id: String::new(),
            };
            self.read(
                &login,
                im::ReadRequest {
                    conversation: conv.to_string(),
                    seq: to,
                },
            )
            .await?;
        }
        Ok(max - to)
    }

    /// What the gateway's dialects need of an app: its key, its tenant's number and policy.
    fn app_for_gateway(&self, app: &AppRecord) -> Result<Value, ImError> {
        let (buin, compat, rate) = match app.tenant {
            0 => (0, true, 0),
            t => {
                let t = self.tenant(t)?;
                (t.buin, t.policy.compat_apis, t.policy.api_rate_per_sec)
            }
        };
        Ok(
            json!({ "app_id": app.app_id, "tenant": app.tenant, "buin": buin,
                   "name": app.name, "encoding_aes_key": app.encoding_aes_key,
                   "compat_apis": compat, "api_rate_per_sec": rate }),
        )
    }

    /// The accounts of every member of departments `depts` and their sub-departments.
    fn dept_accounts(&self, tid: u64, depts: &[u64]) -> Result<Vec<String>, ImError> {
        // One more than the bound: the caller refuses lists past it.
        self.subtree_accounts(tid, depts, MAX_NOTICE_USERS + 1)
    }

    /// `$im/req/app/{op}`: the user's workbench.
    pub(super) async fn app_request(
        &self,
        login: &ImLogin,
        op: &str,
        payload: &[u8],
    ) -> Result<Vec<u8>, ImError> {
        if op != "list" {
            return Err(ImError::NotFound(format!("no such request: app/{op}")));
        }
        let _req = im::WorkbenchRequest::decode(payload)
            .map_err(|e| ImError::BadRequest(format!("malformed protobuf: {e}")))?;
        let mut apps = Vec::new();
        let user = sso::SsoUser {
            account: &login.account,
            uid: login.uid,
            buin: self.tenant(login.tenant).map(|t| t.buin).unwrap_or(0),
        };
        let expiry = now_ms() / 1000 + sso::TICKET_SECS;
        for tid in [login.tenant, 0] {
            for a in self.apps_of(tid)? {
                // Visible to a department: to its members and those of departments below.
                let depts = self.user_dept_closure(login.tenant, &login.account)?;
                if !a.visible_to(login.tenant, &login.account, &depts) {
                    continue;
                }
                let unread = self.app_unread(login.tenant, login.uid, &a.app_id)?;
                let platform = match login.platform.as_str() {
                    "phone" | "pad" => "android",
                    "pc" => "pc",
                    _ => "web",
                };
                let mut entry = a
                    .platforms
                    .get(platform)
                    .or_else(|| a.platforms.get("ios"))
                    .cloned()
                    .unwrap_or_default();
                if !a.sso_template.is_empty() {
                    let t = sso::ticket(&a.encoding_aes_key, &a.app_id, &login.account, expiry);
                    let q = sso::fill(&a.sso_template, &user, &t.unwrap_or_default());
                    entry.web_url = sso::append(&entry.web_url, &q);
                    entry.launch_path = sso::append(&entry.launch_path, &q);
                }
                apps.push(im::WorkbenchApp {
                    app_id: a.app_id,
                    name: a.name,
                    icon_url: if a.icon_file.is_empty() {
                        a.icon_url
                    } else {
                        self.file_link(&a.icon_file)
                    },
                    group: a.group,
                    category: a.category,
                    kind: a.kind,
                    web_url: entry.web_url,
                    external_browser: entry.external_browser,
                    launch_path: entry.launch_path,
                    download_url: entry.download_url,
                    user_deletable: a.user_deletable,
                    unread,
                });
            }
        }
        Ok(im::WorkbenchResponse {
            status: super::error::ok(),
            apps,
        }
        .encode_to_vec())
    }
}

/// How long a workbench icon link works (the gateway's download links' lifetime).
const LINK_TTL_SECS: u64 = 3600;

impl ImService {
    /// The gateway's signed download path of file `id` (`/files/{id}?exp=&sig=`), valid
    /// for an hour. It must agree with the gateway's `files::UrlSigner`: key =
    /// HMAC-SHA256("switchboard files", service secret), sig = hex HMAC-SHA256(key,
    /// "{id}:{exp}"); both sides hold the service secret. No secret: no link.
    pub fn file_link(&self, id: &str) -> String {
        use ring::hmac;
        let Some(secret) = self.service_secret.as_deref() else {
            return String::new();
        };
        let k = hmac::Key::new(hmac::HMAC_SHA256, b"switchboard files");
        let key = hmac::Key::new(
            hmac::HMAC_SHA256,
            hmac::sign(&k, secret.as_bytes()).as_ref(),
        );
        let exp = crate::store::unix_now() + LINK_TTL_SECS;
        let sig: String = hmac::sign(&key, format!("{id}:{exp}").as_bytes())
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("/files/{id}?exp={exp}&sig={sig}")
    }
}

#[cfg(test)]
mod tests;
