//! Broker operations for operators: live counters and charts over the last hour, clients
//! with search and kick, a client's subscriptions and queue, retained messages ([`im`]:
//! groups and chatrooms with their members, a message trace for one user). The numbers
//! come from the broker through `$im/admin/console/ops/...` (the same broker functions as
//! the operator HTTP API), so every gateway shows the same.

pub mod charts;
pub mod im;

use axum::Router;
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::error::see_other;
use super::{ConsoleError, ConsoleState, ConsoleUser, Page, Post, Role, render};
use charts::Chart;

/// Clients per page.
const PAGE: usize = 50;
/// Queued messages shown on a client's page (the oldest ones).
const QUEUE_SHOWN: usize = 100;

pub fn routes() -> Router<ConsoleState> {
    Router::new()
        .route("/ops", get(overview))
        .route("/ops/clients", get(clients))
        .route("/ops/client", get(client))
        .route("/ops/kick", post(kick))
        .route("/ops/retained", get(retained))
        .merge(im::routes())
}

#[derive(Debug, Clone, Copy, Deserialize)]
struct Sample {
    t_ms: u64,
    connections: u64,
    received: u64,
    sent: u64,
    queued: u64,
    store_bytes: u64,
    /// The data file's size (0 when the store does not say; older brokers leave it out).
    #[serde(default)]
    disk_bytes: u64,
}

#[derive(askama::Template)]
#[template(path = "console/ops/overview.html")]
struct OverviewPage {
    page: Page,
    /// (translation key, value, element id)
    tiles: Vec<(&'static str, String, &'static str)>,
    charts: Vec<Chart>,
}

fn build_charts(samples: &[Sample]) -> Vec<Chart> {
    let t: Vec<u64> = samples.iter().map(|s| s.t_ms).collect();
    let series = |f: fn(&Sample) -> u64| samples.iter().map(f).collect::<Vec<u64>>();
    let as_f = |v: &[u64]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
    let conns = as_f(&series(|s| s.connections));
    let rin = charts::rates(&t, &series(|s| s.received));
    let rout = charts::rates(&t, &series(|s| s.sent));
    let queued = as_f(&series(|s| s.queued));
    let store = as_f(&series(|s| s.store_bytes));
    let disk = as_f(&series(|s| s.disk_bytes));
    let top = |v: &[f64]| charts::nice_max(v.iter().copied().fold(0.0, f64::max));
    let last = |v: &[f64]| v.last().copied().unwrap_or(0.0);
    let one = |title, id, v: &[f64], fmt: &dyn Fn(f64) -> String| {
        let max = top(v);
        Chart {
            title,
            path: charts::path(&t, v, max),
            path2: String::new(),
            max: fmt(max),
            last: fmt(last(v)),
            id,
        }
    };
    let int = |x: f64| format!("{x:.0}");
    let rate_max = charts::nice_max(rin.iter().chain(&rout).copied().fold(0.0, f64::max));
    vec![
        one("ops.chart_connections", "chart-connections", &conns, &int),
        Chart {
            title: "ops.chart_rates",
            path: charts::path(&t, &rin, rate_max),
            path2: charts::path(&t, &rout, rate_max),
            max: format!("{rate_max:.0}/s"),
            last: format!("{:.1}/s · {:.1}/s", last(&rin), last(&rout)),
            id: "chart-rates",
        },
        one("ops.chart_queued", "chart-queued", &queued, &int),
        one("ops.chart_store", "chart-store", &store, &|x| {
            charts::bytes(x as u64)
        }),
        one("ops.chart_disk", "chart-disk", &disk, &|x| {
            charts::bytes(x as u64)
        }),
    ]
}

async fn overview(st: State<ConsoleState>, user: ConsoleUser) -> Result<Response, ConsoleError> {
    user.require(Role::Operator)?;
    let v = st.call("console/ops/overview", &json!({})).await?;
    let samples: Vec<Sample> = serde_json::from_value(v["samples"].clone()).unwrap_or_default();
    let now: Option<Sample> = serde_json::from_value(v["now"].clone()).ok();
    let n = |k: &str| v[k].as_u64().unwrap_or_default().to_string();
    let tiles = vec![
        (
            "ops.connections",
            now.map_or(0, |s| s.connections).to_string(),
            "tile-connections",
        ),
        ("ops.sessions", n("sessions"), "tile-sessions"),
        (
            "ops.subscriptions",
            n("subscriptions"),
            "tile-subscriptions",
        ),
        ("ops.retained", n("retained"), "tile-retained"),
        (
            "ops.queued",
            now.map_or(0, |s| s.queued).to_string(),
            "tile-queued",
        ),
        (
            "ops.store",
            charts::bytes(now.map_or(0, |s| s.store_bytes)),
            "tile-store",
        ),
        (
            "ops.disk",
            charts::bytes(now.map_or(0, |s| s.disk_bytes)),
            "tile-disk",
        ),
        (
            "ops.received",
            now.map_or(0, |s| s.received).to_string(),
            "tile-received",
        ),
        (
            "ops.sent",
            now.map_or(0, |s| s.sent).to_string(),
            "tile-sent",
        ),
        (
            "ops.uptime",
            format!("{} s", n("uptime_seconds")),
            "tile-uptime",
        ),
    ];
    Ok(render(&OverviewPage {
        page: user.page("ops"),
        tiles,
        charts: build_charts(&samples),
    }))
}

/// A session as the broker lists it.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ClientRow {
    pub client_id: String,
    pub online: bool,
    pub transport: Option<String>,
    pub peer: Option<String>,
    pub connected_since: Option<u64>,
    pub expiry: u32,
    pub queued: usize,
    #[serde(default)]
    pub subscriptions: Vec<String>,
    /// The oldest queued messages (only on the client page).
    #[serde(default)]
    pub queue: Vec<QueuedRow>,
}

/// One queued message of a client, as the broker shows it.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct QueuedRow {
    pub topic: String,
    pub qos: u8,
    pub bytes: usize,
    pub age_s: u32,
}

#[derive(Deserialize)]
struct ClientsQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    offset: usize,
    #[serde(default)]
    kicked: String,
}

#[derive(askama::Template)]
#[template(path = "console/ops/clients.html")]
struct ClientsPage {
    page: Page,
    q: String,
    clients: Vec<ClientRow>,
    total: usize,
    prev: Option<usize>,
    next: Option<usize>,
    kicked: String,
}

async fn clients(
    st: State<ConsoleState>,
    user: ConsoleUser,
    Query(q): Query<ClientsQuery>,
) -> Result<Response, ConsoleError> {
    user.require(Role::Operator)?;
    let search: String = q.q.trim().chars().take(128).collect();
    let v = st
        .call(
            "console/ops/clients",
            &json!({ "q": search, "offset": q.offset, "limit": PAGE }),
        )
        .await?;
    let clients: Vec<ClientRow> = serde_json::from_value(v["clients"].clone()).unwrap_or_default();
    let total = v["total"].as_u64().unwrap_or_default() as usize;
    Ok(render(&ClientsPage {
        page: user.page("clients"),
        q: search,
        prev: (q.offset > 0).then(|| q.offset.saturating_sub(PAGE)),
        next: (q.offset + clients.len() < total).then_some(q.offset + PAGE),
        clients,
        total,

        kicked: q.kicked.chars().take(256).collect(),
    }))
}

#[derive(Deserialize)]
struct ClientQuery {
    id: String,
}

#[derive(askama::Template)]
#[template(path = "console/ops/client.html")]
struct ClientPage {
    page: Page,
    c: ClientRow,
}

async fn client(
    st: State<ConsoleState>,
    user: ConsoleUser,
    Query(q): Query<ClientQuery>,
) -> Result<Response, ConsoleError> {
    user.require(Role::Operator)?;
    let v = st
        .call(
            "console/ops/client",
            &json!({ "id": q.id, "queue_limit": QUEUE_SHOWN }),
        )
        .await?;
    let c: ClientRow = serde_json::from_value(v).map_err(|e| {
        tracing::error!(error = %e, "console: undecodable client");
        ConsoleError::Internal
    })?;
    Ok(render(&ClientPage {
        page: user.page("clients"),
        c,
    }))
}

async fn kick(
    st: State<ConsoleState>,
    Post { user, form }: Post,
) -> Result<Response, ConsoleError> {
    user.require(Role::Operator)?;
    let id = form.get("id");
    if id.is_empty() {
        return Err(ConsoleError::Refused(user.t("ops.kick_no_id").into()));
    }
    st.call("console/ops/kick", &json!({ "id": id })).await?;
    tracing::info!(user = %user.username, client_id = id, "console: client kicked");
    let back: String = form_urlencoded::byte_serialize(id.as_bytes()).collect();
    Ok(see_other(&format!("/console/ops/clients?kicked={back}")))
}

#[derive(Deserialize)]
struct RetainedQuery {
    #[serde(default)]
    prefix: String,
}

#[derive(askama::Template)]
#[template(path = "console/ops/retained.html")]
struct RetainedPage {
    page: Page,
    prefix: String,
    /// (topic, qos, bytes)
    items: Vec<(String, u64, u64)>,
    total: u64,
}

async fn retained(
    st: State<ConsoleState>,
    user: ConsoleUser,
    Query(q): Query<RetainedQuery>,
) -> Result<Response, ConsoleError> {
    user.require(Role::Operator)?;
    let prefix: String = q.prefix.chars().take(256).collect();
    let v = st
        .call(
            "console/ops/retained",
            &json!({ "prefix": prefix, "limit": 200 }),
        )
        .await?;
    let items = v["retained"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r: &Value| {
            (
                r["topic"].as_str().unwrap_or_default().to_owned(),
                r["qos"].as_u64().unwrap_or_default(),
                r["bytes"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    Ok(render(&RetainedPage {
        page: user.page("retained"),
        prefix,
        items,
        total: v["total"].as_u64().unwrap_or_default(),
    }))
}
