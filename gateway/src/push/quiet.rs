//! Quiet hours, sans-IO: a daily window in the user's local time (a UTC offset) during
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    pub start_min: u16,
    pub end_min: u16,
    pub utc_offset_min: i32,
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
    /// 480, "mode": "silent"}`); none for null or anything malformed.
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
        Some(QuietHours {
            start_min,
            end_min,
            utc_offset_min: utc_offset_min as i32,
            mode,
        })
    }

    /// Whether `now` falls in the window.
    pub fn active(&self, now: SystemTime) -> bool {
        let secs = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let local = (secs / 60 + i64::from(self.utc_offset_min)).rem_euclid(24 * 60) as u16;
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
