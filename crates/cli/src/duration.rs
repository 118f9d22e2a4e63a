//! Durations typed on the command line (`90s`, `15m`, `24h`, `7d`, `1h30m`) as whole seconds, and
//! back into the same short form for messages. Errors are one line naming what was typed.

/// The longest overlap the control plane accepts for `grace_seconds` (30 days).
/// The longest overlap the control plane accepts (`tether_domain::RefreshMode::MAX_GRACE`).
pub const MAX_GRACE_SECONDS: u64 = tether_domain::RefreshMode::MAX_GRACE.as_secs();

const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;

/// Parses one or more `<number><unit>` parts, unit `s`, `m`, `h` or `d`: `90s`, `1h30m`.
pub fn parse_seconds(text: &str) -> Result<u64, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration: use e.g. 90s, 15m, 24h or 7d".to_owned());
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => MINUTE,
            'h' => HOUR,
            'd' => DAY,
            _ => {
                return Err(format!(
                    "'{s}' is not a duration: unknown unit '{c}' (use s, m, h or d, e.g. 24h)"
                ))
            }
        };
        if digits.is_empty() {
            return Err(format!(
                "'{s}' is not a duration: '{c}' needs a number before it (e.g. 24h)"
            ));
        }
        let part = digits
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(unit))
            .ok_or_else(|| format!("'{s}' is too long a duration"))?;
        total = total
            .checked_add(part)
            .ok_or_else(|| format!("'{s}' is too long a duration"))?;
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(format!(
            "'{s}' is not a duration: add a unit to {digits} (s, m, h or d, e.g. {digits}s or {digits}m)"
        ));
    }
    Ok(total)
}

/// A `--grace` value: a duration of at least 1 second and at most 30 days.
pub fn parse_grace(text: &str) -> Result<u64, String> {
    let seconds = parse_seconds(text)?;
    if seconds == 0 || seconds > MAX_GRACE_SECONDS {
        return Err(format!(
            "--grace '{}' is out of range: it must be between 1s and 30d",
            text.trim()
        ));
    }
    Ok(seconds)
}

/// `5400` -> `1h30m`; `0` -> `0s`.
pub fn format_seconds(seconds: u64) -> String {
    if seconds == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    let mut rest = seconds;
    for (unit, name) in [(DAY, 'd'), (HOUR, 'h'), (MINUTE, 'm'), (1, 's')] {
        if rest >= unit {
            out.push_str(&format!("{}{name}", rest / unit));
            rest %= unit;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_compounds() {
        assert_eq!(parse_seconds("90s"), Ok(90));
        assert_eq!(parse_seconds("15m"), Ok(900));
        assert_eq!(parse_seconds("24h"), Ok(86_400));
        assert_eq!(parse_seconds("7d"), Ok(604_800));
        assert_eq!(parse_seconds("1h30m"), Ok(5_400));
        assert_eq!(parse_seconds(" 2d12h "), Ok(216_000));
        assert_eq!(parse_seconds("0s"), Ok(0));
    }

    #[test]
    fn bad_input_says_what_is_wrong_in_one_line() {
        for (input, says) in [
            ("", "empty"),
            ("90", "add a unit to 90"),
            ("1h30", "add a unit to 30"),
            ("5x", "unknown unit 'x'"),
            ("h", "needs a number"),
            ("-5m", "unknown unit '-'"),
            ("1.5h", "unknown unit '.'"),
            ("24H", "unknown unit 'H'"),
            ("99999999999999999999s", "too long"),
            ("999999999999999d", "too long"),
        ] {
            let err = parse_seconds(input).expect_err(input);
            assert!(err.contains(says), "{input:?}: {err}");
            assert!(!err.contains('\n'), "{input:?}: {err}");
        }
    }

    #[test]
    fn grace_is_between_one_second_and_thirty_days() {
        assert_eq!(parse_grace("1s"), Ok(1));
        assert_eq!(parse_grace("30d"), Ok(2_592_000));
        assert_eq!(parse_grace("24h"), Ok(86_400));
        for bad in ["0s", "0d", "30d1s", "31d"] {
            let err = parse_grace(bad).expect_err(bad);
            assert!(err.contains("between 1s and 30d"), "{bad}: {err}");
        }
        assert!(parse_grace("soon")
            .expect_err("soon")
            .contains("not a duration"));
    }

    #[test]
    fn formats_back_to_the_short_form() {
        assert_eq!(format_seconds(0), "0s");
        assert_eq!(format_seconds(90), "1m30s");
        assert_eq!(format_seconds(3_600), "1h");
        assert_eq!(format_seconds(86_400), "1d");
        assert_eq!(format_seconds(93_784), "1d2h3m4s");
        for text in ["90s", "15m", "24h", "7d", "1h30m"] {
            let secs = parse_seconds(text).expect(text);
            assert_eq!(parse_seconds(&format_seconds(secs)), Ok(secs), "{text}");
        }
    }
}
