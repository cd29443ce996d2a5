//! App-server requests that act for one user of a tenant (`$im/admin/{op}`, JSON): send a
//! message as the user, read their conversation list and history, mark read, see which
//! devices are online, sign them out, ban them; and the lookups the gateway needs to check
//! a signed request (`tenant_auth`, `account_auth`). The gateway's REST API is built on
//! these; `service_api` routes to them.

use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use switchboard_proto::im;

use super::json::{content_from_json, conversation_to_json, message_to_json};
use super::{ImError, ImLogin, ImService, random_hex};

fn parse<T: serde::de::DeserializeOwned>(p: &[u8]) -> Result<T, ImError> {
    serde_json::from_slice(p).map_err(|e| ImError::BadRequest(format!("invalid JSON: {e}")))
}

#[derive(Deserialize)]
struct TenantAuth {
    app_key: String,
}

#[derive(Deserialize)]
struct AccountAuth {
    account: String,
    token: String,
}

#[derive(Deserialize)]
struct SendAs {
    tenant: u64,
    from: String,
    to: String,
    #[serde(default)]
    conv_type: String,
    client_msg_id: Option<String>,
    content: Value,
    #[serde(default)]
    mentions: Vec<String>,
    #[serde(default)]
    mention_all: bool,
}

#[derive(Deserialize)]
struct UserRef {
    tenant: u64,
    user: String,
    #[serde(default)]
    since_ms: u64,
}

#[derive(Deserialize)]
struct HistoryOf {
    tenant: u64,
    user: String,
    conversation: String,
    #[serde(default)]
    before_seq: u64,
    #[serde(default)]
    limit: u32,
}

#[derive(Deserialize)]
struct ReadAs {
    tenant: u64,
    user: String,
    conversation: String,
    seq: u64,
}

#[derive(Deserialize)]
struct Online {
    tenant: u64,
    users: Vec<String>,
}

#[derive(Deserialize)]
struct Ban {
    tenant: u64,
    user: String,
    /// Unix seconds; 0 lifts the ban.
    until: u64,
}

/// Most users one `online` request asks about.
const MAX_ONLINE_QUERY: usize = 1000;

impl ImService {
    /// The login of user `account` of tenant `tid`, as if one of their devices asked.
    pub(super) fn as_user(&self, tid: u64, account: &str) -> Result<ImLogin, ImError> {
        let user = self
            .user(tid, account)?
            .ok_or_else(|| ImError::NotFound(format!("user {account}")))?;
        Ok(ImLogin {
            tenant: tid,
            uid: user.uid,
            account: user.account,
            platform: "server".into(),
            token_id: String::new(),
        })
    }

    /// Ops acting for a user; `None` if `op` is not one of them.
    pub(super) async fn user_admin(
        &self,
        op: &str,
        payload: &[u8],
    ) -> Option<Result<Value, ImError>> {
        Some(match op {
            "tenant_auth" => self.tenant_auth(payload),
            "account_auth" => self.account_auth(payload),
            "send" => self.send_as(payload).await,
            "conversations" => self.conversations_of(payload),
            "history" => self.history_of(payload),
            "read" => self.read_as(payload).await,
            "online" => self.online_of(payload),
            "kick" => self.kick_of(payload),
            "ban" => self.ban_of(payload).await,
            _ => return None,
        })
    }

    /// The tenant of an app key and its secret (the gateway checks signatures with it).
    fn tenant_auth(&self, payload: &[u8]) -> Result<Value, ImError> {
        let r: TenantAuth = parse(payload)?;
        let t = self.tenant_by_key(&r.app_key)?;
        Ok(
            json!({ "tenant_id": t.id, "app_secret": t.app_secret, "buin": t.buin, "name": t.name,
                   "compat_apis": t.policy.compat_apis, "api_rate_per_sec": t.policy.api_rate_per_sec }),
        )
    }

    /// Checks a developer account's credentials; the answer lists its tenants' ids.
    fn account_auth(&self, payload: &[u8]) -> Result<Value, ImError> {
        let r: AccountAuth = parse(payload)?;
        let refused = || ImError::Unauthorized("unknown account or wrong token".into());
        let acc = self.account(&r.account)?.ok_or_else(refused)?;
        if !bool::from(acc.token.as_bytes().ct_eq(r.token.as_bytes())) {
            return Err(refused());
        }
        Ok(json!({ "account": acc.id }))
    }

    async fn send_as(&self, payload: &[u8]) -> Result<Value, ImError> {
        let r: SendAs = parse(payload)?;
        let login = self.as_user(r.tenant, &r.from)?;
        let conv_type = match r.conv_type.as_str() {
            "" | "private" => im::ConvType::Private,
            "group" => im::ConvType::Group,
            "chatroom" => im::ConvType::Chatroom,
            other => {
                return Err(ImError::BadRequest(format!(
                    "conv_type must be private, group or chatroom, not {other:?}"
                )));
            }
        };
        let req = im::SendRequest {
            to: r.to,
            conv_type: conv_type as i32,
            client_msg_id: match r.client_msg_id {
                Some(id) => id,
                None => random_hex(8)?,
            },
            content: Some(content_from_json(&r.content)?),
            mentions: r.mentions,
            mention_all: r.mention_all,
            burn_after_read: false,
        };
        let resp = self.send(&login, req).await?;
        Ok(json!({
            "conversation": resp.conversation,
            "seq": resp.seq,
            "server_time_ms": resp.server_time_ms,
            "duplicate": resp.duplicate,
        }))
    }

    fn conversations_of(&self, payload: &[u8]) -> Result<Value, ImError> {
        let r: UserRef = parse(payload)?;
        let login = self.as_user(r.tenant, &r.user)?;
        let resp = self.conversations(
            &login,
            im::ConversationsRequest {
                since_ms: r.since_ms,
            },
        )?;
        Ok(json!({
            "conversations": resp.conversations.iter().map(conversation_to_json).collect::<Vec<_>>(),
            "unread_total": resp.unread_total,
            "server_time_ms": resp.server_time_ms,
        }))
    }

    fn history_of(&self, payload: &[u8]) -> Result<Value, ImError> {
        let r: HistoryOf = parse(payload)?;
        let login = self.as_user(r.tenant, &r.user)?;
        let resp = self.history(
            &login,
            im::HistoryRequest {
                conversation: r.conversation,
                before_seq: r.before_seq,
                limit: r.limit,
            },
        )?;
        Ok(json!({
            "messages": resp.messages.iter().map(message_to_json).collect::<Vec<_>>(),
            "more": resp.more,
        }))
    }

    async fn read_as(&self, payload: &[u8]) -> Result<Value, ImError> {
        let r: ReadAs = parse(payload)?;
        let login = self.as_user(r.tenant, &r.user)?;
        self.read(
            &login,
            im::ReadRequest {
                conversation: r.conversation,
                seq: r.seq,
            },
        )
        .await?;
        Ok(json!({}))
    }

    fn online_of(&self, payload: &[u8]) -> Result<Value, ImError> {
        let r: Online = parse(payload)?;
        if r.users.len() > MAX_ONLINE_QUERY {
            return Err(ImError::BadRequest(format!(
                "at most {MAX_ONLINE_QUERY} users per request"
            )));
        }
        let mut out = serde_json::Map::new();
        for account in r.users {
            let user = self.user(r.tenant, &account)?;
            let exists = user.is_some();
            let devices = match user {
                Some(u) => self
                    .devices(r.tenant, u.uid)
                    .into_iter()
                    .map(|(client_id, platform)| json!({ "client_id": client_id, "platform": platform }))
                    .collect(),
                None => Vec::new(),
            };
            out.insert(
                account,
                json!({ "online": !devices.is_empty(), "devices": devices, "exists": exists }),
            );
        }
        Ok(json!({ "users": out }))
    }

    fn kick_of(&self, payload: &[u8]) -> Result<Value, ImError> {
        let r: UserRef = parse(payload)?;
        let login = self.as_user(r.tenant, &r.user)?;
        let devices = self.devices(r.tenant, login.uid).len();
        self.kick_user(r.tenant, login.uid, "signed out by the app server");
        Ok(json!({ "devices": devices }))
    }

    async fn ban_of(&self, payload: &[u8]) -> Result<Value, ImError> {
        let r: Ban = parse(payload)?;
        self.ban(r.tenant, &r.user, r.until).await?;
        Ok(json!({}))
    }
}
