//! The console's errors. Handlers return [`ConsoleError`]; its answer carries an
//! [`ErrorPage`] marker that the console's outer layer turns into the friendly error page
//! in the visitor's language (never a stack trace, never the raw error of a dependency:
//! internal errors are logged and shown as "something went wrong"). Form validation
//! errors are not `ConsoleError`s: the page is rendered again with [`FieldErrors`] next to
//! the fields.

use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use super::Lang;
use crate::service::ServiceError;

/// Why a console request failed.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// No valid session: go to the sign-in page, then back to `next`.
    #[error("not signed in")]
    SignIn { next: String },
    /// The request is done elsewhere (303 See Other).
    #[error("redirect to {0}")]
    Redirect(String),
    /// The user's role or scope does not allow this.
    #[error("forbidden")]
    Forbidden,
    /// A form came without the right CSRF token.
    #[error("missing or wrong CSRF token")]
    BadCsrf,
    #[error("not found")]
    NotFound,
    /// The IM service refused the request; its message is shown.
    #[error("{0}")]
    Refused(String),
    /// The broker cannot be reached.
    #[error("the broker is unavailable")]
    Unavailable,
    /// Anything else (logged where it happened).
    #[error("internal error")]
    Internal,
}

impl From<ServiceError> for ConsoleError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Api { code: 404, .. } => ConsoleError::NotFound,
            ServiceError::Api {
                code: 401 | 403, ..
            } => ConsoleError::Forbidden,
            ServiceError::Api { code, message } if (400..500).contains(&code) => {
                ConsoleError::Refused(message)
            }
            ServiceError::Api { code, message } => {
                tracing::error!(code, message, "console: the IM service failed");
                ConsoleError::Internal
            }
            ServiceError::Unavailable(m) => {
                tracing::warn!(error = %m, "console: broker unavailable");
                ConsoleError::Unavailable
            }
        }
    }
}

/// Marker on an error answer: render the error page (done by the console's outer layer,
/// which knows the visitor's language).
#[derive(Debug, Clone)]
pub struct ErrorPage {
    pub status: StatusCode,
    /// Translation key of the explanation.
    pub key: &'static str,
    /// A message from the service (shown as is, escaped).
    pub detail: String,
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let (status, key, detail) = match self {
            ConsoleError::SignIn { next } => {
                let to = format!(
                    "/console/signin?next={}",
                    form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
                );
                return see_other(&to);
            }
            ConsoleError::Redirect(to) => return see_other(&to),
            ConsoleError::Forbidden => (StatusCode::FORBIDDEN, "error.forbidden", String::new()),
            ConsoleError::BadCsrf => (StatusCode::FORBIDDEN, "error.csrf", String::new()),
            ConsoleError::NotFound => (StatusCode::NOT_FOUND, "error.not_found", String::new()),
            ConsoleError::Refused(m) => (StatusCode::BAD_REQUEST, "error.refused", m),
            ConsoleError::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "error.unavailable",
                String::new(),
            ),
            ConsoleError::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "error.internal",
                String::new(),
            ),
        };
        let mut r = status.into_response();
        r.extensions_mut().insert(ErrorPage {
            status,
            key,
            detail,
        });
        r
    }
}

/// A 303 See Other to `to` (a path of this site).
pub fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_owned())]).into_response()
}

/// An error answer made outside the console's handlers (axum's rejection of a path or query
/// that does not parse, a body over its limit, a wrong method): plain text in English. It
/// becomes the console's error page too, so a visitor never meets a bare framework message.
/// `None` for successes and for HTML answers (the console's own pages, forms shown again
/// with their field errors).
pub(crate) fn framework_error(resp: &Response) -> Option<ErrorPage> {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return None;
    }
    let html = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if html {
        return None;
    }
    let key = match status {
        StatusCode::NOT_FOUND => "error.not_found",
        StatusCode::PAYLOAD_TOO_LARGE => "error.too_large",
        s if s.is_server_error() => "error.internal",
        _ => "error.bad_request",
    };
    tracing::info!(
        status = status.as_u16(),
        "console: request rejected before its handler"
    );
    Some(ErrorPage {
        status,
        key,
        detail: String::new(),
    })
}

#[derive(askama::Template)]
#[template(path = "console/error.html")]
struct ErrorTemplate {
    page: super::Page,
    status: u16,
    key: &'static str,
    detail: String,
}

/// The error page for `e` in language `lang`.
pub(crate) fn page(lang: Lang, e: ErrorPage) -> Response {
    let t = ErrorTemplate {
        page: super::Page {
            lang,
            user: None,
            csrf: String::new(),
            active: "",
            path: "/console".into(),
        },
        status: e.status.as_u16(),
        key: e.key,
        detail: e.detail,
    };
    match askama::Template::render(&t) {
        Ok(html) => (e.status, Html(html)).into_response(),
        Err(err) => {
            tracing::error!(error = %err, "console: error page failed");
            (e.status, "error").into_response()
        }
    }
}

/// Validation errors of a form, by field name (each a translation key or a message from
/// the service), shown next to their fields.
#[derive(Debug, Default, Clone)]
pub struct FieldErrors(Vec<(&'static str, String)>);

impl FieldErrors {
    /// Records an error on `field`.
    pub fn add(&mut self, field: &'static str, message: impl Into<String>) {
        self.0.push((field, message.into()));
    }

    /// The first error on `field`.
    pub fn get(&self, field: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, m)| m.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
