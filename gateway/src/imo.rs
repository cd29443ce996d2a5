//! imo's integration API (seed 004) at the seed's own paths: a workbench app's server looks
//! up its app id by appkey, tells users the app has something new (a badge on every
//! device, a push to offline ones) and lowers the badge when they have read.
//!
//! GET query or form POST, parameter names trimmed (the seed's own examples send
//! `"fromcid "` with a trailing space). `cid` is a tenant's enterprise number, `uid` a
//! user's numeric uid. Answers are imo's: `{"Result":true,...}` or
//! `{"Result":false,"MsgNo":<negative code>}`. Like imo's, these calls are not signed: the
//! app id is what they name, so they are off for tenants that turn the compat APIs off
//! (docs/gateway.md).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, RawQuery, Request, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};

use crate::AppState;

/// imo's error numbers.
const NO_SUCH_APPKEY: i64 = -51001;
const SETNUM_FAILED: i64 = -51004;
const NOTICE_FAILED: i64 = -51007;

/// The routes, at imo's paths (GET and POST).
pub fn routes() -> axum::Router<Arc<AppState>> {
    axum::Router::new()
        .route(
            "/OpenPlatform/integrate/getappid.php",
            get(get_app_id).post(get_app_id),
        )
        .route(
            "/OpenPlatform/integrate/pushappnotice.php",
            get(push_app_notice).post(push_app_notice),
        )
        .route(
            "/OpenPlatform/integrate/setnum.php",
            get(set_num).post(set_num),
        )
}

/// Query and form parameters, names trimmed; the form wins.
fn params(query: Option<String>, body: &[u8]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = form_urlencoded::parse(body)
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    if let Some(q) = query {
        out.extend(
            form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned())),
        );
    }
    out
}

fn param<'a>(p: &'a [(String, String)], k: &str) -> Option<&'a str> {
    p.iter()
        .find(|(n, _)| n == k)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// Whether the app's tenant lets these calls in (compat APIs on, within its rate).
fn allowed(s: &AppState, app: &Value) -> bool {
    app["compat_apis"].as_bool().unwrap_or(true)
        && s.auth
            .admit(
                app["tenant"].as_u64().unwrap_or_default(),
                app["api_rate_per_sec"].as_u64().unwrap_or_default() as u32,
            )
            .is_ok()
}

fn fail(code: i64) -> Json<Value> {
    Json(json!({ "Result": false, "MsgNo": code }))
}

/// A request body of at most the gateway's body limit; a larger one is refused with 413
/// and imo's failure answer `CODE` (axum's own refusal would be plain text).
struct Body<const CODE: i64>(Bytes);

impl<const CODE: i64> FromRequest<Arc<AppState>> for Body<CODE> {
    type Rejection = (StatusCode, Json<Value>);

    async fn from_request(req: Request, s: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        axum::body::to_bytes(req.into_body(), s.body_limit)
            .await
            .map(Body)
            .map_err(|_| {
                tracing::info!(limit = s.body_limit, "imo: body too large");
                (StatusCode::PAYLOAD_TOO_LARGE, fail(CODE))
            })
    }
}

async fn get_app_id(
    State(s): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
    Body(body): Body<NO_SUCH_APPKEY>,
) -> Json<Value> {
    let p = params(q, &body);
    let Some(appkey) = param(&p, "appkey") else {
        tracing::info!("imo getappid: appkey is required");
        return fail(NO_SUCH_APPKEY);
    };
    match s
        .service
        .call("app/by_key", &json!({ "appkey": appkey }))
        .await
    {
        Ok(v) if allowed(&s, &v) => {
            Json(json!({ "Result": true, "MsgNo": { "app_id": v["app_id"] } }))
        }
        Ok(_) => {
            tracing::info!("imo getappid refused: compat APIs off or rate limited");
            fail(NO_SUCH_APPKEY)
        }
        Err(e) => {
            tracing::info!(error = %e, "imo getappid failed");
            fail(NO_SUCH_APPKEY)
        }
    }
}

/// `"cid,uid"` → (cid, uid).
fn cid_uid(s: &str) -> Option<(u64, u64)> {
    let (c, u) = s.split_once(',')?;
    Some((c.trim().parse().ok()?, u.trim().parse().ok()?))
}

async fn push_app_notice(
    State(s): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
    Body(body): Body<NOTICE_FAILED>,
) -> Json<Value> {
    let p = params(q, &body);
    let (Some(app_id), Some(users)) = (param(&p, "appid"), param(&p, "users")) else {
        tracing::info!("imo pushappnotice: appid and users are required");
        return fail(NOTICE_FAILED);
    };
    let targets = serde_json::from_str::<Vec<String>>(users)
        .ok()
        .and_then(|list| list.iter().map(|x| cid_uid(x)).collect::<Option<Vec<_>>>())
        .filter(|t| (1..=1000).contains(&t.len()));
    let Some(targets) = targets else {
        tracing::info!(
            users,
            "imo pushappnotice: users is not a JSON array of 1..=1000 \"cid,uid\""
        );
        return fail(NOTICE_FAILED);
    };
    let app = match s
        .service
        .call("app/get_any", &json!({ "app_id": app_id }))
        .await
    {
        Ok(a) if allowed(&s, &a) => a,
        Ok(_) => {
            tracing::info!(
                app_id,
                "imo pushappnotice refused: compat APIs off or rate limited"
            );
            return fail(NOTICE_FAILED);
        }
        Err(e) => {
            tracing::info!(error = %e, app_id, "imo pushappnotice: no such app");
            return fail(NOTICE_FAILED);
        }
    };
    let text = format!(
        "您收到一条来自“{}”的消息",
        app["name"].as_str().unwrap_or_default()
    );
    // One call per enterprise named.
    let mut by_cid: std::collections::BTreeMap<u64, Vec<u64>> = Default::default();
    for (cid, uid) in targets {
        by_cid.entry(cid).or_default().push(uid);
    }
    for (cid, uids) in by_cid {
        let r = s
            .service
            .call(
                "app/notice",
                &json!({ "cid": cid, "app_id": app_id, "uids": uids, "text": text }),
            )
            .await;
        if let Err(e) = r {
            tracing::info!(error = %e, cid, "imo pushappnotice failed");
            return fail(NOTICE_FAILED);
        }
    }
    Json(json!({ "Result": true }))
}

async fn set_num(
    State(s): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
    Body(body): Body<SETNUM_FAILED>,
) -> Json<Value> {
    let p = params(q, &body);
    let parsed = (|| {
        let app_id = param(&p, "appid")?;
        let cid: u64 = param(&p, "cid")?.parse().ok()?;
        let uid: u64 = param(&p, "uid")?.parse().ok()?;
        let num: u64 = match param(&p, "num") {
            Some(n) => n.parse().ok()?,
            None => 1,
        };
        Some((app_id, cid, uid, num))
    })();
    let Some((app_id, cid, uid, num)) = parsed else {
        tracing::info!("imo setnum: appid, numeric cid and uid (and num) are required");
        return fail(SETNUM_FAILED);
    };
    match s
        .service
        .call("app/get_any", &json!({ "app_id": app_id }))
        .await
    {
        Ok(a) if allowed(&s, &a) => {}
        r => {
            tracing::info!(
                app_id,
                found = r.is_ok(),
                "imo setnum refused: no such app, compat APIs off or rate limited"
            );
            return fail(SETNUM_FAILED);
        }
    }
    match s
        .service
        .call(
            "app/setnum",
            &json!({ "cid": cid, "uid": uid, "app_id": app_id, "num": num }),
        )
        .await
    {
        Ok(_) => Json(json!({ "Result": true })),
        Err(e) => {
            tracing::info!(error = %e, "imo setnum failed");
            fail(SETNUM_FAILED)
        }
    }
}
