//! `switchboard ctl`: the admin API from the command line. A minimal HTTP/1.1 client (one
//! request, then the server closes) is enough for a loopback operator tool.

use std::time::Duration;

use anyhow::Context;

use crate::{ADMIN_TOKEN_FILE, AclCommand, AdminArgs, CtlCommand};

/// An admin API answer: status code and body.
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// Sends one request to the admin API.
pub fn http(
    admin: &AdminArgs,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<Answer> {
    let token = match &admin.token {
        Some(t) => t.clone(),
        None => std::fs::read_to_string(admin.data_dir.join(ADMIN_TOKEN_FILE))
            .map(|t| t.trim().to_owned())
            .with_context(|| "no --token and no admin.token in the data directory".to_owned())?,
    };
    let mut stream = std::net::TcpStream::connect(&admin.admin)
        .with_context(|| format!("cannot reach the admin API at {}", admin.admin))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    use std::io::Write as _;
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        admin.admin,
        body.len()
    )?;
    let mut response = String::new();
    std::io::Read::read_to_string(&mut stream, &mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok(Answer { status, body })
}

/// Like [`http`], but a non-2xx answer is an error carrying the body.
pub fn call(
    admin: &AdminArgs,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<String> {
    let a = http(admin, method, path, body)?;
    if !(200..300).contains(&a.status) {
        anyhow::bail!("HTTP {}: {}", a.status, a.body);
    }
    Ok(a.body)
}

/// `ctl` commands that map to one admin API request each.
pub fn ctl_api(command: CtlCommand) -> anyhow::Result<()> {
    let (method, path, admin) = match command {
        CtlCommand::Overview(a) => ("GET", "/api/v1/overview".to_owned(), a),
        CtlCommand::Clients(a) => ("GET", "/api/v1/clients".to_owned(), a),
        CtlCommand::Client { id, admin } => {
            ("GET", format!("/api/v1/clients/{}", url_escape(&id)), admin)
        }
        CtlCommand::Kick { id, admin } => (
            "DELETE",
            format!("/api/v1/clients/{}", url_escape(&id)),
            admin,
        ),
        CtlCommand::Drain { to, stop, admin } => {
            let (method, body) = if stop {
                ("DELETE", None)
            } else {
                (
                    "POST",
                    to.map(|t| serde_json::json!({ "to": t }).to_string()),
                )
            };
            let answer = http(&admin, method, "/api/v1/drain", body.as_deref())?;
            if !(200..300).contains(&answer.status) {
                anyhow::bail!("HTTP {}: {}", answer.status, answer.body);
            }
            println!("{}", answer.body);
            return Ok(());
        }
        CtlCommand::Retained(a) => ("GET", "/api/v1/retained".to_owned(), a),
        CtlCommand::Metrics(a) => ("GET", "/metrics".to_owned(), a),
        CtlCommand::Acl {
            command: AclCommand::Reload(a),
        } => ("POST", "/api/v1/acl/reload".to_owned(), a),
        CtlCommand::WorkbenchApp { command } => return crate::ctl_apps::run(command),
        CtlCommand::PushTest(a) => return crate::ctl_push::run(a),
        CtlCommand::ConsoleUser { command } => return crate::ctl_console::run(command),
        other => return crate::ctl_im::run(other),
    };
    let answer = http(&admin, method, &path, None)?;
    if !(200..300).contains(&answer.status) {
        anyhow::bail!("HTTP {}: {}", answer.status, answer.body);
    }
    if answer.body.is_empty() {
        println!("HTTP {}", answer.status);
    } else if let Ok(v) = serde_json::from_str::<serde_json::Value>(&answer.body) {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", answer.body);
    }
    Ok(())
}

pub fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}
