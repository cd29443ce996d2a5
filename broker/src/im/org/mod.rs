//! The organisation directory (IM part 2, seed 000): the department tree, members with
//! their details, CSV import and export, incremental directory sync for clients, and the
//! first-login password change. `docs/im/org.md` is the contract.
//!
//! Layout in the `Org` table (big-endian numbers, so one tenant's or one department's
//! records are one prefix scan):
//! - `d` tenant dept → [`DeptRecord`] (JSON);
//! - `n` tenant parent name → child dept id: the children of a department, by name (unique
//!   among siblings, which makes import paths unambiguous);
//! - `m` tenant dept uid → empty: the members of a department.
//!
//! Member details live in the user's own [`UserRecord`] (`title`, `phone`, ..., `depts`).
//! Every change appends one entry (`d`+id or `m`+uid) to the tenant's directory change log
//! (a store log, key tenant + `dir`), in the commit that makes the change: its sequence
//! number is the directory version, and `dir/sync` replays it from a client's version.
//! Online users hear `DirectoryChanged` once per burst of changes (coalesced over
//! [`COALESCE`]).
//!
//! Directory writes run one at a time under the service's admin lock (check-then-act on
//! names and accounts); reads go to the store.

mod import;
mod members;
mod sync;
mod tree;

use std::collections::HashSet;
use std::time::Duration;

use parking_lot::Mutex;
use prost::Message as _;
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_proto::QoS;
use switchboard_proto::im::{self, event::Kind};

use super::error::ok;
use super::records::UserRecord;
use super::{ImError, ImLogin, ImService};
use crate::store::{Op, Table};

pub use import::{COLUMNS, ImportReport};
pub use members::MemberInput;
pub use tree::{DeptRecord, ROOT};

/// Changes within this window reach online users as one `DirectoryChanged`.
const COALESCE: Duration = Duration::from_millis(100);

/// In-memory state of the directory.
#[derive(Debug, Default)]
pub struct Org {
    /// Tenants with a `DirectoryChanged` waiting to go out.
    pending: Mutex<HashSet<u64>>,
    /// Users (tenant, uid) whose password logins must change the password first.
    restricted: Mutex<HashSet<(u64, u64)>>,
}

/// Keys of the `Org` table and the change log.
pub(crate) mod key {
    fn key(tag: u8, tid: u64, rest: &[&[u8]]) -> Vec<u8> {
        let mut k = Vec::with_capacity(9 + rest.iter().map(|r| r.len()).sum::<usize>());
        k.push(tag);
        k.extend_from_slice(&tid.to_be_bytes());
        for r in rest {
            k.extend_from_slice(r);
        }
        k
    }

    /// A department record.
    pub fn dept(tid: u64, id: u64) -> Vec<u8> {
        key(b'd', tid, &[&id.to_be_bytes()])
    }

    /// Every department record of a tenant.
    pub fn depts(tid: u64) -> Vec<u8> {
        key(b'd', tid, &[])
    }

    /// Child `name` of department `parent` (the prefix of its children without `name`).
    pub fn child(tid: u64, parent: u64, name: &str) -> Vec<u8> {
        key(b'n', tid, &[&parent.to_be_bytes(), name.as_bytes()])
    }

    /// Member `uid` of department `dept` (the prefix of its members with `None`).
    pub fn member(tid: u64, dept: u64, uid: Option<u64>) -> Vec<u8> {
        match uid {
            Some(u) => key(b'm', tid, &[&dept.to_be_bytes(), &u.to_be_bytes()]),
            None => key(b'm', tid, &[&dept.to_be_bytes()]),
        }
    }

    /// `Counters`: the last department id of a tenant.
    pub fn dept_counter(tid: u64) -> Vec<u8> {
        let mut k = tid.to_be_bytes().to_vec();
        k.extend_from_slice(b"dept");
        k
    }

    /// The tenant's directory change log (no colon: never a conversation log's key).
    pub fn changes(tid: u64) -> Vec<u8> {
        let mut k = tid.to_be_bytes().to_vec();
        k.extend_from_slice(b"dir");
        k
    }
}

/// One entry of the change log: what changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Change {
    Dept(u64),
    Member(u64),
}

impl Change {
    fn encode(self) -> Vec<u8> {
        let (tag, id) = match self {
            Change::Dept(d) => (b'd', d),
            Change::Member(u) => (b'm', u),
        };
        let mut v = vec![tag];
        v.extend_from_slice(&id.to_be_bytes());
        v
    }

    fn decode(v: &[u8]) -> Option<Change> {
        let id = u64::from_be_bytes(v.get(1..9)?.try_into().ok()?);
        match v.first()? {
            b'd' => Some(Change::Dept(id)),
            b'm' => Some(Change::Member(id)),
            _ => None,
        }
    }

    /// The op that records it (in the commit that makes the change).
    fn op(self, tid: u64) -> Op {
        Op::Append {
            log: key::changes(tid),
            idem: None,
            value: self.encode(),
        }
    }
}

#[derive(Deserialize)]
struct Tenant {
    tenant: u64,
}

#[derive(Deserialize)]
struct NewDept {
    tenant: u64,
    name: String,
    parent: Option<u64>,
}

#[derive(Deserialize)]
struct DeptOp {
    tenant: u64,
    dept: u64,
    name: Option<String>,
    parent: Option<u64>,
}

#[derive(Deserialize)]
struct MemberOp {
    tenant: u64,
    #[serde(flatten)]
    member: MemberInput,
}

#[derive(Deserialize)]
struct RemoveMember {
    tenant: u64,
    account: String,
    /// Only from this department (default: from the directory).
    dept: Option<u64>,
}

#[derive(Deserialize)]
struct ListMembers {
    tenant: u64,
    dept: u64,
    after: Option<String>,
    limit: Option<usize>,
}

#[derive(Deserialize)]
struct Import {
    tenant: u64,
    csv: String,
    default_password: Option<String>,
    /// Import the valid rows and report the bad ones (line, reason) instead of refusing
    /// the file.
    #[serde(default)]
    skip_invalid: bool,
}

#[derive(Deserialize)]
struct Export {
    tenant: u64,
    after: Option<String>,
    limit: Option<usize>,
}

fn parse<T: serde::de::DeserializeOwned>(p: &[u8]) -> Result<T, ImError> {
    serde_json::from_slice(p).map_err(|e| ImError::BadRequest(format!("invalid JSON: {e}")))
}

fn json_err(e: serde_json::Error) -> ImError {
    ImError::Internal(e.to_string())
}

impl ImService {
    /// A client's request `$im/req/dir/{op}`.
    pub(super) async fn org_request(
        &self,
        login: &ImLogin,
        op: &str,
        payload: &[u8],
    ) -> Result<Vec<u8>, ImError> {
        fn decode<T: prost::Message + Default>(p: &[u8]) -> Result<T, ImError> {
            T::decode(p).map_err(|e| ImError::BadRequest(format!("malformed protobuf: {e}")))
        }
        Ok(match op {
            "sync" => self.dir_sync(login, decode(payload)?)?.encode_to_vec(),
            "department" => self
                .dir_department(login, decode(payload)?)?
                .encode_to_vec(),
            "me" => {
                let _: im::MeRequest = decode(payload)?;
                let user = self
                    .user(login.tenant, &login.account)?
                    .ok_or_else(|| ImError::NotFound(format!("user {}", login.account)))?;
                im::MeResponse {
                    status: ok(),
                    password_change_required: user.must_change_password,
                    member: Some(members::to_proto(&user)),
                }
                .encode_to_vec()
            }
            "change_password" => {
                let req: im::ChangePasswordRequest = decode(payload)?;
                self.change_password(login, &req.old_password, &req.new_password)
                    .await?;
                im::Ack { status: ok() }.encode_to_vec()
            }
            other => return Err(ImError::NotFound(format!("no such request: dir/{other}"))),
        })
    }

    /// The app server's request `$im/admin/dir/{op}` (JSON).
    pub(super) async fn org_admin(&self, op: &str, payload: &[u8]) -> Result<Value, ImError> {
        Ok(match op {
            "create_dept" => {
                let r: NewDept = parse(payload)?;
                let id = self
                    .create_dept(r.tenant, &r.name, r.parent.unwrap_or(ROOT))
                    .await?;
                json!({ "dept_id": id })
            }
            "update_dept" => {
                let r: DeptOp = parse(payload)?;
                let d = self
                    .update_dept(r.tenant, r.dept, r.name.as_deref(), r.parent)
                    .await?;
                serde_json::to_value(d).map_err(json_err)?
            }
            "delete_dept" => {
                let r: DeptOp = parse(payload)?;
                self.delete_dept(r.tenant, r.dept).await?;
                json!({})
            }
            "list_depts" => {
                let r: Tenant = parse(payload)?;
                json!({ "departments": self.list_depts(r.tenant)? })
            }
            "dept" => {
                let r: ListMembers = parse(payload)?;
                self.dept_page(r.tenant, r.dept, r.after.as_deref(), r.limit)?
            }
            "add_member" | "update_member" => {
                let r: MemberOp = parse(payload)?;
                let must_exist = op == "update_member";
                let u = self.set_member(r.tenant, r.member, must_exist).await?;
                json!({ "user_id": u.account, "uid": u.uid, "departments": u.depts })
            }
            "member" => {
                let r: RemoveMember = parse(payload)?;
                let u = self
                    .user(r.tenant, &r.account)?
                    .ok_or_else(|| ImError::NotFound(format!("user {}", r.account)))?;
                members::to_json(&u)
            }
            "remove_member" => {
                let r: RemoveMember = parse(payload)?;
                self.remove_member(r.tenant, &r.account, r.dept).await?;
                json!({})
            }
            "import" => {
                let r: Import = parse(payload)?;
                let report = self
                    .import_csv_with(
                        r.tenant,
                        &r.csv,
                        r.default_password.as_deref(),
                        r.skip_invalid,
                    )
                    .await?;
                serde_json::to_value(report).map_err(json_err)?
            }
            "export" => {
                let r: Export = parse(payload)?;
                let (csv, next) = self.export_csv(r.tenant, r.after.as_deref(), r.limit)?;
                json!({ "csv": csv, "next": next })
            }
            "version" => {
                let r: Tenant = parse(payload)?;
                json!({ "version": self.store.log_last(&key::changes(r.tenant))? })
            }
            other => return Err(ImError::NotFound(format!("no such request: dir/{other}"))),
        })
    }

    /// Marks a password login of user `uid` as bound to change the password first.
    pub(super) fn restrict_until_password_change(&self, tid: u64, uid: u64) {
        self.org.restricted.lock().insert((tid, uid));
    }

    /// Refuses every request but `dir/change_password` and `dir/me` of a password login
    /// that must change its password first (token logins are never restricted).
    pub(super) fn first_login_gate(&self, login: &ImLogin, op: &str) -> Result<(), ImError> {
        if login.token_id.is_empty()
            && !matches!(op, "dir/change_password" | "dir/me")
            && self
                .org
                .restricted
                .lock()
                .contains(&(login.tenant, login.uid))
        {
            return Err(ImError::Forbidden(
                "password change required: call dir/change_password first".into(),
            ));
        }
        Ok(())
    }

    /// `dir/change_password`: checks the old password, stores the new one, lifts the
    /// first-login restriction.
    async fn change_password(&self, login: &ImLogin, old: &str, new: &str) -> Result<(), ImError> {
        if new.len() < 8 || new.len() > 128 {
            return Err(ImError::BadRequest(
                "the new password must be 8..=128 bytes".into(),
            ));
        }
        if new == old {
            return Err(ImError::BadRequest(
                "the new password must differ from the old one".into(),
            ));
        }
        let hash = crate::auth::hash_password(new).map_err(|e| ImError::Internal(e.to_string()))?;
        let _guard = self.admin.lock().await;
        let mut user = self
            .user(login.tenant, &login.account)?
            .ok_or_else(|| ImError::NotFound(format!("user {}", login.account)))?;
        let matches = user.password.as_deref().is_some_and(|h| verify(h, old));
        if !matches {
            return Err(ImError::Forbidden("the old password is wrong".into()));
        }
        user.password = Some(hash);
        user.must_change_password = false;
        self.commit(vec![put_user(login.tenant, &user)?]).await?;
        self.org
            .restricted
            .lock()
            .remove(&(login.tenant, login.uid));
        Ok(())
    }

    /// Online users of tenant `tid`.
    pub(super) fn online_users(&self, tid: u64) -> Vec<u64> {
        self.online
            .lock()
            .keys()
            .filter(|(t, _)| *t == tid)
            .map(|(_, u)| *u)
            .collect()
    }

    /// Tells online users of `tid` that the directory changed, once per [`COALESCE`].
    fn directory_changed(&self, tid: u64) {
        if !self.org.pending.lock().insert(tid) {
            return; // one is already on its way and will carry the latest version
        }
        let Some(b) = self.broker() else {
            self.org.pending.lock().remove(&tid);
            return;
        };
        let broker = b.clone();
        b.tasks.spawn(async move {
            tokio::time::sleep(COALESCE).await;
            let Some(im) = broker.im.clone() else { return };
            im.org.pending.lock().remove(&tid);
            let version = im.store.log_last(&key::changes(tid)).unwrap_or(0);
            for uid in im.online_users(tid) {
                let ev = Kind::Directory(im::DirectoryChanged { version });
                im.emit(tid, uid, ev, QoS::AtMostOnce);
            }
        });
    }
}

/// Whether `password` matches the argon2 PHC string `hash`.
fn verify(hash: &str, password: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    PasswordHash::new(hash).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// The op that stores a user record.
fn put_user(tid: u64, u: &UserRecord) -> Result<Op, ImError> {
    Ok(Op::Put {
        table: Table::Users,
        key: super::keys::user(tid, &u.account),
        value: serde_json::to_vec(u).map_err(json_err)?,
    })
}
