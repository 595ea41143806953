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

/// The UTC wall-clock time of an RFC 3339 timestamp, as SQL services take a
/// datetime without a time zone: `YYYY-MM-DDTHH:MM:SS` and, when
/// `fraction_digits` is not 0, that many digits of the second (truncated).
/// Any offset is applied first. `None` when the text is not RFC 3339.
///
/// Datetime inputs reach a connector as RFC 3339 strings:
///
/// ```
/// use flyte_connector_sdk::utc_wall_clock;
///
/// assert_eq!(
///     utc_wall_clock("2024-02-29T01:30:00.5+02:00", 6).as_deref(),
///     Some("2024-02-28T23:30:00.500000")
/// );
/// assert_eq!(utc_wall_clock("yesterday", 6), None);
/// ```
pub fn utc_wall_clock(rfc3339: &str, fraction_digits: usize) -> Option<String> {
    let (seconds, nanos) = parse_rfc3339(rfc3339)?;
    let utc = format_timestamp(seconds, 0);
    let mut text = utc.strip_suffix('Z').unwrap_or(&utc).to_owned();
    if fraction_digits > 0 {
        let digits = format!("{nanos:09}");
        text.push('.');
        text.extend(
            digits
                .chars()
                .chain(std::iter::repeat('0'))
                .take(fraction_digits),
        );
    }
    Some(text)
}

/// Seconds and nanoseconds since the Unix epoch of an RFC 3339 timestamp
/// (`T` or space between date and time, `Z` or `±HH:MM`).
fn parse_rfc3339(text: &str) -> Option<(i64, u32)> {
    let number = |s: &str| -> Option<i64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let (date, rest) = (text.get(..10)?, text.get(11..)?);
    if !matches!(text.as_bytes().get(10), Some(b'T' | b't' | b' ')) {
        return None;
    }
    let mut date_parts = date.split('-');
    let (year, month, day) = (
        number(date_parts.next()?)?,
        number(date_parts.next()?)?,
        number(date_parts.next()?)?,
    );
    let (time, offset_seconds) =
        if let Some(time) = rest.strip_suffix('Z').or_else(|| rest.strip_suffix('z')) {
            (time, 0)
        } else {
            let sign_at = rest.rfind(['+', '-'])?;
            let (time, offset) = rest.split_at(sign_at);
            let sign = if offset.starts_with('-') { -1 } else { 1 };
            let (hours, minutes) = offset.get(1..)?.split_once(':')?;
            (time, sign * (number(hours)? * 3600 + number(minutes)? * 60))
        };
    let (clock, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut clock_parts = clock.split(':');
    let (hour, minute, second) = (
        number(clock_parts.next()?)?,
        number(clock_parts.next()?)?,
        number(clock_parts.next()?)?,
    );
    let valid = (1..=12).contains(&month)
        && (1..=31).contains(&day)
        && hour < 24
        && minute < 60
        && second < 61
        && clock_parts.next().is_none()
        && (fraction.is_empty() || number(fraction).is_some());
    if !valid {
        return None;
    }
    let nanos: String = fraction
        .chars()
        .chain(std::iter::repeat('0'))
        .take(9)
        .collect();
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_seconds;
    Some((seconds, u32::try_from(number(&nanos)?).ok()?))
}

/// The day number (days since 1970-01-01) of a proleptic Gregorian date,
/// after Howard Hinnant's `days_from_civil`.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let shifted_month = (month + 9) % 12;
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
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
    fn wall_clock_times_in_utc() {
        for (text, digits, expected) in [
            (
                "2023-11-14T22:13:20.123456789+00:00",
                6,
                Some("2023-11-14T22:13:20.123456"),
            ),
            (
                "2024-01-02T03:04:05Z",
                6,
                Some("2024-01-02T03:04:05.000000"),
            ),
            (
                "2024-01-02T03:04:05.5Z",
                9,
                Some("2024-01-02T03:04:05.500000000"),
            ),
            ("2024-01-02 03:04:05Z", 0, Some("2024-01-02T03:04:05")),
            ("2024-03-01T01:00:00+02:00", 0, Some("2024-02-29T23:00:00")),
            ("1969-12-31T23:00:00-01:30", 0, Some("1970-01-01T00:30:00")),
            ("2024-13-01T00:00:00Z", 0, None),
            ("2024-01-01T00:00:00", 0, None),
            ("2024-01-01T00:00:0xZ", 0, None),
            ("", 0, None),
        ] {
            assert_eq!(utc_wall_clock(text, digits).as_deref(), expected, "{text}");
        }
        for seconds in [-86_401, 0, 951_782_400, 4_102_444_799] {
            let text = format_timestamp(seconds, 0);
            assert_eq!(parse_rfc3339(&text), Some((seconds, 0)), "{text}");
        }
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
