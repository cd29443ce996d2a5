//! Members of the directory: users of the tenant with their details (title, phone, email,
//! position) and their departments. A user may belong to several departments (at most
//! [`MAX_DEPTS_PER_MEMBER`]); a user in no department is not a member.

use std::collections::{BTreeSet, HashMap};

use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_proto::im;

use super::{Change, key, put_user};
use crate::im::directory::valid_account;
use crate::im::keys::{self, ConvId};
use crate::im::records::UserRecord;
use crate::im::{ImError, ImService, now_ms};
use crate::store::{Op, OpResult, Table};

/// Departments one member belongs to, at most.
pub const MAX_DEPTS_PER_MEMBER: usize = 20;
/// Longest detail field (name, title, phone, email, position), bytes.
const MAX_FIELD: usize = 128;
/// Members per page, at most.
const MAX_PAGE: usize = 1000;

/// A member as the app server or an import row gives it; absent fields keep their value.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct MemberInput {
    pub account: String,
    pub name: Option<String>,
    pub password: Option<String>,
    /// Replaces the member's departments.
    pub departments: Option<Vec<u64>>,
    pub title: Option<String>,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub position: Option<String>,
    /// Require a password change at the next password login.
    pub must_change_password: Option<bool>,
}

impl MemberInput {
    pub(super) fn check(&self) -> Result<(), ImError> {
        if !valid_account(&self.account) {
            return Err(ImError::BadRequest(format!(
                "invalid account {:?}",
                self.account
            )));
        }
        for (field, v) in [
            ("name", &self.name),
            ("title", &self.title),
            ("phone", &self.phone),
            ("email", &self.email),
            ("position", &self.position),
        ] {
            if v.as_ref().is_some_and(|v| v.len() > MAX_FIELD) {
                return Err(ImError::BadRequest(format!(
                    "{field} is longer than {MAX_FIELD} bytes"
                )));
            }
        }
        if self
            .departments
            .as_ref()
            .is_some_and(|d| d.len() > MAX_DEPTS_PER_MEMBER)
        {
            return Err(ImError::BadRequest(format!(
                "a member belongs to at most {MAX_DEPTS_PER_MEMBER} departments"
            )));
        }
        Ok(())
    }

    /// Applies the given fields to `u`; `hash`: the new password's hash.
    pub(super) fn apply(&self, u: &mut UserRecord, hash: Option<String>) {
        for (from, to) in [
            (&self.name, &mut u.name),
            (&self.title, &mut u.title),
            (&self.phone, &mut u.phone),
            (&self.email, &mut u.email),
            (&self.position, &mut u.position),
        ] {
            if let Some(v) = from {
                v.trim().clone_into(to);
            }
        }
        if let Some(d) = &self.departments {
            let set: BTreeSet<u64> = d.iter().copied().collect();
            u.depts = set.into_iter().collect();
        }
        if hash.is_some() {
            u.password = hash;
        }
        if let Some(m) = self.must_change_password {
            u.must_change_password = m;
        }
    }
}

/// Broadcast scopes a department's members read (its own and its ancestors'), with the
/// head of each log, remembered per department over one import.
#[derive(Debug, Default)]
pub(super) struct Scopes(HashMap<u64, Vec<(String, u64)>>);

impl Scopes {
    fn of(&mut self, im: &ImService, tid: u64, dept: u64) -> Result<&[(String, u64)], ImError> {
        use std::collections::hash_map::Entry;
        match self.0.entry(dept) {
            Entry::Occupied(e) => Ok(e.into_mut()),
            Entry::Vacant(e) => {
                let mut v = Vec::new();
                for d in im.ancestors(tid, dept)? {
                    let scope = format!("d{d}");
                    let head = im
                        .store
                        .log_last(&keys::log(tid, &ConvId::Broadcast(scope.clone())))?;
                    v.push((scope, head));
                }
                Ok(e.insert(v))
            }
        }
    }
}

impl ImService {
    /// Adds or updates a member (creating the user if needed, unless `must_exist`).
    pub async fn set_member(
        &self,
        tid: u64,
        input: MemberInput,
        must_exist: bool,
    ) -> Result<UserRecord, ImError> {
        input.check()?;
        self.tenant(tid)?;
        let hash = match &input.password {
            Some(p) => {
                Some(crate::auth::hash_password(p).map_err(|e| ImError::Internal(e.to_string()))?)
            }
            None => None,
        };
        let _guard = self.admin.lock().await;
        if let Some(d) = &input.departments {
            for id in d {
                self.existing_dept(tid, *id)?;
            }
        }
        let old = self.user(tid, &input.account)?;
        let mut new = match &old {
            Some(u) => u.clone(),
            None if must_exist => {
                return Err(ImError::NotFound(format!("user {}", input.account)));
            }
            None => {
                let uid = self.allocate_uids(tid, 1).await?;
                self.blank_user(tid, &input.account, uid)?
            }
        };
        input.apply(&mut new, hash);
        let mut ops = self.ensure_root(tid)?;
        ops.extend(self.member_ops(tid, old.as_ref(), &mut new, &mut Scopes::default())?);
        self.commit(ops).await?;
        self.directory_changed(tid);
        Ok(new)
    }

    /// Puts an existing user into department `dept` too (`ctl user create --dept`).
    pub async fn add_to_department(
        &self,
        tid: u64,
        account: &str,
        dept: u64,
    ) -> Result<UserRecord, ImError> {
        let mut depts = self
            .user(tid, account)?
            .ok_or_else(|| ImError::NotFound(format!("user {account}")))?
            .depts;
        depts.push(dept);
        let input = MemberInput {
            account: account.to_owned(),
            departments: Some(depts),
            ..MemberInput::default()
        };
        self.set_member(tid, input, true).await
    }

    /// Removes a member from department `dept`, or from the directory (every department;
    /// the user account stays).
    pub async fn remove_member(
        &self,
        tid: u64,
        account: &str,
        dept: Option<u64>,
    ) -> Result<(), ImError> {
        let _guard = self.admin.lock().await;
        let old = self
            .user(tid, account)?
            .ok_or_else(|| ImError::NotFound(format!("user {account}")))?;
        let mut new = old.clone();
        match dept {
            Some(d) if !old.depts.contains(&d) => {
                return Err(ImError::NotFound(format!(
                    "{account} is not in department {d}"
                )));
            }
            Some(d) => new.depts.retain(|x| *x != d),
            None => new.depts.clear(),
        }
        let ops = self.member_ops(tid, Some(&old), &mut new, &mut Scopes::default())?;
        self.commit(ops).await?;
        self.directory_changed(tid);
        Ok(())
    }

    /// Allocates `n` consecutive uids; returns the first.
    pub(super) async fn allocate_uids(&self, tid: u64, n: u64) -> Result<u64, ImError> {
        let applied = self
            .commit(vec![Op::Increment {
                table: Table::Counters,
                key: keys::uid_counter(tid),
                by: n,
            }])
            .await?;
        let Some(OpResult::Counter(last)) = applied.results.first().copied() else {
            return Err(ImError::Internal("no uid allocated".into()));
        };
        Ok(last + 1 - n)
    }

    /// A new user record with no details yet.
    pub(super) fn blank_user(
        &self,
        tid: u64,
        account: &str,
        uid: u64,
    ) -> Result<UserRecord, ImError> {
        Ok(UserRecord {
            account: account.to_owned(),
            uid,
            name: String::new(),
            password: None,
            banned_until: 0,
            token_epoch: 0,
            created_ms: now_ms(),
            title: String::new(),
            phone: String::new(),
            email: String::new(),
            position: String::new(),
            depts: Vec::new(),
            must_change_password: false,
            bcast_from: self.broadcast_start(tid)?,
        })
    }

    /// The ops that store `new` (which was `old`): the record, the uid index of a new
    /// user, the department member index, the change log entry. Departments `new` joins
    /// start their broadcast history now.
    pub(super) fn member_ops(
        &self,
        tid: u64,
        old: Option<&UserRecord>,
        new: &mut UserRecord,
        scopes: &mut Scopes,
    ) -> Result<Vec<Op>, ImError> {
        let uid = new.uid;
        let before: &[u64] = old.map_or(&[], |o| o.depts.as_slice());
        let mut ops = Vec::new();
        if old.is_none() {
            ops.push(Op::Put {
                table: Table::UserIds,
                key: keys::user_id(tid, uid),
                value: new.account.as_bytes().to_vec(),
            });
        }
        for d in before.iter().filter(|d| !new.depts.contains(d)) {
            ops.push(Op::Delete {
                table: Table::Org,
                key: key::member(tid, *d, Some(uid)),
            });
        }
        for d in new.depts.iter().filter(|d| !before.contains(d)) {
            ops.push(Op::Put {
                table: Table::Org,
                key: key::member(tid, *d, Some(uid)),
                value: Vec::new(),
            });
        }
        // Broadcast history starts now in departments joined; forgotten for those left
        // (rejoining starts afresh), so the record stays as small as the member's tree.
        let mut keep: BTreeSet<String> = BTreeSet::from(["all".to_owned()]);
        for d in &new.depts {
            for (scope, head) in scopes.of(self, tid, *d)? {
                new.bcast_from.entry(scope.clone()).or_insert(*head);
                keep.insert(scope.clone());
            }
        }
        new.bcast_from.retain(|scope, _| keep.contains(scope));
        ops.push(put_user(tid, new)?);
        ops.push(Change::Member(uid).op(tid));
        Ok(ops)
    }

    /// A page of department `dept`'s members, in uid order; `after`: the previous page's
    /// `next`.
    pub fn dept_members(
        &self,
        tid: u64,
        dept: u64,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<UserRecord>, String), ImError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let after = match after.filter(|a| !a.is_empty()) {
            Some(a) => Some(key::member(
                tid,
                dept,
                Some(
                    a.parse()
                        .map_err(|_| ImError::BadRequest(format!("bad paging cursor {a:?}")))?,
                ),
            )),
            None => None,
        };
        let page = self.store.scan(
            Table::Org,
            &key::member(tid, dept, None),
            after.as_deref(),
            limit,
        )?;
        let full = page.len() == limit;
        let mut out = Vec::with_capacity(page.len());
        let mut last = 0;
        for (k, _) in page {
            let Some(uid) = k
                .get(17..25)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
            else {
                continue;
            };
            last = uid;
            if let Some(u) = self.user_by_uid(tid, uid)? {
                out.push(u);
            }
        }
        Ok((
            out,
            if full {
                last.to_string()
            } else {
                String::new()
            },
        ))
    }

    /// The accounts of the members of `depts` and of every department below them, at most
    /// `max` (404 for an unknown department).
    pub(crate) fn subtree_accounts(
        &self,
        tid: u64,
        depts: &[u64],
        max: usize,
    ) -> Result<Vec<String>, ImError> {
        let mut out = BTreeSet::new();
        for d in depts {
            self.existing_dept(tid, *d)?;
            for id in self.subtree(tid, *d)? {
                let mut after = String::new();
                loop {
                    let (page, next) = self.dept_members(tid, id, Some(&after), MAX_PAGE)?;
                    out.extend(page.into_iter().map(|u| u.account));
                    if out.len() >= max || next.is_empty() {
                        break;
                    }
                    after = next;
                }
                if out.len() >= max {
                    return Ok(out.into_iter().take(max).collect());
                }
            }
        }
        Ok(out.into_iter().collect())
    }

    /// The departments of user `account` and every department above them.
    pub(crate) fn user_dept_closure(&self, tid: u64, account: &str) -> Result<Vec<u64>, ImError> {
        let mut out = Vec::new();
        if let Some(u) = self.user(tid, account)? {
            for d in &u.depts {
                for a in self.ancestors(tid, *d)? {
                    if !out.contains(&a) {
                        out.push(a);
                    }
                }
            }
        }
        Ok(out)
    }

    /// User `uid`'s record.
    pub fn user_by_uid(&self, tid: u64, uid: u64) -> Result<Option<UserRecord>, ImError> {
        match self.account_of(tid, uid)? {
            Some(a) => self.user(tid, &a),
            None => Ok(None),
        }
    }
}

/// A member as the protocol shows it.
pub fn to_proto(u: &UserRecord) -> im::Member {
    im::Member {
        account: u.account.clone(),
        uid: u.uid,
        name: u.name.clone(),
        title: u.title.clone(),
        phone: u.phone.clone(),
        email: u.email.clone(),
        position: u.position.clone(),
        departments: u.depts.clone(),
        removed: u.depts.is_empty(),
    }
}

/// A member as the JSON APIs show it.
pub fn to_json(u: &UserRecord) -> Value {
    json!({
        "user_id": u.account,
        "uid": u.uid,
        "name": u.name,
        "title": u.title,
        "phone": u.phone,
        "email": u.email,
        "position": u.position,
        "departments": u.depts,
        "disabled": u.banned_until > crate::store::unix_now(),
    })
}
