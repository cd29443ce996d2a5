//! The app form's check of an uploaded icon (imo: GIF, JPG or PNG, at most 1 MB, best
//! 48×48), so that a bad file is refused next to the field before anything is saved: the
//! type is taken from the bytes (and the image must decode), never from the file name or
//! the browser's word. Storing goes through the gateway's one icon path,
//! [`crate::workbench::set_app_icon`] (as `POST /v1/apps/{id}/icon` does): the file in
//! the blob store, its id as the app's `icon_file`, signed links for pages and clients.

/// Largest icon (bytes).
pub const MAX_ICON: usize = crate::workbench::MAX_ICON_BYTES;

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
