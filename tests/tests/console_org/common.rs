//! What the console tests share: a gateway with file storage, a signed-in console session
//! (cookie and CSRF token) that GETs and POSTs forms and multipart bodies over a real
//! socket, and the checks on escaped output.

use std::net::SocketAddr;
use std::path::Path;

use serde_json::json;
use switchboard_client::Endpoint;
use switchboard_gateway::{DEFAULT_BODY_LIMIT, Gateway, GatewayConfig};
use switchboard_tests::http::{Answer, request};
use switchboard_tests::im::{ImBroker, SERVICE_SECRET};

pub const XSS: &str = "<script>alert(1)</script>";
/// Department names cannot hold '/': script without one.
pub const XSS_TAG: &str = "<img src=x onerror=alert(1)>";
pub const PASSWORD: &str = "Console-pass-2026";

pub async fn gateway(b: &ImBroker, files: &Path) -> Gateway {
    Gateway::start(GatewayConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        broker: vec![Endpoint::Tcp(b.addr)],
        service_secret: SERVICE_SECRET.into(),
        client_id: "gateway-console-org".into(),
        body_limit: DEFAULT_BODY_LIMIT,
        files_dir: Some(files.to_path_buf()),
    })
    .await
    .expect("gateway starts")
}

/// A signed-in console session: its cookie and CSRF token.
pub struct Session {
    pub addr: SocketAddr,
    pub cookie: String,
    pub csrf: String,
}

/// Creates console user `name` with `role` and signs in (the forced change done).
pub async fn session(
    b: &ImBroker,
    gw: &Gateway,
    name: &str,
    role: &str,
    tenant: Option<u64>,
    account: Option<&str>,
) -> Session {
    b.im.create_console_user(name, role, tenant, account, Some("first-pass-1".into()))
        .await
        .expect("console user");
    let s =
        b.im.admin_request(
            "console/signin",
            json!({ "username": name, "password": "first-pass-1", "peer": "127.0.0.1" })
                .to_string()
                .as_bytes(),
        )
        .await
        .expect("sign in");
    let id = s["session"].as_str().expect("session").to_owned();
    b.im.admin_request(
        "console/password",
        json!({ "session": id, "old": "first-pass-1", "new": PASSWORD })
            .to_string()
            .as_bytes(),
    )
    .await
    .expect("password changed");
    Session {
        addr: gw.addr(),
        csrf: switchboard_gateway::console::session::csrf_of(&id),
        cookie: format!("sb_session={id}; sb_lang=en"),
    }
}

impl Session {
    pub async fn get(&self, path: &str) -> Answer {
        request(
            self.addr,
            "GET",
            path,
            &[("Cookie", self.cookie.clone())],
            b"",
        )
        .await
    }

    /// A form POST with the session's CSRF token (`csrf: false`: without it).
    pub async fn post(&self, path: &str, fields: &[(&str, &str)], csrf: bool) -> Answer {
        let mut s = form_urlencoded::Serializer::new(String::new());
        if csrf {
            s.append_pair("_csrf", &self.csrf);
        }
        for (k, v) in fields {
            s.append_pair(k, v);
        }
        let body = s.finish();
        request(
            self.addr,
            "POST",
            path,
            &[
                ("Cookie", self.cookie.clone()),
                (
                    "Content-Type",
                    "application/x-www-form-urlencoded".to_owned(),
                ),
            ],
            body.as_bytes(),
        )
        .await
    }

    /// A multipart POST: text fields and files `(name, file name, type, bytes)`.
    pub async fn multipart(
        &self,
        path: &str,
        fields: &[(&str, &str)],
        files: &[(&str, &str, &str, &[u8])],
    ) -> Answer {
        let boundary = "----switchboard-test-boundary";
        let mut body = Vec::new();
        let mut all: Vec<(&str, &str)> = vec![("_csrf", &self.csrf)];
        all.extend_from_slice(fields);
        for (k, v) in all {
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"
                )
                .as_bytes(),
            );
        }
        for (k, name, mime, bytes) in files {
            body.extend_from_slice(
                format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"; filename=\"{name}\"\r\nContent-Type: {mime}\r\n\r\n").as_bytes(),
            );
            body.extend_from_slice(bytes);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        request(
            self.addr,
            "POST",
            path,
            &[
                ("Cookie", self.cookie.clone()),
                (
                    "Content-Type",
                    format!("multipart/form-data; boundary={boundary}"),
                ),
            ],
            &body,
        )
        .await
    }
}

pub fn location(a: &Answer) -> String {
    a.headers
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("location")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_default()
}

/// Departments of tenant `t` by path.
pub fn dept_id(b: &ImBroker, t: u64, path: &str) -> u64 {
    b.im.list_depts(t)
        .expect("departments")
        .into_iter()
        .find(|d| d["path"] == path)
        .and_then(|d| d["dept_id"].as_u64())
        .unwrap_or_else(|| panic!("no department {path}"))
}

/// A 2×2 PNG (made with Python's zlib, independently of the gateway's image code).
pub const PNG: [u8; 74] = [
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x02, 0x08, 0x06, 0x00, 0x00, 0x00, 0x72, 0xb6, 0x0d,
    0x24, 0x00, 0x00, 0x00, 0x11, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0x50, 0x48, 0x38, 0xf0,
    0x1f, 0x84, 0x19, 0x60, 0x0c, 0x00, 0x4a, 0xf4, 0x08, 0xfd, 0xd9, 0xe5, 0x94, 0x8f, 0x00, 0x00,
    0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

pub fn escaped_not_raw(a: &Answer, what: &str) {
    escaped(a, XSS, what);
}

/// `raw` is not in the page as markup, and is there as escaped text.
pub fn escaped(a: &Answer, raw: &str, what: &str) {
    assert!(
        !a.body.contains(raw),
        "{what}: raw script in the page:\n{}",
        a.body
    );
    let text = raw.replace('<', "&lt;").replace('>', "&gt;");
    let numeric = raw.replace('<', "&#60;").replace('>', "&#62;");
    assert!(
        a.body.contains(&text) || a.body.contains(&numeric),
        "{what}: the text is shown escaped:\n{}",
        a.body
    );
}
