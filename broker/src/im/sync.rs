//! Pull: sync from cursors, history backwards, the conversation list and unread counts.
//!
//! A device keeps, per conversation, the last seq it has; `sync` returns every message
//! after those cursors (conversations without a cursor from their start), paged, plus the
//! user's whole conversation list with read positions and unread counts. Cost: one scan
//! of the user's conversations plus one log read per conversation that changed.

use prost::Message as _;
use switchboard_proto::im;

use super::error::{ImError, ok};
use super::keys::{self, ConvId};
use super::records::UserConvRecord;
use super::{ImLogin, ImService, now_ms};
use crate::store::{LogEntry, Op, Table};

/// Messages per sync response unless the client asks otherwise, and at most.
const SYNC_DEFAULT: usize = 200;
const SYNC_MAX: usize = 1000;
/// History page sizes.
const HISTORY_DEFAULT: usize = 50;
const HISTORY_MAX: usize = 500;
/// Cursors one sync request may carry.
const MAX_CURSORS: usize = 100_000;
/// Conversation rows read per store scan.
const SCAN_PAGE: usize = 1000;

impl ImService {
    /// Every message after the device's cursors, paged.
    pub fn sync(&self, login: &ImLogin, req: im::SyncRequest) -> Result<im::SyncResponse, ImError> {
        let limit = match req.limit as usize {
            0 => SYNC_DEFAULT,
            n => n.min(SYNC_MAX),
        };
        if req.cursors.len() > MAX_CURSORS {
            return Err(ImError::BadRequest(format!(
                "more than {MAX_CURSORS} cursors"
            )));
        }
        let mut cursors = std::collections::HashMap::new();
        for c in &req.cursors {
            let conv = self.own_conv(login, &c.conversation)?;
            cursors.insert(conv, c.seq);
        }
        let rows = self.rows(login.tenant, login.uid)?;
        let known: std::collections::HashSet<&ConvId> = rows.iter().map(|(c, _)| c).collect();
        if let Some(conv) = cursors.keys().find(|c| !known.contains(c)) {
            return Err(ImError::NotFound(format!("conversation {conv}")));
        }
        let mut resp = im::SyncResponse {
            status: ok(),
            server_time_ms: now_ms(),
            ..im::SyncResponse::default()
        };
        let since = req.conversations_since_ms;
        let cutoff = self.retention_cutoff(login.tenant)?;
        let cap = self
            .tenant(login.tenant)?
            .policy
            .max_messages_per_conversation;
        let mut budget = limit;
        for (conv, row) in &rows {
            let log = keys::log(login.tenant, conv);
            let max = self.store.log_last(&log)?;
            let cursor = cursors.get(conv).copied().unwrap_or(0);
            if cursor > max {
                return Err(ImError::BadRequest(format!(
                    "cursor {cursor} of {conv} is past its last message ({max})"
                )));
            }
            // Past the message cap even before the trim is committed.
            let from = cursor.max(row.min_seq).max(floor(max, cap)) + 1;
            if from <= max {
                if budget == 0 {
                    resp.more = true;
                } else {
                    let entries = self.store.log_range(&log, from, max, budget, false)?;
                    if (entries.len() as u64) < max - from + 1 {
                        resp.more = true;
                    }
                    budget -= entries.len();
                    let kept = self.retained(&log, entries, cutoff);
                    resp.messages.extend(kept);
                }
            }
            let view = self.view(login.tenant, login.uid, conv, row, max)?;
            resp.unread_total += counted(&view);
            if since == 0 || from <= max || view.updated_ms > since {
                resp.conversations.push(view);
            }
        }
        sort_list(&mut resp.conversations);
        Ok(resp)
    }

    /// Older messages of one conversation, newest first.
    pub fn history(
        &self,
        login: &ImLogin,
        req: im::HistoryRequest,
    ) -> Result<im::HistoryResponse, ImError> {
        let conv = self.own_conv(login, &req.conversation)?;
        let row = self.own_row(login, &conv)?;
        let limit = match req.limit as usize {
            0 => HISTORY_DEFAULT,
            n => n.min(HISTORY_MAX),
        };
        let log = keys::log(login.tenant, &conv);
        let max = self.store.log_last(&log)?;
        let to = match req.before_seq {
            0 => max,
            b => (b - 1).min(max),
        };
        let cap = self
            .tenant(login.tenant)?
            .policy
            .max_messages_per_conversation;
        let from = row.min_seq.max(floor(max, cap)) + 1;
        let entries = self.store.log_range(&log, from, to, limit, true)?;
        let cutoff = self.retention_cutoff(login.tenant)?;
        let mut messages: Vec<im::Message> = entries
            .into_iter()
            .filter_map(|(s, v)| decode(s, &v))
            .collect();
        let before = messages.len();
        messages.retain(|m| m.server_time_ms >= cutoff);
        let more = before == messages.len() && messages.last().is_some_and(|m| m.seq > from);
        Ok(im::HistoryResponse {
            status: ok(),
            messages,
            more,
        })
    }

    /// The user's conversation list (changed after `since_ms`, or all).
    pub fn conversations(
        &self,
        login: &ImLogin,
        req: im::ConversationsRequest,
    ) -> Result<im::ConversationsResponse, ImError> {
        let mut resp = im::ConversationsResponse {
            status: ok(),
            server_time_ms: now_ms(),
            ..im::ConversationsResponse::default()
        };
        for (conv, row) in self.rows(login.tenant, login.uid)? {
            let max = self.store.log_last(&keys::log(login.tenant, &conv))?;
            let view = self.view(login.tenant, login.uid, &conv, &row, max)?;
            resp.unread_total += counted(&view);
            if req.since_ms == 0 || view.updated_ms > req.since_ms {
                resp.conversations.push(view);
            }
        }
        sort_list(&mut resp.conversations);
        Ok(resp)
    }

    /// Messages older than this (Unix ms) are past the tenant's retention.
    fn retention_cutoff(&self, tid: u64) -> Result<u64, ImError> {
        let days = self.tenant(tid)?.policy.retention_days;
        Ok(now_ms().saturating_sub(days.saturating_mul(24 * 3600 * 1000)))
    }

    /// Decodes `entries` of `log`, dropping those past retention; the log is trimmed below
    /// the first one kept (in the background: trimming is housekeeping).
    fn retained(&self, log: &[u8], entries: Vec<LogEntry>, cutoff: u64) -> Vec<im::Message> {
        let mut out = Vec::with_capacity(entries.len());
        let mut expired_upto = 0;
        for (s, v) in entries {
            let Some(m) = decode(s, &v) else { continue };
            if m.server_time_ms < cutoff {
                expired_upto = s;
            } else {
                out.push(m);
            }
        }
        if expired_upto > 0 {
            self.store.write(
                vec![Op::TrimLog {
                    log: log.to_vec(),
                    below: expired_upto + 1,
                }],
                None,
            );
        }
        out
    }

    /// The badge: unread messages over the user's conversations that are not muted.
    pub fn unread_total(&self, tid: u64, uid: u64) -> Result<u64, ImError> {
        let mut total = 0;
        for (conv, row) in self.rows(tid, uid)? {
            if row.muted {
                continue;
            }
            let max = self.store.log_last(&keys::log(tid, &conv))?;
            total += max.saturating_sub(row.read_seq.max(row.min_seq));
        }
        Ok(total)
    }

    /// Unread messages of one workbench app for the user.
    pub fn app_unread(&self, tid: u64, uid: u64, app: &str) -> Result<u64, ImError> {
        let conv = ConvId::App(app.to_owned(), uid);
        let row = self.user_conv(tid, uid, &conv)?.unwrap_or_default();
        let max = self.store.log_last(&keys::log(tid, &conv))?;
        Ok(max.saturating_sub(row.read_seq.max(row.min_seq)))
    }

    /// One conversation as the user sees it.
    pub(super) fn conversation_view(
        &self,
        tid: u64,
        uid: u64,
        conv: &ConvId,
        row: &UserConvRecord,
    ) -> Result<im::Conversation, ImError> {
        let max = self.store.log_last(&keys::log(tid, conv))?;
        self.view(tid, uid, conv, row, max)
    }

    fn view(
        &self,
        tid: u64,
        uid: u64,
        conv: &ConvId,
        row: &UserConvRecord,
        max: u64,
    ) -> Result<im::Conversation, ImError> {
        let mut view = im::Conversation {
            id: conv.to_string(),
            r#type: conv.conv_type() as i32,
            peer: row.peer.clone(),
            max_seq: max,
            read_seq: row.read_seq,
            min_seq: row.min_seq,
            unread: max.saturating_sub(row.read_seq.max(row.min_seq)),
            mentioned: row.mention_seq > row.read_seq,
            pinned: row.pinned,
            muted: row.muted,
            hidden: row.hidden,
            updated_ms: row.updated_ms,
            ..im::Conversation::default()
        };
        if let Some(peer) = conv.peer_of(uid)
            && let Some(p) = self.user_conv(tid, peer, conv)?
        {
            view.peer_read_seq = p.read_seq;
            view.peer_delivered_seq = p.delivered_seq;
        }
        if max > row.min_seq {
            view.last = self
                .store
                .log_range(&keys::log(tid, conv), max, max, 1, false)?
                .into_iter()
                .next()
                .and_then(|(s, v)| decode(s, &v));
            // Last activity: the last message.
            if let Some(m) = &view.last {
                view.updated_ms = view.updated_ms.max(m.server_time_ms);
            }
        }
        Ok(view)
    }

    /// Every conversation row of a user, in key order.
    fn rows(&self, tid: u64, uid: u64) -> Result<Vec<(ConvId, UserConvRecord)>, ImError> {
        let prefix = keys::user_id(tid, uid);
        let mut out = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self
                .store
                .scan(Table::UserConvs, &prefix, after.as_deref(), SCAN_PAGE)?;
            let n = page.len();
            for (k, v) in page {
                let (Some(conv), Ok(mut row)) = (
                    keys::conv_of_user_conv_key(&k),
                    serde_json::from_slice::<UserConvRecord>(&v),
                ) else {
                    tracing::warn!("skipping an undecodable conversation row");
                    continue;
                };
                self.fill_cursors(tid, uid, &conv, &mut row)?;
                out.push((conv, row));
                after = Some(k);
            }
            if n < SCAN_PAGE {
                // The broadcast logs the user reads (virtual rows: nothing stored per user).
                self.add_broadcast_rows(tid, uid, &mut out)?;
                return Ok(out);
            }
        }
    }
}

/// The last seq below the per-conversation message cap (0: no cap).
fn floor(max: u64, cap: u64) -> u64 {
    if cap == 0 { 0 } else { max.saturating_sub(cap) }
}

/// Unread messages of a conversation that count in the badge.
fn counted(c: &im::Conversation) -> u64 {
    if c.muted { 0 } else { c.unread }
}

/// Pinned first, then by last activity, newest first.
fn sort_list(list: &mut [im::Conversation]) {
    list.sort_by(|a, b| {
        b.pinned
            .cmp(&a.pinned)
            .then(b.updated_ms.cmp(&a.updated_ms))
            .then(a.id.cmp(&b.id))
    });
}

/// A stored message with its seq, or `None` (logged) if it does not decode.
fn decode(seq: u64, raw: &[u8]) -> Option<im::Message> {
    match im::Message::decode(raw) {
        Ok(mut m) => {
            m.seq = seq;
            Some(m)
        }
        Err(e) => {
            tracing::warn!(seq, error = %e, "skipping an undecodable stored message");
            None
        }
    }
}
