//! Files for media messages: upload (`POST /v1/files`, multipart, signed like every native
//! call), content-addressed storage behind the [`BlobStore`] trait (a directory, or an
//! S3-compatible bucket), time-limited signed download URLs (`GET /files/{id}?exp=&sig=`,
//! no other credential, so devices can fetch them), and thumbnails of images.
//!
//! A file's id is the hex SHA-256 of its bytes: the same file uploaded twice is stored once.
//! Types are taken from the bytes where they can be (images), never from the client's
//! word alone; the allowed list and the size limit are the gateway's settings.
//!
//! Users' devices upload with their IM token ([`device`]); workbench app icons go through
//! [`crate::workbench`]; every path stores through [`store_file`]. [`s3`] is the
//! S3-compatible store, chosen by the gateway's settings instead of the directory.

pub mod device;
pub mod s3;

use std::io::Cursor;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use ring::hmac;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiError;
use crate::native::Signed;
use crate::native::auth::{hex, unix_now};

/// Largest upload (bytes).
pub const MAX_FILE_BYTES: usize = 20 * 1024 * 1024;
/// How long a download URL works.
pub const URL_TTL: Duration = Duration::from_secs(3600);
/// Longest side of a thumbnail (pixels).
const THUMB_SIDE: u32 = 240;

/// Types accepted for upload.
const ALLOWED: [&str; 12] = [
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "audio/amr",
    "audio/aac",
    "audio/mpeg",
    "video/mp4",
    "application/pdf",
    "application/zip",
    "text/plain",
    "application/octet-stream",
];

/// What is known of a stored file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMeta {
    pub id: String,
    pub size: u64,
    pub mime: String,
    pub name: String,
    pub width: u32,
    pub height: u32,
    /// Id of the thumbnail (a PNG), for images.
    pub thumbnail: Option<String>,
}

/// Where file bytes live.
pub trait BlobStore: Send + Sync + 'static {
    /// Stores `bytes` under `id` (idempotent: the id is their hash) with `meta`.
    fn put(&self, id: &str, bytes: &[u8], meta: &FileMeta) -> std::io::Result<()>;
    /// The file `id`, if stored.
    fn get(&self, id: &str) -> std::io::Result<Option<(FileMeta, Vec<u8>)>>;
}

/// A directory: `{dir}/{id[..2]}/{id}` and `{id}.json` beside it.
pub struct DirBlobStore {
    dir: PathBuf,
}

impl DirBlobStore {
    pub fn new(dir: PathBuf) -> DirBlobStore {
        DirBlobStore { dir }
    }

    fn path(&self, id: &str) -> Option<PathBuf> {
        // Ids are hex SHA-256: anything else never reaches the file system.
        (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| self.dir.join(&id[..2]).join(id))
    }
}

impl BlobStore for DirBlobStore {
    fn put(&self, id: &str, bytes: &[u8], meta: &FileMeta) -> std::io::Result<()> {
        let path = self
            .path(id)
            .ok_or_else(|| std::io::Error::other("bad file id"))?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        // Written to a temporary name and renamed: a crash leaves no half file.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, &path)?;
        let m = serde_json::to_vec(meta).map_err(std::io::Error::other)?;
        std::fs::write(path.with_extension("json"), m)
    }

    fn get(&self, id: &str) -> std::io::Result<Option<(FileMeta, Vec<u8>)>> {
        let Some(path) = self.path(id) else {
            return Ok(None);
        };
        let meta = match std::fs::read(path.with_extension("json")) {
            Ok(m) => serde_json::from_slice(&m).map_err(std::io::Error::other)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(Some((meta, std::fs::read(path)?)))
    }
}

/// Signs download URLs (a key every gateway instance of the deployment shares).
#[derive(Clone)]
pub struct UrlSigner {
    key: hmac::Key,
}

impl UrlSigner {
    /// From the deployment's shared secret (the service credential).
    pub fn new(secret: &str) -> UrlSigner {
        let k = hmac::Key::new(hmac::HMAC_SHA256, b"switchboard files");
        let derived = hmac::sign(&k, secret.as_bytes());
        UrlSigner {
            key: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()),
        }
    }

    fn sig(&self, id: &str, exp: u64) -> String {
        hex(hmac::sign(&self.key, format!("{id}:{exp}").as_bytes()).as_ref())
    }

    /// The path of a download URL for `id`, valid for [`URL_TTL`].
    pub fn url(&self, id: &str) -> String {
        let exp = unix_now() + URL_TTL.as_secs();
        format!("/files/{id}?exp={exp}&sig={}", self.sig(id, exp))
    }

    fn check(&self, id: &str, exp: u64, sig: &str) -> bool {
        use subtle::ConstantTimeEq;
        exp >= unix_now() && bool::from(self.sig(id, exp).as_bytes().ct_eq(sig.as_bytes()))
    }
}

/// The type of `bytes`: sniffed for images, else what the client said if allowed.
fn mime_of(bytes: &[u8], claimed: &str) -> Result<String, ApiError> {
    let sniffed = match bytes {
        [0x89, b'P', b'N', b'G', ..] => Some("image/png"),
        [0xFF, 0xD8, 0xFF, ..] => Some("image/jpeg"),
        [b'G', b'I', b'F', b'8', ..] => Some("image/gif"),
        [
            b'R',
            b'I',
            b'F',
            b'F',
            _,
            _,
            _,
            _,
            b'W',
            b'E',
            b'B',
            b'P',
            ..,
        ] => Some("image/webp"),
        [b'%', b'P', b'D', b'F', ..] => Some("application/pdf"),
        _ => None,
    };
    if let Some(s) = sniffed {
        return Ok(s.to_owned());
    }
    let claimed = claimed.split(';').next().unwrap_or_default().trim();
    if claimed.starts_with("image/") {
        return Err(ApiError::bad_request(
            "the bytes are not the image type claimed",
        ));
    }
    let m = if claimed.is_empty() {
        "application/octet-stream"
    } else {
        claimed
    };
    if ALLOWED.contains(&m) {
        Ok(m.to_owned())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            41500,
            format!("type {m} is not accepted"),
        ))
    }
}

/// A PNG thumbnail and the image's size, for the image types we decode.
fn thumbnail(bytes: &[u8], mime: &str) -> Option<(Vec<u8>, u32, u32)> {
    let fmt = match mime {
        "image/png" => image::ImageFormat::Png,
        "image/jpeg" => image::ImageFormat::Jpeg,
        "image/gif" => image::ImageFormat::Gif,
        _ => return None,
    };
    let img = image::load_from_memory_with_format(bytes, fmt).ok()?;
    let (w, h) = (img.width(), img.height());
    let t = img.thumbnail(THUMB_SIDE, THUMB_SIDE);
    let mut out = Cursor::new(Vec::new());
    t.write_to(&mut out, image::ImageOutputFormat::Png).ok()?;
    Some((out.into_inner(), w, h))
}

fn sha256_hex(b: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, b).as_ref())
}

/// `POST /v1/files`: multipart with one `file` part.
#[utoipa::path(post, path = "/v1/files", tag = "files",
    request_body(content_type = "multipart/form-data", description = "one part named `file`"),
    security(("signature" = [])),
    responses((status = 200, description = "{file_id, sha256, size, mime, name, width, height, url, thumbnail_url}"),
               (status = 400, description = "not a form, empty, or not the image it claims"),
               (status = 413, description = "over 20 MiB"), (status = 415, description = "type not accepted")))]
pub async fn upload(State(s): State<Arc<AppState>>, req: Signed) -> Result<Json<Value>, ApiError> {
    let Some(files) = s.files.clone() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            404,
            "file storage is not configured",
        ));
    };
    // The signature covered the raw body; parse it as the multipart form it is.
    let (name, claimed, bytes) =
        file_part(&req.content_type, req.body.clone(), MAX_FILE_BYTES).await?;
    let meta = store_file(files, name, &claimed, bytes, None).await?;
    tracing::info!(tenant = req.tenant.id, id = %meta.id, size = meta.size, mime = %meta.mime, "file stored");
    Ok(Json(describe(&s.signer, &meta)))
}

/// The `file` part of a multipart form (`content_type` with its boundary, the whole
/// body): its file name (at most 255 characters), claimed type and bytes (1..=`max`).
pub(crate) async fn file_part(
    content_type: &str,
    body: Bytes,
    max: usize,
) -> Result<(String, String, Bytes), ApiError> {
    let rebuilt = Request::builder()
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let mut form = Multipart::from_request(rebuilt, &())
        .await
        .map_err(|e| ApiError::bad_request(format!("not a multipart form: {e}")))?;
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| ApiError::bad_request(format!("bad multipart form: {e}")))?
    {
        if field.name() == Some("file") {
            let name = field
                .file_name()
                .unwrap_or("file")
                .chars()
                .take(255)
                .collect::<String>();
            let claimed = field.content_type().unwrap_or_default().to_owned();
            let bytes: Bytes = field
                .bytes()
                .await
                .map_err(|e| ApiError::bad_request(format!("bad file part: {e}")))?;
            if bytes.is_empty() {
                return Err(ApiError::bad_request("empty file"));
            }
            if bytes.len() > max {
                return Err(ApiError::too_large(max));
            }
            return Ok((name, claimed, bytes));
        }
    }
    Err(ApiError::bad_request("the form has no `file` part"))
}

/// Checks and stores an uploaded file: its type sniffed from the bytes (and, with
/// `only`, one of those types), a thumbnail for images, both put in `store` under their
/// hashes. Shared by every upload path (app servers, devices, workbench icons).
pub async fn store_file(
    store: Arc<dyn BlobStore>,
    name: String,
    claimed: &str,
    bytes: Bytes,
    only: Option<&[&str]>,
) -> Result<FileMeta, ApiError> {
    let mime = mime_of(&bytes, claimed)?;
    if let Some(only) = only
        && !only.contains(&mime.as_str())
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            41500,
            format!(
                "type {mime} is not accepted here (only {})",
                only.join(", ")
            ),
        ));
    }
    let id = sha256_hex(&bytes);
    tokio::task::spawn_blocking(move || -> Result<FileMeta, ApiError> {
        let mut meta = FileMeta {
            id: id.clone(),
            size: bytes.len() as u64,
            mime: mime.clone(),
            name,
            width: 0,
            height: 0,
            thumbnail: None,
        };
        if let Some((thumb, w, h)) = thumbnail(&bytes, &mime) {
            let tid = sha256_hex(&thumb);
            let tmeta = FileMeta {
                id: tid.clone(),
                size: thumb.len() as u64,
                mime: "image/png".into(),
                name: format!("thumb-{}", meta.name),
                width: 0,
                height: 0,
                thumbnail: None,
            };
            store.put(&tid, &thumb, &tmeta).map_err(io_error)?;
            meta.width = w;
            meta.height = h;
            meta.thumbnail = Some(tid);
        }
        store.put(&id, &bytes, &meta).map_err(io_error)?;
        Ok(meta)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, 500, e.to_string()))?
}

pub(crate) fn io_error(e: std::io::Error) -> ApiError {
    tracing::error!(error = %e, "file storage failed");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        50302,
        "file storage failed",
    )
}

/// A file as the API shows it, with fresh URLs.
pub(crate) fn describe(signer: &UrlSigner, m: &FileMeta) -> Value {
    json!({
        "file_id": m.id, "size": m.size, "mime": m.mime, "name": m.name, "sha256": m.id,
        "width": m.width, "height": m.height,
        "url": signer.url(&m.id),
        "thumbnail_url": m.thumbnail.as_ref().map(|t| signer.url(t)),
    })
}

/// `POST /v1/files/{id}/url`: fresh download URLs for a stored file.
#[utoipa::path(post, path = "/v1/files/{id}/url", tag = "files", params(("id" = String, Path)),
    security(("signature" = [])),
    responses((status = 200, description = "the file with fresh links"), (status = 404, description = "no such file")))]
pub async fn refresh_url(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
    _req: Signed,
) -> Result<Json<Value>, ApiError> {
    let Some(files) = s.files.clone() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            404,
            "file storage is not configured",
        ));
    };
    let got = tokio::task::spawn_blocking(move || files.get(&id))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, 500, e.to_string()))?
        .map_err(io_error)?;
    match got {
        Some((meta, _)) => Ok(Json(describe(&s.signer, &meta))),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, 404, "no such file")),
    }
}

#[derive(Deserialize)]
pub struct DownloadQuery {
    exp: u64,
    sig: String,
}

/// `GET /files/{id}?exp=&sig=`: the bytes, while the URL is valid.
#[utoipa::path(get, path = "/files/{id}", tag = "files",
    params(("id" = String, Path), ("exp" = u64, Query), ("sig" = String, Query)),
    responses((status = 200, description = "the file"), (status = 403, description = "invalid or expired link"),
               (status = 404, description = "no such file")))]
pub async fn download(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
    crate::native::Params(q): crate::native::Params<DownloadQuery>,
) -> Response {
    if !s.signer.check(&id, q.exp, &q.sig) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            40300,
            "the link is invalid or expired",
        )
        .into_response();
    }
    let Some(files) = s.files.clone() else {
        return ApiError::new(StatusCode::NOT_FOUND, 404, "no such file").into_response();
    };
    let got = tokio::task::spawn_blocking(move || files.get(&id)).await;
    match got {
        Ok(Ok(Some((meta, bytes)))) => (
            [
                (header::CONTENT_TYPE, meta.mime.clone()),
                (header::CACHE_CONTROL, "private, max-age=3600".to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("inline; filename=\"{}\"", meta.name.replace('"', "")),
                ),
            ],
            bytes,
        )
            .into_response(),
        Ok(Ok(None)) => ApiError::new(StatusCode::NOT_FOUND, 404, "no such file").into_response(),
        Ok(Err(e)) => io_error(e).into_response(),
        Err(e) => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, 500, e.to_string()).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_come_from_the_bytes_for_images() {
        assert_eq!(
            mime_of(b"\x89PNG\r\n", "text/plain").expect("png"),
            "image/png"
        );
        assert!(
            mime_of(b"plain words", "image/png").is_err(),
            "a lie about an image"
        );
        assert_eq!(
            mime_of(b"plain words", "text/plain").expect("text"),
            "text/plain"
        );
        assert_eq!(
            mime_of(b"MZ", "application/x-msdownload").map_err(|e| e.code),
            Err(41500)
        );
    }

    #[test]
    fn urls_expire_and_cannot_be_forged() {
        let s = UrlSigner::new("secret");
        let id = "a".repeat(64);
        let exp = unix_now() + 60;
        assert!(s.check(&id, exp, &s.sig(&id, exp)));
        assert!(!s.check(&id, exp + 1, &s.sig(&id, exp)));
        assert!(!s.check(&id, 1, &s.sig(&id, 1)), "expired");
        assert!(!UrlSigner::new("other").check(&id, exp, &s.sig(&id, exp)));
    }
}
