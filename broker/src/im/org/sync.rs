//! Directory sync for clients: `dir/sync` replays the tenant's change log from the
//! client's version (each changed department or member once, as it is now), paged;
//! `dir/department` browses the tree.

use std::collections::{HashMap, HashSet};

use switchboard_proto::im;

use super::tree::ROOT;
use super::{Change, key, members};
use crate::im::error::ok;
use crate::im::{ImError, ImLogin, ImService};

/// Entities per sync page unless asked otherwise, and at most.
const SYNC_DEFAULT: usize = 500;
const SYNC_MAX: usize = 2000;

impl ImService {
    /// Departments and members changed after `since_version`.
    pub(super) fn dir_sync(
        &self,
        login: &ImLogin,
        req: im::DirSyncRequest,
    ) -> Result<im::DirSyncResponse, ImError> {
        let tid = login.tenant;
        let limit = match req.limit as usize {
            0 => SYNC_DEFAULT,
            n => n.min(SYNC_MAX),
        };
        let log = key::changes(tid);
        let head = self.store.log_last(&log)?;
        if req.since_version > head {
            return Err(ImError::BadRequest(format!(
                "version {} is past the directory's version {head}: sync from 0",
                req.since_version
            )));
        }
        let mut changed = Vec::new();
        let mut seen = HashSet::new();
        let mut version = req.since_version;
        'read: while version < head {
            let page = self
                .store
                .log_range(&log, version + 1, head, limit, false)?;
            if page.is_empty() {
                version = head;
                break;
            }
            for (seq, v) in page {
                if let Some(c) = Change::decode(&v)
                    && !seen.contains(&c)
                {
                    if seen.len() == limit {
                        break 'read;
                    }
                    seen.insert(c);
                    changed.push(c);
                }
                version = seq;
            }
        }
        let mut resp = im::DirSyncResponse {
            status: ok(),
            version,
            more: version < head,
            ..im::DirSyncResponse::default()
        };
        let mut paths = HashMap::new();
        for c in changed {
            match c {
                Change::Dept(id) => resp.departments.push(match self.dept(tid, id)? {
                    Some(d) => im::Department {
                        id: d.id,
                        path: self.dept_path(tid, d.id, &mut paths)?,
                        name: d.name,
                        parent: d.parent,
                        removed: false,
                    },
                    None => im::Department {
                        id,
                        removed: true,
                        ..im::Department::default()
                    },
                }),
                Change::Member(uid) => resp.members.push(match self.user_by_uid(tid, uid)? {
                    Some(u) => members::to_proto(&u),
                    None => im::Member {
                        uid,
                        removed: true,
                        ..im::Member::default()
                    },
                }),
            }
        }
        Ok(resp)
    }

    /// One department, its sub-departments and a page of its members.
    pub(super) fn dir_department(
        &self,
        login: &ImLogin,
        req: im::DepartmentRequest,
    ) -> Result<im::DepartmentResponse, ImError> {
        let tid = login.tenant;
        let id = if req.dept_id == 0 { ROOT } else { req.dept_id };
        let d = self.existing_dept(tid, id)?;
        let mut paths = HashMap::new();
        let mut to_proto = |d: super::DeptRecord| -> Result<im::Department, ImError> {
            Ok(im::Department {
                id: d.id,
                path: self.dept_path(tid, d.id, &mut paths)?,
                name: d.name,
                parent: d.parent,
                removed: false,
            })
        };
        let department = to_proto(d)?;
        let children = self
            .children(tid, id)?
            .into_iter()
            .map(&mut to_proto)
            .collect::<Result<Vec<_>, _>>()?;
        let limit = match req.limit as usize {
            0 => 100,
            n => n,
        };
        let after = (!req.after.is_empty()).then_some(req.after.as_str());
        let (list, next) = self.dept_members(tid, id, after, limit)?;
        Ok(im::DepartmentResponse {
            status: ok(),
            department: Some(department),
            children,
            members: list.iter().map(members::to_proto).collect(),
            next,
        })
    }
}
