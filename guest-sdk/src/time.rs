//! RFC 3339 timestamps and proto3 JSON durations, without a date library.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in time written as an RFC 3339 string, for [`crate::Output::datetime`].
///
/// Implemented for strings (taken as they are: pass an RFC 3339 text such as
/// chrono's `to_rfc3339()`) and for [`SystemTime`] (written in UTC with `Z`).
pub trait Rfc3339 {
    /// The RFC 3339 text, e.g. `"2024-05-01T12:30:00Z"`.
    fn to_rfc3339(&self) -> String;
}

impl Rfc3339 for str {
    fn to_rfc3339(&self) -> String {
        self.to_owned()
    }
}

impl Rfc3339 for String {
    fn to_rfc3339(&self) -> String {
        self.clone()
    }
}

impl Rfc3339 for SystemTime {
    fn to_rfc3339(&self) -> String {
        let (seconds, nanos) = match self.duration_since(UNIX_EPOCH) {
            Ok(after) => (
                i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
                after.subsec_nanos(),
            ),
            Err(before) => {
                let before = before.duration();
                let seconds = i64::try_from(before.as_secs()).unwrap_or(i64::MAX);
                match before.subsec_nanos() {
                    0 => (-seconds, 0),
                    nanos => (-seconds - 1, 1_000_000_000 - nanos),
                }
            }
        };
        format_timestamp(seconds, nanos)
    }
}

impl<T: Rfc3339 + ?Sized> Rfc3339 for &T {
    fn to_rfc3339(&self) -> String {
        (**self).to_rfc3339()
    }
}

/// Seconds and nanoseconds since the Unix epoch as RFC 3339 in UTC, with 0,
/// 3, 6 or 9 fractional digits as proto3 JSON writes timestamps.
pub(crate) fn format_timestamp(seconds: i64, nanos: u32) -> String {
    let days = seconds.div_euclid(86_400);
    let second_of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}{}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60,
        fraction(nanos),
    )
}

/// A duration as proto3 JSON writes it: seconds with the fraction's trailing
/// zeros dropped and an `s` suffix, e.g. `"1.5s"`, `"60s"`, `"0.000001s"`.
pub(crate) fn format_duration(duration: Duration) -> String {
    let nanos = duration.subsec_nanos();
    if nanos == 0 {
        format!("{}s", duration.as_secs())
    } else {
        let digits = format!("{nanos:09}");
        format!("{}.{}s", duration.as_secs(), digits.trim_end_matches('0'))
    }
}

fn fraction(nanos: u32) -> String {
    if nanos == 0 {
        String::new()
    } else if nanos.is_multiple_of(1_000_000) {
        format!(".{:03}", nanos / 1_000_000)
    } else if nanos.is_multiple_of(1_000) {
        format!(".{:06}", nanos / 1_000)
    } else {
        format!(".{nanos:09}")
    }
}

/// The proleptic Gregorian date of a day number (days since 1970-01-01),
/// after Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // Both are in range by construction (1..=31, 1..=12).
    (year, day_to_u32(month), day_to_u32(day))
}

fn day_to_u32(value: i64) -> u32 {
    u32::try_from(value).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(format_timestamp(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(format_timestamp(951_782_400, 0), "2000-02-29T00:00:00Z");
        assert_eq!(
            format_timestamp(1_709_210_096, 500_000_000),
            "2024-02-29T12:34:56.500Z"
        );
        assert_eq!(
            format_timestamp(1_700_000_000, 123_456_000),
            "2023-11-14T22:13:20.123456Z"
        );
        assert_eq!(
            format_timestamp(4_102_444_799, 1),
            "2099-12-31T23:59:59.000000001Z"
        );
        assert_eq!(format_timestamp(-1, 0), "1969-12-31T23:59:59Z");
        assert_eq!(format_timestamp(-62_135_596_800, 0), "0001-01-01T00:00:00Z");
        assert_eq!(format_timestamp(253_402_300_799, 0), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn system_time() {
        let time = UNIX_EPOCH + Duration::new(1_709_210_096, 250_000_000);
        assert_eq!(time.to_rfc3339(), "2024-02-29T12:34:56.250Z");
        let before = UNIX_EPOCH - Duration::from_millis(1500);
        assert_eq!(before.to_rfc3339(), "1969-12-31T23:59:58.500Z");
        assert_eq!(
            "2024-01-01T00:00:00+01:00".to_rfc3339(),
            "2024-01-01T00:00:00+01:00"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_duration(Duration::from_secs(60)), "60s");
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::from_nanos(1)), "0.000000001s");
        assert_eq!(
            format_duration(Duration::from_micros(2_000_010)),
            "2.00001s"
        );
    }
}
