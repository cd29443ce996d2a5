//! RongCloud's `/message/history.json` (`date=yyyymmddhh`, an hour of Beijing time):
//! answers `{"code": 200, "url", "date"}` where `url` downloads a zip of that hour's
//! messages of the whole app, or `""` when there were none, as RongCloud does. The zip
//! holds one text file, a line per message, as RongCloud's history files:
//! `2014-01-01 01:00:00 {"appId", "fromUserId", "targetId", "targetType", "GroupId",
//! "classname", "content", "dateTime", "msgUID"}` (`targetType` 1 private, 3 group,
//! 6 system). The zip is kept in the gateway's file store and served through a signed
//! file link valid for an hour ([`crate::files::URL_TTL`]), like RongCloud's.
//!
//! Messages come from the IM service's `messages_between`, a page at a time, at most
//! [`MAX_LINES`] in one file.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::{Value, json};

use super::{Answer, RcError, RcRequest, clock, ok};
use crate::AppState;
use crate::files::FileMeta;

/// Messages in one history file at most.
pub const MAX_LINES: usize = 100_000;

/// The routes of this file.
pub fn routes() -> axum::Router<Arc<AppState>> {
    axum::Router::new().route("/message/history.json", post(history))
}

fn server_error(message: impl Into<String>) -> RcError {
    RcError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        code: 1000,
        message: message.into(),
    }
}

/// RongCloud's conversation type number of one of our conversations.
fn target_type(conv: &str) -> u32 {
    match conv.split(':').next() {
        Some("p") => 1,
        Some("g") => 3,
        Some("r") => 4,
        _ => 6,
    }
}

/// One line of the history file.
fn line(app_key: &str, m: &Value) -> String {
    let conv = m["conversation"].as_str().unwrap_or_default();
    let ms = m["server_time_ms"].as_u64().unwrap_or_default();
    let time = clock::beijing(ms / 1000);
    let (classname, content) = super::content::to_rongcloud(&m["content"]);
    let kind = target_type(conv);
    let group = if kind == 3 {
        conv.trim_start_matches("g:")
    } else {
        ""
    };
    let target = if kind == 3 {
        group
    } else {
        m["to"].as_str().unwrap_or_default()
    };
    let v = json!({
        "appId": app_key,
        "fromUserId": m["from"],
        "targetId": target,
        "targetType": kind,
        "GroupId": group,
        "classname": classname,
        "content": content,
        "dateTime": format!("{time}.{:03}", ms % 1000),
        "msgUID": format!("{conv}:{}", m["seq"]),
    });
    format!("{time} {v}\n")
}

/// The IEEE CRC-32 of `data` (the zip format's checksum).
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A zip archive holding one file, stored uncompressed.
fn zip_one(name: &str, data: &[u8]) -> Result<Vec<u8>, RcError> {
    let size = u32::try_from(data.len()).map_err(|_| server_error("history file too large"))?;
    let name_len = u16::try_from(name.len()).map_err(|_| server_error("file name too long"))?;
    let crc = crc32(data);
    // 1980-01-01 00:00, the format's epoch: the entry's own time does not matter.
    let (time, date) = (0u16, 0x21u16);
    let mut z = Vec::with_capacity(data.len() + 2 * name.len() + 98);
    let common = |z: &mut Vec<u8>| {
        z.extend_from_slice(&20u16.to_le_bytes()); // version needed
        z.extend_from_slice(&0x0800u16.to_le_bytes()); // UTF-8 name
        z.extend_from_slice(&0u16.to_le_bytes()); // stored
        z.extend_from_slice(&time.to_le_bytes());
        z.extend_from_slice(&date.to_le_bytes());
        z.extend_from_slice(&crc.to_le_bytes());
        z.extend_from_slice(&size.to_le_bytes());
        z.extend_from_slice(&size.to_le_bytes());
        z.extend_from_slice(&name_len.to_le_bytes());
        z.extend_from_slice(&0u16.to_le_bytes()); // extra
    };
    z.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
    common(&mut z);
    z.extend_from_slice(name.as_bytes());
    z.extend_from_slice(data);
    let cd_start = u32::try_from(z.len()).map_err(|_| server_error("history file too large"))?;
    z.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
    z.extend_from_slice(&20u16.to_le_bytes()); // version made by
    common(&mut z);
    z.extend_from_slice(&[0; 6]); // comment length, disk, internal attributes
    z.extend_from_slice(&0u32.to_le_bytes()); // external attributes
    z.extend_from_slice(&0u32.to_le_bytes()); // local header offset
    z.extend_from_slice(name.as_bytes());
    let cd_len = z.len() as u32 - cd_start;
    z.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    z.extend_from_slice(&[0; 4]); // disk numbers
    z.extend_from_slice(&1u16.to_le_bytes());
    z.extend_from_slice(&1u16.to_le_bytes());
    z.extend_from_slice(&cd_len.to_le_bytes());
    z.extend_from_slice(&cd_start.to_le_bytes());
    z.extend_from_slice(&0u16.to_le_bytes()); // comment
    Ok(z)
}

async fn history(State(s): State<Arc<AppState>>, r: RcRequest) -> Answer {
    let date = r.need("date")?.to_owned();
    let start = clock::hour_start(&date)
        .ok_or_else(|| RcError::param("date 格式错误 (yyyymmddhh, Beijing time)"))?;
    let Some(files) = s.files.clone() else {
        return Err(server_error(
            "file storage is not configured on this gateway",
        ));
    };
    let (from_ms, to_ms) = (start * 1000, (start + 3600) * 1000);
    let mut text = String::new();
    let (mut lines, mut cursor) = (0usize, from_ms);
    // Messages of the last page's final millisecond, already written.
    let mut seen: HashSet<(String, u64)> = HashSet::new();
    loop {
        let v = s
            .service
            .call(
                "messages_between",
                &json!({ "tenant": r.tenant.id, "from_ms": cursor, "to_ms": to_ms }),
            )
            .await?;
        let page = v["messages"].as_array().cloned().unwrap_or_default();
        let mut fresh = 0;
        let last_ms = page
            .last()
            .and_then(|m| m["server_time_ms"].as_u64())
            .unwrap_or(cursor);
        let mut at_last = HashSet::new();
        for m in &page {
            let key = (
                m["conversation"].as_str().unwrap_or_default().to_owned(),
                m["seq"].as_u64().unwrap_or_default(),
            );
            if m["server_time_ms"].as_u64() == Some(last_ms) {
                at_last.insert(key.clone());
            }
            if seen.contains(&key) {
                continue;
            }
            text.push_str(&line(&r.app_key, m));
            fresh += 1;
            lines += 1;
        }
        if v["more"].as_bool() != Some(true) || lines >= MAX_LINES {
            break;
        }
        // The next page starts at the last message's time; those already written at that
        // time are skipped. A page of nothing new (over a page of messages in one
        // millisecond) moves on by a millisecond.
        if fresh == 0 {
            cursor = last_ms + 1;
            seen.clear();
        } else {
            cursor = last_ms;
            seen = at_last;
        }
    }
    if lines == 0 {
        return Ok(ok(json!({ "url": "", "date": date })));
    }
    let zip = zip_one(&format!("{date}.txt"), text.as_bytes())?;
    let id = crate::native::auth::hex(ring::digest::digest(&ring::digest::SHA256, &zip).as_ref());
    let meta = FileMeta {
        id: id.clone(),
        size: zip.len() as u64,
        mime: "application/zip".into(),
        name: format!("{date}.zip"),
        width: 0,
        height: 0,
        thumbnail: None,
    };
    let stored_id = id.clone();
    tokio::task::spawn_blocking(move || files.put(&stored_id, &zip, &meta))
        .await
        .map_err(|e| server_error(e.to_string()))?
        .map_err(|e| {
            tracing::error!(error = %e, "history file: storage failed");
            server_error("file storage failed")
        })?;
    tracing::info!(tenant = r.tenant.id, date, lines, "history file written");
    let url = format!("{}{}", r.origin, s.signer.url(&id));
    Ok(ok(json!({ "url": url, "date": date })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_zip_has_one_stored_entry_where_its_directory_says() {
        let z = zip_one("a.txt", b"hello").expect("zip");
        // End of central directory: 22 bytes, its offset and size point at the entry.
        let eocd = &z[z.len() - 22..];
        assert_eq!(&eocd[..4], &0x0605_4b50u32.to_le_bytes());
        let cd_len = u32::from_le_bytes([eocd[12], eocd[13], eocd[14], eocd[15]]) as usize;
        let cd_start = u32::from_le_bytes([eocd[16], eocd[17], eocd[18], eocd[19]]) as usize;
        assert_eq!(cd_start + cd_len, z.len() - 22);
        assert_eq!(cd_len, 46 + "a.txt".len());
        assert_eq!(&z[cd_start..cd_start + 4], &0x0201_4b50u32.to_le_bytes());
        assert_eq!(&z[30 + 5..30 + 10], b"hello");
    }

    #[test]
    fn crc32_is_the_ieee_one() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn a_history_line_has_rongclouds_fields() {
        let m = json!({"conversation": "g:team", "seq": 3, "from": "alice", "to": "",
                       "server_time_ms": 1_388_509_200_123u64,
                       "content": {"type": "text", "text": "hi"}});
        let l = line("key", &m);
        let (time, rest) = l.split_at(20);
        assert_eq!(time, "2014-01-01 01:00:00 ");
        let v: Value = serde_json::from_str(rest.trim_end()).expect("JSON");
        assert_eq!(v["targetType"], json!(3));
        assert_eq!(v["targetId"], json!("team"));
        assert_eq!(v["classname"], json!("RC:TxtMsg"));
        assert_eq!(v["content"]["content"], json!("hi"));
        assert_eq!(v["dateTime"], json!("2014-01-01 01:00:00.123"));
    }
}
