//! The IM records as stored (JSON: small, rare to change shape, readable by
//! `switchboard ctl store inspect`). Messages themselves are stored as protobuf
//! ([`switchboard_proto::im::Message`]) in the conversation logs.

use serde::{Deserialize, Serialize};

/// A developer account [主账号]: owns tenants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRecord {
    pub id: String,
    /// The account's auth token (account-level API calls).
    pub token: String,
    pub created_ms: u64,
}

/// What a tenant decides for its users.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TenantPolicy {
    /// One phone at a time: a new phone login signs the older one out.
    pub single_phone: bool,
    /// Seed 001's "any account" mode: the app vouches for users with its app secret, users
    /// are created on first login.
    pub any_account: bool,
    /// Seconds after sending during which the sender may recall a message.
    pub recall_window_secs: u64,
    /// Days messages are kept for sync and history.
    pub retention_days: u64,
    /// Messages kept per conversation (older ones are trimmed as new ones arrive); 0: no
    /// bound but the retention time.
    pub max_messages_per_conversation: u64,
    /// Largest message content, bytes of protobuf.
    pub max_message_bytes: usize,
    /// Push notifications without a message preview.
    pub hide_preview: bool,
    /// 1:1 messages only between friends (others get 403; see docs/im/social.md).
    pub friends_required: bool,
    /// The gateway serves the seeds' dialects (RongCloud, Youdu, imo) for this tenant.
    pub compat_apis: bool,
    /// Gateway calls per second this tenant may make (per gateway instance); 0: no limit.
    pub api_rate_per_sec: u32,
    /// Members a group may have at most (groups.rs).
    pub max_group_members: u32,
    /// Bytes the tenant's devices may upload an hour (`POST /v1/device/files`, counted per
    /// gateway instance); beyond it 429.
    pub upload_bytes_per_hour: u64,
    /// Files the tenant's devices may upload an hour (per gateway instance).
    pub upload_files_per_hour: u32,
    /// Largest file a device may upload, bytes (the gateway caps it at its own 20 MiB).
    pub upload_max_file_bytes: u64,
}

impl Default for TenantPolicy {
    fn default() -> Self {
        TenantPolicy {
            single_phone: false,
            any_account: false,
            recall_window_secs: 120,
            retention_days: 7,
            max_messages_per_conversation: 100_000,
            max_message_bytes: 64 * 1024,
            hide_preview: false,
            friends_required: false,
            compat_apis: true,
            api_rate_per_sec: 1000,
            max_group_members: 3000,
            upload_bytes_per_hour: 2 * 1024 * 1024 * 1024,
            upload_files_per_hour: 10_000,
            upload_max_file_bytes: 20 * 1024 * 1024,
        }
    }
}

/// A tenant [RongCloud/Yuntongxun "app", Youdu/imo "enterprise"].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRecord {
    pub id: u64,
    pub name: String,
    /// The developer account that owns it.
    pub account: String,
    pub app_key: String,
    pub app_secret: String,
    /// The enterprise number (Youdu `buin`, imo `cid`).
    pub buin: u64,
    /// Key that signs the tenant's login tokens (hex).
    pub token_key: String,
    pub created_ms: u64,
    #[serde(default)]
    pub policy: TenantPolicy,
    /// Where the tenant's app server hears about events (`hooks`).
    #[serde(default)]
    pub webhooks: Option<super::hooks::HookConfig>,
}

/// A user of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// The app's own user id (≤ 64 bytes).
    pub account: String,
    pub uid: u64,
    #[serde(default)]
    pub name: String,
    /// argon2 PHC string, for directory users who log in with a password.
    #[serde(default)]
    pub password: Option<String>,
    /// Banned until (Unix seconds); 0: not banned.
    #[serde(default)]
    pub banned_until: u64,
    /// Tokens issued before the last bump are invalid (revoke all).
    #[serde(default)]
    pub token_epoch: u64,
    pub created_ms: u64,
    /// Directory details (org.rs): job title, phone, email, position.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub title: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub phone: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub email: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub position: String,
    /// Departments the user belongs to (a member of the directory if not empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depts: Vec<u64>,
    /// A password login must change the password before anything else (first login).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub must_change_password: bool,
    /// Per broadcast scope ("all", "d{dept}"): the log head when the user joined it; the
    /// user's history of that broadcast log starts after it.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub bcast_from: std::collections::BTreeMap<String, u64>,
}

/// One user's state in one conversation. The three positions live in the `Cursors` table
/// (so that an append can move them in the same commit); they are filled in when a row is
/// read and never serialised with it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UserConvRecord {
    /// Read up to (by any device).
    #[serde(skip)]
    pub read_seq: u64,
    /// Received up to (delivered receipts).
    #[serde(skip)]
    pub delivered_seq: u64,
    /// The last message that mentions the user.
    #[serde(skip)]
    pub mention_seq: u64,
    /// History starts after this.
    pub min_seq: u64,
    pub pinned: bool,
    pub muted: bool,
    pub hidden: bool,
    /// The other side: account (1:1), group id, app id.
    pub peer: String,
    pub updated_ms: u64,
}
