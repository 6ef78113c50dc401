//! Wall-clock time as a UTC calendar date, for conflict copy names (no time-zone database:
//! conflict names use UTC so two devices name the same moment alike).

use crate::plan::UtcTime;

/// Now, in UTC.
pub fn utc_now() -> UtcTime {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    utc_from_unix(i64::try_from(secs).unwrap_or(0))
}

/// The UTC calendar time of a Unix timestamp (Howard Hinnant's days-to-civil algorithm).
pub fn utc_from_unix(secs: i64) -> UtcTime {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let small = |v: i64| u8::try_from(v).unwrap_or(0);
    (
        i32::try_from(year).unwrap_or(i32::MAX),
        small(month),
        small(day),
        small(rem / 3600),
        small(rem % 3600 / 60),
        small(rem % 60),
    )
}

#[cfg(test)]
mod tests {
    use super::utc_from_unix;

    #[test]
    fn known_dates() {
        assert_eq!(utc_from_unix(0), (1970, 1, 1, 0, 0, 0));
        // 2000-02-29 12:34:56 UTC, a leap day.
        assert_eq!(utc_from_unix(951_827_696), (2000, 2, 29, 12, 34, 56));
        // 2026-11-24 18:00:00 UTC.
        assert_eq!(utc_from_unix(1_795_543_200), (2026, 11, 24, 18, 0, 0));
        assert_eq!(utc_from_unix(-1), (1969, 12, 31, 23, 59, 59));
    }
}
