//! XenAPI's date-times: `YYYYMMDDTHH:MM:SSZ`, always UTC.

use std::time::{SystemTime, UNIX_EPOCH};

/// XAPI's `Date.never`: the epoch.
pub const NEVER: &str = "19700101T00:00:00Z";

/// Now, in XenAPI's form.
pub fn now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format_unix(i64::try_from(secs).unwrap_or(i64::MAX))
}

/// Seconds since the epoch in XenAPI's form.
pub fn format_unix(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A client's date-time in XenAPI's form: accepts `YYYYMMDDTHH:MM:SS[Z]` and
/// `YYYY-MM-DDTHH:MM:SS[Z]` (UTC); anything else is `None`.
pub fn normalize(s: &str) -> Option<String> {
    let s = s.strip_suffix('Z').unwrap_or(s);
    let (date, clock) = s.split_once('T')?;
    let date: String = date.chars().filter(|c| *c != '-').collect();
    let clock: String = clock.chars().filter(|c| *c != ':').collect();
    // Fractions of a second are dropped.
    let clock = clock.split('.').next().unwrap_or("");
    if date.len() != 8 || clock.len() != 6 {
        return None;
    }
    if !date
        .bytes()
        .chain(clock.bytes())
        .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let n = |r: std::ops::Range<usize>, src: &str| src[r].parse::<u32>().ok();
    let (mo, d) = (n(4..6, &date)?, n(6..8, &date)?);
    let (h, mi, se) = (n(0..2, clock)?, n(2..4, clock)?, n(4..6, clock)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    Some(format!(
        "{}T{}:{}:{}Z",
        date,
        &clock[0..2],
        &clock[2..4],
        &clock[4..6]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_normalizes() {
        assert_eq!(format_unix(0), NEVER);
        assert_eq!(format_unix(1_700_000_000), "20231114T22:13:20Z");
        assert_eq!(
            normalize("2023-11-14T22:13:20Z").as_deref(),
            Some("20231114T22:13:20Z")
        );
        assert_eq!(
            normalize("20231114T22:13:20").as_deref(),
            Some("20231114T22:13:20Z")
        );
        assert_eq!(normalize("yesterday"), None);
        assert_eq!(normalize("20231314T22:13:20Z"), None);
        assert_eq!(now().len(), NEVER.len());
    }
}
