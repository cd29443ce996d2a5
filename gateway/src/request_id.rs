//! Request ids: every HTTP request gets one (the caller's `X-Request-Id` when it sends a
//! sane one, otherwise a new random id), echoed in the `X-Request-Id` answer header,
//! recorded in the request's tracing span, put in native error bodies (`request_id`) and
//! passed to the broker with each service call of the request (MQTT 5 user property
//! `request-id`), so the broker's log lines of that call carry it too.
//!
//! A signed call (native or RongCloud) also has its nonce here once the signature checked
//! out ([`set_signed`]): each service call of the request carries it (user property
//! `signed-nonce`, `{tenant} {until} {call} {nonce}`, `call` a random id drawn per HTTP
//! request, never the caller's), and the broker refuses a nonce another call already used,
//! whichever gateway instance served it (docs/gateway.md).

use std::sync::OnceLock;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// The header, in and out.
pub const HEADER: &str = "x-request-id";
/// Longest id taken from a caller.
const MAX_LEN: usize = 128;

/// The request being served by a task.
struct Current {
    id: String,
    /// The `signed-nonce` property value, once the signature checked out.
    signed: OnceLock<String>,
}

tokio::task_local! {
    static CURRENT: Current;
}

/// The id of the request being served by this task, if any.
pub fn current() -> Option<String> {
    CURRENT.try_with(|c| c.id.clone()).ok()
}

/// Marks the request being served as a signed call of `tenant` with `nonce` (the
/// dialect's key), whose timestamp stays acceptable until Unix second `until`.
pub fn set_signed(tenant: u64, until: u64, nonce: &str) {
    let _ = CURRENT.try_with(|c| {
        c.signed
            .get_or_init(|| format!("{tenant} {until} {} {nonce}", generate()));
    });
}

/// The `signed-nonce` property of the request being served, if it is a signed call.
pub fn signed_nonce() -> Option<String> {
    CURRENT.try_with(|c| c.signed.get().cloned()).ok().flatten()
}

/// Whether a caller's id can be used as is (printable ASCII without spaces, bounded).
fn acceptable(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_LEN && id.bytes().all(|b| b.is_ascii_graphic())
}

/// A new id: 16 random bytes, hex.
fn generate() -> String {
    let mut b = [0u8; 16];
    rand::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The middleware: assigns the id, serves the request inside its span, sets the header.
pub async fn layer(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable(v))
        .map_or_else(generate, str::to_owned);
    let span = tracing::info_span!(
        "http",
        request_id = %id,
        method = %req.method(),
        path = %req.uri().path()
    );
    let current = Current {
        id: id.clone(),
        signed: OnceLock::new(),
    };
    let mut res = CURRENT
        .scope(current, next.run(req).instrument(span.clone()))
        .await;
    let status = res.status();
    span.in_scope(|| {
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), "request failed");
        } else {
            tracing::debug!(status = status.as_u16(), "request served");
        }
    });
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(HEADER, v);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_ids_are_taken_only_when_sane() {
        assert!(acceptable("abc-123_X.y"));
        assert!(!acceptable(""));
        assert!(!acceptable("has space"));
        assert!(!acceptable(&"x".repeat(MAX_LEN + 1)));
        assert!(!acceptable("new\nline"));
        assert_eq!(generate().len(), 32);
    }
}
