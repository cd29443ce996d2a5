//! CSV import and export of the directory (seed 000's 导入/导出): a downloadable template
//! (column names in the visitor's language, both of which the import reads), an upload
//! form with a default password for new members, and a report of what the import did with
//! every rejected row (its line in the file and why). The import is the directory
//! service's (`dir/import` with `skip_invalid`: good rows are imported, bad ones listed);
//! export pages through `dir/export`.
//!
//! Routes (below `/console/org/{tid}`): `import` (GET the form, POST multipart: `_csrf`,
//! `file`, `default_password`), `template.csv`, `export.csv`.

use axum::Router;
use axum::extract::{DefaultBodyLimit, Multipart, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;

use super::unprocessable;
use crate::console::tenants::Tenant;
use crate::console::{ConsoleError, ConsoleState, ConsoleUser, FieldErrors, Lang, Page, render};

/// Largest CSV file the form takes (bytes).
pub const MAX_CSV: usize = 16 * 1024 * 1024;
/// Members per export page asked of the service.
const EXPORT_PAGE: usize = 10_000;
/// Export pages at most (200,000 members: the service's import bound too).
const MAX_EXPORT_PAGES: usize = 20;

pub fn routes() -> Router<ConsoleState> {
    Router::new()
        .route(
            "/org/{tid}/import",
            get(import_form)
                .post(import)
                .layer(DefaultBodyLimit::max(MAX_CSV + 64 * 1024)),
        )
        .route("/org/{tid}/template.csv", get(template))
        .route("/org/{tid}/export.csv", get(export))
}

/// What `dir/import` answers.
#[derive(Debug, Default, Deserialize)]
pub struct Report {
    pub rows: usize,
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub departments_created: usize,
    #[serde(default)]
    pub rejected: Vec<Rejected>,
    #[serde(default)]
    pub rejected_total: usize,
}

/// A row the import left out.
#[derive(Debug, Deserialize)]
pub struct Rejected {
    pub line: usize,
    pub reason: String,
}

#[derive(askama::Template)]
#[template(path = "console/org/import.html")]
struct ImportPage {
    page: Page,
    tenant: Tenant,
    errors: FieldErrors,
    report: Option<Report>,
}

async fn import_form(
    st: State<ConsoleState>,
    user: ConsoleUser,
    Path(tid): Path<u64>,
) -> Result<Response, ConsoleError> {
    let tenant = user.tenant(&st, tid).await?;
    Ok(render(&ImportPage {
        page: user.page("org"),
        tenant,
        errors: FieldErrors::default(),
        report: None,
    }))
}

/// The parts of the import form.
#[derive(Default)]
struct Upload {
    csrf: String,
    file: Vec<u8>,
    default_password: String,
}

async fn read_upload(mut mp: Multipart) -> Result<Upload, ConsoleError> {
    let mut up = Upload::default();
    let bad = |e: axum::extract::multipart::MultipartError| {
        tracing::info!(error = %e, "console: unreadable import form");
        ConsoleError::Refused(format!("unreadable form: {}", e.body_text()))
    };
    while let Some(field) = mp.next_field().await.map_err(bad)? {
        match field.name().unwrap_or_default() {
            "_csrf" => up.csrf = field.text().await.map_err(bad)?,
            "default_password" => up.default_password = field.text().await.map_err(bad)?,
            "file" => up.file = field.bytes().await.map_err(bad)?.to_vec(),
            _ => {}
        }
    }
    Ok(up)
}

async fn import(
    st: State<ConsoleState>,
    user: ConsoleUser,
    Path(tid): Path<u64>,
    mp: Multipart,
) -> Result<Response, ConsoleError> {
    let up = read_upload(mp).await?;
    user.check_csrf(&up.csrf)?;
    let tenant = user.tenant(&st, tid).await?;
    let mut errors = FieldErrors::default();
    let text = match std::str::from_utf8(&up.file) {
        _ if up.file.is_empty() => {
            errors.add("file", user.t("org.file_required"));
            ""
        }
        Ok(t) => t,
        Err(_) => {
            errors.add("file", user.t("org.file_not_utf8"));
            ""
        }
    };
    let pw = up.default_password.as_str();
    if !pw.is_empty() && (pw.len() < 8 || pw.len() > 128) {
        errors.add("default_password", user.t("org.password_short"));
    }
    let mut report = None;
    if errors.is_empty() {
        let mut body = json!({ "tenant": tid, "csv": text, "skip_invalid": true });
        if !pw.is_empty() {
            body["default_password"] = json!(pw);
        }
        match st.call("dir/import", &body).await {
            Ok(v) => {
                let r: Report = serde_json::from_value(v).map_err(|e| {
                    tracing::error!(error = %e, "console: undecodable import report");
                    ConsoleError::Internal
                })?;
                tracing::info!(user = %user.username, tenant = tid, rows = r.rows, rejected = r.rejected_total, "console: directory imported");
                report = Some(r);
            }
            Err(e) => super::refusal(&mut errors, "file", user.t("org.import_refused"), e)?,
        }
    }
    let p = ImportPage {
        page: user.page("org"),
        tenant,
        errors,
        report,
    };
    Ok(if p.errors.is_empty() {
        render(&p)
    } else {
        unprocessable(&p)
    })
}

fn csv_answer(name: &str, body: String) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        body,
    )
        .into_response()
}

/// The import template: the header row in the visitor's language and two example rows.
pub fn template_text(lang: Lang) -> String {
    let header = match lang {
        Lang::En => "account,name,department,title,position,phone,email,password",
        Lang::Zh => "账号,姓名,部门,职务,职位,手机,邮箱,密码",
    };
    format!(
        "{header}\r\nzhangsan,张三,Sales/East,Manager,,13800000000,zhangsan@example.com,\r\n\
         lisi,李四,Sales/East;R&D,Engineer,,,lisi@example.com,\r\n"
    )
}

async fn template(
    st: State<ConsoleState>,
    user: ConsoleUser,
    Path(tid): Path<u64>,
) -> Result<Response, ConsoleError> {
    user.tenant(&st, tid).await?;
    Ok(csv_answer(
        "members-template.csv",
        format!("\u{feff}{}", template_text(user.lang)),
    ))
}

async fn export(
    st: State<ConsoleState>,
    user: ConsoleUser,
    Path(tid): Path<u64>,
) -> Result<Response, ConsoleError> {
    user.tenant(&st, tid).await?;
    let mut out = String::from("\u{feff}");
    let mut after = String::new();
    for page in 0..MAX_EXPORT_PAGES {
        let v = st
            .call(
                "dir/export",
                &json!({ "tenant": tid, "after": after, "limit": EXPORT_PAGE }),
            )
            .await?;
        let csv = v["csv"].as_str().unwrap_or_default();
        // Every page starts with the header row: keep the first one only.
        let rows = if page == 0 {
            csv
        } else {
            csv.split_once('\n').map_or("", |(_, rest)| rest)
        };
        out.push_str(rows);
        match v["next"].as_str() {
            Some(n) if !n.is_empty() => after = n.to_owned(),
            _ => break,
        }
    }
    Ok(csv_answer(&format!("members-{tid}.csv"), out))
}
