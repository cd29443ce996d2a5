//! `switchboard ctl console-user ...`: web console users, through the admin API's generic
//! IM call (`POST /api/v1/im/call/console/users/{op}`). Passwords are argon2-hashed by the
//! broker; a generated one-time password is printed once and must be changed at the first
//! sign-in.

use clap::Subcommand;
use serde_json::{Value, json};

use crate::AdminArgs;
use crate::ctl::call;

#[derive(Subcommand)]
pub enum ConsoleUserCommand {
    /// Adds a console user; prints its one-time password (unless `--password` is given).
    Create {
        /// 1–64 letters, digits and `_-.@`.
        username: String,
        /// `developer` (every tenant of a developer account), `tenant_admin` (one tenant)
        /// or `operator` (broker operations).
        #[arg(long)]
        role: String,
        /// The tenant of a tenant administrator.
        #[arg(long)]
        tenant: Option<u64>,
        /// The developer account of a developer (default: the one `up` created).
        #[arg(long)]
        account: Option<String>,
        /// The initial password (10–128 characters; still changed at the first sign-in).
        #[arg(long, env = "SWITCHBOARD_CONSOLE_PASSWORD")]
        password: Option<String>,
        /// `{"username", "role", "tenant", "account", "password"}`
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Every console user, as JSON.
    List {
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// Runs one `ctl console-user` command.
pub fn run(command: ConsoleUserCommand) -> anyhow::Result<()> {
    match command {
        ConsoleUserCommand::Create {
            username,
            role,
            tenant,
            account,
            password,
            json,
            admin,
        } => {
            let body = json!({ "username": username, "role": role, "tenant": tenant,
                "account": account, "password": password })
            .to_string();
            let v: Value = serde_json::from_str(&call(
                &admin,
                "POST",
                "/api/v1/im/call/console/users/create",
                Some(&body),
            )?)?;
            if json {
                println!("{v}");
            } else if let Some(p) = v["password"].as_str() {
                println!(
                    "console user {username} ({role}) created; one-time password: {p} (change it at the first sign-in)"
                );
            } else {
                println!(
                    "console user {username} ({role}) created; change the password at the first sign-in"
                );
            }
        }
        ConsoleUserCommand::List { admin } => {
            let v: Value = serde_json::from_str(&call(
                &admin,
                "POST",
                "/api/v1/im/call/console/users/list",
                Some("{}"),
            )?)?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
    }
    Ok(())
}
