//! IM messages as JSON, for the app-server requests (`$im/admin/...`), the gateway's REST
//! API and the command line: the content a caller sends (`{"type": "text", "text": ...}`)
//! and the messages they read back. The protobuf schema (common.proto) is the reference;
//! this is its JSON face, field names as in the schema.

use base64ct::{Base64, Encoding};
use serde_json::{Value, json};
use switchboard_proto::im::{self, content::Body};

use super::ImError;

fn field<'a>(v: &'a Value, name: &str) -> &'a str {
    v.get(name).and_then(Value::as_str).unwrap_or_default()
}

fn number(v: &Value, name: &str) -> u64 {
    v.get(name).and_then(Value::as_u64).unwrap_or_default()
}

fn media(v: &Value) -> im::Media {
    im::Media {
        url: field(v, "url").into(),
        size: number(v, "size"),
        sha256: field(v, "sha256").into(),
        mime: field(v, "mime").into(),
        name: field(v, "name").into(),
        width: number(v, "width") as u32,
        height: number(v, "height") as u32,
        duration_ms: number(v, "duration_ms") as u32,
        thumbnail_url: field(v, "thumbnail_url").into(),
    }
}

/// Content from its JSON form: an object with `type` (text, emoji, image, voice, video,
/// file, location, rich, custom) and the fields of that type.
pub fn content_from_json(v: &Value) -> Result<im::Content, ImError> {
    if !v.is_object() {
        return Err(ImError::BadRequest("content must be a JSON object".into()));
    }
    let body = match field(v, "type") {
        "text" => Body::Text(im::Text {
            text: field(v, "text").into(),
        }),
        "emoji" => Body::Emoji(im::Emoji {
            code: field(v, "code").into(),
            url: field(v, "url").into(),
        }),
        "image" => Body::Image(media(v)),
        "voice" => Body::Voice(media(v)),
        "video" => Body::Video(media(v)),
        "file" => Body::File(media(v)),
        "location" => Body::Location(im::Location {
            latitude: v
                .get("latitude")
                .and_then(Value::as_f64)
                .unwrap_or_default(),
            longitude: v
                .get("longitude")
                .and_then(Value::as_f64)
                .unwrap_or_default(),
            title: field(v, "title").into(),
            address: field(v, "address").into(),
        }),
        "rich" => Body::Rich(im::Rich {
            title: field(v, "title").into(),
            text: field(v, "text").into(),
            image_url: field(v, "image_url").into(),
            link_url: field(v, "link_url").into(),
        }),
        "custom" => Body::Custom(im::Custom {
            r#type: field(v, "custom_type").into(),
            data: match v.get("data") {
                None | Some(Value::Null) => Default::default(),
                Some(Value::String(s)) => Base64::decode_vec(s)
                    .map_err(|_| ImError::BadRequest("custom data must be base64".into()))?
                    .into(),
                Some(other) => other.to_string().into_bytes().into(),
            },
        }),
        "" => return Err(ImError::BadRequest("content has no type".into())),
        other => {
            return Err(ImError::BadRequest(format!(
                "unknown content type {other:?}"
            )));
        }
    };
    Ok(im::Content { body: Some(body) })
}

fn media_json(x: &im::Media) -> Value {
    json!({
        "url": x.url, "size": x.size, "sha256": x.sha256, "mime": x.mime, "name": x.name,
        "width": x.width, "height": x.height, "duration_ms": x.duration_ms,
        "thumbnail_url": x.thumbnail_url,
    })
}

/// The JSON form of a content (`{"type": ..., fields}`; `{"type": "empty"}` for none).
pub fn content_to_json(c: Option<&im::Content>) -> Value {
    let (kind, mut v) = match c.and_then(|c| c.body.as_ref()) {
        Some(Body::Text(t)) => ("text", json!({ "text": t.text })),
        Some(Body::Emoji(e)) => ("emoji", json!({ "code": e.code, "url": e.url })),
        Some(Body::Image(x)) => ("image", media_json(x)),
        Some(Body::Voice(x)) => ("voice", media_json(x)),
        Some(Body::Video(x)) => ("video", media_json(x)),
        Some(Body::File(x)) => ("file", media_json(x)),
        Some(Body::Location(l)) => (
            "location",
            json!({ "latitude": l.latitude, "longitude": l.longitude, "title": l.title, "address": l.address }),
        ),
        Some(Body::Rich(r)) => (
            "rich",
            json!({ "title": r.title, "text": r.text, "image_url": r.image_url, "link_url": r.link_url }),
        ),
        Some(Body::Custom(c)) => (
            "custom",
            json!({ "custom_type": c.r#type, "data": Base64::encode_string(&c.data) }),
        ),
        Some(Body::Notice(n)) => (
            "notice",
            json!({ "kind": n.kind, "operator": n.operator, "targets": n.targets, "text": n.text, "detail_json": n.detail_json }),
        ),
        Some(Body::CallLog(c)) => (
            "call_log",
            json!({ "call_id": c.call_id, "video": c.video, "outcome": c.outcome, "duration_ms": c.duration_ms, "participants": c.participants }),
        ),
        None => ("empty", json!({})),
    };
    v["type"] = kind.into();
    v
}

/// The JSON form of a stored message.
pub fn message_to_json(m: &im::Message) -> Value {
    let conv_type = im::ConvType::try_from(m.conv_type)
        .unwrap_or(im::ConvType::Unspecified)
        .as_str_name()
        .trim_start_matches("CONV_TYPE_")
        .to_ascii_lowercase();
    json!({
        "conversation": m.conversation,
        "conv_type": conv_type,
        "seq": m.seq,
        "from": m.from,
        "to": m.to,
        "server_time_ms": m.server_time_ms,
        "client_msg_id": m.client_msg_id,
        "content": content_to_json(m.content.as_ref()),
        "mentions": m.mentions,
        "mention_all": m.mention_all,
        "burn_after_read": m.burn_after_read,
        "recalled": m.recalled,
        "burned": m.burned,
    })
}

/// The JSON form of a user's view of a conversation.
pub fn conversation_to_json(c: &im::Conversation) -> Value {
    let kind = im::ConvType::try_from(c.r#type)
        .unwrap_or(im::ConvType::Unspecified)
        .as_str_name()
        .trim_start_matches("CONV_TYPE_")
        .to_ascii_lowercase();
    json!({
        "id": c.id, "type": kind, "peer": c.peer, "max_seq": c.max_seq, "read_seq": c.read_seq,
        "min_seq": c.min_seq, "unread": c.unread, "mentioned": c.mentioned, "pinned": c.pinned,
        "muted": c.muted, "hidden": c.hidden, "updated_ms": c.updated_ms,
        "peer_read_seq": c.peer_read_seq, "peer_delivered_seq": c.peer_delivered_seq,
        "last": c.last.as_ref().map(message_to_json),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_round_trips_through_json() {
        for v in [
            json!({"type": "text", "text": "hi"}),
            json!({"type": "image", "url": "https://x/y.png", "size": 10, "width": 3}),
            json!({"type": "custom", "custom_type": "order", "data": "AAEC"}),
            json!({"type": "location", "latitude": 1.5, "longitude": 2.0, "title": "t"}),
        ] {
            let c = content_from_json(&v).expect("valid content");
            let back = content_from_json(&content_to_json(Some(&c))).expect("round trip");
            assert_eq!(c, back, "{v}");
        }
        for bad in [json!("text"), json!({}), json!({"type": "hologram"})] {
            assert!(matches!(
                content_from_json(&bad),
                Err(ImError::BadRequest(_))
            ));
        }
    }
}
