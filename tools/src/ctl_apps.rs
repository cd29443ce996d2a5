//! `switchboard ctl workbench-app ...`: workbench apps of a tenant, through the admin API's
//! generic IM call (`POST /api/v1/im/call/app/{op}`).

use clap::Subcommand;
use serde_json::{Value, json};

use crate::AdminArgs;
use crate::ctl::call;

#[derive(Subcommand)]
pub enum AppCommand {
    /// Registers an app; `--json` prints `{"app_id", "appkey", "encoding_aes_key"}`.
    Create {
        #[arg(long)]
        tenant: u64,
        /// 2–10 characters (two Latin letters count as one).
        name: String,
        /// 4–20 letters (default: the name's letters, padded).
        #[arg(long)]
        identifier: Option<String>,
        /// A web app's URL (every platform).
        #[arg(long)]
        url: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// The tenant's apps, as JSON.
    List {
        #[arg(long)]
        tenant: u64,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// An identifier from a name: its ASCII letters, at least 4 (padded with "app").
fn identifier_from(name: &str) -> String {
    let mut id: String = name
        .chars()
        .filter(char::is_ascii_alphabetic)
        .take(20)
        .collect();
    while id.len() < 4 {
        id.push_str("app");
    }
    id.truncate(20);
    id
}

pub fn run(command: AppCommand) -> anyhow::Result<()> {
    match command {
        AppCommand::Create {
            tenant,
            name,
            identifier,
            url,
            json,
            admin,
        } => {
            let mut body = json!({
                "tenant": tenant,
                "identifier": identifier.unwrap_or_else(|| identifier_from(&name)),
                "name": name,
            });
            if let Some(u) = url {
                let entry = json!({ "web_url": u });
                body["platforms"] =
                    json!({ "pc": entry, "android": entry, "ios": entry, "web": entry });
            }
            let v: Value = serde_json::from_str(&call(
                &admin,
                "POST",
                "/api/v1/im/call/app/create",
                Some(&body.to_string()),
            )?)?;
            if json {
                let out = json!({
                    "app_id": v["app_id"],
                    "appkey": v["appkey"],
                    "encoding_aes_key": v["encoding_aes_key"],
                });
                println!("{out}");
            } else {
                println!(
                    "app_id:           {}",
                    v["app_id"].as_str().unwrap_or_default()
                );
                println!(
                    "appkey:           {}",
                    v["appkey"].as_str().unwrap_or_default()
                );
                println!(
                    "encoding_aes_key: {}",
                    v["encoding_aes_key"].as_str().unwrap_or_default()
                );
            }
            Ok(())
        }
        AppCommand::List { tenant, admin } => {
            let body = json!({ "tenant": tenant }).to_string();
            let v: Value = serde_json::from_str(&call(
                &admin,
                "POST",
                "/api/v1/im/call/app/list",
                Some(&body),
            )?)?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(())
        }
    }
}
