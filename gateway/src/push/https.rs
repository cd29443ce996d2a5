//! HTTPS for the push providers: TLS by rustls (the system's roots plus an optional extra
//! CA, for tests and private deployments), HTTP/2 by hyper when the server offers it (ALPN
//! `h2`; one multiplexed connection per origin, kept and reused, reopened when it closes),
//! else HTTP/1.1 with a connection per request. Each provider instance (one per tenant
//! credential) owns one [`Https`], so connections are per credential.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper::header::HeaderMap;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Longest a request (connect included) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest answer body read.
const MAX_ANSWER: usize = 64 * 1024;

/// An answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// `Retry-After` in seconds, if given as a number.
    pub fn retry_after(&self) -> Option<Duration> {
        self.headers
            .get("retry-after")?
            .to_str()
            .ok()?
            .trim()
            .parse::<u64>()
            .ok()
            .map(|s| Duration::from_secs(s.min(3600)))
    }

    /// The body as JSON (`Null` when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

type Sender = http2::SendRequest<Full<Bytes>>;

/// A client for HTTPS origins.
pub struct Https {
    tls: TlsConnector,
    h2: tokio::sync::Mutex<HashMap<String, Sender>>,
}

/// The TLS settings: the system's roots and `extra_ca` (PEM, any number of certificates).
pub fn tls_config(extra_ca: Option<&[u8]>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(c);
    }
    if let Some(pem) = extra_ca {
        let text = std::str::from_utf8(pem).map_err(|_| "extra CA is not PEM text")?;
        let mut any = false;
        for block in text.split_inclusive("-----END CERTIFICATE-----") {
            if !block.contains("-----BEGIN CERTIFICATE-----") {
                continue;
            }
            let der = super::jwt::pem_to_der(block)?;
            roots
                .add(der.into())
                .map_err(|e| format!("extra CA rejected: {e}"))?;
            any = true;
        }
        if !any {
            return Err("extra CA holds no certificate".into());
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

impl Https {
    pub fn new(tls: Arc<rustls::ClientConfig>) -> Https {
        Https {
            tls: TlsConnector::from(tls),
            h2: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Sends `req` (an absolute `https://` URI) and reads the answer.
    pub async fn send(&self, req: hyper::Request<Full<Bytes>>) -> Result<Answer, String> {
        tokio::time::timeout(REQUEST_TIMEOUT, self.send_inner(req))
            .await
            .map_err(|_| "timeout".to_owned())?
    }

    async fn send_inner(&self, mut req: hyper::Request<Full<Bytes>>) -> Result<Answer, String> {
        let uri = req.uri().clone();
        if uri.scheme_str() != Some("https") {
            return Err(format!("not an https URL: {uri}"));
        }
        let host = uri.host().ok_or("URL without host")?.to_owned();
        let port = uri.port_u16().unwrap_or(443);
        let origin = format!("{host}:{port}");
        let resp = {
            let mut pool = self.h2.lock().await;
            let cached = pool.get(&origin).filter(|s| !s.is_closed()).cloned();
            match cached {
                Some(s) => Some(s),
                None => {
                    pool.remove(&origin);
                    match self.connect(&host, port).await? {
                        Conn::H2(s) => {
                            pool.insert(origin.clone(), s.clone());
                            Some(s)
                        }
                        Conn::H1(mut s) => {
                            drop(pool);
                            let path = uri.path_and_query().map_or("/", |p| p.as_str());
                            *req.uri_mut() = path.parse().map_err(|_| "bad path")?;
                            let authority = uri.authority().map_or(host.clone(), |a| a.to_string());
                            req.headers_mut().insert(
                                hyper::header::HOST,
                                authority.parse().map_err(|_| "bad host")?,
                            );
                            let r = s.send_request(req).await.map_err(|e| e.to_string())?;
                            return read(r).await;
                        }
                    }
                }
            }
        };
        let Some(mut s) = resp else {
            return Err("no connection".into());
        };
        s.ready().await.map_err(|e| e.to_string())?;
        match s.send_request(req).await {
            Ok(r) => read(r).await,
            Err(e) => {
                // The connection is broken: the next request opens a new one.
                let mut pool = self.h2.lock().await;
                if pool.get(&origin).is_some_and(|p| p.is_closed()) {
                    pool.remove(&origin);
                }
                Err(e.to_string())
            }
        }
    }

    async fn connect(&self, host: &str, port: u16) -> Result<Conn, String> {
        let tcp = TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("connect {host}:{port}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(host.to_owned()).map_err(|e| e.to_string())?;
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {host}: {e}"))?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(tls);
        if h2 {
            let (s, conn) = http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| format!("HTTP/2 with {host}: {e}"))?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "push: HTTP/2 connection closed");
                }
            });
            Ok(Conn::H2(s))
        } else {
            let (s, conn) = http1::handshake(io)
                .await
                .map_err(|e| format!("HTTP/1.1 with {host}: {e}"))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok(Conn::H1(s))
        }
    }
}

enum Conn {
    H2(Sender),
    H1(http1::SendRequest<Full<Bytes>>),
}

async fn read(r: hyper::Response<hyper::body::Incoming>) -> Result<Answer, String> {
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = http_body_util::Limited::new(r.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// A POST request with a body and headers.
pub fn post(
    url: &str,
    content_type: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> Result<hyper::Request<Full<Bytes>>, String> {
    let mut b = hyper::Request::post(url).header("content-type", content_type);
    for (k, v) in headers {
        b = b.header(*k, v.as_str());
    }
    b.body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("bad request to {url}: {e}"))
}

/// `application/x-www-form-urlencoded` of `pairs`.
pub fn form(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish().into_bytes()
}

/// An OAuth2 access token and when it should be replaced.
#[derive(Clone)]
pub struct Bearer {
    pub token: String,
    pub renew_at: std::time::Instant,
}

impl Bearer {
    /// From a token endpoint's JSON answer (`access_token`, `expires_in`), renewed a
    /// minute (or a tenth of its life) before it expires.
    pub fn from_answer(v: &serde_json::Value) -> Option<Bearer> {
        let token = v["access_token"].as_str()?.to_owned();
        let life = v["expires_in"]
            .as_u64()
            .or_else(|| v["expires_in"].as_str()?.parse().ok())
            .unwrap_or(3600);
        let margin = (life / 10).min(60);
        Some(Bearer {
            token,
            renew_at: std::time::Instant::now() + Duration::from_secs(life - margin),
        })
    }

    pub fn fresh(&self) -> bool {
        std::time::Instant::now() < self.renew_at
    }
}
