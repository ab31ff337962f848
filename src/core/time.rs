//! RFC 3339 UTC timestamps with microseconds, without a date-time dependency.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use super::escape::push_two_digits;

thread_local! {
    /// The last second formatted on this thread and its `YYYY-MM-DDTHH:MM:SS` text.
    static LAST: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// Appends the current time as `2026-11-27T15:17:33.123456Z`.
pub(crate) fn push_now(out: &mut String) {
    push_time(out, SystemTime::now());
}

/// Appends `at` as `2026-11-27T15:17:33.123456Z`.
pub(crate) fn push_time(out: &mut String, at: SystemTime) {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    push_timestamp(out, since.as_secs(), since.subsec_micros());
}

pub(crate) fn push_timestamp(out: &mut String, secs: u64, micros: u32) {
    // `try_with`: the panic hook formats a timestamp too, possibly while this thread's locals
    // are being destroyed; the cache is then skipped rather than the access panicking.
    let cached = LAST
        .try_with(|last| {
            let Ok(mut last) = last.try_borrow_mut() else {
                return false;
            };
            if last.0 != secs {
                last.1.clear();
                push_seconds(&mut last.1, secs);
                last.0 = secs;
            }
            out.push_str(&last.1);
            true
        })
        .unwrap_or(false);
    if !cached {
        push_seconds(out, secs);
    }
    let m = micros.min(999_999) as usize;
    out.push('.');
    push_two_digits(out, m / 10_000);
    push_two_digits(out, m / 100 % 100);
    push_two_digits(out, m % 100);
    out.push('Z');
}

fn push_seconds(out: &mut String, secs: u64) {
    let text = format_seconds(secs);
    out.push_str(std::str::from_utf8(&text).unwrap_or("0000-00-00T00:00:00"));
}

fn format_seconds(secs: u64) -> [u8; 19] {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (rem / 3600, rem / 60 % 60, rem % 60);
    let mut t = [0u8; 19];
    let y = y.clamp(0, 9999) as u64;
    put(&mut t[0..4], y);
    t[4] = b'-';
    put(&mut t[5..7], m as u64);
    t[7] = b'-';
    put(&mut t[8..10], d as u64);
    t[10] = b'T';
    put(&mut t[11..13], hh);
    t[13] = b':';
    put(&mut t[14..16], mm);
    t[16] = b':';
    put(&mut t[17..19], ss);
    t
}

fn put(dst: &mut [u8], mut v: u64) {
    for slot in dst.iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(secs: u64, micros: u32) -> String {
        let mut s = String::new();
        push_timestamp(&mut s, secs, micros);
        s
    }

    #[test]
    fn known_instants() {
        assert_eq!(ts(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(ts(951_782_400, 7), "2000-02-29T00:00:00.000007Z");
        assert_eq!(ts(1_795_792_653, 123_456), "2026-11-27T15:17:33.123456Z");
        assert_eq!(ts(4_102_444_799, 999_999), "2099-12-31T23:59:59.999999Z");
    }

    /// The per-second cache never shows a stale second, whatever the order of the calls.
    #[test]
    fn cached_seconds_follow_the_calls() {
        let fresh = |secs: u64, micros: u32| {
            let mut s = String::new();
            push_seconds(&mut s, secs);
            s.push_str(&format!(".{micros:06}Z"));
            s
        };
        let calls = [
            (1_795_792_653, 1),
            (1_795_792_653, 999_999),
            (1_795_792_654, 0),
            (1_795_792_653, 10),
            (0, 100_000),
            (0, 99),
            (4_102_444_799, 123_456),
        ];
        for (secs, micros) in calls {
            assert_eq!(ts(secs, micros), fresh(secs, micros));
        }
        assert_eq!(ts(5, 2_000_000), "1970-01-01T00:00:05.999999Z");
    }
}
