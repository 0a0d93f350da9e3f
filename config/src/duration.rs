//! Humane durations: `"100ms"`, `"30s"`, `"2h4m"`, `"1h30m15s"`, `"1.5s"`.
//!
//! A duration is one or more `<number><unit>` parts, largest unit first, each unit at most
//! once; only the last part may have a fraction. Units: `d`, `h`, `m`, `s`, `ms`, `us`, `ns`.
//! [`format`] writes the shortest such string (never days, so "48h" stays "48h"), and
//! [`parse`] reads it back to the same value.

use std::time::Duration;

/// Units from largest to smallest, with their length in nanoseconds.
const UNITS: [(&str, u128); 7] = [
    ("d", 86_400 * NANOS_PER_SEC),
    ("h", 3_600 * NANOS_PER_SEC),
    ("m", 60 * NANOS_PER_SEC),
    ("s", NANOS_PER_SEC),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("ns", 1),
];

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Digits accepted in one number; keeps every intermediate product inside `u128`.
const MAX_DIGITS: usize = 20;

/// Reads a humane duration. The error says what is wrong with the text, for a config
/// diagnostic.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".to_owned());
    }
    let mut rest = text;
    let mut total: u128 = 0;
    // Index into UNITS of the previous part's unit: the next one must be smaller.
    let mut previous: Option<usize> = None;
    let mut fraction_seen = false;
    while !rest.is_empty() {
        if fraction_seen {
            return Err("only the last part may have a fraction".to_owned());
        }
        let int_len = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (int_digits, after_int) = rest.split_at(int_len);
        let (frac_digits, after_number) = match after_int.strip_prefix('.') {
            Some(after_dot) => {
                let len = after_dot
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(after_dot.len());
                fraction_seen = true;
                after_dot.split_at(len)
            }
            None => ("", after_int),
        };
        let after_number = after_number.trim_start();
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err(format!("expected a number at {rest:?}"));
        }
        if int_digits.len() > MAX_DIGITS || frac_digits.len() > MAX_DIGITS {
            return Err("number too long".to_owned());
        }
        let unit_len = after_number
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after_number.len());
        let (unit, after_unit) = after_number.split_at(unit_len);
        if unit.is_empty() {
            return Err(format!(
                "{int_digits}{}{frac_digits} has no unit (ms, s, m, h, ...)",
                if fraction_seen { "." } else { "" }
            ));
        }
        let Some(index) = UNITS.iter().position(|(name, _)| *name == unit) else {
            return Err(format!("unknown unit {unit:?}"));
        };
        if previous.is_some_and(|p| index <= p) {
            return Err(format!(
                "unit {unit:?} out of order: write the largest unit first, each once"
            ));
        }
        previous = Some(index);
        let nanos_per_unit = UNITS[index].1;

        let int: u128 = digits_value(int_digits);
        let mut part = int
            .checked_mul(nanos_per_unit)
            .ok_or_else(|| "duration too large".to_owned())?;
        if !frac_digits.is_empty() {
            let scale = 10u128.pow(frac_digits.len() as u32);
            let frac = digits_value(frac_digits) * nanos_per_unit;
            if !frac.is_multiple_of(scale) {
                return Err("finer than 1ns".to_owned());
            }
            part += frac / scale;
        }
        total = total
            .checked_add(part)
            .ok_or_else(|| "duration too large".to_owned())?;
        rest = after_unit.trim_start();
    }
    let secs = u64::try_from(total / NANOS_PER_SEC).map_err(|_| "duration too large".to_owned())?;
    // The remainder of a division by 10^9 always fits.
    let nanos = (total % NANOS_PER_SEC) as u32;
    Ok(Duration::new(secs, nanos))
}

/// Value of a string of at most [`MAX_DIGITS`] ASCII digits (empty is 0).
fn digits_value(digits: &str) -> u128 {
    digits
        .bytes()
        .fold(0u128, |acc, d| acc * 10 + u128::from(d - b'0'))
}

/// Writes `duration` humanely, largest unit first: `7440s` is `"2h4m"`, `1.5s` is `"1s500ms"`.
pub fn format(duration: Duration) -> String {
    if duration.is_zero() {
        return "0s".to_owned();
    }
    let mut nanos = duration.as_nanos();
    let mut out = String::new();
    // Skip days: "48h" reads better than "2d" next to RFC values written in hours.
    for (name, len) in &UNITS[1..] {
        let count = nanos / len;
        if count > 0 {
            out.push_str(&count.to_string());
            out.push_str(name);
            nanos %= len;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_humane_forms() {
        let cases = [
            ("100ms", Duration::from_millis(100)),
            ("30s", Duration::from_secs(30)),
            ("2h4m", Duration::from_secs(2 * 3600 + 4 * 60)),
            ("1h30m15s", Duration::from_secs(3600 + 30 * 60 + 15)),
            ("1.5s", Duration::from_millis(1500)),
            ("0.25h", Duration::from_secs(15 * 60)),
            ("1d", Duration::from_secs(86_400)),
            ("2h 4m", Duration::from_secs(2 * 3600 + 4 * 60)),
            ("5 s", Duration::from_secs(5)),
            ("1s500ms", Duration::from_millis(1500)),
            ("10us", Duration::from_micros(10)),
            ("7ns", Duration::from_nanos(7)),
            ("0s", Duration::ZERO),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn refuses_what_is_not_a_duration() {
        for (text, problem) in [
            ("", "empty"),
            ("30", "no unit"),
            ("1.5", "no unit"),
            ("5 minutes", "unknown unit"),
            ("4x", "unknown unit"),
            ("30s2h", "out of order"),
            ("1s1s", "out of order"),
            ("1.5m30s", "only the last part"),
            ("-1s", "expected a number"),
            ("s", "expected a number"),
            ("0.0000000001s", "finer than 1ns"),
            ("99999999999999999999d", "too large"),
            ("123456789012345678901s", "too long"),
        ] {
            let err = parse(text).expect_err(text);
            assert!(err.contains(problem), "{text}: {err}");
        }
    }

    #[test]
    fn formats_largest_unit_first() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(100), "100ms"),
            (Duration::from_secs(2 * 3600 + 4 * 60), "2h4m"),
            (Duration::from_millis(1500), "1s500ms"),
            (Duration::from_secs(48 * 3600), "48h"),
            (Duration::new(3661, 1_001), "1h1m1s1us1ns"),
        ];
        for (duration, want) in cases {
            assert_eq!(format(duration), want);
        }
    }

    #[test]
    fn format_then_parse_round_trips() {
        for nanos in [
            1u64,
            999,
            1_000_000,
            10_000_000,
            1_500_000_000,
            7_440_000_000_000,
            86_400_000_000_123,
            u64::MAX,
        ] {
            let duration = Duration::from_nanos(nanos);
            assert_eq!(parse(&format(duration)), Ok(duration), "{nanos}");
        }
    }
}
