//! RongCloud's times are Beijing time (UTC+8) as text: `2015-01-11 01:28:20` in answers,
//! `2014010101` (an hour: yyyymmddhh) in the history request. Conversions here, with the
//! civil-calendar arithmetic done by hand (no date crate in the gateway).

/// Beijing is UTC+8 all year.
const OFFSET_SECS: i64 = 8 * 3600;

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01.
pub(crate) fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

/// `YYYY-MM-DD HH:MM:SS` in Beijing time of Unix seconds `t`.
pub fn beijing(t: u64) -> String {
    let t = t as i64 + OFFSET_SECS;
    let (y, m, d) = civil_from_days(t.div_euclid(86_400));
    let s = t.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// A Unix-ms time of a service answer (a JSON number) as RongCloud writes times.
pub(crate) fn beijing_ms(ms: &serde_json::Value) -> String {
    beijing(ms.as_u64().unwrap_or_default() / 1000)
}

/// The Unix seconds at which the Beijing hour `yyyymmddhh` starts, if it is one.
pub fn hour_start(date: &str) -> Option<u64> {
    if date.len() != 10 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| date.get(r).and_then(|x| x.parse::<i64>().ok());
    let (y, m, d, h) = (n(0..4)?, n(4..6)?, n(6..8)?, n(8..10)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || h > 23 {
        return None;
    }
    let days = days_from_civil(y, m, d);
    // Reject dates like 0231 that roll over into the next month.
    if civil_from_days(days) != (y, m, d) {
        return None;
    }
    u64::try_from(days * 86_400 + h * 3600 - OFFSET_SECS).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beijing_time_is_utc_plus_eight() {
        assert_eq!(beijing(0), "1970-01-01 08:00:00");
        // 2015-01-10 17:28:20 UTC.
        assert_eq!(beijing(1_420_910_900), "2015-01-11 01:28:20");
        assert_eq!(beijing(951_782_400), "2000-02-29 08:00:00");
    }

    #[test]
    fn an_hour_of_beijing_time_parses_to_its_start() {
        // 2014-01-01 01:00 Beijing = 2013-12-31 17:00 UTC.
        assert_eq!(hour_start("2014010101"), Some(1_388_509_200));
        assert_eq!(hour_start("2014023101"), None);
        assert_eq!(hour_start("2014010124"), None);
        assert_eq!(hour_start("20140101"), None);
        assert_eq!(hour_start("2014x10101"), None);
        assert_eq!(
            beijing(hour_start("2024022923").unwrap_or(0)),
            "2024-02-29 23:00:00"
        );
    }
}
