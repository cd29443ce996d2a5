//! Quiet hours of push notifications: a daily window in the user's local time (an IANA
//! time-zone name such as `Asia/Shanghai`, daylight saving included, or a fixed UTC
//! offset) during which the push worker delivers pushes silently (mode `silent`) or not at
//! all (`suppress`). Set by the user's app (`$im/req/push/quiet`, protobuf
//! `PushQuietRequest`) or by the app server (`$im/admin/push/quiet_set {tenant, user?,
//! start, end, time_zone?, utc_offset?, mode?, off?}`; without `user` the tenant's default), read back
//! with `push/quiet_get {tenant, user?}`. Kept normalised as JSON in `UserMeta`
//! (`{tenant}{uid}pushquiet`, uid 0 for the tenant default) and handed to the push worker
//! with the user's tokens (`push/tokens` → `quiet`: the user's own, else the tenant's).
//! The broker only stores the window; the worker judges it against its clock.

use prost::Message as _;
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_proto::im;

use super::{ImError, ImLogin, ImService};
use crate::store::{Op, Table};

fn quiet_key(tid: u64, uid: u64) -> Vec<u8> {
    [&tid.to_be_bytes()[..], &uid.to_be_bytes(), b"pushquiet"].concat()
}

/// "HH:MM" → minutes after midnight.
fn minutes(s: &str) -> Option<i64> {
    let (h, m) = s.trim().split_once(':')?;
    let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
    ((0..24).contains(&h) && (0..60).contains(&m)).then_some(h * 60 + m)
}

/// "+08:00", "-05:30", "+8", "UTC+8", "Z", "" → minutes east of UTC (at most 14 hours).
fn offset(s: &str) -> Option<i64> {
    let s = s.trim();
    let s = s
        .strip_prefix("UTC")
        .or_else(|| s.strip_prefix("GMT"))
        .unwrap_or(s);
    if s.is_empty() || s == "Z" {
        return Some(0);
    }
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':').unwrap_or((rest, "0"));
    let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
    let total = h * 60 + m;
    ((0..60).contains(&m) && total <= 14 * 60).then_some(sign * total)
}

/// An IANA time-zone name the time-zone database knows (`Asia/Shanghai`), checked here so
/// a typo is refused when set rather than ignored when judged.
fn zone(name: &str) -> Result<String, ImError> {
    let name = name.trim();
    let plausible = name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_+-".contains(&b));
    match plausible.then(|| jiff::tz::TimeZone::get(name)) {
        Some(Ok(_)) => Ok(name.to_owned()),
        _ => Err(ImError::BadRequest(format!(
            "time_zone must be an IANA time-zone name such as Asia/Shanghai, not {:?}",
            name.chars().take(64).collect::<String>()
        ))),
    }
}

/// The stored form of a window, or why it is not one. A `time_zone` wins over
/// `utc_offset`.
pub fn normalise(
    start: &str,
    end: &str,
    time_zone: &str,
    utc_offset: &str,
    mode: &str,
) -> Result<Value, ImError> {
    let bad = |what: &str| Err(ImError::BadRequest(what.to_owned()));
    let (Some(s), Some(e)) = (minutes(start), minutes(end)) else {
        return bad("start and end must be HH:MM (00:00 to 23:59)");
    };
    if s == e {
        return bad("start and end must differ");
    }
    let Some(off) = offset(utc_offset) else {
        return bad("utc_offset must look like +08:00 or -05:30 (at most 14 hours)");
    };
    let mode = match mode {
        "" | "silent" => "silent",
        "suppress" => "suppress",
        _ => return bad("mode must be silent or suppress"),
    };
    let mut v = json!({
        "start": format!("{:02}:{:02}", s / 60, s % 60),
        "end": format!("{:02}:{:02}", e / 60, e % 60),
        "utc_offset_minutes": off,
        "mode": mode,
    });
    if !time_zone.trim().is_empty() {
        v["time_zone"] = zone(time_zone)?.into();
    }
    Ok(v)
}

impl ImService {
    /// The quiet hours that apply to user `uid`: their own, else the tenant's default.
    pub fn push_quiet(&self, tid: u64, uid: u64) -> Result<Option<Value>, ImError> {
        for key in [quiet_key(tid, uid), quiet_key(tid, 0)] {
            if let Some(v) = self
                .store
                .get(Table::UserMeta, &key)?
                .and_then(|b| serde_json::from_slice(&b).ok())
            {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    /// Sets (or with `None` clears) the quiet hours of `uid` (0: the tenant default).
    async fn set_push_quiet(&self, tid: u64, uid: u64, q: Option<Value>) -> Result<(), ImError> {
        self.put_user_meta(quiet_key(tid, uid), q.as_ref()).await
    }

    /// Stores `v` as JSON under `key` of the user meta table, or with `None` deletes it.
    pub(super) async fn put_user_meta(
        &self,
        key: Vec<u8>,
        v: Option<&Value>,
    ) -> Result<(), ImError> {
        let op = match v {
            Some(v) => Op::Put {
                table: Table::UserMeta,
                key,
                value: serde_json::to_vec(v).map_err(|e| ImError::Internal(e.to_string()))?,
            },
            None => Op::Delete {
                table: Table::UserMeta,
                key,
            },
        };
        self.commit(vec![op]).await.map(|_| ())
    }

    /// The user an admin push request (`push/quiet_*`, `push/privacy_*`) names: uid 0, the
    /// tenant's default, when `user` is empty; `NotFound` for an unknown user.
    pub(super) fn admin_push_uid(&self, tid: u64, user: &str) -> Result<u64, ImError> {
        if user.is_empty() {
            return Ok(0);
        }
        Ok(self
            .user(tid, user)?
            .ok_or_else(|| ImError::NotFound(format!("user {user}")))?
            .uid)
    }

    /// `$im/req/push/quiet` from a device.
    pub(super) async fn push_quiet_request(
        &self,
        login: &ImLogin,
        payload: &[u8],
    ) -> Result<Vec<u8>, ImError> {
        let r = im::PushQuietRequest::decode(payload)
            .map_err(|e| ImError::BadRequest(format!("malformed protobuf: {e}")))?;
        let q = if r.off {
            None
        } else {
            Some(normalise(
                &r.start,
                &r.end,
                &r.time_zone,
                &r.utc_offset,
                &r.mode,
            )?)
        };
        self.set_push_quiet(login.tenant, login.uid, q).await?;
        Ok(im::Ack {
            status: super::error::ok(),
        }
        .encode_to_vec())
    }

    /// `$im/admin/push/quiet_set` and `push/quiet_get`.
    pub(super) async fn push_quiet_admin(
        &self,
        op: &str,
        payload: &[u8],
    ) -> Result<Value, ImError> {
        #[derive(Deserialize)]
        struct Req {
            tenant: u64,
            #[serde(default)]
            user: String,
            #[serde(default)]
            start: String,
            #[serde(default)]
            end: String,
            #[serde(default)]
            utc_offset: String,
            #[serde(default)]
            time_zone: String,
            #[serde(default)]
            mode: String,
            #[serde(default)]
            off: bool,
        }
        let r: Req = serde_json::from_slice(payload)
            .map_err(|e| ImError::BadRequest(format!("invalid JSON: {e}")))?;
        self.tenant(r.tenant)?;
        let uid = self.admin_push_uid(r.tenant, &r.user)?;
        match op {
            "quiet_set" => {
                let q = if r.off {
                    None
                } else {
                    Some(normalise(
                        &r.start,
                        &r.end,
                        &r.time_zone,
                        &r.utc_offset,
                        &r.mode,
                    )?)
                };
                self.set_push_quiet(r.tenant, uid, q.clone()).await?;
                Ok(json!({ "quiet": q }))
            }
            _ => {
                let own = self
                    .store
                    .get(Table::UserMeta, &quiet_key(r.tenant, uid))?
                    .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
                Ok(json!({ "quiet": own, "effective": self.push_quiet(r.tenant, uid)? }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_and_offsets_are_checked_and_normalised() {
        let v = normalise("22:00", "7:00", "", "+08:00", "").expect("valid");
        assert_eq!(
            v,
            json!({"start": "22:00", "end": "07:00", "utc_offset_minutes": 480, "mode": "silent"})
        );
        let v = normalise("12:00", "13:30", "", "UTC-5", "suppress").expect("valid");
        assert_eq!(v["utc_offset_minutes"], json!(-300));
        assert_eq!(offset("Z"), Some(0));
        assert_eq!(offset("-05:30"), Some(-330));
        for (s, e, o, m) in [
            ("24:00", "07:00", "", ""),
            ("22:00", "22:00", "", ""),
            ("22:00", "07:00", "+15:00", ""),
            ("22:00", "07:00", "8", ""),
            ("22:00", "07:00", "", "loud"),
        ] {
            assert!(normalise(s, e, "", o, m).is_err(), "{s} {e} {o} {m}");
        }
    }

    #[test]
    fn time_zone_names_are_checked_against_the_database() {
        let v = normalise("22:00", "07:00", "Asia/Shanghai", "", "").expect("valid");
        assert_eq!(v["time_zone"], json!("Asia/Shanghai"));
        let v = normalise("22:00", "07:00", "America/New_York", "+01:00", "").expect("valid");
        assert_eq!(v["time_zone"], json!("America/New_York"));
        for bad in [
            "Asia/Shangai",
            "Mars/Olympus",
            "../../etc/passwd",
            "x".repeat(80).as_str(),
        ] {
            let e = normalise("22:00", "07:00", bad, "", "").expect_err(bad);
            assert!(e.to_string().contains("IANA"), "{e}");
        }
    }
}
