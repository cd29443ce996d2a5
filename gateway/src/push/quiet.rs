//! Quiet hours, sans-IO: a daily window in the user's local time (an IANA time zone such
//! as `Asia/Shanghai`, daylight saving time included, else a fixed UTC offset) during
//! which pushes are delivered silently (mode `silent`: shown in the notification list and
//! counted in the badge, but no sound, vibration or banner) or not at all (mode
//! `suppress`: the message waits for the app's next sync). The broker keeps the setting
//! (the user's own, else the tenant's default) and hands it to the worker with the user's
//! device tokens (`push/tokens` → `quiet`); the worker judges it against its clock.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// What quiet hours do to a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuietMode {
    Silent,
    Suppress,
}

/// A daily window, minutes after local midnight; it wraps midnight when `start > end`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuietHours {
    pub start_min: u16,
    pub end_min: u16,
    /// Used when there is no `zone`.
    pub utc_offset_min: i32,
    /// The user's time zone: its offset at the moment judged (DST-correct).
    pub zone: Option<jiff::tz::TimeZone>,
    pub mode: QuietMode,
}

/// "HH:MM" → minutes after midnight.
pub fn parse_hhmm(s: &str) -> Option<u16> {
    let (h, m) = s.trim().split_once(':')?;
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

impl QuietHours {
    /// From the broker's JSON (`{"start": "22:00", "end": "07:00", "utc_offset_minutes":
    /// 480, "time_zone"?: "Asia/Shanghai", "mode": "silent"}`); none for null or anything
    /// malformed. A zone this machine's time-zone database lacks falls back to the offset.
    pub fn from_json(v: &Value) -> Option<QuietHours> {
        let start_min = parse_hhmm(v["start"].as_str()?)?;
        let end_min = parse_hhmm(v["end"].as_str()?)?;
        let utc_offset_min = v["utc_offset_minutes"].as_i64().unwrap_or(0);
        if utc_offset_min.abs() > 14 * 60 || start_min == end_min {
            return None;
        }
        let mode = match v["mode"].as_str().unwrap_or("silent") {
            "suppress" => QuietMode::Suppress,
            _ => QuietMode::Silent,
        };
        let zone = v["time_zone"]
            .as_str()
            .and_then(|z| jiff::tz::TimeZone::get(z).ok());
        Some(QuietHours {
            start_min,
            end_min,
            utc_offset_min: utc_offset_min as i32,
            zone,
            mode,
        })
    }

    /// Whether `now` falls in the window.
    pub fn active(&self, now: SystemTime) -> bool {
        let secs = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let offset_min = match &self.zone {
            Some(tz) => jiff::Timestamp::from_second(secs)
                .map_or(0, |t| i64::from(tz.to_offset(t).seconds()) / 60),
            None => i64::from(self.utc_offset_min),
        };
        let local = (secs / 60 + offset_min).rem_euclid(24 * 60) as u16;
        if self.start_min < self.end_min {
            (self.start_min..self.end_min).contains(&local)
        } else {
            local >= self.start_min || local < self.end_min
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    /// 2026-01-01 at `h:m` UTC.
    fn utc(h: u64, m: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_767_225_600 + h * 3600 + m * 60)
    }

    #[test]
    fn a_window_across_midnight_in_the_users_offset() {
        // 22:00–07:00 in UTC+8.
        let q = QuietHours::from_json(
            &json!({"start": "22:00", "end": "07:00", "utc_offset_minutes": 480}),
        )
        .expect("valid");
        assert_eq!(q.mode, QuietMode::Silent);
        assert!(q.active(utc(14, 0)), "22:00 local");
        assert!(q.active(utc(22, 59)), "06:59 local");
        assert!(!q.active(utc(23, 0)), "07:00 local");
        assert!(!q.active(utc(13, 59)), "21:59 local");
    }

    #[test]
    fn a_window_within_a_day_and_negative_offsets() {
        let q = QuietHours::from_json(&json!({"start": "12:00", "end": "13:30",
            "utc_offset_minutes": -300, "mode": "suppress"}))
        .expect("valid");
        assert_eq!(q.mode, QuietMode::Suppress);
        assert!(q.active(utc(17, 0)), "12:00 in UTC-5");
        assert!(!q.active(utc(18, 30)), "13:30 in UTC-5");
    }

    /// `y-m-d h:m` UTC.
    fn at(y: i16, m: i8, d: i8, h: i8, min: i8) -> SystemTime {
        let t: jiff::Timestamp = format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:00Z")
            .parse()
            .expect("valid");
        UNIX_EPOCH + Duration::from_secs(t.as_second() as u64)
    }

    #[test]
    fn a_named_zone_follows_daylight_saving_time() {
        // 22:00–07:00 in New York: EST (UTC-5) in January, EDT (UTC-4) in July.
        let q = QuietHours::from_json(&json!({"start": "22:00", "end": "07:00",
            "utc_offset_minutes": 0, "time_zone": "America/New_York"}))
        .expect("valid");
        assert!(q.zone.is_some(), "the zone database knows New York");
        assert!(q.active(at(2026, 1, 15, 3, 0)), "22:00 EST");
        assert!(!q.active(at(2026, 1, 15, 2, 59)), "21:59 EST");
        assert!(q.active(at(2026, 7, 15, 2, 0)), "22:00 EDT");
        assert!(!q.active(at(2026, 7, 15, 1, 59)), "21:59 EDT");
        assert!(!q.active(at(2026, 7, 15, 11, 0)), "07:00 EDT");
        assert!(q.active(at(2026, 1, 15, 11, 59)), "06:59 EST");
        // The night clocks go forward (8 March 2026, 02:00 EST -> 03:00 EDT): 06:30 EDT is
        // 10:30 UTC, still quiet; 07:00 EDT is 11:00 UTC, no longer.
        assert!(q.active(at(2026, 3, 8, 10, 30)));
        assert!(!q.active(at(2026, 3, 8, 11, 0)));
        // Shanghai has no DST: 22:00–07:00 is 14:00–23:00 UTC all year.
        let sh = QuietHours::from_json(&json!({"start": "22:00", "end": "07:00",
            "time_zone": "Asia/Shanghai", "mode": "suppress"}))
        .expect("valid");
        for month in [1, 7] {
            assert!(sh.active(at(2026, month, 10, 14, 0)));
            assert!(!sh.active(at(2026, month, 10, 13, 59)));
        }
        // An unknown zone (not refused by an older broker) falls back to the offset.
        let odd = QuietHours::from_json(&json!({"start": "22:00", "end": "07:00",
            "utc_offset_minutes": 60, "time_zone": "Nowhere/Atlantis"}))
        .expect("valid");
        assert!(odd.zone.is_none());
        assert!(odd.active(utc(21, 0)), "22:00 at UTC+1");
    }

    #[test]
    fn malformed_settings_are_ignored() {
        for bad in [
            json!(null),
            json!({"start": "25:00", "end": "07:00"}),
            json!({"start": "07:00", "end": "07:00"}),
            json!({"start": "22:00", "end": "07:00", "utc_offset_minutes": 2000}),
            json!({"start": "x", "end": "07:00"}),
        ] {
            assert!(QuietHours::from_json(&bad).is_none(), "{bad}");
        }
    }
}
