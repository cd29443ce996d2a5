//! An S3-compatible [`BlobStore`]: objects in one bucket (path-style URLs,
//! `{endpoint}/{bucket}/{id}` and `{id}.json` for the metadata), requests signed with AWS
//! Signature Version 4 (computed here with ring's HMAC-SHA256 and SHA-256; the signed
//! headers are `host`, `x-amz-content-sha256` and `x-amz-date`). HTTP/1.1 by hyper, over
//! TLS (rustls, the system's roots) for `https://` endpoints. Selected by the gateway's
//! settings (`gateway.files.s3 = {endpoint, bucket, region, access_key, secret_key}`).
//!
//! The trait is synchronous (callers run it on the blocking pool), so each call drives its
//! request on the runtime it was called from.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use ring::{digest, hmac};
use rustls::pki_types::ServerName;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;

use super::{BlobStore, FileMeta};
use crate::native::auth::{hex, unix_now};

/// Longest a request may take.
const TIMEOUT: Duration = Duration::from_secs(60);
/// Largest object read back (the upload limit and some).
const MAX_OBJECT: usize = super::MAX_FILE_BYTES + 1024 * 1024;

/// Where and as whom to store.
#[derive(Clone, Serialize, Deserialize)]
pub struct S3Config {
    /// `http://host:port` or `https://host` (no path).
    pub endpoint: String,
    pub bucket: String,
    #[serde(default = "default_region")]
    pub region: String,
    pub access_key: String,
    /// Never written back out (effective-config dumps).
    #[serde(skip_serializing)]
    pub secret_key: String,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("access_key", &self.access_key)
            .finish_non_exhaustive()
    }
}

fn default_region() -> String {
    "us-east-1".into()
}

/// Why an S3 request failed.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    #[error("bad S3 endpoint {0:?}: want http://host[:port] or https://host[:port]")]
    Endpoint(String),
    #[error("S3 connection: {0}")]
    Io(String),
    #[error("S3 answered {status}: {body}")]
    Status { status: u16, body: String },
}

impl From<S3Error> for std::io::Error {
    fn from(e: S3Error) -> Self {
        std::io::Error::other(e.to_string())
    }
}

/// The store.
pub struct S3BlobStore {
    cfg: S3Config,
    tls: bool,
    host: String,
    port: u16,
    connector: Option<tokio_rustls::TlsConnector>,
}

/// `YYYYMMDD'T'HHMMSS'Z'` of Unix seconds `t`.
fn amz_date(t: u64) -> String {
    let (y, m, d) = crate::rongcloud::clock::civil_from_days((t / 86_400) as i64);
    let s = t % 86_400;
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

fn sha256_hex(b: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, b).as_ref())
}

fn hmac(key: &[u8], msg: &str) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), msg.as_bytes())
        .as_ref()
        .to_vec()
}

/// URI-encodes a path segment as SigV4 wants (unreserved characters kept).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The `Authorization` header of a request (SigV4, no query string).
fn authorization(
    cfg: &S3Config,
    method: &str,
    path: &str,
    host: &str,
    payload_hash: &str,
    now: u64,
) -> (String, String) {
    let date_time = amz_date(now);
    let date = &date_time[..8];
    let canonical = format!(
        "{method}\n{path}\n\nhost:{host}\nx-amz-content-sha256:{payload_hash}\nx-amz-date:{date_time}\n\nhost;x-amz-content-sha256;x-amz-date\n{payload_hash}"
    );
    let scope = format!("{date}/{}/s3/aws4_request", cfg.region);
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{date_time}\n{scope}\n{}",
        sha256_hex(canonical.as_bytes())
    );
    let k = hmac(format!("AWS4{}", cfg.secret_key).as_bytes(), date);
    let k = hmac(&k, &cfg.region);
    let k = hmac(&k, "s3");
    let k = hmac(&k, "aws4_request");
    let sig = hex(&hmac(&k, &to_sign));
    (
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={sig}",
            cfg.access_key
        ),
        date_time,
    )
}

impl S3BlobStore {
    /// A store for `cfg` (nothing is contacted yet).
    pub fn new(cfg: S3Config) -> Result<S3BlobStore, S3Error> {
        let bad = || S3Error::Endpoint(cfg.endpoint.clone());
        let (tls, rest) = if let Some(r) = cfg.endpoint.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = cfg.endpoint.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(bad());
        };
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() || rest.contains('/') || cfg.bucket.is_empty() {
            return Err(bad());
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), p.parse().map_err(|_| bad())?),
            None => (rest.to_owned(), if tls { 443 } else { 80 }),
        };
        let connector = if tls {
            let c = crate::push::https::tls_config(None).map_err(S3Error::Io)?;
            Some(tokio_rustls::TlsConnector::from(c))
        } else {
            None
        };
        Ok(S3BlobStore {
            cfg,
            tls,
            host,
            port,
            connector,
        })
    }

    fn host_header(&self) -> String {
        match (self.tls, self.port) {
            (true, 443) | (false, 80) => self.host.clone(),
            _ => format!("{}:{}", self.host, self.port),
        }
    }

    /// One request; answers the status and body.
    async fn send(&self, method: &str, key: &str, body: Bytes) -> Result<(u16, Bytes), S3Error> {
        let path = if key.is_empty() {
            format!("/{}", encode(&self.cfg.bucket))
        } else {
            format!("/{}/{}", encode(&self.cfg.bucket), encode(key))
        };
        let host = self.host_header();
        let payload_hash = sha256_hex(&body);
        let (auth, date) =
            authorization(&self.cfg, method, &path, &host, &payload_hash, unix_now());
        let req = hyper::Request::builder()
            .method(method)
            .uri(&path)
            .header("host", &host)
            .header("x-amz-date", date)
            .header("x-amz-content-sha256", &payload_hash)
            .header("authorization", auth)
            .header("content-length", body.len())
            .body(Full::new(body))
            .map_err(|e| S3Error::Io(e.to_string()))?;
        let io = |e: &dyn std::fmt::Display| S3Error::Io(e.to_string());
        let run = async {
            let tcp = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|e| io(&e))?;
            let res = match &self.connector {
                Some(c) => {
                    let name = ServerName::try_from(self.host.clone()).map_err(|e| io(&e))?;
                    let tls = c.connect(name, tcp).await.map_err(|e| io(&e))?;
                    exchange(TokioIo::new(tls), req).await?
                }
                None => exchange(TokioIo::new(tcp), req).await?,
            };
            Ok::<_, S3Error>(res)
        };
        tokio::time::timeout(TIMEOUT, run)
            .await
            .map_err(|_| S3Error::Io(format!("no answer within {TIMEOUT:?}")))?
    }

    /// Runs `send` to completion from a blocking-pool thread of the current runtime.
    fn blocking(&self, method: &str, key: &str, body: Bytes) -> Result<(u16, Bytes), S3Error> {
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| S3Error::Io("no async runtime".into()))?;
        handle.block_on(self.send(method, key, body))
    }

    /// Creates the bucket if it does not exist yet.
    pub async fn ensure_bucket(&self) -> Result<(), S3Error> {
        let (status, body) = self.send("PUT", "", Bytes::new()).await?;
        let text = String::from_utf8_lossy(&body);
        if (200..300).contains(&status) || text.contains("BucketAlreadyOwnedByYou") {
            Ok(())
        } else {
            Err(S3Error::Status {
                status,
                body: text.chars().take(300).collect(),
            })
        }
    }

    fn put_object(&self, key: &str, bytes: &[u8]) -> Result<(), S3Error> {
        let (status, body) = self.blocking("PUT", key, Bytes::copy_from_slice(bytes))?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(S3Error::Status {
                status,
                body: String::from_utf8_lossy(&body).chars().take(300).collect(),
            })
        }
    }

    fn get_object(&self, key: &str) -> Result<Option<Bytes>, S3Error> {
        let (status, body) = self.blocking("GET", key, Bytes::new())?;
        match status {
            200 => Ok(Some(body)),
            404 => Ok(None),
            _ => Err(S3Error::Status {
                status,
                body: String::from_utf8_lossy(&body).chars().take(300).collect(),
            }),
        }
    }
}

/// Sends `req` on a fresh HTTP/1.1 connection over `io` and reads the whole answer.
async fn exchange<T>(
    io: TokioIo<T>,
    req: hyper::Request<Full<Bytes>>,
) -> Result<(u16, Bytes), S3Error>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io_err = |e: &dyn std::fmt::Display| S3Error::Io(e.to_string());
    let (mut sender, conn) = http1::handshake(io).await.map_err(|e| io_err(&e))?;
    let conn = tokio::spawn(conn);
    let res = sender.send_request(req).await.map_err(|e| io_err(&e))?;
    let status = res.status().as_u16();
    let body = Limited::new(res.into_body(), MAX_OBJECT)
        .collect()
        .await
        .map_err(|e| io_err(&e))?
        .to_bytes();
    conn.abort();
    Ok((status, body))
}

fn valid_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

impl BlobStore for S3BlobStore {
    fn put(&self, id: &str, bytes: &[u8], meta: &FileMeta) -> std::io::Result<()> {
        if !valid_id(id) {
            return Err(std::io::Error::other("bad file id"));
        }
        // The bytes first: metadata present means the file is whole.
        self.put_object(id, bytes)?;
        let m = serde_json::to_vec(meta).map_err(std::io::Error::other)?;
        Ok(self.put_object(&format!("{id}.json"), &m)?)
    }

    fn get(&self, id: &str) -> std::io::Result<Option<(FileMeta, Vec<u8>)>> {
        if !valid_id(id) {
            return Ok(None);
        }
        let Some(m) = self.get_object(&format!("{id}.json"))? else {
            return Ok(None);
        };
        let meta: FileMeta = serde_json::from_slice(&m).map_err(std::io::Error::other)?;
        match self.get_object(id)? {
            Some(b) => Ok(Some((meta, b.to_vec()))),
            None => Ok(None),
        }
    }
}

/// A shared handle, as the gateway keeps its store.
pub fn shared(cfg: S3Config) -> Result<Arc<dyn BlobStore>, S3Error> {
    Ok(Arc::new(S3BlobStore::new(cfg)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_one_botocore_computes() {
        // Computed with botocore's S3SigV4Auth (AWS's Python SDK core) for the same
        // request: GET http://127.0.0.1:9000/my-bucket/ab.json, empty body, at
        // 2026-11-27T20:57:09Z, key AKID / SECRET/KEY, region eu-west-1.
        let cfg = S3Config {
            endpoint: "http://127.0.0.1:9000".into(),
            bucket: "my-bucket".into(),
            region: "eu-west-1".into(),
            access_key: "AKID".into(),
            secret_key: "SECRET/KEY".into(),
        };
        let (auth, date) = authorization(
            &cfg,
            "GET",
            "/my-bucket/ab.json",
            "127.0.0.1:9000",
            &sha256_hex(b""),
            1_795_813_029,
        );
        assert_eq!(date, "20261127T205709Z");
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKID/20261127/eu-west-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=1e09c2d7905c39cee3081867b46410e1a1df1e1078edface1e388f8b0842752e"
        );
    }

    #[test]
    fn endpoints_are_checked() {
        let cfg = |e: &str| S3Config {
            endpoint: e.into(),
            bucket: "b".into(),
            region: "r".into(),
            access_key: "a".into(),
            secret_key: "s".into(),
        };
        assert!(S3BlobStore::new(cfg("ftp://x")).is_err());
        assert!(S3BlobStore::new(cfg("http://x/path")).is_err());
        let s = S3BlobStore::new(cfg("http://127.0.0.1:9000")).expect("ok");
        assert_eq!(
            (s.host_header(), s.port),
            ("127.0.0.1:9000".to_owned(), 9000)
        );
        assert_eq!(encode("a b/ü"), "a%20b%2F%C3%BC");
    }
}
