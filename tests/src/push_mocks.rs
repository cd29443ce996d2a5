//! Mock push services for the push tests: one HTTP/2-over-TLS server (certificate from a
//! test CA made by rcgen at start) that answers like APNs (`/3/device/{token}`), Google's
//! OAuth2 token endpoint and FCM v1 (`/token`, `/v1/projects/{p}/messages:send`), Huawei
//! Push Kit (`/huawei/token`, `/v1/{app}/messages:send`) and Xiaomi MiPush
//! (`/v3/message/regid`). It checks what the real ones check: APNs JWT signature (ES256,
//! with the test's public key), `kid`/`iss`/`iat` and the required headers; the RS256
//! assertion of the service account and the `Bearer` it issued; the vendor secrets. It
//! answers scripted errors on demand (with the vendors' error bodies) and reports every
//! request it got. Dropping it stops the server.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

use base64ct::{Base64UrlUnpadded, Encoding};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use ring::signature::{self, UnparsedPublicKey};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::WAIT;

/// The test service account's RSA key (test only; made with openssl, no other use).
pub const TEST_RSA_PEM: &str = include_str!("push_test_rsa.pem");
/// APNs key id and team id the mock expects.
pub const APNS_KEY_ID: &str = "KEY123";
pub const APNS_TEAM_ID: &str = "TEAM456";
/// Huawei and Xiaomi secrets the mock expects.
pub const HUAWEI_APP: &str = "10086";
pub const HUAWEI_SECRET: &str = "hw-secret";
pub const XIAOMI_SECRET: &str = "mi-secret";
pub const FCM_EMAIL: &str = "push@test-project.iam.gserviceaccount.com";

/// One request the mock got, and what it answered.
#[derive(Debug, Clone)]
pub struct Hit {
    /// `apns`, `fcm`, `fcm_token`, `huawei`, `huawei_token`, `xiaomi`, `unknown`.
    pub kind: String,
    pub path: String,
    pub version: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    pub status: u16,
}

impl Hit {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }
}

/// A scripted answer.
#[derive(Debug, Clone)]
pub struct Canned {
    pub status: u16,
    pub body: String,
    pub retry_after: Option<u64>,
}

struct State {
    apns_public: Vec<u8>,
    rsa_public: Vec<u8>,
    token_url: String,
    script: Mutex<HashMap<String, VecDeque<Canned>>>,
    bearers: Mutex<HashSet<String>>,
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

impl PushMock {
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

    /// The next answers for `kind` (`apns`, `fcm`, `huawei`, `xiaomi`), in order.
    pub fn script(&self, kind: &str, answers: Vec<Canned>) {
        self.state
            .script
            .lock()
            .entry(kind.to_owned())
            .or_default()
            .extend(answers);
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

    /// Requests received so far and not yet taken.
    pub fn drain(&mut self) -> Vec<Hit> {
        let mut v = Vec::new();
        while let Ok(h) = self.hits.try_recv() {
            v.push(h);
        }
        v
    }
}

/// The DER of a PEM block.
pub fn pem_body(pem: &str) -> Vec<u8> {
    let b: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect();
    base64ct::Base64::decode_vec(&b).expect("PEM")
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Checks a JWT's signature with `verify` and returns (header, claims).
fn jwt(
    token: &str,
    alg: &'static dyn signature::VerificationAlgorithm,
    key: &[u8],
) -> Result<(Value, Value), String> {
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not three parts".into());
    };
    let sig = Base64UrlUnpadded::decode_vec(s).map_err(|_| "signature not base64url")?;
    UnparsedPublicKey::new(alg, key)
        .verify(format!("{h}.{c}").as_bytes(), &sig)
        .map_err(|_| "bad signature")?;
    let dec = |p: &str| -> Result<Value, String> {
        let b = Base64UrlUnpadded::decode_vec(p).map_err(|_| "part not base64url")?;
        serde_json::from_slice(&b).map_err(|_| "part not JSON".to_owned())
    };
    Ok((dec(h)?, dec(c)?))
}

fn form(body: &[u8]) -> HashMap<String, String> {
    form_urlencoded::parse(body).into_owned().collect()
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
    let kind = if path.starts_with("/3/device/") {
        "apns"
    } else if path == "/token" {
        "fcm_token"
    } else if path == "/huawei/token" {
        "huawei_token"
    } else if path.starts_with("/v1/projects/") {
        "fcm"
    } else if path.starts_with(&format!("/v1/{HUAWEI_APP}/")) {
        "huawei"
    } else if path == "/v3/message/regid" {
        "xiaomi"
    } else {
        "unknown"
    };
    let h = |n: &str| hdr(&headers, n).to_owned();
    let checked = match kind {
        "apns" => check_apns(st, &headers),
        "fcm_token" => {
            let r = fcm_grant(st, &form_of(&body));
            return issue(st, kind, path, version, headers.clone(), body, r);
        }
        "huawei_token" => {
            let f = form_of(&body);
            let ok = f.get("grant_type").map(String::as_str) == Some("client_credentials")
                && f.get("client_id").map(String::as_str) == Some(HUAWEI_APP)
                && f.get("client_secret").map(String::as_str) == Some(HUAWEI_SECRET);
            let r = if ok {
                Ok(())
            } else {
                Err("bad client credentials".to_owned())
            };
            return issue(st, kind, path, version, headers.clone(), body, r);
        }
        "fcm" | "huawei" => {
            let auth = h("authorization");
            let bearer = auth.strip_prefix("Bearer ").unwrap_or_default();
            if st.bearers.lock().contains(bearer) {
                Ok(())
            } else {
                Err((
                    401,
                    json!({"error": {"code": 401, "status": "UNAUTHENTICATED",
                    "message": "Request had invalid authentication credentials."}})
                    .to_string(),
                ))
            }
        }
        "xiaomi" => {
            if h("authorization") == format!("key={XIAOMI_SECRET}") {
                Ok(())
            } else {
                Err((
                    401,
                    json!({"result": "error", "code": 22006, "reason": "Invalid app secret"})
                        .to_string(),
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
    let _ = st.tx.send(Hit {
        kind: kind.to_owned(),
        path,
        version,
        headers,
        body,
        status,
    });
    answer(status, reply, retry_after)
}

fn form_of(body: &[u8]) -> HashMap<String, String> {
    form(body)
}

fn ok_body(kind: &str) -> String {
    match kind {
        "apns" => String::new(),
        "fcm" => json!({"name": "projects/test-project/messages/0:1"}).to_string(),
        "huawei" => json!({"code": "80000000", "msg": "Success", "requestId": "1"}).to_string(),
        "xiaomi" => json!({"result": "ok", "code": 0, "data": {"id": "m1"}}).to_string(),
        _ => "{}".into(),
    }
}

fn hdr<'a>(headers: &'a HashMap<String, String>, name: &str) -> &'a str {
    headers.get(name).map_or("", String::as_str)
}

fn check_apns(st: &State, headers: &HashMap<String, String>) -> Result<(), (u16, String)> {
    let h = |n: &str| hdr(headers, n);
    let reason = |s: u16, r: &str| Err((s, json!({ "reason": r }).to_string()));
    for (name, missing) in [
        ("apns-topic", "MissingTopic"),
        ("apns-push-type", "InvalidPushType"),
        ("apns-priority", "BadPriority"),
        ("apns-expiration", "BadExpirationDate"),
    ] {
        if h(name).is_empty() {
            return reason(400, missing);
        }
    }
    let Some(token) = h("authorization").strip_prefix("bearer ") else {
        return reason(403, "MissingProviderToken");
    };
    match jwt(token, &signature::ECDSA_P256_SHA256_FIXED, &st.apns_public) {
        Ok((hd, c))
            if hd["alg"] == "ES256"
                && hd["kid"] == APNS_KEY_ID
                && c["iss"] == APNS_TEAM_ID
                && (now() - c["iat"].as_i64().unwrap_or(0)).abs() < 3600 =>
        {
            Ok(())
        }
        _ => reason(403, "InvalidProviderToken"),
    }
}

fn fcm_grant(st: &State, f: &HashMap<String, String>) -> Result<(), String> {
    if f.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return Err("bad grant_type".into());
    }
    let a = f.get("assertion").ok_or("no assertion")?;
    let (h, c) = jwt(a, &signature::RSA_PKCS1_2048_8192_SHA256, &st.rsa_public)?;
    let exp = c["exp"].as_i64().unwrap_or(0);
    if h["alg"] != "RS256"
        || c["iss"] != FCM_EMAIL
        || c["aud"] != st.token_url.as_str()
        || c["scope"] != "https://www.googleapis.com/auth/firebase.messaging"
        || exp < now()
    {
        return Err(format!("bad claims {c}"));
    }
    Ok(())
}

/// Answers a token request: a new bearer when `r` is Ok.
fn issue(
    st: &State,
    kind: &str,
    path: String,
    version: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
    r: Result<(), String>,
) -> Resp {
    let (status, reply) = match r {
        Ok(()) => {
            let t = format!("mock-token-{}", rand_id());
            st.bearers.lock().insert(t.clone());
            (
                200,
                json!({"access_token": t, "expires_in": 3600, "token_type": "Bearer"}).to_string(),
            )
        }
        Err(e) => (
            400,
            json!({"error": "invalid_grant", "error_description": e}).to_string(),
        ),
    };
    let _ = st.tx.send(Hit {
        kind: kind.to_owned(),
        path,
        version,
        headers,
        body,
        status,
    });
    answer(status, reply, None)
}

fn rand_id() -> u64 {
    let mut b = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    u64::from_be_bytes(b)
}
