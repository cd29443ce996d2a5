//! Broker operations for operators: live counters and charts over the last hour, clients
//! with search and kick, a client's subscriptions and queue, retained messages, groups and
//! chatrooms with their members, and a message trace for one user. The numbers come from
//! the broker through `$im/admin/console/ops/...` (the same functions as the operator HTTP
//! API), so every gateway shows the same.

use axum::Router;
use axum::response::Response;
use axum::routing::get;

use super::{ConsoleError, ConsoleState, ConsoleUser, Page, Role, render};

pub fn routes() -> Router<ConsoleState> {
    Router::new().route("/ops", get(overview))
}

#[derive(askama::Template)]
#[template(path = "console/ops/overview.html")]
struct OverviewPage {
    page: Page,
}

async fn overview(user: ConsoleUser) -> Result<Response, ConsoleError> {
    user.require(Role::Operator)?;
    Ok(render(&OverviewPage {
        page: user.page("ops"),
    }))
}
