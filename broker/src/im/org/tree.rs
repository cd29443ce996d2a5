//! The department tree: create, rename, move, delete (only when empty), ancestors and
//! subtrees, paths like `Sales/East/Shanghai`.
//!
//! Department ids are numbers allocated per tenant (a counter), never reused. Department
//! [`ROOT`] (1) is the enterprise itself, made on first use and never deleted; every
//! other department has a parent. Names are unique among siblings.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Change, json_err, key, members};
use crate::im::{ImError, ImService, now_ms};
use crate::store::{Op, OpResult, Table};

/// The root department of every tenant.
pub const ROOT: u64 = 1;
/// Longest department name (bytes).
const MAX_NAME: usize = 64;
/// Deepest department tree (ancestor walks stop here).
pub(super) const MAX_DEPTH: usize = 32;
/// Departments per tenant, at most (subtree walks are bounded by it).
const MAX_DEPTS: usize = 100_000;
/// Records per store scan.
pub(super) const PAGE: usize = 1000;

/// A department as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeptRecord {
    pub id: u64,
    pub name: String,
    /// 0 for the root.
    pub parent: u64,
    pub created_ms: u64,
}

/// A department name must be printable and must not contain the path separator.
fn check_name(name: &str) -> Result<(), ImError> {
    if name.trim().is_empty()
        || name.len() > MAX_NAME
        || name.contains('/')
        || name.chars().any(char::is_control)
    {
        return Err(ImError::BadRequest(format!(
            "a department name is 1..={MAX_NAME} bytes, without '/' or control characters"
        )));
    }
    Ok(())
}

impl ImService {
    /// Department `id` of tenant `tid`, if it exists (the root always does).
    pub fn dept(&self, tid: u64, id: u64) -> Result<Option<DeptRecord>, ImError> {
        if id == ROOT {
            return self.root(tid).map(Some);
        }
        match self.store.get(Table::Org, &key::dept(tid, id))? {
            Some(v) => Ok(Some(serde_json::from_slice(&v).map_err(|e| {
                ImError::Internal(format!("corrupt department record: {e}"))
            })?)),
            None => Ok(None),
        }
    }

    /// Department `id`, or 404.
    pub(crate) fn existing_dept(&self, tid: u64, id: u64) -> Result<DeptRecord, ImError> {
        self.dept(tid, id)?
            .ok_or_else(|| ImError::NotFound(format!("department {id}")))
    }

    /// The root department (named after the tenant until renamed; stored on first change).
    fn root(&self, tid: u64) -> Result<DeptRecord, ImError> {
        if let Some(v) = self.store.get(Table::Org, &key::dept(tid, ROOT))? {
            return serde_json::from_slice(&v)
                .map_err(|e| ImError::Internal(format!("corrupt department record: {e}")));
        }
        let t = self.tenant(tid)?;
        Ok(DeptRecord {
            id: ROOT,
            name: t.name.clone(),
            parent: 0,
            created_ms: t.created_ms,
        })
    }

    /// Ops that store the root if it is not stored yet (and keep the counter past it).
    /// Call under the admin lock.
    pub(super) fn ensure_root(&self, tid: u64) -> Result<Vec<Op>, ImError> {
        if self.store.get(Table::Org, &key::dept(tid, ROOT))?.is_some() {
            return Ok(Vec::new());
        }
        let root = self.root(tid)?;
        Ok(vec![
            Op::Put {
                table: Table::Org,
                key: key::dept(tid, ROOT),
                value: serde_json::to_vec(&root).map_err(json_err)?,
            },
            Op::Max {
                table: Table::Counters,
                key: key::dept_counter(tid),
                value: ROOT,
            },
            Change::Dept(ROOT).op(tid),
        ])
    }

    /// The child of `parent` called `name`.
    pub(super) fn child_named(
        &self,
        tid: u64,
        parent: u64,
        name: &str,
    ) -> Result<Option<u64>, ImError> {
        Ok(self
            .store
            .get(Table::Org, &key::child(tid, parent, name))?
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map(u64::from_be_bytes))
    }

    /// Creates department `name` under `parent`; returns its id.
    pub async fn create_dept(&self, tid: u64, name: &str, parent: u64) -> Result<u64, ImError> {
        check_name(name)?;
        let _guard = self.admin.lock().await;
        let (id, ops) = self.new_dept_ops(tid, name, parent).await?;
        self.commit(ops).await?;
        self.directory_changed(tid);
        Ok(id)
    }

    /// Allocates an id for a new department and returns the ops that create it (under the
    /// admin lock; the id is committed at once, the department with the ops).
    pub(super) async fn new_dept_ops(
        &self,
        tid: u64,
        name: &str,
        parent: u64,
    ) -> Result<(u64, Vec<Op>), ImError> {
        check_name(name)?;
        self.existing_dept(tid, parent)?;
        if self.child_named(tid, parent, name)?.is_some() {
            return Err(ImError::Conflict(format!(
                "department {parent} already has a sub-department named {name:?}"
            )));
        }
        let mut ops = self.ensure_root(tid)?;
        ops.push(Op::Increment {
            table: Table::Counters,
            key: key::dept_counter(tid),
            by: 1,
        });
        let applied = self.commit(ops).await?;
        let Some(OpResult::Counter(id)) = applied.results.last().copied() else {
            return Err(ImError::Internal("no department id allocated".into()));
        };
        let rec = DeptRecord {
            id,
            name: name.to_owned(),
            parent,
            created_ms: now_ms(),
        };
        Ok((id, self.put_dept_ops(tid, &rec)?))
    }

    fn put_dept_ops(&self, tid: u64, rec: &DeptRecord) -> Result<Vec<Op>, ImError> {
        let mut ops = vec![Op::Put {
            table: Table::Org,
            key: key::dept(tid, rec.id),
            value: serde_json::to_vec(rec).map_err(json_err)?,
        }];
        if rec.id != ROOT {
            ops.push(Op::Put {
                table: Table::Org,
                key: key::child(tid, rec.parent, &rec.name),
                value: rec.id.to_be_bytes().to_vec(),
            });
        }
        ops.push(Change::Dept(rec.id).op(tid));
        Ok(ops)
    }

    /// Renames and/or moves a department.
    pub async fn update_dept(
        &self,
        tid: u64,
        id: u64,
        name: Option<&str>,
        parent: Option<u64>,
    ) -> Result<DeptRecord, ImError> {
        let _guard = self.admin.lock().await;
        let old = self.existing_dept(tid, id)?;
        let mut new = old.clone();
        if let Some(n) = name {
            check_name(n)?;
            new.name = n.to_owned();
        }
        if let Some(p) = parent.filter(|p| *p != old.parent) {
            if id == ROOT {
                return Err(ImError::BadRequest(
                    "the root department cannot move".into(),
                ));
            }
            self.existing_dept(tid, p)?;
            if self.ancestors(tid, p)?.contains(&id) {
                return Err(ImError::BadRequest(format!(
                    "department {p} is inside department {id}"
                )));
            }
            new.parent = p;
        }
        if new == old {
            return Ok(new);
        }
        if id != ROOT && self.child_named(tid, new.parent, &new.name)?.is_some() {
            return Err(ImError::Conflict(format!(
                "department {} already has a sub-department named {:?}",
                new.parent, new.name
            )));
        }
        let mut ops = self.ensure_root(tid)?;
        if id != ROOT {
            ops.push(Op::Delete {
                table: Table::Org,
                key: key::child(tid, old.parent, &old.name),
            });
        }
        ops.extend(self.put_dept_ops(tid, &new)?);
        self.commit(ops).await?;
        self.directory_changed(tid);
        Ok(new)
    }

    /// Deletes a department that has neither sub-departments nor members.
    pub async fn delete_dept(&self, tid: u64, id: u64) -> Result<(), ImError> {
        let _guard = self.admin.lock().await;
        if id == ROOT {
            return Err(ImError::BadRequest(
                "the root department cannot be deleted".into(),
            ));
        }
        let d = self.existing_dept(tid, id)?;
        if !self.children(tid, id)?.is_empty() {
            return Err(ImError::Conflict(format!(
                "department {id} has sub-departments"
            )));
        }
        let members = self
            .store
            .scan(Table::Org, &key::member(tid, id, None), None, 1)?;
        if !members.is_empty() {
            return Err(ImError::Conflict(format!("department {id} has members")));
        }
        self.commit(vec![
            Op::Delete {
                table: Table::Org,
                key: key::dept(tid, id),
            },
            Op::Delete {
                table: Table::Org,
                key: key::child(tid, d.parent, &d.name),
            },
            Change::Dept(id).op(tid),
        ])
        .await?;
        self.directory_changed(tid);
        Ok(())
    }

    /// The sub-departments of `id`, by name.
    pub fn children(&self, tid: u64, id: u64) -> Result<Vec<DeptRecord>, ImError> {
        let prefix = key::child(tid, id, "");
        let mut out = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self
                .store
                .scan(Table::Org, &prefix, after.as_deref(), PAGE)?;
            let n = page.len();
            for (k, v) in page {
                if let Ok(child) = <[u8; 8]>::try_from(v.as_slice())
                    && let Some(d) = self.dept(tid, u64::from_be_bytes(child))?
                {
                    out.push(d);
                }
                after = Some(k);
            }
            if n < PAGE || out.len() >= MAX_DEPTS {
                return Ok(out);
            }
        }
    }

    /// `id` and its ancestors up to the root, nearest first.
    pub fn ancestors(&self, tid: u64, id: u64) -> Result<Vec<u64>, ImError> {
        let mut out = Vec::new();
        let mut at = id;
        while at != 0 && out.len() < MAX_DEPTH {
            out.push(at);
            at = match self.dept(tid, at)? {
                Some(d) => d.parent,
                None => 0,
            };
        }
        Ok(out)
    }

    /// `id` and every department below it (at most [`MAX_DEPTS`]).
    pub fn subtree(&self, tid: u64, id: u64) -> Result<Vec<u64>, ImError> {
        let mut out = vec![id];
        let mut i = 0;
        while i < out.len() && out.len() < MAX_DEPTS {
            let at = out[i];
            out.extend(self.children(tid, at)?.into_iter().map(|d| d.id));
            i += 1;
        }
        Ok(out)
    }

    /// The path of a department from below the root (`Sales/East`; "" for the root),
    /// remembering paths already computed in `cache`.
    pub(super) fn dept_path(
        &self,
        tid: u64,
        id: u64,
        cache: &mut HashMap<u64, String>,
    ) -> Result<String, ImError> {
        if let Some(p) = cache.get(&id) {
            return Ok(p.clone());
        }
        let mut names = Vec::new();
        for d in self.ancestors(tid, id)? {
            if d == ROOT {
                break;
            }
            if let Some(r) = self.dept(tid, d)? {
                names.push(r.name);
            }
        }
        names.reverse();
        let path = names.join("/");
        cache.insert(id, path.clone());
        Ok(path)
    }

    /// Every department of the tenant with its path (at most [`MAX_DEPTS`]).
    pub fn list_depts(&self, tid: u64) -> Result<Vec<Value>, ImError> {
        let mut paths = HashMap::new();
        let mut out = vec![self.root(tid)?];
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self
                .store
                .scan(Table::Org, &key::depts(tid), after.as_deref(), PAGE)?;
            let n = page.len();
            for (k, v) in page {
                if let Ok(d) = serde_json::from_slice::<DeptRecord>(&v)
                    && d.id != ROOT
                {
                    out.push(d);
                }
                after = Some(k);
            }
            if n < PAGE || out.len() >= MAX_DEPTS {
                break;
            }
        }
        out.iter()
            .map(|d| {
                Ok(json!({
                    "dept_id": d.id,
                    "name": d.name,
                    "parent": d.parent,
                    "path": self.dept_path(tid, d.id, &mut paths)?,
                }))
            })
            .collect()
    }

    /// One department, its sub-departments and a page of its members (JSON).
    pub fn dept_page(
        &self,
        tid: u64,
        id: u64,
        after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Value, ImError> {
        let d = self.existing_dept(tid, id)?;
        let children = self.children(tid, id)?;
        let (members, next) = self.dept_members(tid, id, after, limit.unwrap_or(100))?;
        Ok(json!({
            "dept_id": d.id,
            "name": d.name,
            "parent": d.parent,
            "children": children.iter().map(|c| json!({ "dept_id": c.id, "name": c.name })).collect::<Vec<_>>(),
            "members": members.iter().map(members::to_json).collect::<Vec<_>>(),
            "next": next,
        }))
    }
}
