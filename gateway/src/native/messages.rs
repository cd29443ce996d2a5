//! Message endpoints beyond sending: recall as the sender (`POST /v1/messages/recall`),
//! import of past private, group and system messages (`POST /v1/messages/import`) and
//! a conversation's history by time (`from_ms`/`to_ms` on the history endpoint), the
//! latter paged here over the IM service's seq-ordered `history` (newest first), at most
//! [`MAX_PAGES`] pages of 500 per call.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::handlers::{AnyObject, ErrorBody};
use super::{Answer, Signed, body};
use crate::AppState;
use crate::error::ApiError;

/// History pages read for one time-ranged call.
pub const MAX_PAGES: usize = 20;
/// Messages per page asked of the IM service (its maximum).
const PAGE: u64 = 500;

#[derive(Serialize, Deserialize, ToSchema)]
pub struct RecallBody {
    /// The sender, as whom the message is recalled.
    pub user: String,
    pub conversation: String,
    pub seq: u64,
}

#[utoipa::path(post, path = "/v1/messages/recall", tag = "messages", request_body = RecallBody,
    security(("signature" = [])),
    responses((status = 200, body = AnyObject), (status = 403, description = "not the sender", body = ErrorBody),
               (status = 404, body = ErrorBody), (status = 410, description = "past the recall window", body = ErrorBody)))]
pub async fn recall(State(s): State<Arc<AppState>>, req: Signed) -> Answer {
    let r: RecallBody = body(&req.body)?;
    let v = json!({ "tenant": req.tenant.id, "user": r.user, "conversation": r.conversation,
                    "seq": r.seq });
    Ok(Json(s.service.call("recall", &v).await?))
}

/// What kind of conversation a past message belongs to.
#[derive(Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum PastKind {
    /// `to` is a user.
    #[default]
    Private,
    /// `to` is an existing group; the sender need not be a member any more.
    Group,
    /// `to` is a user; the tenant sends (`from` is ignored).
    System,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct PastMessage {
    #[serde(default, rename = "type")]
    pub kind: PastKind,
    /// The sender's account (not needed for `system`).
    #[serde(default)]
    pub from: String,
    pub to: String,
    pub content: super::handlers::Content,
    /// When it was sent (Unix ms), kept as is.
    pub server_time_ms: u64,
    /// Its id on the old platform: a retried import skips what it already stored.
    pub client_msg_id: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct ImportBody {
    /// 1 to 500 past messages; appended oldest first, so seqs follow their times.
    pub messages: Vec<PastMessage>,
    /// Leave them unread for their recipients (default: read, as past traffic is).
    #[serde(default)]
    pub unread: bool,
}

#[utoipa::path(post, path = "/v1/messages/import", tag = "messages", request_body = ImportBody,
    security(("signature" = [])),
    responses((status = 200, description = "{rows: [{conversation, seq, duplicate} or {error: {code, message}}]}, in order", body = AnyObject),
               (status = 400, body = ErrorBody)))]
pub async fn import(State(s): State<Arc<AppState>>, req: Signed) -> Answer {
    let r: ImportBody = body(&req.body)?;
    if r.messages.is_empty() || r.messages.len() > 500 {
        return Err(ApiError::bad_request("messages must hold 1..=500 entries"));
    }
    let v = json!({ "tenant": req.tenant.id, "messages": r.messages, "unread": r.unread });
    Ok(Json(s.service.call("import_messages", &v).await?))
}

/// The messages of `conv` as `user` sees them with `from_ms <= server_time_ms < to_ms`,
/// newest first, at most `limit`; `more` when older ones in the range were left out.
pub async fn history_between(
    s: &AppState,
    tenant: u64,
    user: &str,
    conv: &str,
    (from_ms, to_ms): (u64, u64),
    limit: usize,
) -> Answer {
    if from_ms >= to_ms {
        return Err(ApiError::bad_request("from_ms must be before to_ms"));
    }
    let mut out: Vec<Value> = Vec::new();
    let mut before = 0u64;
    for _ in 0..MAX_PAGES {
        let v = s
            .service
            .call(
                "history",
                &json!({ "tenant": tenant, "user": user, "conversation": conv,
                         "before_seq": before, "limit": PAGE }),
            )
            .await?;
        let page = v["messages"].as_array().cloned().unwrap_or_default();
        let Some(oldest) = page.last().and_then(|m| m["seq"].as_u64()) else {
            return Ok(Json(json!({ "messages": out, "more": false })));
        };
        for m in page {
            let t = m["server_time_ms"].as_u64().unwrap_or_default();
            if t < from_ms {
                return Ok(Json(json!({ "messages": out, "more": false })));
            }
            if t < to_ms {
                if out.len() == limit {
                    return Ok(Json(json!({ "messages": out, "more": true })));
                }
                out.push(m);
            }
        }
        if v["more"].as_bool() != Some(true) || oldest <= 1 {
            return Ok(Json(json!({ "messages": out, "more": false })));
        }
        before = oldest;
    }
    // Still inside the range after the pages allowed: say there may be more.
    Ok(Json(json!({ "messages": out, "more": true })))
}
