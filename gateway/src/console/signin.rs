//! Sign-in, the forced password change of a first sign-in (seed 000), sign-out and the
//! language switch.
//!
//! Failed sign-ins back off in the broker, per account and per address (the broker's login
//! rate limiter): a refused attempt shows how long to wait. The address is the TCP peer of
//! the gateway (a proxy in front makes all visitors one address: the per-account back-off
//! still holds).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::Router;
use axum::extract::{ConnectInfo, FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;

use super::error::see_other;
use super::session::{
    self, ConsoleUser, FormData, Post, SESSION_COOKIE, SIGNIN_CSRF_COOKIE, SignedIn,
};
use super::{ConsoleError, ConsoleState, FieldErrors, Lang, Page, Role, i18n, render};
use crate::service::ServiceError;

/// How long a session lasts without activity (seconds); the broker enforces it too.
pub const SESSION_SECS: u64 = 8 * 3600;
/// Shortest new password.
pub const MIN_PASSWORD: usize = 10;
/// Longest password (argon2 cost does not depend on it, the form limit would).
pub const MAX_PASSWORD: usize = 128;

pub fn routes() -> Router<ConsoleState> {
    Router::new()
        .route("/", get(home))
        .route("/signin", get(signin_form).post(signin))
        .route("/password", get(password_form).post(change_password))
        .route("/signout", axum::routing::post(signout))
        .route("/lang", get(switch_lang))
}

/// The TCP peer of the request (unspecified when unknown, e.g. in-process tests).
pub struct Peer(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Peer, Self::Rejection> {
        Ok(Peer(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip()),
        ))
    }
}

async fn home(user: ConsoleUser) -> Response {
    if user.role == Role::Operator {
        see_other("/console/ops")
    } else {
        see_other("/console/tenants")
    }
}

#[derive(askama::Template)]
#[template(path = "console/signin.html")]
struct SigninPage {
    page: Page,
    username: String,
    next: String,
    errors: FieldErrors,
}

#[derive(Deserialize)]
struct Next {
    next: Option<String>,
}

/// Only paths of the console: no open redirect.
fn safe_next(next: &str) -> String {
    let ok = next.starts_with("/console")
        && !next.contains("//")
        && !next.contains('\\')
        && !next.starts_with("/console/signin");
    if ok {
        next.to_owned()
    } else {
        "/console".to_owned()
    }
}

fn anonymous_page(lang: Lang, csrf: String) -> Page {
    Page {
        lang,
        user: None,
        csrf,
        active: "",
        path: "/console/signin".into(),
    }
}

fn signin_page(lang: Lang, headers: &HeaderMap, p: SigninPage) -> Response {
    let secure = session::is_https(headers);
    let cookie = session::set_cookie(SIGNIN_CSRF_COOKIE, &p.page.csrf, 3600, secure, false);
    let _ = lang;
    let mut r = render(&p);
    if let Ok(v) = header::HeaderValue::from_str(&cookie) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

fn new_token() -> Result<String, ConsoleError> {
    let mut b = [0u8; 24];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).map_err(|_| {
        tracing::error!("console: no randomness for a token");
        ConsoleError::Internal
    })?;
    Ok(session::hex(&b))
}

async fn signin_form(
    lang: Lang,
    headers: HeaderMap,
    Query(q): Query<Next>,
) -> Result<Response, ConsoleError> {
    let csrf = new_token()?;
    let p = SigninPage {
        page: anonymous_page(lang, csrf),
        username: String::new(),
        next: safe_next(q.next.as_deref().unwrap_or_default()),
        errors: FieldErrors::default(),
    };
    Ok(signin_page(lang, &headers, p))
}

async fn signin(
    lang: Lang,
    Peer(peer): Peer,
    st: axum::extract::State<ConsoleState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ConsoleError> {
    let form = FormData::parse(&body);
    // Double submit: the form's token must be the cookie's.
    let cookie = session::cookie(&headers, SIGNIN_CSRF_COOKIE).unwrap_or_default();
    let given = form.raw("_csrf");
    if cookie.is_empty() || given != cookie {
        tracing::info!(%peer, "console: sign-in without a valid CSRF token refused");
        return Err(ConsoleError::BadCsrf);
    }
    let username = form.get("username").to_owned();
    let password = form.raw("password");
    let next = safe_next(form.get("next"));
    let mut errors = FieldErrors::default();
    if username.is_empty() {
        errors.add("username", i18n::text(lang, "signin.username_required"));
    }
    if password.is_empty() {
        errors.add("password", i18n::text(lang, "signin.password_required"));
    }
    if errors.is_empty() {
        let answer = st
            .app
            .service
            .call(
                "console/signin",
                &json!({ "username": username, "password": password, "peer": peer.to_string() }),
            )
            .await;
        match answer {
            Ok(v) => {
                let Some(id) = v["session"].as_str() else {
                    tracing::error!("console: sign-in answer without a session");
                    return Err(ConsoleError::Internal);
                };
                tracing::info!(user = %username, %peer, "console: signed in");
                let to = if v["must_change"].as_bool().unwrap_or(false) {
                    "/console/password".to_owned()
                } else {
                    next
                };
                let secure = session::is_https(&headers);
                let mut r = see_other(&to);
                for c in [
                    session::set_cookie(SESSION_COOKIE, id, SESSION_SECS, secure, false),
                    session::set_cookie(SIGNIN_CSRF_COOKIE, "", 0, secure, false),
                ] {
                    if let Ok(v) = header::HeaderValue::from_str(&c) {
                        r.headers_mut().append(header::SET_COOKIE, v);
                    }
                }
                return Ok(r);
            }
            Err(ServiceError::Api { code: 401, .. }) => {
                tracing::info!(user = %username, %peer, "console: sign-in refused");
                errors.add("password", i18n::text(lang, "signin.wrong"));
            }
            Err(ServiceError::Api { code: 429, message }) => {
                tracing::info!(user = %username, %peer, "console: sign-in refused (back-off)");
                let secs = message
                    .split_whitespace()
                    .find_map(|w| w.parse::<u64>().ok())
                    .unwrap_or(1);
                errors.add(
                    "password",
                    i18n::text(lang, "signin.locked").replace("{secs}", &secs.to_string()),
                );
            }
            Err(e) => return Err(e.into()),
        }
    }
    let p = SigninPage {
        page: anonymous_page(lang, new_token()?),
        username,
        next,
        errors,
    };
    let mut r = signin_page(lang, &headers, p);
    *r.status_mut() = axum::http::StatusCode::UNPROCESSABLE_ENTITY;
    Ok(r)
}

#[derive(askama::Template)]
#[template(path = "console/password.html")]
struct PasswordPage {
    page: Page,
    forced: bool,
    errors: FieldErrors,
}

async fn password_form(user: SignedIn) -> Response {
    render(&PasswordPage {
        page: user.page(""),
        forced: user.must_change,
        errors: FieldErrors::default(),
    })
}

async fn change_password(
    st: axum::extract::State<ConsoleState>,
    Post { user, form }: Post<SignedIn>,
) -> Result<Response, ConsoleError> {
    let (old, new, confirm) = (form.raw("old"), form.raw("new"), form.raw("confirm"));
    let mut errors = FieldErrors::default();
    if old.is_empty() {
        errors.add("old", user.t("password.old_required"));
    }
    if new.chars().count() < MIN_PASSWORD || new.len() > MAX_PASSWORD {
        errors.add("new", user.t("password.too_short"));
    } else if new == old {
        errors.add("new", user.t("password.same"));
    }
    if confirm != new {
        errors.add("confirm", user.t("password.mismatch"));
    }
    if errors.is_empty() {
        let r = st
            .app
            .service
            .call(
                "console/password",
                &json!({ "session": user.session_id(), "old": old, "new": new }),
            )
            .await;
        match r {
            Ok(_) => {
                tracing::info!(user = %user.username, "console: password changed");
                return Ok(see_other("/console"));
            }
            Err(ServiceError::Api { code: 401, .. }) => {
                errors.add("old", user.t("password.old_wrong"));
            }
            Err(ServiceError::Api { code: 429, .. }) => {
                errors.add("old", user.t("password.old_wrong"));
            }
            Err(e) => return Err(e.into()),
        }
    }
    let mut r = render(&PasswordPage {
        page: user.page(""),
        forced: user.must_change,
        errors,
    });
    *r.status_mut() = axum::http::StatusCode::UNPROCESSABLE_ENTITY;
    Ok(r)
}

async fn signout(
    st: axum::extract::State<ConsoleState>,
    headers: HeaderMap,
    Post { user, .. }: Post<SignedIn>,
) -> Result<Response, ConsoleError> {
    st.call("console/signout", &json!({ "session": user.session_id() }))
        .await?;
    tracing::info!(user = %user.username, "console: signed out");
    let mut r = see_other("/console/signin");
    let c = session::set_cookie(SESSION_COOKIE, "", 0, session::is_https(&headers), false);
    if let Ok(v) = header::HeaderValue::from_str(&c) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(r)
}

#[derive(Deserialize)]
struct LangSwitch {
    to: String,
    back: Option<String>,
}

/// `GET /console/lang?to=zh&back=/console/...`: remembers the language for a year.
async fn switch_lang(headers: HeaderMap, Query(q): Query<LangSwitch>) -> Response {
    let lang = Lang::parse(&q.to).unwrap_or(Lang::En);
    let back = safe_next(q.back.as_deref().unwrap_or_default());
    let mut r = see_other(&back);
    let c = session::set_cookie(
        i18n::COOKIE,
        lang.code(),
        365 * 24 * 3600,
        session::is_https(&headers),
        false,
    );
    if let Ok(v) = header::HeaderValue::from_str(&c) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r.into_response()
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn next_stays_inside_the_console() {
        assert_eq!(safe_next("/console/tenants/3"), "/console/tenants/3");
        for bad in [
            "https://evil.example/",
            "//evil.example/",
            "/console//x",
            "/other",
            "/console/\\x",
            "",
        ] {
            assert_eq!(safe_next(bad), "/console", "{bad}");
        }
    }
}
