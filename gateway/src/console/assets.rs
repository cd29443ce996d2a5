//! The console's static files, vendored in the repository and embedded in the binary:
//! `gateway/static/console/` served under `/console/static/`. No build step: the CSS and
//! the small script are written by hand. A page module that needs its own file adds it to
//! [`FILES`].

use axum::Router;
use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::{ConsoleError, ConsoleState};

/// Name, content type and bytes of every static file.
pub const FILES: &[(&str, &str, &str)] = &[
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("../../static/console/console.css"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_str!("../../static/console/console.js"),
    ),
];

pub fn routes() -> Router<ConsoleState> {
    Router::new().route("/static/{name}", get(file))
}

async fn file(Path(name): Path<String>) -> Result<Response, ConsoleError> {
    let (_, mime, body) = FILES
        .iter()
        .find(|(n, _, _)| *n == name)
        .ok_or(ConsoleError::NotFound)?;
    Ok((
        [
            (header::CONTENT_TYPE, *mime),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        *body,
    )
        .into_response())
}
