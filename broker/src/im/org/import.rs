//! Bulk import from CSV (seed 000's import template: "导入时，会同步建立企业的组织架构")
//! and export in the same columns.
//!
//! Columns (header row required, any order, English or the template's Chinese names):
//! `account` (账号, required), `name` (姓名), `department` (部门: a path below the root
//! like `Sales/East/Shanghai`, several separated by `;`, empty: the root), `title` (职务),
//! `position` (职位), `phone` (手机), `email` (邮箱), `password` (密码, optional). Missing
//! departments are created as the path is walked. Re-importing updates members in place
//! (departments replaced, details overwritten, passwords kept unless the row gives one).
//! New members get the row's password or the import's default password, and must change
//! it at their first password login.
//!
//! The whole file is validated first (nothing is written if a row is bad); members are
//! then written in commits of [`ROWS_PER_COMMIT`] rows, one uid allocation per commit.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::members::{MemberInput, Scopes};
use super::tree::{MAX_DEPTH, ROOT};
use crate::im::records::UserRecord;
use crate::im::{ImError, ImService, keys};
use crate::store::Table;

/// Columns of an export (and of the import template), in order.
pub const COLUMNS: [&str; 7] = [
    "account",
    "name",
    "department",
    "title",
    "position",
    "phone",
    "email",
];
/// Rows per commit.
const ROWS_PER_COMMIT: usize = 2000;
/// Rows per import request, at most (split bigger files).
const MAX_ROWS: usize = 200_000;
/// Bad rows reported, at most.
const MAX_ERRORS: usize = 20;
/// Rejected rows listed in a report, at most (the rest are counted).
const MAX_REJECTED: usize = 1000;
/// Users per export page, at most.
const MAX_EXPORT: usize = 100_000;

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    pub rows: usize,
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub departments_created: usize,
    /// Rows left out (with `skip_invalid`): line and reason, at most [`MAX_REJECTED`].
    pub rejected: Vec<Rejected>,
    /// How many rows were left out in all.
    pub rejected_total: usize,
}

/// The canonical column a header names.
fn column(header: &str) -> Option<&'static str> {
    Some(match header.trim().trim_start_matches('\u{feff}') {
        "account" | "账号" | "帐号" | "用户名" => "account",
        "name" | "姓名" => "name",
        "department" | "部门" => "department",
        "title" | "职务" => "title",
        "position" | "职位" => "position",
        "phone" | "手机" | "手机号码" => "phone",
        "email" | "邮箱" => "email",
        "password" | "密码" => "password",
        _ => return None,
    })
}

/// One valid row.
struct Row {
    input: MemberInput,
    paths: Vec<Vec<String>>,
}

/// A row an import left out (`skip_invalid`): its line in the file and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejected {
    pub line: usize,
    pub reason: String,
}

/// Parses the file: the valid rows and the rejected ones (at most [`MAX_REJECTED`] listed,
/// `total` counts them all). `strict`: stop after [`MAX_ERRORS`] bad rows.
fn parse(csv_text: &str, strict: bool) -> Result<(Vec<Row>, Vec<Rejected>, usize), ImError> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(csv_text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| ImError::BadRequest(format!("CSV header: {e}")))?
        .clone();
    let cols: Vec<Option<&str>> = headers.iter().map(column).collect();
    if !cols.contains(&Some("account")) {
        return Err(ImError::BadRequest(
            "the CSV has no account column (account or 账号)".into(),
        ));
    }
    let mut rows = Vec::new();
    let mut rejected = Vec::new();
    let mut total = 0;
    let mut seen = HashSet::new();
    for (i, record) in reader.records().enumerate() {
        let line = i + 2;
        if rows.len() >= MAX_ROWS {
            return Err(ImError::TooLarge(format!(
                "more than {MAX_ROWS} rows: split the file"
            )));
        }
        let mut reject = |reason: String| {
            total += 1;
            if rejected.len() < MAX_REJECTED {
                rejected.push(Rejected { line, reason });
            }
        };
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                reject(e.to_string());
                continue;
            }
        };
        if record.iter().all(str::is_empty) {
            continue;
        }
        let mut input = MemberInput::default();
        let mut paths = Vec::new();
        let mut problem = None;
        for (col, value) in cols.iter().zip(record.iter()) {
            let v = Some(value.to_owned());
            match col {
                Some("account") => input.account = value.to_owned(),
                Some("name") => input.name = v,
                Some("title") => input.title = v,
                Some("position") => input.position = v,
                Some("phone") => input.phone = v,
                Some("email") => input.email = v,
                Some("password") if !value.is_empty() => input.password = v,
                Some("department") => {
                    for p in value.split(';') {
                        let segs: Vec<String> = p
                            .split('/')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned)
                            .collect();
                        if segs.len() >= MAX_DEPTH {
                            problem = Some("department path too deep".to_owned());
                        }
                        paths.push(segs);
                    }
                }
                _ => {}
            }
        }
        if paths.is_empty() {
            paths.push(Vec::new()); // the root
        }
        if let Err(e) = input.check() {
            problem = Some(e.to_string());
        } else if problem.is_none() && !seen.insert(input.account.clone()) {
            problem = Some(format!("account {} repeated", input.account));
        }
        match problem {
            Some(p) => reject(p),
            None => rows.push(Row { input, paths }),
        }
        if strict && total >= MAX_ERRORS {
            break;
        }
    }
    if strict && total > 0 {
        let lines: Vec<String> = rejected
            .iter()
            .map(|r| format!("line {}: {}", r.line, r.reason))
            .collect();
        return Err(ImError::BadRequest(format!(
            "nothing imported: {}",
            lines.join("; ")
        )));
    }
    Ok((rows, rejected, total))
}

impl ImService {
    /// Imports members from CSV text (see the module docs); `default_password` for new
    /// members whose row has none. A bad row refuses the whole file.
    pub async fn import_csv(
        &self,
        tid: u64,
        csv_text: &str,
        default_password: Option<&str>,
    ) -> Result<ImportReport, ImError> {
        self.import_csv_with(tid, csv_text, default_password, false)
            .await
    }

    /// [`Self::import_csv`]; `skip_invalid`: import the valid rows and report the others
    /// (line and reason) instead of refusing the whole file.
    pub async fn import_csv_with(
        &self,
        tid: u64,
        csv_text: &str,
        default_password: Option<&str>,
        skip_invalid: bool,
    ) -> Result<ImportReport, ImError> {
        self.tenant(tid)?;
        let (rows, rejected, rejected_total) = parse(csv_text, !skip_invalid)?;
        let hash =
            |p: &str| crate::auth::hash_password(p).map_err(|e| ImError::Internal(e.to_string()));
        // One hash for every new member given the default password (they must change it).
        let default_hash = default_password.map(hash).transpose()?;
        let mut report = ImportReport {
            rows: rows.len(),
            rejected,
            rejected_total,
            ..ImportReport::default()
        };
        let _guard = self.admin.lock().await;
        let root_ops = self.ensure_root(tid)?;
        if !root_ops.is_empty() {
            self.commit(root_ops).await?;
        }
        // The tree, built as the paths are walked.
        let mut by_path: HashMap<Vec<String>, u64> = HashMap::new();
        by_path.insert(Vec::new(), ROOT);
        let mut rows = rows;
        for row in &mut rows {
            let mut ids = Vec::with_capacity(row.paths.len());
            for path in &row.paths {
                ids.push(self.walk_path(tid, path, &mut by_path, &mut report).await?);
            }
            row.input.departments = Some(ids);
        }
        let mut scopes = Scopes::default();
        for chunk in rows.chunks(ROWS_PER_COMMIT) {
            let mut olds = Vec::with_capacity(chunk.len());
            for row in chunk {
                olds.push(self.user(tid, &row.input.account)?);
            }
            let new_count = olds.iter().filter(|o| o.is_none()).count() as u64;
            let mut next_uid = if new_count > 0 {
                self.allocate_uids(tid, new_count).await?
            } else {
                0
            };
            let mut ops = Vec::new();
            for (row, old) in chunk.iter().zip(&olds) {
                let row_hash = row.input.password.as_deref().map(hash).transpose()?;
                let mut new = match old {
                    Some(u) => u.clone(),
                    None => {
                        let mut u = self.blank_user(tid, &row.input.account, next_uid)?;
                        next_uid += 1;
                        u.password = default_hash.clone();
                        u.must_change_password = default_hash.is_some();
                        u
                    }
                };
                if row_hash.is_some() {
                    new.must_change_password = true;
                }
                row.input.apply(&mut new, row_hash);
                match old {
                    Some(o) if *o == new => {
                        report.unchanged += 1;
                        continue;
                    }
                    Some(_) => report.updated += 1,
                    None => report.created += 1,
                }
                ops.extend(self.member_ops(tid, old.as_ref(), &mut new, &mut scopes)?);
            }
            if !ops.is_empty() {
                self.commit(ops).await?;
            }
        }
        if report.created + report.updated + report.departments_created > 0 {
            self.directory_changed(tid);
        }
        Ok(report)
    }

    /// The department at `path` below the root, created (with its missing ancestors) if
    /// needed.
    async fn walk_path(
        &self,
        tid: u64,
        path: &[String],
        by_path: &mut HashMap<Vec<String>, u64>,
        report: &mut ImportReport,
    ) -> Result<u64, ImError> {
        if let Some(id) = by_path.get(path) {
            return Ok(*id);
        }
        let mut parent = ROOT;
        for depth in 1..=path.len() {
            let prefix = &path[..depth];
            if let Some(id) = by_path.get(prefix) {
                parent = *id;
                continue;
            }
            let name = &path[depth - 1];
            let id = match self.child_named(tid, parent, name)? {
                Some(id) => id,
                None => {
                    let (id, ops) = self.new_dept_ops(tid, name, parent).await?;
                    self.commit(ops).await?;
                    report.departments_created += 1;
                    id
                }
            };
            by_path.insert(prefix.to_vec(), id);
            parent = id;
        }
        Ok(parent)
    }

    /// A page of the directory as CSV ([`COLUMNS`], header included), members only, in
    /// account order; `after`: the previous page's `next` ("" when done).
    pub fn export_csv(
        &self,
        tid: u64,
        after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<(String, String), ImError> {
        self.tenant(tid)?;
        let limit = limit.unwrap_or(10_000).clamp(1, MAX_EXPORT);
        let prefix = keys::tenant(tid);
        let after = after.filter(|a| !a.is_empty()).map(|a| keys::user(tid, a));
        let page = self
            .store
            .scan(Table::Users, &prefix, after.as_deref(), limit)?;
        let full = page.len() == limit;
        let mut next = String::new();
        let mut paths = HashMap::new();
        let mut out = csv::Writer::from_writer(Vec::new());
        let csv_err = |e: csv::Error| ImError::Internal(e.to_string());
        out.write_record(COLUMNS).map_err(csv_err)?;
        for (_, v) in page {
            let Ok(u) = serde_json::from_slice::<UserRecord>(&v) else {
                continue;
            };
            next.clone_from(&u.account);
            if u.depts.is_empty() {
                continue;
            }
            let mut depts = Vec::new();
            for d in &u.depts {
                depts.push(self.dept_path(tid, *d, &mut paths)?);
            }
            out.write_record([
                u.account.as_str(),
                &u.name,
                &depts.join(";"),
                &u.title,
                &u.position,
                &u.phone,
                &u.email,
            ])
            .map_err(csv_err)?;
        }
        let bytes = out
            .into_inner()
            .map_err(|e| ImError::Internal(e.to_string()))?;
        let text = String::from_utf8(bytes).map_err(|e| ImError::Internal(e.to_string()))?;
        Ok((text, if full { next } else { String::new() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "account,name,department\nann,Ann,Sales/East\nbad account!,Bob,Sales\nann,Ann again,\ncid,Cid,\n";

    #[test]
    fn strict_parsing_refuses_the_file_naming_every_bad_line() {
        let Err(ImError::BadRequest(m)) = parse(FILE, true) else {
            panic!("a bad row refuses the file");
        };
        assert!(m.contains("line 3") && m.contains("line 4"), "{m}");
    }

    #[test]
    fn lenient_parsing_keeps_the_good_rows_and_reports_the_bad_ones_by_line() {
        let (rows, rejected, total) = parse(FILE, false).expect("parsed");
        let accounts: Vec<&str> = rows.iter().map(|r| r.input.account.as_str()).collect();
        assert_eq!(accounts, ["ann", "cid"]);
        assert_eq!(total, 2);
        assert_eq!(rejected[0].line, 3);
        assert!(rejected[0].reason.contains("invalid account"));
        assert_eq!(rejected[1].line, 4);
        assert!(rejected[1].reason.contains("repeated"));
    }
}
