//! Who is signed in, and what a form brings.
//!
//! - Sessions: sign-in returns a random session id from the broker (stored there, hashed,
//!   with an expiry), kept in the `sb_session` cookie (`HttpOnly`, `SameSite=Strict`,
//!   `Path=/console`, `Secure` when the request came over HTTPS: `X-Forwarded-Proto:
//!   https` from the TLS proxy in front). Each request looks the session up with
//!   `$im/admin/console/session`, so every gateway instance sees the same sessions and
//!   sign-out ends one everywhere.
//! - Extractors: [`SignedIn`] (any valid session, also one that must change its password),
//!   [`ConsoleUser`] (a session that may use the console: a forced password change
//!   redirects to `/console/password` first), [`Post`] (a signed-in user plus a form body
//!   whose `_csrf` field matches the session's token, else 403).
//! - CSRF: the token is HMAC-SHA256 of a fixed label keyed with the session id, so it is
//!   unguessable without the cookie and needs no storage. The sign-in form, before any
//!   session, uses a double-submit cookie (`sb_csrf`).
//! - Roles and scope: [`Role`]; [`SignedIn::tenant`] fetches a tenant and answers 404 for
//!   a tenant outside the user's scope (another developer's, or not the administrator's).

use std::ops::Deref;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use ring::hmac;
use serde::Deserialize;
use serde_json::json;

use super::{ConsoleError, ConsoleState, Lang, Page};

/// The session cookie.
pub const SESSION_COOKIE: &str = "sb_session";
/// The double-submit CSRF cookie of the sign-in form.
pub const SIGNIN_CSRF_COOKIE: &str = "sb_csrf";
/// Largest form body (bytes); file uploads use their own limit.
pub const MAX_FORM: usize = 64 * 1024;

/// What a console user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A developer account: every tenant of that account.
    Developer,
    /// One tenant (enterprise).
    TenantAdmin,
    /// Broker operations (clients, retained, rates); no tenant's settings.
    Operator,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "developer" => Some(Role::Developer),
            "tenant_admin" => Some(Role::TenantAdmin),
            "operator" => Some(Role::Operator),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Developer => "developer",
            Role::TenantAdmin => "tenant_admin",
            Role::Operator => "operator",
        }
    }
}

/// A valid session's user.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub username: String,
    pub role: Role,
    /// The tenant of a tenant administrator.
    pub tenant: Option<u64>,
    /// The developer account of a developer.
    pub account: Option<String>,
    /// The password must be changed before anything else.
    pub must_change: bool,
    /// This session's CSRF token.
    pub csrf: String,
    pub lang: Lang,
    /// The request's path (with query), for redirects back to it.
    pub path: String,
    session: String,
}

#[derive(Deserialize)]
struct SessionAnswer {
    username: String,
    role: String,
    tenant: Option<u64>,
    account: Option<String>,
    #[serde(default)]
    must_change: bool,
}

impl SignedIn {
    /// The page context for a page under navigation entry `active`.
    pub fn page(&self, active: &'static str) -> Page {
        Page {
            lang: self.lang,
            user: Some(self.clone()),
            csrf: self.csrf.clone(),
            active,
            path: self.path.clone(),
        }
    }

    /// The session id (for sign-out and password changes).
    pub fn session_id(&self) -> &str {
        &self.session
    }

    /// The text of translation key `key` in the user's language.
    pub fn t(&self, key: &str) -> &'static str {
        super::i18n::text(self.lang, key)
    }

    /// Refuses (403) unless the user has `role`.
    pub fn require(&self, role: Role) -> Result<(), ConsoleError> {
        if self.role == role {
            Ok(())
        } else {
            Err(ConsoleError::Forbidden)
        }
    }

    /// Refuses (403) operators: tenant pages are for developers and tenant administrators.
    pub fn require_tenant_role(&self) -> Result<(), ConsoleError> {
        if self.role == Role::Operator {
            Err(ConsoleError::Forbidden)
        } else {
            Ok(())
        }
    }

    /// Whether tenant `t` is in this user's scope.
    pub fn sees(&self, t: &super::tenants::Tenant) -> bool {
        match self.role {
            Role::Developer => self.account.as_deref() == Some(t.account.as_str()),
            Role::TenantAdmin => self.tenant == Some(t.tenant_id),
            Role::Operator => false,
        }
    }

    /// Tenant `tid` if it is in this user's scope; 404 otherwise (whether it exists is
    /// not told). Every page of a tenant's area starts with this.
    pub async fn tenant(
        &self,
        st: &ConsoleState,
        tid: u64,
    ) -> Result<super::tenants::Tenant, ConsoleError> {
        self.require_tenant_role()?;
        if self.role == Role::TenantAdmin && self.tenant != Some(tid) {
            return Err(ConsoleError::NotFound);
        }
        let v = st
            .call("console/tenants/get", &json!({ "tenant": tid }))
            .await?;
        let t: super::tenants::Tenant = serde_json::from_value(v).map_err(|e| {
            tracing::error!(error = %e, "console: undecodable tenant");
            ConsoleError::Internal
        })?;
        if self.sees(&t) {
            Ok(t)
        } else {
            Err(ConsoleError::NotFound)
        }
    }

    /// Checks a form's CSRF token (403 when it is missing or wrong).
    pub fn check_csrf(&self, given: &str) -> Result<(), ConsoleError> {
        if !given.is_empty() && constant_eq(given.as_bytes(), self.csrf.as_bytes()) {
            Ok(())
        } else {
            tracing::info!(user = %self.username, path = %self.path, "console: form without a valid CSRF token refused");
            Err(ConsoleError::BadCsrf)
        }
    }
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// The CSRF token of session `id`.
pub fn csrf_of(session: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, session.as_bytes());
    hex(hmac::sign(&key, b"switchboard console csrf").as_ref())
}

pub(crate) fn hex(b: &[u8]) -> String {
    use std::fmt::Write as _;
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

/// The request's path as the browser sent it (the console is nested at `/console`, which
/// the nested router strips).
fn original_path(parts: &Parts) -> String {
    let p = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    if p.starts_with("/console") {
        p.to_owned()
    } else {
        format!("/console{p}")
    }
}

impl FromRequestParts<ConsoleState> for SignedIn {
    type Rejection = ConsoleError;

    async fn from_request_parts(
        parts: &mut Parts,
        st: &ConsoleState,
    ) -> Result<SignedIn, ConsoleError> {
        let path = original_path(parts);
        let next = if parts.method == axum::http::Method::GET {
            path.clone()
        } else {
            "/console".to_owned()
        };
        let Some(session) = cookie(&parts.headers, SESSION_COOKIE).filter(|s| s.len() <= 128)
        else {
            return Err(ConsoleError::SignIn { next });
        };
        let v = match st
            .call("console/session", &json!({ "session": session }))
            .await
        {
            Ok(v) => v,
            Err(ConsoleError::NotFound | ConsoleError::Forbidden) => {
                return Err(ConsoleError::SignIn { next });
            }
            Err(e) => return Err(e),
        };
        let a: SessionAnswer = serde_json::from_value(v).map_err(|e| {
            tracing::error!(error = %e, "console: undecodable session");
            ConsoleError::Internal
        })?;
        Ok(SignedIn {
            role: Role::parse(&a.role).ok_or(ConsoleError::Forbidden)?,
            username: a.username,
            tenant: a.tenant,
            account: a.account,
            must_change: a.must_change,
            csrf: csrf_of(&session),
            lang: Lang::from_headers(&parts.headers),
            path,
            session,
        })
    }
}

/// A signed-in user who may use the console (no password change pending).
#[derive(Debug, Clone)]
pub struct ConsoleUser(pub SignedIn);

impl Deref for ConsoleUser {
    type Target = SignedIn;
    fn deref(&self) -> &SignedIn {
        &self.0
    }
}

impl FromRequestParts<ConsoleState> for ConsoleUser {
    type Rejection = ConsoleError;

    async fn from_request_parts(
        parts: &mut Parts,
        st: &ConsoleState,
    ) -> Result<ConsoleUser, ConsoleError> {
        let u = SignedIn::from_request_parts(parts, st).await?;
        if u.must_change {
            return Err(ConsoleError::Redirect("/console/password".into()));
        }
        Ok(ConsoleUser(u))
    }
}

/// A form's fields (`application/x-www-form-urlencoded`), in order.
#[derive(Debug, Default, Clone)]
pub struct FormData(Vec<(String, String)>);

impl FormData {
    pub fn parse(body: &[u8]) -> FormData {
        FormData(
            form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// Field `name`, trimmed ("" when absent).
    pub fn get(&self, name: &str) -> &str {
        self.raw(name).trim()
    }

    /// Field `name` as sent ("" when absent): passwords are not trimmed.
    pub fn raw(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }

    /// Every value of a repeated field (checkboxes).
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Whether a checkbox is on.
    pub fn checked(&self, name: &str) -> bool {
        matches!(self.get(name), "on" | "true" | "1")
    }
}

/// Something a form's CSRF token is checked against.
pub trait CsrfCheck {
    fn check_csrf(&self, given: &str) -> Result<(), ConsoleError>;
}

impl CsrfCheck for SignedIn {
    fn check_csrf(&self, given: &str) -> Result<(), ConsoleError> {
        SignedIn::check_csrf(self, given)
    }
}

impl CsrfCheck for ConsoleUser {
    fn check_csrf(&self, given: &str) -> Result<(), ConsoleError> {
        self.0.check_csrf(given)
    }
}

/// A POSTed form from a signed-in user, its `_csrf` field checked (403 without it).
pub struct Post<U = ConsoleUser> {
    pub user: U,
    pub form: FormData,
}

impl<U> FromRequest<ConsoleState> for Post<U>
where
    U: FromRequestParts<ConsoleState, Rejection = ConsoleError> + CsrfCheck + Send,
{
    type Rejection = ConsoleError;

    async fn from_request(req: Request, st: &ConsoleState) -> Result<Self, ConsoleError> {
        let (mut parts, body) = req.into_parts();
        let user = U::from_request_parts(&mut parts, st).await?;
        let body = axum::body::to_bytes(body, MAX_FORM)
            .await
            .map_err(|_| ConsoleError::Refused(format!("form larger than {MAX_FORM} bytes")))?;
        let form = FormData::parse(&body);
        user.check_csrf(form.raw("_csrf"))?;
        Ok(Post { user, form })
    }
}

/// Cookie `name` of a request.
pub fn cookie(h: &HeaderMap, name: &str) -> Option<String> {
    h.get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// Whether the request reached the proxy in front over HTTPS (cookies get `Secure`).
pub fn is_https(h: &HeaderMap) -> bool {
    h.get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// A `Set-Cookie` value for the console (`Path=/console`, `SameSite=Strict`, `HttpOnly`
/// unless `script` is set, `Secure` on HTTPS); `max_age` 0 deletes the cookie.
pub fn set_cookie(name: &str, value: &str, max_age: u64, secure: bool, script: bool) -> String {
    let mut c = format!("{name}={value}; Path=/console; SameSite=Strict; Max-Age={max_age}");
    if !script {
        c.push_str("; HttpOnly");
    }
    if secure {
        c.push_str("; Secure");
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_tokens_differ_per_session_and_compare_exactly() {
        let a = csrf_of("session-a");
        assert_eq!(a.len(), 64);
        assert_ne!(a, csrf_of("session-b"));
        assert!(constant_eq(a.as_bytes(), csrf_of("session-a").as_bytes()));
        assert!(!constant_eq(a.as_bytes(), &a.as_bytes()[1..]));
    }

    #[test]
    fn cookies_are_found_among_several_headers() {
        let mut h = HeaderMap::new();
        h.append(
            "cookie",
            axum::http::HeaderValue::from_static("x=1; sb_session=abc"),
        );
        h.append("cookie", axum::http::HeaderValue::from_static("sb_lang=zh"));
        assert_eq!(cookie(&h, "sb_session").as_deref(), Some("abc"));
        assert_eq!(cookie(&h, "sb_lang").as_deref(), Some("zh"));
        assert_eq!(cookie(&h, "nope"), None);
        let c = set_cookie("sb_session", "abc", 60, true, false);
        assert!(c.contains("HttpOnly") && c.contains("Secure") && c.contains("SameSite=Strict"));
    }
}
