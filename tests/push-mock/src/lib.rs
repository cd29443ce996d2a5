//! Mock push services for the push tests and `switchboard bench --push`: one
//! HTTP/2-over-TLS server (certificate from a test CA made by rcgen at start) that answers
//! like APNs (`/3/device/{token}`), Google's OAuth2 token endpoint and FCM v1 (`/token`,
//! `/v1/projects/{p}/messages:send`), Huawei Push Kit (`/huawei/token`,
//! `/v1/{app}/messages:send`), Xiaomi MiPush (`/v3/message/regid`), OPPO PUSH
//! (`/server/v1/auth`, `/server/v1/message/notification/unicast`), vivo push
//! (`/message/auth`, `/message/send`), Honor Push (`/honor/token`,
//! `/api/v1/{app}/sendMessage`) and Meizu push
//! (`/garcia/api/server/push/varnished/pushByPushId`). It checks what the real ones check ([`check`]): signatures
//! of provider tokens and auth requests, the bearer or auth token it issued, required
//! headers. It answers scripted errors on demand (with the vendors' error bodies), can be
//! slowed down ([`PushMock::set_delay`]) and reports every request it got with the time it
//! arrived. Dropping it stops the server.

pub mod check;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use ring::signature;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use check::{form, hdr};

/// How long [`PushMock::next`] waits.
pub const WAIT: Duration = Duration::from_secs(10);
/// The test service account's RSA key (test only; made with openssl, no other use).
pub const TEST_RSA_PEM: &str = include_str!("push_test_rsa.pem");
/// APNs key id and team id the mock expects.
pub const APNS_KEY_ID: &str = "KEY123";
pub const APNS_TEAM_ID: &str = "TEAM456";
/// Vendor credentials the mock expects.
pub const HUAWEI_APP: &str = "10086";
pub const HUAWEI_SECRET: &str = "hw-secret";
pub const XIAOMI_SECRET: &str = "mi-secret";
pub const FCM_EMAIL: &str = "push@test-project.iam.gserviceaccount.com";
pub const OPPO_APP_KEY: &str = "oppo-app-key";
pub const OPPO_MASTER_SECRET: &str = "oppo-master-secret";
pub const VIVO_APP_ID: &str = "10004";
pub const VIVO_APP_KEY: &str = "vivo-app-key";
pub const VIVO_APP_SECRET: &str = "vivo-app-secret";
pub const HONOR_APP: &str = "104400";
pub const HONOR_SECRET: &str = "honor-secret";
pub const MEIZU_APP_ID: &str = "110099";
pub const MEIZU_APP_SECRET: &str = "meizu-app-secret";

/// One request the mock got, and what it answered.
#[derive(Debug, Clone)]
pub struct Hit {
    /// `apns`, `fcm`, `fcm_token`, `huawei`, `huawei_token`, `xiaomi`, `oppo`, `oppo_auth`,
    /// `vivo`, `vivo_auth`, `honor`, `honor_token`, `meizu`, `unknown`.
    pub kind: String,
    pub path: String,
    pub version: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    pub status: u16,
    /// When the request arrived (its body read).
    pub at: Instant,
}

impl Hit {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }
    /// The form fields of a form-encoded body.
    pub fn form(&self) -> HashMap<String, String> {
        form(&self.body)
    }
}

/// A scripted answer.
#[derive(Debug, Clone)]
pub struct Canned {
    pub status: u16,
    pub body: String,
    pub retry_after: Option<u64>,
}

/// The server's shared state.
pub struct State {
    apns_public: Vec<u8>,
    rsa_public: Vec<u8>,
    token_url: String,
    script: Mutex<HashMap<String, VecDeque<Canned>>>,
    bearers: Mutex<HashSet<String>>,
    /// APNs provider tokens verified, with their `iat`.
    apns_verified: Mutex<HashMap<String, i64>>,
    delay: Mutex<Duration>,
    tx: mpsc::UnboundedSender<Hit>,
}

/// The mock server.
pub struct PushMock {
    pub addr: SocketAddr,
    /// The test CA (PEM) to trust.
    pub ca_pem: String,
    /// The APNs `.p8` key (PEM) whose public half the mock checks.
    pub apns_key_pem: String,
    state: Arc<State>,
    hits: mpsc::UnboundedReceiver<Hit>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PushMock {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64ct::Encoding as _;
    let b64 = base64ct::Base64::encode_string(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// The DER of a PEM block.
pub fn pem_body(pem: &str) -> Vec<u8> {
    use base64ct::Encoding as _;
    let b: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect();
    base64ct::Base64::decode_vec(&b).expect("PEM")
}

impl PushMock {
    /// Starts on 127.0.0.1 (any port).
    pub async fn start() -> PushMock {
        let rng = ring::rand::SystemRandom::new();
        let p8 = signature::EcdsaKeyPair::generate_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &rng,
        )
        .expect("P-256 key");
        let apns = signature::EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            p8.as_ref(),
            &rng,
        )
        .expect("P-256 key parses");
        use ring::signature::KeyPair as _;
        let apns_public = apns.public_key().as_ref().to_vec();
        let rsa_der = pem_body(TEST_RSA_PEM);
        let rsa = signature::RsaKeyPair::from_pkcs8(&rsa_der).expect("test RSA key");
        let rsa_public = rsa.public().as_ref().to_vec();

        // A test CA and a server certificate for 127.0.0.1.
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "push mock CA");
        let ca_key = KeyPair::generate().expect("CA key");
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA cert");
        let issuer = Issuer::new(ca_params, ca_key);
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &issuer).expect("server cert");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .expect("TLS config");
        tls.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let (tx, hits) = mpsc::unbounded_channel();
        let state = Arc::new(State {
            apns_public,
            rsa_public,
            token_url: format!("https://{addr}/token"),
            script: Mutex::default(),
            bearers: Mutex::default(),
            apns_verified: Mutex::default(),
            delay: Mutex::new(Duration::ZERO),
            tx,
        });
        let st = state.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((tcp, _)) = l.accept().await {
                let (acceptor, st) = (acceptor.clone(), st.clone());
                conns.spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = service_fn(move |req| {
                        let st = st.clone();
                        async move { Ok::<_, std::convert::Infallible>(handle(&st, req).await) }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .max_concurrent_streams(1000)
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        PushMock {
            addr,
            ca_pem: ca_cert.pem(),
            apns_key_pem: pem("PRIVATE KEY", p8.as_ref()),
            state,
            hits,
            task,
        }
    }

    /// `https://127.0.0.1:port`.
    pub fn base(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The service-account JSON of the test FCM project (token URI: this mock).
    pub fn service_account(&self) -> Value {
        json!({
            "type": "service_account", "project_id": "test-project",
            "private_key_id": "k1", "private_key": TEST_RSA_PEM,
            "client_email": FCM_EMAIL, "token_uri": self.state.token_url,
        })
    }

    /// Credentials for every mocked vendor, as `push/credentials/set` takes them.
    pub fn credentials(&self) -> Value {
        json!({
            "apns": {"key_p8": self.apns_key_pem, "key_id": APNS_KEY_ID, "team_id": APNS_TEAM_ID,
                     "topic": "com.example.chat"},
            "fcm": {"service_account_json": self.service_account().to_string()},
            "huawei": {"app_id": HUAWEI_APP, "client_secret": HUAWEI_SECRET},
            "xiaomi": {"app_secret": XIAOMI_SECRET, "package_name": "com.example.chat"},
            "oppo": {"app_key": OPPO_APP_KEY, "master_secret": OPPO_MASTER_SECRET},
            "vivo": {"app_id": VIVO_APP_ID, "app_key": VIVO_APP_KEY, "app_secret": VIVO_APP_SECRET},
            "honor": {"app_id": HONOR_APP, "client_secret": HONOR_SECRET},
            "meizu": {"app_id": MEIZU_APP_ID, "app_secret": MEIZU_APP_SECRET},
        })
    }

    /// The next answers for `kind` (`apns`, `fcm`, `huawei`, `xiaomi`, `oppo`, `vivo`,
    /// `honor`), in order.
    pub fn script(&self, kind: &str, answers: Vec<Canned>) {
        self.state
            .script
            .lock()
            .entry(kind.to_owned())
            .or_default()
            .extend(answers);
    }

    /// Delays every answer of a send endpoint by `d` (a slow provider).
    pub fn set_delay(&self, d: Duration) {
        *self.state.delay.lock() = d;
    }

    /// The next request of `kind`; panics after [`WAIT`].
    pub async fn next(&mut self, kind: &str) -> Hit {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let h = tokio::time::timeout_at(deadline, self.hits.recv())
                .await
                .unwrap_or_else(|_| panic!("a {kind} request within the wait"))
                .expect("mock running");
            if h.kind == kind {
                return h;
            }
        }
    }

    /// The next request of any kind; panics after [`WAIT`].
    pub async fn next_any(&mut self) -> Hit {
        tokio::time::timeout(WAIT, self.hits.recv())
            .await
            .expect("a request within the wait")
            .expect("mock running")
    }

    /// The next request of any kind, or none after `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> Option<Hit> {
        tokio::time::timeout(wait, self.hits.recv())
            .await
            .ok()
            .flatten()
    }

    /// Requests received so far and not yet taken.
    pub fn drain(&mut self) -> Vec<Hit> {
        let mut v = Vec::new();
        while let Ok(h) = self.hits.try_recv() {
            v.push(h);
        }
        v
    }
}

type Resp = hyper::Response<Full<Bytes>>;

fn answer(status: u16, body: String, retry_after: Option<u64>) -> Resp {
    let mut b = hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json");
    if let Some(s) = retry_after {
        b = b.header("retry-after", s.to_string());
    }
    b.body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| hyper::Response::new(Full::new(Bytes::new())))
}

fn kind_of(path: &str) -> &'static str {
    match path {
        _ if path.starts_with("/3/device/") => "apns",
        "/token" => "fcm_token",
        "/huawei/token" => "huawei_token",
        "/honor/token" => "honor_token",
        "/v3/message/regid" => "xiaomi",
        "/server/v1/auth" => "oppo_auth",
        "/server/v1/message/notification/unicast" => "oppo",
        "/message/auth" => "vivo_auth",
        "/message/send" => "vivo",
        "/garcia/api/server/push/varnished/pushByPushId" => "meizu",
        _ if path.starts_with("/v1/projects/") => "fcm",
        _ if path == format!("/v1/{HUAWEI_APP}/messages:send") => "huawei",
        _ if path == format!("/api/v1/{HONOR_APP}/sendMessage") => "honor",
        _ => "unknown",
    }
}

async fn handle(st: &State, req: hyper::Request<hyper::body::Incoming>) -> Resp {
    let path = req.uri().path().to_owned();
    let version = format!("{:?}", req.version());
    let headers: HashMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                v.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let at = Instant::now();
    let kind = kind_of(&path);
    let hit = |status: u16| Hit {
        kind: kind.to_owned(),
        path: path.clone(),
        version: version.clone(),
        headers: headers.clone(),
        body: body.clone(),
        status,
        at,
    };
    // Token endpoints: a new token on good credentials.
    let grant = match kind {
        "fcm_token" => Some(check::fcm_grant(st, &form(&body))),
        "huawei_token" | "honor_token" => Some(check::client_credentials(kind, &form(&body))),
        "oppo_auth" => Some(check::oppo_auth(&form(&body))),
        "vivo_auth" => Some(check::vivo_auth(
            &serde_json::from_slice(&body).unwrap_or(Value::Null),
        )),
        _ => None,
    };
    if let Some(r) = grant {
        let (status, reply) = issue(st, kind, r);
        let _ = st.tx.send(hit(status));
        return answer(status, reply, None);
    }
    let bearer_ok = |h: &str| st.bearers.lock().contains(h);
    let h = |n: &str| hdr(&headers, n).to_owned();
    let unauthenticated = || {
        (
            401,
            json!({"error": {"code": 401, "status": "UNAUTHENTICATED",
                "message": "Request had invalid authentication credentials."}})
            .to_string(),
        )
    };
    let checked = match kind {
        "apns" => check::apns(st, &headers),
        "fcm" | "huawei" => {
            let auth = h("authorization");
            if bearer_ok(auth.strip_prefix("Bearer ").unwrap_or_default()) {
                Ok(())
            } else {
                Err(unauthenticated())
            }
        }
        "honor" => {
            let auth = h("authorization");
            if h("timestamp").parse::<i64>().is_err() {
                Err((
                    400,
                    json!({"code": 80100001, "message": "timestamp required"}).to_string(),
                ))
            } else if bearer_ok(auth.strip_prefix("Bearer ").unwrap_or_default()) {
                Ok(())
            } else {
                Err((
                    401,
                    json!({"code": 80200001, "message": "Oauth authentication error"}).to_string(),
                ))
            }
        }
        "xiaomi" => check::xiaomi(&headers),
        "meizu" => check::meizu(&form(&body)),
        "oppo" => {
            if bearer_ok(&h("auth_token")) {
                Ok(())
            } else {
                Err((
                    200,
                    json!({"code": 11, "message": "Invalid AuthToken"}).to_string(),
                ))
            }
        }
        "vivo" => {
            if bearer_ok(&h("authtoken")) {
                Ok(())
            } else {
                Err((
                    200,
                    json!({"result": 10000, "desc": "authToken 不合法"}).to_string(),
                ))
            }
        }
        _ => Err((404, "{}".to_owned())),
    };
    let (status, reply, retry_after) = match checked {
        Err((s, b)) => (s, b, None),
        Ok(()) => match st.script.lock().get_mut(kind).and_then(VecDeque::pop_front) {
            Some(c) => (c.status, c.body, c.retry_after),
            None => (200, ok_body(kind), None),
        },
    };
    let delay = *st.delay.lock();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let _ = st.tx.send(hit(status));
    answer(status, reply, retry_after)
}

fn ok_body(kind: &str) -> String {
    let id = rand_id();
    match kind {
        "apns" => String::new(),
        "fcm" => json!({"name": format!("projects/test-project/messages/0:{id}")}).to_string(),
        "huawei" => {
            json!({"code": "80000000", "msg": "Success", "requestId": id.to_string()}).to_string()
        }
        "xiaomi" => {
            json!({"result": "ok", "code": 0, "data": {"id": format!("m{id}")}}).to_string()
        }
        "oppo" => json!({"code": 0, "message": "Success", "data": {"messageId": id.to_string()}})
            .to_string(),
        "vivo" => json!({"result": 0, "desc": "请求成功", "taskId": id.to_string()}).to_string(),
        "meizu" => json!({"code": "200", "message": "", "value": {}, "redirect": "",
            "msgId": id.to_string()})
        .to_string(),
        "honor" => json!({"code": 200, "message": "success",
            "data": {"sendResult": true, "requestId": id.to_string()}})
        .to_string(),
        _ => "{}".into(),
    }
}

/// Answers a token request: a new token when `r` is Ok, in the vendor's answer shape.
fn issue(st: &State, kind: &str, r: Result<(), String>) -> (u16, String) {
    let t = format!("mock-token-{}", rand_id());
    match (kind, r) {
        (_, Ok(())) => {
            st.bearers.lock().insert(t.clone());
            let body = match kind {
                "oppo_auth" => json!({"code": 0, "message": "Success",
                    "data": {"auth_token": t, "create_time": check::now() * 1000}}),
                "vivo_auth" => json!({"result": 0, "desc": "请求成功", "authToken": t}),
                _ => json!({"access_token": t, "expires_in": 3600, "token_type": "Bearer"}),
            };
            (200, body.to_string())
        }
        ("oppo_auth", Err(e)) => (200, json!({"code": 14, "message": e}).to_string()),
        ("vivo_auth", Err(e)) => (200, json!({"result": 10205, "desc": e}).to_string()),
        (_, Err(e)) => (
            400,
            json!({"error": "invalid_grant", "error_description": e}).to_string(),
        ),
    }
}

fn rand_id() -> u64 {
    let mut b = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    u64::from_be_bytes(b)
}
