//! RongCloud message types and our content types: a message an app server publishes as
//! `objectName` + `content` (RongCloud's JSON for that type) becomes our content object,
//! and back. Built-in types map onto ours; any other object name is kept as a custom type
//! carrying the JSON unchanged, so apps' own message types pass through.

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

/// Our content object for a RongCloud message, or why it cannot be one.
pub fn from_rongcloud(object_name: &str, content: &str) -> Result<Value, String> {
    let v: Value =
        serde_json::from_str(content).map_err(|e| format!("content is not JSON ({e})"))?;
    if !v.is_object() {
        return Err("content must be a JSON object".into());
    }
    Ok(match object_name {
        "RC:TxtMsg" => json!({ "type": "text", "text": s(&v, "content") }),
        "RC:ImgMsg" => json!({ "type": "image", "url": s(&v, "imageUri") }),
        "RC:VcMsg" | "RC:HQVCMsg" => json!({
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_types_map_onto_ours_and_others_stay_custom() {
        let t = from_rongcloud("RC:TxtMsg", r#"{"content":"hello","extra":"x"}"#).expect("text");
        assert_eq!(t, json!({"type": "text", "text": "hello"}));
        let v = from_rongcloud("RC:VcMsg", r#"{"content":"AAA","duration":20}"#).expect("voice");
        assert_eq!(v["duration_ms"], json!(20_000));
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
