//! Wall-clock times as the station writes them: RFC 3339 UTC with
//! milliseconds, and Unix milliseconds. Formatting only; reading the clock
//! is the caller's.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A wall-clock time as RFC 3339 UTC with milliseconds. A clock set before
/// 1970 or past 9999 (a Pi without RTC, a bad NTP answer) is shown clamped,
/// never a panic: wall-clock jumps must change nothing.
pub fn rfc3339(t: SystemTime) -> String {
    let max = UNIX_EPOCH + Duration::from_secs(253_402_300_799);
    let t = t.clamp(UNIX_EPOCH, max);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Unix milliseconds of a wall-clock time (0 before 1970).
pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The wall-clock time of Unix milliseconds (1970 for a negative number).
pub fn from_unix_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_clamped_and_round_trip() {
        let before_1970 = UNIX_EPOCH - Duration::from_secs(3600);
        assert_eq!(rfc3339(before_1970), "1970-01-01T00:00:00.000Z");
        let far = UNIX_EPOCH + Duration::from_secs(400_000_000_000);
        assert_eq!(rfc3339(far), "9999-12-31T23:59:59.000Z");
        let t = from_unix_ms(1_795_481_537_415);
        assert_eq!(unix_ms(t), 1_795_481_537_415);
        assert_eq!(rfc3339(t), "2026-11-24T00:52:17.415Z");
        assert_eq!(from_unix_ms(-5), UNIX_EPOCH);
    }
}
