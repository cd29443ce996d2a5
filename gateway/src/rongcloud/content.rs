//! RongCloud message types and our content types: a message an app server publishes as
//! `objectName` + `content` (RongCloud's JSON for that type) becomes our content object,
//! and back. Built-in types map onto ours; any other object name is kept as a custom type
//! carrying the JSON unchanged, so apps' own message types pass through. [`to_rongcloud`]
//! goes back (history files).

use serde_json::{Value, json};

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or_default()
}

fn n(v: &Value, k: &str) -> f64 {
    match v.get(k) {
        Some(Value::Number(x)) => x.as_f64().unwrap_or_default(),
        Some(Value::String(x)) => x.parse().unwrap_or_default(),
        _ => 0.0,
    }
}

fn b64(data: &[u8]) -> String {
    use base64ct::{Base64, Encoding};
    Base64::encode_string(data)
}

/// Data-URL prefixes of the media RongCloud sends inline.
const JPEG: &str = "data:image/jpeg;base64,";
const AMR: &str = "data:audio/amr;base64,";

/// Base64 `b64` as a data URL with `prefix` ("" when there is none).
fn data_url(prefix: &str, b64: &str) -> String {
    if b64.is_empty() {
        String::new()
    } else {
        format!("{prefix}{b64}")
    }
}

/// The base64 of a data URL made by [`data_url`] with `prefix`, if `url` is one.
fn inline<'a>(prefix: &str, url: &'a str) -> Option<&'a str> {
    url.strip_prefix(prefix)
}

/// Our content object for a RongCloud message, or why it cannot be one.
pub fn from_rongcloud(object_name: &str, content: &str) -> Result<Value, String> {
    let v: Value =
        serde_json::from_str(content).map_err(|e| format!("content is not JSON ({e})"))?;
    if !v.is_object() {
        return Err("content must be a JSON object".into());
    }
    Ok(match object_name {
        "RC:TxtMsg" => json!({ "type": "text", "text": s(&v, "content") }),
        // The thumbnail travels inline (base64 JPEG in `content`): kept as a data URL.
        "RC:ImgMsg" => json!({ "type": "image", "url": s(&v, "imageUri"),
                               "thumbnail_url": data_url(JPEG, s(&v, "content")) }),
        // RC:VcMsg carries the AMR audio itself, base64 in `content`; RC:HQVCMsg a link.
        "RC:VcMsg" => json!({
            "type": "voice",
            "url": data_url(AMR, s(&v, "content")),
            "mime": "audio/amr",
            "duration_ms": (n(&v, "duration") * 1000.0) as u64,
        }),
        "RC:HQVCMsg" => json!({
            "type": "voice",
            "url": s(&v, "remoteUrl"),
            "duration_ms": (n(&v, "duration") * 1000.0) as u64,
        }),
        "RC:FileMsg" => json!({
            "type": "file",
            "url": s(&v, "fileUrl"),
            "name": s(&v, "name"),
            "size": n(&v, "size") as u64,
            "mime": s(&v, "type"),
        }),
        "RC:LBSMsg" => json!({
            "type": "location",
            "latitude": n(&v, "latitude"),
            "longitude": n(&v, "longitude"),
            "title": s(&v, "poi"),
        }),
        "RC:ImgTextMsg" => json!({
            "type": "rich",
            "title": s(&v, "title"),
            "text": s(&v, "content"),
            "image_url": s(&v, "imageUri"),
            "link_url": s(&v, "url"),
        }),
        "" => return Err("objectName is required".into()),
        other if other.len() > 32 => return Err("objectName longer than 32 bytes".into()),
        // RC:CmdMsg and app-defined types: the JSON travels as is.
        other => json!({ "type": "custom", "custom_type": other, "data": b64(content.as_bytes()) }),
    })
}

/// RongCloud's object name and content JSON for one of our content objects (the JSON
/// form the IM service answers with): the reverse of [`from_rongcloud`], for history
/// files. Types RongCloud has no name for keep ours, prefixed `SB:`.
pub fn to_rongcloud(c: &Value) -> (String, Value) {
    let (name, v) = match s(c, "type") {
        "text" => ("RC:TxtMsg", json!({ "content": s(c, "text") })),
        "image" => (
            "RC:ImgMsg",
            json!({ "imageUri": s(c, "url"),
                    "content": inline(JPEG, s(c, "thumbnail_url")).unwrap_or_default() }),
        ),
        "voice" => match inline(AMR, s(c, "url")) {
            Some(audio) => (
                "RC:VcMsg",
                json!({ "content": audio, "duration": n(c, "duration_ms") / 1000.0 }),
            ),
            None => (
                "RC:HQVCMsg",
                json!({ "remoteUrl": s(c, "url"), "duration": n(c, "duration_ms") / 1000.0 }),
            ),
        },
        "file" => (
            "RC:FileMsg",
            json!({ "name": s(c, "name"), "size": n(c, "size"), "type": s(c, "mime"),
                    "fileUrl": s(c, "url") }),
        ),
        "location" => (
            "RC:LBSMsg",
            json!({ "latitude": n(c, "latitude"), "longitude": n(c, "longitude"),
                    "poi": s(c, "title") }),
        ),
        "rich" => (
            "RC:ImgTextMsg",
            json!({ "title": s(c, "title"), "content": s(c, "text"),
                    "imageUri": s(c, "image_url"), "url": s(c, "link_url") }),
        ),
        "custom" => {
            use base64ct::{Base64, Encoding};
            let data = Base64::decode_vec(s(c, "data")).unwrap_or_default();
            let v = serde_json::from_slice(&data)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&data).into_owned()));
            return (s(c, "custom_type").to_owned(), v);
        }
        other => {
            let mut v = c.clone();
            if let Some(o) = v.as_object_mut() {
                o.remove("type");
            }
            return (format!("SB:{other}"), v);
        }
    };
    (name.to_owned(), v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_types_map_back_to_rongclouds() {
        let (n, v) = to_rongcloud(&json!({"type": "text", "text": "hi"}));
        assert_eq!((n.as_str(), v), ("RC:TxtMsg", json!({"content": "hi"})));
        let c = from_rongcloud("App:Order", r#"{"id":1}"#).expect("custom");
        let (n, v) = to_rongcloud(&c);
        assert_eq!((n.as_str(), v), ("App:Order", json!({"id": 1})));
        let (n, _) = to_rongcloud(&json!({"type": "notice", "text": "x"}));
        assert_eq!(n, "SB:notice");
    }

    #[test]
    fn builtin_types_map_onto_ours_and_others_stay_custom() {
        let t = from_rongcloud("RC:TxtMsg", r#"{"content":"hello","extra":"x"}"#).expect("text");
        assert_eq!(t, json!({"type": "text", "text": "hello"}));
        let v = from_rongcloud("RC:VcMsg", r#"{"content":"AAA","duration":20}"#).expect("voice");
        assert_eq!(v["duration_ms"], json!(20_000));
        // The audio itself is kept (RC:VcMsg sends it inline), and goes back out the same.
        assert_eq!(v["url"], json!("data:audio/amr;base64,AAA"));
        let (n, back) = to_rongcloud(&v);
        assert_eq!(
            (n.as_str(), back),
            ("RC:VcMsg", json!({"content": "AAA", "duration": 20.0}))
        );
        let v = from_rongcloud(
            "RC:HQVCMsg",
            r#"{"remoteUrl":"http://x/a.aac","duration":3}"#,
        )
        .expect("hq voice");
        assert_eq!(v["url"], json!("http://x/a.aac"));
        assert_eq!(to_rongcloud(&v).0, "RC:HQVCMsg");
        // An image's inline thumbnail is kept too.
        let i = from_rongcloud(
            "RC:ImgMsg",
            r#"{"content":"/9j/","imageUri":"http://x/i.jpg"}"#,
        )
        .expect("image");
        assert_eq!(
            (i["url"].as_str(), i["thumbnail_url"].as_str()),
            (Some("http://x/i.jpg"), Some("data:image/jpeg;base64,/9j/"))
        );
        assert_eq!(
            to_rongcloud(&i).1,
            json!({"imageUri": "http://x/i.jpg", "content": "/9j/"})
        );
        let c = from_rongcloud("App:Order", r#"{"id":1}"#).expect("custom");
        assert_eq!(c["custom_type"], json!("App:Order"));
        assert_eq!(c["data"], json!("eyJpZCI6MX0="));
        assert!(from_rongcloud("RC:TxtMsg", "not json").is_err());
        assert!(from_rongcloud("", "{}").is_err());
    }

    #[test]
    fn base64_pads_like_the_standard() {
        assert_eq!(b64(b"f"), "Zg==");
        assert_eq!(b64(b"fo"), "Zm8=");
        assert_eq!(b64(b"foo"), "Zm9v");
    }
}
