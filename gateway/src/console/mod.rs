//! The web console at `/console`: server-rendered pages (askama templates compiled into
//! the binary) for developers, tenant administrators and broker operators. It is one more
//! client of the IM service: every page calls `$im/admin/...` ops through
//! [`crate::service::ServiceClient`], like the REST API; the console keeps no state of its
//! own (console users and their sessions live in the broker's store, see
//! `broker/src/im/console/`), so any gateway instance serves any request.
//!
//! `README.md` beside this file is the contract for adding pages (one module per area with
//! `pub fn routes() -> Router<ConsoleState>`, templates under
//! `gateway/templates/console/{area}/`, translations in `i18n/{en,zh}.toml`).
//!
//! Files: [`session`] (the signed-in user, roles and scopes, cookies, CSRF, form bodies),
//! [`error`] (friendly error pages), [`i18n`] (English and Simplified Chinese),
//! [`assets`] (the vendored CSS and JS), [`signin`] (sign-in, forced password change,
//! sign-out, language), [`tenants`] (tenants, credentials, compat APIs, webhooks, push
//! credentials), [`ops`] (broker operations: counters, charts, clients, retained, groups,
//! trace), [`push_trace`] (the push worker's decisions sent to the broker for the trace).

pub mod apps;
pub mod assets;
pub mod error;
pub mod i18n;
pub mod ops;
pub mod org;
pub mod push_trace;
pub mod session;
pub mod signin;
pub mod tenants;

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use serde_json::Value;

use crate::AppState;
pub use error::{ConsoleError, FieldErrors};
pub use i18n::Lang;
pub use session::{ConsoleUser, FormData, Post, Role, SignedIn};

/// What every console handler gets: the gateway's state (its service connection).
#[derive(Clone)]
pub struct ConsoleState {
    pub app: Arc<AppState>,
}

impl ConsoleState {
    /// Calls IM service op `op` (`$im/admin/{op}`) with a JSON body.
    pub async fn call(&self, op: &str, body: &Value) -> Result<Value, ConsoleError> {
        Ok(self.app.service.call(op, body).await?)
    }
}

/// The console's routes, to be nested at `/console` (the paths below are relative to it).
/// Each area's module adds its own with `.merge(area::routes())`.
pub fn router<S: Clone + Send + Sync + 'static>(app: Arc<AppState>) -> Router<S> {
    let state = ConsoleState { app };
    Router::new()
        .merge(assets::routes())
        .merge(signin::routes())
        .merge(tenants::routes())
        .merge(ops::routes())
        .merge(org::routes())
        .merge(apps::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(wrong_method)
        .layer(axum::middleware::from_fn(finish))
        .with_state(state)
}

/// `/console/` (outside the nested router, which only sees `/console`): to the home page.
pub async fn home_redirect() -> axum::response::Response {
    error::see_other("/console")
}

async fn not_found() -> ConsoleError {
    ConsoleError::NotFound
}

/// A console page called with another method: a bare 405 that [`finish`] turns into the
/// console's error page (the REST API's JSON answer is for API clients, not browsers).
async fn wrong_method() -> axum::http::StatusCode {
    axum::http::StatusCode::METHOD_NOT_ALLOWED
}

/// The context every page's template gets as `page`: language, the signed-in user (if
/// any), the CSRF token for its forms and which navigation entry is active.
pub struct Page {
    pub lang: Lang,
    pub user: Option<SignedIn>,
    /// Put in every form as `<input type="hidden" name="_csrf" value="{{ page.csrf }}">`.
    pub csrf: String,
    /// The active navigation entry: "tenants", "org", "apps", "ops" or "".
    pub active: &'static str,
    /// The path of this page (the language switch comes back to it).
    pub path: String,
}

impl Page {
    /// The text of translation key `key` ("area.name") in the page's language.
    pub fn t(&self, key: &str) -> &'static str {
        i18n::text(self.lang, key)
    }

    /// Whether the user may see tenant pages (developers and tenant administrators).
    pub fn can_tenants(&self) -> bool {
        self.user.as_ref().is_some_and(|u| u.role != Role::Operator)
    }

    /// Whether the user may see the operations pages.
    pub fn can_ops(&self) -> bool {
        self.user.as_ref().is_some_and(|u| u.role == Role::Operator)
    }

    /// The signed-in user's name ("" when signed out).
    pub fn username(&self) -> &str {
        self.user.as_ref().map_or("", |u| u.username.as_str())
    }

    /// The signed-in user's role, translated.
    pub fn role_label(&self) -> &'static str {
        self.user.as_ref().map_or("", |u| {
            self.t(match u.role {
                Role::Developer => "role.developer",
                Role::TenantAdmin => "role.tenant_admin",
                Role::Operator => "role.operator",
            })
        })
    }

    /// "en" or "zh", for `<html lang>`.
    pub fn lang_code(&self) -> &'static str {
        self.lang.code()
    }

    /// The language the switch offers.
    pub fn other_lang(&self) -> &'static str {
        match self.lang {
            Lang::En => "zh",
            Lang::Zh => "en",
        }
    }
}

/// Renders a template into an HTML answer; a template failure becomes the error page.
pub fn render<T: askama::Template>(t: &T) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "console: template failed");
            ConsoleError::Internal.into_response()
        }
    }
}

/// Security headers on every answer, and error answers turned into the friendly error page
/// in the visitor's language.
async fn finish(req: Request, next: Next) -> Response {
    let lang = Lang::from_headers(req.headers());
    let mut resp = next.run(req).await;
    if let Some(e) = resp.extensions_mut().remove::<error::ErrorPage>() {
        resp = error::page(lang, e);
    } else if let Some(e) = error::framework_error(&resp) {
        resp = error::page(lang, e);
    }
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}
