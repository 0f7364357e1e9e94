//! The two time formats restic speaks: RFC 3339 in its JSON, and
//! `YYYY-MM-DD HH:MM:SS` (local time; we run it with `TZ=UTC`) for `--time`.
//! Small enough not to pull a date crate in for it.

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn num(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `2026-12-07T23:27:32.068548224Z` or `...+01:00` to milliseconds since
/// 1970 (UTC). Snapshots keep the offset of the machine that made them.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let (date, rest) = s.split_once(['T', 't', ' '])?;
    let mut dp = date.splitn(3, '-');
    let y = num(dp.next()?)?;
    let mo = num(dp.next()?)?;
    let d = num(dp.next()?)?;
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    // Split the clock from the zone: 'Z', or the last '+'/'-'.
    let (clock, offset_min) = if let Some(c) = rest.strip_suffix(['Z', 'z']) {
        (c, 0i64)
    } else {
        let idx = rest.rfind(['+', '-'])?;
        let (c, z) = rest.split_at(idx);
        let sign = if z.starts_with('-') { -1 } else { 1 };
        let (zh, zm) = z[1..].split_once(':')?;
        (c, sign * i64::from(num(zh)? * 60 + num(zm)?))
    };
    let (hms, frac) = match clock.split_once('.') {
        Some((a, b)) => (a, b),
        None => (clock, ""),
    };
    let mut tp = hms.splitn(3, ':');
    let h = num(tp.next()?)?;
    let mi = num(tp.next()?)?;
    let sec = num(tp.next()?)?;
    if h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let ms = if frac.is_empty() {
        0
    } else {
        if !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let mut digits: String = frac.chars().take(3).collect();
        while digits.len() < 3 {
            digits.push('0');
        }
        i64::from(num(&digits)?)
    };
    let days = days_from_civil(i64::from(y), mo, d);
    let secs = days * 86_400 + i64::from(h * 3600 + mi * 60 + sec) - offset_min * 60;
    Some(secs * 1000 + ms)
}

/// Milliseconds since 1970 to restic's `--time` format, in UTC.
pub fn format_restic_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_restic_times() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2020-01-01T10:00:00Z"),
            Some(1_577_872_800_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-12-07T23:27:32.068548224Z"),
            Some(1_796_686_052_068)
        );
        assert_eq!(
            parse_rfc3339_ms("2020-01-01T11:00:00.5+01:00"),
            Some(1_577_872_800_500)
        );
        assert_eq!(
            parse_rfc3339_ms("2020-01-01T05:30:00-04:30"),
            Some(1_577_872_800_000)
        );
        assert_eq!(parse_rfc3339_ms("2020-13-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339_ms("garbage"), None);
    }

    #[test]
    fn formats_and_round_trips() {
        assert_eq!(format_restic_time(1_577_872_800_000), "2020-01-01 10:00:00");
        for ms in [0i64, 951_782_400_000, 1_709_164_800_000, 4_102_444_799_000] {
            let s = format_restic_time(ms).replace(' ', "T") + "Z";
            assert_eq!(parse_rfc3339_ms(&s), Some(ms), "{s}");
        }
    }
}
