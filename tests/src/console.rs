//! Helpers for the web console's tests (`tests/tests/console*.rs`): a broker with the IM
//! service on a redb file plus a gateway, raw HTTP with cookies, sign-in (with the forced
//! password change), CSRF tokens scraped from forms, console users of each role.

use std::net::SocketAddr;

use switchboard_client::Endpoint;
use switchboard_gateway::{DEFAULT_BODY_LIMIT, Gateway, GatewayConfig};
use switchboard_proto::{Packet, ReasonCode};

use crate::http::{Answer, request};
use crate::im::{ImBroker, SERVICE_SECRET};
use crate::{RawClient, WAIT};

/// A broker with the IM service and a gateway serving the console.
pub struct Console {
    pub b: ImBroker,
    pub gw: Gateway,
}

impl Console {
    pub async fn start() -> Console {
        let b = ImBroker::start().await;
        let gw = Gateway::start(GatewayConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            broker: vec![Endpoint::Tcp(b.addr)],
            service_secret: SERVICE_SECRET.into(),
            client_id: "gateway-console".into(),
            body_limit: DEFAULT_BODY_LIMIT,
            files_dir: None,
        })
        .await
        .expect("gateway starts");
        Console { b, gw }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.gw.addr())
    }

    pub async fn get(&self, path: &str, cookie: &str) -> Answer {
        let h = if cookie.is_empty() {
            vec![]
        } else {
            vec![("Cookie", cookie.to_owned())]
        };
        request(self.gw.addr(), "GET", path, &h, b"").await
    }

    pub async fn post(&self, path: &str, cookie: &str, form: &[(&str, &str)]) -> Answer {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut h = vec![(
            "Content-Type",
            "application/x-www-form-urlencoded".to_owned(),
        )];
        if !cookie.is_empty() {
            h.push(("Cookie", cookie.to_owned()));
        }
        request(self.gw.addr(), "POST", path, &h, body.as_bytes()).await
    }

    /// Signs in (and changes the one-time password when asked); returns the session
    /// cookie and the CSRF token of its forms.
    pub async fn sign_in(&self, user: &str, password: &str) -> (String, String) {
        let a = self.try_sign_in(user, password).await;
        assert_eq!(a.status, 303, "sign-in of {user}: {}", a.body);
        let cookie = format!("sb_session={}", set_cookie(&a, "sb_session"));
        if location(&a) == "/console/password" {
            let page = self.get("/console/password", &cookie).await;
            let csrf = csrf_of(&page.body);
            let new = format!("{password}-changed");
            let r = self
                .post(
                    "/console/password",
                    &cookie,
                    &[
                        ("_csrf", &csrf),
                        ("old", password),
                        ("new", &new),
                        ("confirm", &new),
                    ],
                )
                .await;
            assert_eq!(r.status, 303, "password change: {}", r.body);
        }
        let page = self.get("/console/password", &cookie).await;
        (cookie, csrf_of(&page.body))
    }

    pub async fn try_sign_in(&self, user: &str, password: &str) -> Answer {
        let form = self.get("/console/signin", "").await;
        let pre = set_cookie(&form, "sb_csrf");
        self.post(
            "/console/signin",
            &format!("sb_csrf={pre}"),
            &[("_csrf", &pre), ("username", user), ("password", password)],
        )
        .await
    }

    pub async fn stop(self) {
        self.gw.stop().await;
        self.b.handle.shutdown().await;
    }
}

pub fn header<'a>(a: &'a Answer, name: &str) -> Vec<&'a str> {
    a.headers
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
        .collect()
}

pub fn location(a: &Answer) -> String {
    header(a, "location")
        .first()
        .copied()
        .unwrap_or_default()
        .to_owned()
}

pub fn set_cookie(a: &Answer, name: &str) -> String {
    header(a, "set-cookie")
        .into_iter()
        .find_map(|c| c.strip_prefix(&format!("{name}=")))
        .and_then(|c| c.split(';').next())
        .unwrap_or_else(|| panic!("no {name} cookie in {}", a.headers))
        .to_owned()
}

pub fn csrf_of(html: &str) -> String {
    let at = html
        .find("name=\"_csrf\" value=\"")
        .unwrap_or_else(|| panic!("no CSRF field in {html}"));
    let rest = &html[at + "name=\"_csrf\" value=\"".len()..];
    rest[..rest.find('"').expect("end of value")].to_owned()
}

/// The text of the element with id `id` (`<code id="...">TEXT</code>`).
pub fn text_of_id(html: &str, id: &str) -> String {
    let marker = format!("id=\"{id}\">");
    let at = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no #{id} in {html}"));
    let rest = &html[at + marker.len()..];
    rest[..rest.find('<').expect("end of element")]
        .trim()
        .to_owned()
}

/// Whether `html` shows `<` + `rest` escaped (named or numeric entities).
pub fn escaped(html: &str, rest: &str) -> bool {
    let gt = |e: &str| rest.replace('>', e);
    html.contains(&format!("&lt;{}", gt("&gt;"))) || html.contains(&format!("&#60;{}", gt("&#62;")))
}

/// An operator console user with a known first password.
pub async fn operator(c: &Console) -> String {
    let password = "operator-first-password".to_owned();
    c.b.im
        .create_console_user("admin", "operator", None, None, Some(password.clone()))
        .await
        .expect("operator");
    password
}

/// Waits until the broker closes `raw`'s connection; the reason code of its DISCONNECT.
pub async fn kicked_reason(raw: &mut RawClient) -> Option<ReasonCode> {
    let seen = tokio::time::timeout(WAIT, raw.expect_closed())
        .await
        .expect("closed in time");
    seen.into_iter().find_map(|p| match p {
        Packet::Disconnect(d) => Some(d.code),
        _ => None,
    })
}

/// A developer console user with a known first password.
pub async fn developer(c: &Console, name: &str, account: Option<&str>) -> String {
    let password = format!("{name}-first-password");
    c.b.im
        .create_console_user(name, "developer", None, account, Some(password.clone()))
        .await
        .expect("developer");
    password
}

/// The session cookie's attributes of a fresh sign-in.
pub async fn set_cookie_attrs(c: &Console, user: &str, password: &str) -> String {
    let a = c.try_sign_in(user, password).await;
    header(&a, "set-cookie")
        .into_iter()
        .find(|h| h.starts_with("sb_session="))
        .unwrap_or_default()
        .to_owned()
}

/// The browsers the console's browser scenarios run in: Debian's Chromium (Playwright's
/// `playwright-core`) and Debian's Firefox ESR (`puppeteer-core` over WebDriver BiDi).
#[derive(Clone, Copy, Debug)]
pub enum Browser {
    Chromium,
    Firefox,
}

impl Browser {
    /// The `BROWSER` value `tests/js/console/lib.mjs` reads.
    pub fn name(self) -> &'static str {
        match self {
            Browser::Chromium => "chromium",
            Browser::Firefox => "firefox",
        }
    }
}

/// Runs `node SCRIPT ARGS` in `tests/js` with `BROWSER` set (and `SHOTS`, where failures
/// keep their screenshots), after checking that the browser and the Node drivers are
/// installed (tests/run.sh installs them). Blocking: call from `spawn_blocking`.
pub fn run_browser_script(
    browser: Browser,
    script: &str,
    args: &[String],
    shots: &std::path::Path,
) -> std::process::Output {
    let js = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("js");
    for module in ["playwright-core", "puppeteer-core"] {
        assert!(
            js.join("node_modules").join(module).exists(),
            "run `npm ci --prefix tests/js` first (tests/run.sh does)"
        );
    }
    let exe = match browser {
        Browser::Chromium => "/usr/bin/chromium",
        Browser::Firefox => "/usr/bin/firefox-esr",
    };
    assert!(
        std::path::Path::new(exe).exists(),
        "install Debian's {exe} first (tests/run.sh does)"
    );
    std::process::Command::new("node")
        .current_dir(&js)
        .arg(script)
        .args(args)
        .env("BROWSER", browser.name())
        .env("SHOTS", shots)
        .output()
        .expect("node runs")
}
