//! Instants and their forms: [`Timestamp`] is every instant the domain hands out (Unix epoch
//! milliseconds, UTC, as storage keeps them), shown as RFC 3339 to machines and as
//! `30 Nov 2026, 21:02 UTC` to people.

pub use recovery_storage::model::Timestamp;

/// Durations in the milliseconds every instant is counted in (one copy for the crate).
pub const MINUTE_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 60 * MINUTE_MS;
pub const DAY_MS: i64 = 24 * HOUR_MS;

/// The forms of an instant.
pub trait Show {
    /// `2026-11-30T21:02:00.000Z`.
    fn rfc3339(self) -> String;
    /// `30 Nov 2026, 21:02 UTC`.
    fn human(self) -> String;
}

impl Show for Timestamp {
    fn rfc3339(self) -> String {
        crate::time::rfc3339(self.as_ms())
    }

    fn human(self) -> String {
        crate::time::human(self.as_ms())
    }
}

/// An RFC 3339 UTC time with millisecond precision, from Unix epoch milliseconds.
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A wait as a person reads it, rounded up: `40 seconds`, `1 minute`, `56 minutes`, `3 hours`.
pub fn wait_in_words(ms: i64) -> String {
    let secs = (ms.max(0) + 999) / 1000;
    let (n, unit) = if secs < 60 {
        (secs.max(1), "second")
    } else if secs < 2 * 3600 {
        ((secs + 59) / 60, "minute")
    } else {
        ((secs + 3599) / 3600, "hour")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// A moment as a person reads it in a message: `30 Nov 2026, 21:02 UTC`.
pub fn human(ms: i64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = ms.div_euclid(1000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    let month = usize::try_from(m - 1)
        .ok()
        .and_then(|i| MONTHS.get(i))
        .unwrap_or(&"?");
    format!(
        "{d} {month} {y}, {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// Howard Hinnant's days-from-civil inverse: days since 1970-01-01 to (year, month, day).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_800_000_000_123), "2027-01-15T08:00:00.123Z");
    }

    #[test]
    fn times_for_people() {
        assert_eq!(human(1_796_072_520_000), "30 Nov 2026, 21:02 UTC");
        assert_eq!(human(951_782_400_000), "29 Feb 2000, 00:00 UTC");
        assert_eq!(wait_in_words(0), "1 second");
        assert_eq!(wait_in_words(40_000), "40 seconds");
        assert_eq!(wait_in_words(60_000), "1 minute");
        assert_eq!(wait_in_words(3_350_000), "56 minutes");
        assert_eq!(wait_in_words(3 * 3_600_000), "3 hours");
    }
}
