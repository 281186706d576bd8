//! Sizes and durations for the lines people read (stderr notes, tables);
//! JSON output keeps exact numbers.

use std::time::Duration;

/// `0 B`, `512 B`, `1.5 KiB`, `20.0 MiB`, `3.2 GiB`: binary units, one
/// decimal from KiB on.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Reads a size as people write it: `4096`, `500M`, `2G`, `2GiB`, `1.5k`
/// (binary units, case-insensitive, an optional `B` or `iB`).
pub fn parse_size(s: &str) -> Option<u64> {
    let upper = s.trim().to_ascii_uppercase();
    let num = upper
        .strip_suffix("IB")
        .or_else(|| upper.strip_suffix('B'))
        .unwrap_or(&upper);
    let (digits, mult) = match num.chars().last() {
        Some('K') => (&num[..num.len() - 1], 1u64 << 10),
        Some('M') => (&num[..num.len() - 1], 1 << 20),
        Some('G') => (&num[..num.len() - 1], 1 << 30),
        Some('T') => (&num[..num.len() - 1], 1 << 40),
        _ => (num, 1),
    };
    let v: f64 = digits.trim().parse().ok()?;
    (v >= 0.0 && v.is_finite()).then_some((v * mult as f64) as u64)
}

/// The largest two units of `d`, in the flags' own grammar (`1h30min`,
/// `2d`, `45s`), so a note can be pasted back as a flag value.
pub fn duration(d: Duration) -> String {
    let units = [(86_400, "d"), (3_600, "h"), (60, "min"), (1, "s")];
    let mut left = d.as_secs();
    if left == 0 {
        return format!("{}ms", d.as_millis());
    }
    let mut out = String::new();
    let mut terms = 0;
    for (size, name) in units {
        if left >= size && terms < 2 {
            out.push_str(&format!("{}{name}", left / size));
            left %= size;
            terms += 1;
        } else if terms > 0 {
            terms = 2; // only adjacent units: "1d" rather than "1d5s"
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(20 << 20), "20.0 MiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn durations_read_back_as_flags() {
        assert_eq!(duration(Duration::from_secs(3600)), "1h");
        assert_eq!(duration(Duration::from_secs(5400)), "1h30min");
        assert_eq!(duration(Duration::from_secs(86_405)), "1d");
        assert_eq!(duration(Duration::from_secs(45)), "45s");
        assert_eq!(duration(Duration::from_millis(250)), "250ms");
        for d in [60, 3600, 5400, 7 * 86_400, 90] {
            let shown = duration(Duration::from_secs(d));
            assert_eq!(
                crate::format::duration::parse_duration("--x", &shown).unwrap(),
                Duration::from_secs(d),
                "{shown}"
            );
        }
    }
}
