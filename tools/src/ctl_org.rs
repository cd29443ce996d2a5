//! `switchboard ctl dept|broadcast`: the organisation directory and tenant-wide
//! broadcasts from the command line, through the admin API. Output shapes are relied on
//! by scripts: keep them.

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::AdminArgs;
use crate::ctl::call;

#[derive(Subcommand)]
pub enum DeptCommand {
    /// Creates a department; prints its id.
    Create {
        #[arg(long)]
        tenant: u64,
        name: String,
        /// Parent department (default: the root, 1).
        #[arg(long)]
        parent: Option<u64>,
        /// `{"dept_id"}`
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Every department with its id, parent and path.
    List {
        #[arg(long)]
        tenant: u64,
        /// `{"departments": [{"dept_id", "name", "parent", "path"}]}`
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Imports members from a CSV file (columns: account, name, department, title,
    /// position, phone, email, password; the department path builds the tree).
    Import {
        #[arg(long)]
        tenant: u64,
        file: std::path::PathBuf,
        /// Password of new members (changed at their first login).
        #[arg(long)]
        default_password: Option<String>,
        /// `{"rows", "created", "updated", "unchanged", "departments_created"}`
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Exports the directory as CSV (the import's columns) to stdout.
    Export {
        #[arg(long)]
        tenant: u64,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Args)]
pub struct BroadcastArgs {
    #[arg(long)]
    tenant: u64,
    /// To this department and its sub-departments (default: every user).
    #[arg(long)]
    dept: Option<u64>,
    text: String,
    #[arg(long)]
    client_msg_id: Option<String>,
    /// `{"conversation", "seq"}`
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    admin: AdminArgs,
}

/// `ctl broadcast ...`.
pub fn broadcast(b: BroadcastArgs) -> anyhow::Result<()> {
    let mut body = json!({ "text": b.text, "dept": b.dept });
    if let Some(id) = b.client_msg_id {
        body["client_msg_id"] = id.into();
    }
    let path = format!("/api/v1/im/tenants/{}/broadcast", b.tenant);
    let v: Value = serde_json::from_str(&call(&b.admin, "POST", &path, Some(&body.to_string()))?)?;
    if b.json {
        println!(
            "{}",
            json!({ "conversation": v["conversation"], "seq": v["seq"] })
        );
    } else {
        println!(
            "broadcast: {} seq {}",
            v["conversation"].as_str().unwrap_or_default(),
            v["seq"]
        );
    }
    Ok(())
}

/// `ctl dept ...`.
pub fn dept(command: DeptCommand) -> anyhow::Result<()> {
    match command {
        DeptCommand::Create {
            tenant,
            name,
            parent,
            json,
            admin,
        } => {
            let body = json!({ "name": name, "parent": parent }).to_string();
            let path = format!("/api/v1/im/tenants/{tenant}/departments");
            let v: Value = serde_json::from_str(&call(&admin, "POST", &path, Some(&body))?)?;
            let id = v["dept_id"].as_u64().context("no dept_id in the answer")?;
            if json {
                println!("{}", json!({ "dept_id": id }));
            } else {
                println!("department {name} has id {id}");
            }
        }
        DeptCommand::List {
            tenant,
            json,
            admin,
        } => {
            let path = format!("/api/v1/im/tenants/{tenant}/departments");
            let v: Value = serde_json::from_str(&call(&admin, "GET", &path, None)?)?;
            if json {
                println!("{}", json!({ "departments": v["departments"] }));
            } else {
                println!("{:>8} {:>8}  path", "dept_id", "parent");
                for d in v["departments"].as_array().into_iter().flatten() {
                    let path = d["path"].as_str().unwrap_or_default();
                    let shown = if path.is_empty() {
                        format!("/ ({})", d["name"].as_str().unwrap_or_default())
                    } else {
                        path.to_owned()
                    };
                    println!("{:>8} {:>8}  {shown}", d["dept_id"], d["parent"]);
                }
            }
        }
        DeptCommand::Import {
            tenant,
            file,
            default_password,
            json,
            admin,
        } => {
            let csv = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let mut path = format!("/api/v1/im/tenants/{tenant}/import");
            if let Some(p) = default_password {
                let encoded: String = crate::ctl::url_escape(&p);
                path.push_str(&format!("?default_password={encoded}"));
            }
            let v: Value = serde_json::from_str(&call(&admin, "POST", &path, Some(&csv))?)?;
            if json {
                println!("{v}");
            } else {
                println!(
                    "{} rows: {} created, {} updated, {} unchanged; {} departments created",
                    v["rows"], v["created"], v["updated"], v["unchanged"], v["departments_created"]
                );
            }
        }
        DeptCommand::Export { tenant, admin } => {
            let mut after = String::new();
            let mut first = true;
            loop {
                let path = format!(
                    "/api/v1/im/tenants/{tenant}/export?limit=10000&after={}",
                    crate::ctl::url_escape(&after)
                );
                let v: Value = serde_json::from_str(&call(&admin, "GET", &path, None)?)?;
                let csv = v["csv"].as_str().unwrap_or_default();
                // Every page repeats the header: print it once.
                let body = if first {
                    csv
                } else {
                    csv.split_once('\n').map_or("", |(_, rest)| rest)
                };
                print!("{body}");
                first = false;
                match v["next"].as_str() {
                    Some(n) if !n.is_empty() => after = n.to_owned(),
                    _ => break,
                }
            }
        }
    }
    Ok(())
}
