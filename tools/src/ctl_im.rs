//! `switchboard ctl tenant|user|token|im`: the IM service from the command line.
//!
//! Tenants, users and tokens go through the admin API. `im send` and `im tail` log in over
//! MQTT as a new device of the user (a token from the admin API, the MQTT listener found
//! through `/api/v1/overview`) and speak the IM protocol with the Rust SDK, exactly as an
//! app would. Output shapes are relied on by scripts: keep them.

use std::collections::HashMap;
use std::net::SocketAddr;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use switchboard_client::im::{ImClient, ImEvent};
use switchboard_client::{Config, Endpoint};
use switchboard_proto::im::{self, ConvType, content::Body, event::Kind};

use crate::ctl::call;
use crate::{AdminArgs, CtlCommand};

#[derive(Subcommand)]
pub enum TenantCommand {
    /// Creates a tenant; prints its id, app key and secret, and enterprise number.
    Create {
        name: String,
        /// Developer account that owns it (default: the one `up` created).
        #[arg(long)]
        account: Option<String>,
        /// The enterprise administrator's account (seed 000): a directory member who must
        /// change `--admin-password` at the first login.
        #[arg(long, requires = "admin_password")]
        admin_account: Option<String>,
        #[arg(long, requires = "admin_account")]
        admin_password: Option<String>,
        /// `{"tenant_id", "app_key", "app_secret", "buin"}`
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Registers a user (account = the app's own user id).
    Create {
        #[arg(long)]
        tenant: u64,
        account: String,
        #[arg(long)]
        name: Option<String>,
        /// For directory logins (`{app_key}:{account}` as MQTT user name).
        #[arg(long)]
        password: Option<String>,
        /// Also puts the user in this department of the directory.
        #[arg(long)]
        dept: Option<u64>,
        /// The first password login must change the password.
        #[arg(long)]
        must_change_password: bool,
        /// `{"user_id", "uid"}`
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Args)]
pub struct TokenArgs {
    #[arg(long)]
    tenant: u64,
    #[arg(long)]
    user: String,
    /// Device platform the token is for: phone, pc, web, pad (default: any).
    #[arg(long, default_value = "")]
    device: String,
    /// Lifetime in seconds (default 7 days).
    #[arg(long)]
    ttl: Option<u64>,
    #[command(flatten)]
    admin: AdminArgs,
}

#[derive(Subcommand)]
pub enum ImCommand {
    /// Sends a 1:1 text as FROM; prints the conversation and seq once it is durable.
    Send {
        #[arg(long)]
        tenant: u64,
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        text: String,
        /// `{"conversation", "seq"}`
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Logs in as a new device of USER, prints every retained message, then every event
    /// as it arrives, until stopped.
    Tail {
        #[arg(long)]
        tenant: u64,
        #[arg(long)]
        user: String,
        /// One JSON object per line (the only format).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// Runs one of the IM `ctl` commands.
pub fn run(command: CtlCommand) -> anyhow::Result<()> {
    match command {
        CtlCommand::Tenant {
            command:
                TenantCommand::Create {
                    name,
                    account,
                    admin_account,
                    admin_password,
                    json,
                    admin,
                },
        } => {
            let body = json!({ "name": name, "account": account, "admin": admin_account, "admin_password": admin_password }).to_string();
            let v: Value =
                serde_json::from_str(&call(&admin, "POST", "/api/v1/im/tenants", Some(&body))?)?;
            if json {
                let out = json!({
                    "tenant_id": v["tenant_id"],
                    "app_key": v["app_key"],
                    "app_secret": v["app_secret"],
                    "buin": v["buin"],
                });
                println!("{out}");
            } else {
                println!("tenant_id:  {}", v["tenant_id"]);
                println!("app_key:    {}", v["app_key"].as_str().unwrap_or_default());
                println!(
                    "app_secret: {}",
                    v["app_secret"].as_str().unwrap_or_default()
                );
                println!("buin:       {}", v["buin"]);
            }
            Ok(())
        }
        CtlCommand::User {
            command:
                UserCommand::Create {
                    tenant,
                    account,
                    name,
                    password,
                    dept,
                    must_change_password,
                    json,
                    admin,
                },
        } => {
            let body = json!({
                "account": account,
                "name": name.unwrap_or_default(),
                "password": password,
                "dept": dept,
                "must_change_password": must_change_password,
            })
            .to_string();
            let path = format!("/api/v1/im/tenants/{tenant}/users");
            let v: Value = serde_json::from_str(&call(&admin, "POST", &path, Some(&body))?)?;
            if json {
                println!("{}", json!({ "user_id": v["user_id"], "uid": v["uid"] }));
            } else {
                println!("user {} has uid {}", account, v["uid"]);
            }
            Ok(())
        }
        CtlCommand::Token(t) => {
            println!("{}", token(&t.admin, t.tenant, &t.user, &t.device, t.ttl)?);
            Ok(())
        }
        CtlCommand::Im { command } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(im(command))
        }
        CtlCommand::Dept { command } => crate::ctl_org::dept(command),
        CtlCommand::Broadcast(b) => crate::ctl_org::broadcast(b),
        _ => bail!("not an IM command"),
    }
}

/// A login token from the admin API.
fn token(
    admin: &AdminArgs,
    tenant: u64,
    user: &str,
    device: &str,
    ttl: Option<u64>,
) -> anyhow::Result<String> {
    let body = json!({ "user": user, "device": device, "ttl": ttl }).to_string();
    let path = format!("/api/v1/im/tenants/{tenant}/tokens");
    let v: Value = serde_json::from_str(&call(admin, "POST", &path, Some(&body))?)?;
    v["token"]
        .as_str()
        .map(str::to_owned)
        .context("no token in the answer")
}

/// The broker's plain TCP MQTT listener, as the admin API reports it.
pub(crate) fn mqtt_addr(admin: &AdminArgs) -> anyhow::Result<SocketAddr> {
    let v: Value = serde_json::from_str(&call(admin, "GET", "/api/v1/overview", None)?)?;
    let first = v["listeners"]["tcp"][0]
        .as_str()
        .context("the broker has no TCP listener")?;
    let mut addr: SocketAddr = first.parse()?;
    if addr.ip().is_unspecified() {
        // Listening on every interface: reach it where the admin API is.
        let admin_ip = admin
            .admin
            .parse::<SocketAddr>()
            .map(|a| a.ip())
            .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into());
        addr.set_ip(admin_ip);
    }
    Ok(addr)
}

/// Logs in as a new device of `user`.
async fn login(
    admin: &AdminArgs,
    tenant: u64,
    user: &str,
) -> anyhow::Result<(ImClient, tokio::sync::mpsc::Receiver<ImEvent>)> {
    let tok = token(admin, tenant, user, "", Some(3600))?;
    let addr = mqtt_addr(admin)?;
    let suffix = switchboard_broker::im::random_hex(6).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut cfg = Config::new(&format!("ctl-{user}-{suffix}"), vec![Endpoint::Tcp(addr)]);
    cfg.username = Some(user.to_owned());
    cfg.password = Some(tok.into_bytes().into());
    cfg.session_expiry = 0;
    ImClient::connect(cfg)
        .await
        .with_context(|| format!("cannot log in as {user} over MQTT at {addr}"))
}

async fn im(command: ImCommand) -> anyhow::Result<()> {
    match command {
        ImCommand::Send {
            tenant,
            from,
            to,
            text,
            json,
            admin,
        } => {
            let (client, _events) = login(&admin, tenant, &from).await?;
            let id = switchboard_broker::im::random_hex(8).map_err(|e| anyhow::anyhow!("{e}"))?;
            let sent = client.send_text(&to, &id, &text).await;
            client.shutdown().await;
            let sent = sent.context("send failed")?;
            if json {
                println!(
                    "{}",
                    json!({ "conversation": sent.conversation, "seq": sent.seq })
                );
            } else {
                println!("sent: {} seq {}", sent.conversation, sent.seq);
            }
            Ok(())
        }
        ImCommand::Tail {
            tenant,
            user,
            json: _,
            admin,
        } => {
            let (client, mut events) = login(&admin, tenant, &user).await?;
            let mut cursors = HashMap::new();
            sync_and_print(&client, &mut cursors).await?;
            while let Some(ev) = events.recv().await {
                match ev {
                    ImEvent::Event(e) => {
                        if let Some(Kind::Message(m)) = &e.kind {
                            let c = cursors.entry(m.conversation.clone()).or_insert(0);
                            if m.seq <= *c && !m.recalled && !m.burned {
                                continue; // already printed by a sync
                            }
                            *c = (*c).max(m.seq);
                        }
                        if let Some(line) = event_json(&e) {
                            println!("{line}");
                        }
                    }
                    ImEvent::Connected { reconnects } if reconnects > 0 => {
                        println!(
                            "{}",
                            json!({ "event": "connected", "reconnects": reconnects })
                        );
                        sync_and_print(&client, &mut cursors).await?;
                    }
                    ImEvent::Connected { .. } => {}
                    ImEvent::Disconnected { reason } => {
                        println!("{}", json!({ "event": "disconnected", "reason": reason }));
                    }
                    ImEvent::Lagged { dropped } => {
                        println!("{}", json!({ "event": "lagged", "dropped": dropped }));
                        sync_and_print(&client, &mut cursors).await?;
                    }
                }
            }
            Ok(())
        }
    }
}

async fn sync_and_print(
    client: &ImClient,
    cursors: &mut HashMap<String, u64>,
) -> anyhow::Result<()> {
    let (messages, last) = client.sync_all(cursors).await.context("sync failed")?;
    for m in &messages {
        println!("{}", message_json(m));
    }
    println!(
        "{}",
        json!({ "event": "synced", "messages": messages.len(), "unread_total": last.unread_total })
    );
    Ok(())
}

fn conv_type(t: i32) -> &'static str {
    match ConvType::try_from(t).unwrap_or(ConvType::Unspecified) {
        ConvType::Private => "private",
        ConvType::Group => "group",
        ConvType::Chatroom => "chatroom",
        ConvType::System => "system",
        ConvType::App => "app",
        ConvType::Broadcast => "broadcast",
        ConvType::Unspecified => "unspecified",
    }
}

/// A message as one JSON line.
pub fn message_json(m: &im::Message) -> Value {
    let mut v = json!({
        "event": "message",
        "conversation": m.conversation,
        "conv_type": conv_type(m.conv_type),
        "seq": m.seq,
        "from": m.from,
        "to": m.to,
        "server_time_ms": m.server_time_ms,
        "client_msg_id": m.client_msg_id,
    });
    let (kind, extra) = match m.content.as_ref().and_then(|c| c.body.as_ref()) {
        Some(Body::Text(t)) => ("text", json!({ "text": t.text })),
        Some(Body::Emoji(e)) => ("emoji", json!({ "code": e.code, "url": e.url })),
        Some(Body::Image(x)) => ("image", media(x)),
        Some(Body::Voice(x)) => ("voice", media(x)),
        Some(Body::Video(x)) => ("video", media(x)),
        Some(Body::File(x)) => ("file", media(x)),
        Some(Body::Location(l)) => (
            "location",
            json!({ "latitude": l.latitude, "longitude": l.longitude, "title": l.title }),
        ),
        Some(Body::Rich(r)) => (
            "rich",
            json!({ "title": r.title, "text": r.text, "link_url": r.link_url }),
        ),
        Some(Body::Custom(c)) => ("custom", json!({ "custom_type": c.r#type })),
        Some(Body::Notice(n)) => (
            "notice",
            json!({ "kind": n.kind, "operator": n.operator, "targets": n.targets, "text": n.text }),
        ),
        Some(Body::CallLog(c)) => (
            "call_log",
            json!({ "call_id": c.call_id, "video": c.video, "outcome": c.outcome, "duration_ms": c.duration_ms }),
        ),
        None if m.recalled => ("recalled", json!({})),
        None if m.burned => ("burned", json!({})),
        None => ("empty", json!({})),
    };
    v["type"] = kind.into();
    if let (Some(obj), Value::Object(more)) = (v.as_object_mut(), extra) {
        obj.extend(more);
    }
    for (flag, on) in [
        ("recalled", m.recalled),
        ("burned", m.burned),
        ("burn_after_read", m.burn_after_read),
        ("mention_all", m.mention_all),
    ] {
        if on {
            v[flag] = true.into();
        }
    }
    if !m.mentions.is_empty() {
        v["mentions"] = json!(m.mentions);
    }
    v
}

fn media(x: &im::Media) -> Value {
    json!({ "url": x.url, "size": x.size, "sha256": x.sha256, "name": x.name, "mime": x.mime })
}

/// An event as one JSON line.
pub fn event_json(e: &im::Event) -> Option<Value> {
    Some(match e.kind.as_ref()? {
        Kind::Message(m) => message_json(m),
        Kind::Receipt(r) => json!({
            "event": "receipt",
            "kind": if r.kind == im::receipt::Kind::Read as i32 { "read" } else { "delivered" },
            "conversation": r.conversation,
            "seq": r.seq,
            "by": r.by,
        }),
        Kind::Unread(u) => json!({
            "event": "unread",
            "conversation": u.conversation,
            "unread": u.unread,
            "read_seq": u.read_seq,
            "total": u.total,
        }),
        Kind::AppUnread(a) => {
            json!({ "event": "app_unread", "app_id": a.app_id, "unread": a.unread })
        }
        Kind::Recalled(r) => json!({
            "event": "recalled", "conversation": r.conversation, "seq": r.seq, "by": r.by,
        }),
        Kind::Typing(t) => {
            json!({ "event": "typing", "conversation": t.conversation, "from": t.from })
        }
        Kind::Kicked(k) => json!({ "event": "kicked", "reason": k.reason }),
        Kind::Conversation(c) => json!({
            "event": "conversation",
            "conversation": c.id,
            "pinned": c.pinned,
            "muted": c.muted,
            "hidden": c.hidden,
            "unread": c.unread,
        }),
        Kind::Group(_) => json!({ "event": "group" }),
        Kind::Room(_) => json!({ "event": "room" }),
        Kind::Presence(p) => {
            let p = p.presence.clone().unwrap_or_default();
            json!({
                "event": "presence", "user": p.user, "online": p.online,
                "platforms": p.platforms, "last_seen_ms": p.last_seen_ms,
            })
        }
        Kind::Contact(c) => json!({
            "event": "contact",
            "kind": im::contact_event::Kind::try_from(c.kind)
                .map_or("unknown", |k| k.as_str_name()),
            "from": c.from,
            "to": c.to,
            "message": c.message,
        }),
        Kind::Call(_) => json!({ "event": "call" }),
        Kind::Directory(d) => json!({ "event": "directory", "version": d.version }),
    })
}
