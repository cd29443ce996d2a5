//! Workbench app icons uploaded with the app form (imo: GIF, JPG or PNG, at most 1 MB,
//! best 48×48): the type is taken from the bytes (and the image must decode), never from
//! the file name or the browser's word; stored through the gateway's
//! [`crate::files::BlobStore`] under the hash of its bytes, marked as an icon, and served
//! at `/console/apps/icons/{id}` without a session (workbench icons are public: only files
//! stored as icons are served there). The app's `icon_url` points at it.
//!
//! (The gateway's REST icon upload, when it lands, and this share the blob store; this
//! small path exists so the console does not wait for it.)

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::console::{ConsoleError, ConsoleState};
use crate::files::FileMeta;

/// Largest icon (bytes).
pub const MAX_ICON: usize = 1024 * 1024;
/// The `name` stored icons carry (only those are served here).
const ICON_NAME: &str = "workbench-icon";

pub fn routes() -> Router<ConsoleState> {
    Router::new().route("/apps/icons/{id}", get(serve))
}

/// Why an icon is refused: the translation key shown next to the field.
pub fn check(bytes: &[u8]) -> Result<&'static str, &'static str> {
    if bytes.len() > MAX_ICON {
        return Err("apps.icon_too_large");
    }
    let (mime, fmt) = match bytes {
        [0x89, b'P', b'N', b'G', ..] => ("image/png", image::ImageFormat::Png),
        [0xFF, 0xD8, 0xFF, ..] => ("image/jpeg", image::ImageFormat::Jpeg),
        [b'G', b'I', b'F', b'8', ..] => ("image/gif", image::ImageFormat::Gif),
        _ => return Err("apps.icon_type"),
    };
    if image::load_from_memory_with_format(bytes, fmt).is_err() {
        return Err("apps.icon_type");
    }
    Ok(mime)
}

/// Stores a checked icon; answers its URL.
pub async fn store(st: &ConsoleState, bytes: Vec<u8>, mime: &str) -> Result<String, ConsoleError> {
    let Some(files) = st.app.files.clone() else {
        tracing::warn!("console: an icon was uploaded but file storage is not configured");
        return Err(ConsoleError::Refused(
            "file storage is not configured".into(),
        ));
    };
    let id =
        crate::console::session::hex(ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref());
    let meta = FileMeta {
        id: id.clone(),
        size: bytes.len() as u64,
        mime: mime.to_owned(),
        name: ICON_NAME.into(),
        width: 0,
        height: 0,
        thumbnail: None,
    };
    let key = id.clone();
    tokio::task::spawn_blocking(move || files.put(&key, &bytes, &meta))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "console: icon store task failed");
            ConsoleError::Internal
        })?
        .map_err(|e| {
            tracing::error!(error = %e, "console: icon not stored");
            ConsoleError::Internal
        })?;
    Ok(format!("/console/apps/icons/{id}"))
}

async fn serve(st: State<ConsoleState>, Path(id): Path<String>) -> Response {
    let Some(files) = st.app.files.clone() else {
        return ConsoleError::NotFound.into_response();
    };
    let got = tokio::task::spawn_blocking(move || files.get(&id)).await;
    match got {
        Ok(Ok(Some((meta, bytes))))
            if meta.name == ICON_NAME && meta.mime.starts_with("image/") =>
        {
            (
                StatusCode::OK,
                [
                    (header::CONTENT_TYPE, meta.mime),
                    (header::CACHE_CONTROL, "public, max-age=86400".to_owned()),
                ],
                bytes,
            )
                .into_response()
        }
        Ok(Ok(_)) => ConsoleError::NotFound.into_response(),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "console: icon unreadable");
            ConsoleError::Internal.into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "console: icon read task failed");
            ConsoleError::Internal.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icons_are_typed_by_their_bytes_and_bounded() {
        let mut png = Vec::new();
        image::DynamicImage::new_rgba8(4, 4)
            .write_to(
                &mut std::io::Cursor::new(&mut png),
                image::ImageOutputFormat::Png,
            )
            .expect("png");
        assert_eq!(check(&png), Ok("image/png"));
        assert_eq!(check(b"GIF89a not really"), Err("apps.icon_type"));
        assert_eq!(check(b"<svg></svg>"), Err("apps.icon_type"));
        assert_eq!(check(&vec![0u8; MAX_ICON + 1]), Err("apps.icon_too_large"));
    }
}
