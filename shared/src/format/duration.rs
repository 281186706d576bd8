//! Durations, as every flag of every tool writes them.
//!
//! One grammar: one or more `<number><unit>` terms, each unit at most
//! once, in any order (`90s`, `30min`, `1h30min`, `7d`, `2w`; for calendar
//! retention also `3mo` and `1y`). A bare `m` is refused everywhere with a
//! hint: restic reads `--keep-within 1m` as a month, most tools read `30m`
//! as minutes, and bk once did both (`--keep-within 30m` was 30 months
//! while `--grace 30m` was 30 minutes). Refusing is the only reading that
//! cannot be wrong.

use crate::error::{Error, Result};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Millis,
    Secs,
    Mins,
    Hours,
    Days,
    Weeks,
    Months,
    Years,
}

impl Unit {
    fn parse(word: &str) -> Option<Unit> {
        Some(match word {
            "ms" => Unit::Millis,
            "s" => Unit::Secs,
            "min" => Unit::Mins,
            "h" => Unit::Hours,
            "d" => Unit::Days,
            "w" => Unit::Weeks,
            "mo" => Unit::Months,
            "y" => Unit::Years,
            _ => return None,
        })
    }

    pub fn symbol(self) -> &'static str {
        match self {
            Unit::Millis => "ms",
            Unit::Secs => "s",
            Unit::Mins => "min",
            Unit::Hours => "h",
            Unit::Days => "d",
            Unit::Weeks => "w",
            Unit::Months => "mo",
            Unit::Years => "y",
        }
    }

    /// The unit's length; `None` for the calendar units, whose length
    /// depends on the date they are counted back from.
    fn millis(self) -> Option<u64> {
        Some(match self {
            Unit::Millis => 1,
            Unit::Secs => 1_000,
            Unit::Mins => 60_000,
            Unit::Hours => 3_600_000,
            Unit::Days => 86_400_000,
            Unit::Weeks => 7 * 86_400_000,
            Unit::Months | Unit::Years => return None,
        })
    }
}

/// What a bare `m` could mean, said where it is refused.
pub const AMBIGUOUS_M: &str =
    "\"m\" is ambiguous: write min for minutes or mo for months (restic reads --keep-within 1m as a month; bk refuses a bare m everywhere)";

/// The terms of `text` (surrounding whitespace ignored), each number's
/// digits as written (the caller knows how large a number it takes), or
/// why not: the message says where the grammar stopped.
pub fn terms(text: &str) -> std::result::Result<Vec<(&str, Unit)>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("it is empty".into());
    }
    let mut out: Vec<(&str, Unit)> = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let digits_len = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits_len == 0 {
            return Err(format!("expected a number at {rest:?}"));
        }
        let (digits, after) = rest.split_at(digits_len);
        let word_len = after
            .find(|c: char| !c.is_ascii_lowercase())
            .unwrap_or(after.len());
        let (word, next) = after.split_at(word_len);
        if word.is_empty() {
            return Err(match after.chars().next() {
                None => format!("the number {digits} has no unit"),
                Some(c) => format!("unknown unit {:?}", c.to_string()),
            });
        }
        if word == "m" {
            return Err(AMBIGUOUS_M.into());
        }
        let unit = Unit::parse(word).ok_or_else(|| format!("unknown unit {word:?}"))?;
        if out.iter().any(|(_, u)| *u == unit) {
            return Err(format!("unit {:?} appears twice", unit.symbol()));
        }
        out.push((digits, unit));
        rest = next;
    }
    Ok(out)
}

/// The hint every fixed-length duration error ends with.
const FIXED_HINT: &str =
    "use numbers with units ms, s, min, h, d, w (e.g. 90s, 30min, 1h30min, 7d)";

/// A fixed-length duration for `flag` (its name, for the error): `0`, or
/// terms in ms, s, min, h, d and w.
pub fn parse_duration(flag: &str, s: &str) -> Result<Duration> {
    let bad =
        |detail: String| Error::Usage(format!("invalid {flag} {s:?}: {detail}; {FIXED_HINT}"));
    if s.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    let mut millis: u64 = 0;
    for (digits, unit) in terms(s).map_err(&bad)? {
        let n: u64 = digits
            .parse()
            .map_err(|_| bad(format!("{digits} is too large (at most {})", u64::MAX)))?;
        let len = unit.millis().ok_or_else(|| {
            bad(format!(
                "{} has no fixed length (only --keep-within counts in calendar months and years)",
                unit.symbol()
            ))
        })?;
        millis = n
            .checked_mul(len)
            .and_then(|m| millis.checked_add(m))
            .ok_or_else(|| bad("it is too long".into()))?;
    }
    Ok(Duration::from_millis(millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_durations() {
        for (text, ms) in [
            ("0", 0),
            ("90s", 90_000),
            ("30min", 1_800_000),
            ("1h30min", 5_400_000),
            ("30min1h", 5_400_000),
            ("250ms", 250),
            ("7d", 7 * 86_400_000),
            ("2w", 14 * 86_400_000),
            (" 1h\n", 3_600_000),
            ("0s", 0),
        ] {
            assert_eq!(
                parse_duration("--x", text).unwrap(),
                Duration::from_millis(ms),
                "{text:?}"
            );
        }
    }

    #[test]
    fn refusals_say_why() {
        for (text, detail) in [
            ("30m", "\"m\" is ambiguous"),
            ("1h30m", "\"m\" is ambiguous"),
            ("", "it is empty"),
            ("7", "the number 7 has no unit"),
            ("7x", "unknown unit \"x\""),
            ("7D", "unknown unit \"D\""),
            ("1.5h", "unknown unit \".\""),
            ("-1h", "expected a number at \"-1h\""),
            ("1h 2s", "expected a number at \" 2s\""),
            ("1h1h", "unit \"h\" appears twice"),
            ("1mo", "mo has no fixed length"),
            ("1y", "y has no fixed length"),
            ("99999999999999999999s", "is too large"),
            ("18446744073709551615w", "it is too long"),
        ] {
            let e = parse_duration("--grace", text).unwrap_err().to_string();
            assert!(e.contains(detail), "{text:?}: {e}");
            assert!(e.contains("--grace") && e.contains("e.g. 90s"), "{e}");
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,16}") {
            let _ = parse_duration("--x", &s);
        }
    }
}
