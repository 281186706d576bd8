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

/// `drwxr-xr-x`, `-rwsr-xr-x`, `lrwxrwxrwx`: a mode as ls(1) shows it.
pub fn mode_string(kind: crate::format::wire::Kind, mode: u32) -> String {
    use crate::format::wire::Kind;
    let mut s = String::with_capacity(10);
    s.push(match kind {
        Kind::Dir => 'd',
        Kind::Symlink => 'l',
        Kind::Fifo => 'p',
        Kind::Socket => 's',
        Kind::CharDevice => 'c',
        Kind::BlockDevice => 'b',
        Kind::File => '-',
    });
    for (shift, special, set_char) in [(6, 0o4000, 's'), (3, 0o2000, 's'), (0, 0o1000, 't')] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        let x = bits & 1 != 0;
        s.push(match (mode & special != 0, x) {
            (true, true) => set_char,
            (true, false) => set_char.to_ascii_uppercase(),
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    s
}

/// The snapshot list as a table for a terminal: short ids (which every
/// tool accepts back), time, identity, tags, files and size.
pub fn snapshot_table(rows: &[crate::format::wire::SnapshotRecord]) -> String {
    let mut cells: Vec<[String; 6]> = vec![[
        "ID".into(),
        "TIME".into(),
        "IDENTITY".into(),
        "TAGS".into(),
        "FILES".into(),
        "SIZE".into(),
    ]];
    for r in rows {
        let tags: Vec<String> = r.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        cells.push([
            r.id.short(),
            r.time.to_human(),
            r.identity.clone(),
            tags.join(","),
            r.files.to_string(),
            bytes(r.bytes),
        ]);
    }
    let mut widths = [0usize; 6];
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for row in &cells {
        let mut line = String::new();
        for (i, (c, w)) in row.iter().zip(widths).enumerate() {
            // Counts and sizes align right.
            if i >= 4 {
                line.push_str(&format!("{c:>w$}  "));
            } else {
                line.push_str(&format!("{c:<w$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.push_str(&format!("{} snapshot(s)\n", rows.len()));
    out
}

/// One listing entry as `ls -l` shows it.
pub fn entry_line(e: &crate::format::wire::Entry) -> String {
    let owner = e.user.clone().unwrap_or_else(|| e.uid.to_string());
    let group = e.group.clone().unwrap_or_else(|| e.gid.to_string());
    let target = match e.target_bytes() {
        Ok(Some(t)) => format!(" -> {}", String::from_utf8_lossy(&t)),
        _ => String::new(),
    };
    format!(
        "{} {owner:<8} {group:<8} {:>10} {} {}{target}",
        mode_string(e.kind, e.mode),
        bytes(e.size),
        e.mtime.to_human(),
        e.path
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_read_as_ls_shows_them() {
        use crate::format::wire::Kind;
        assert_eq!(mode_string(Kind::Dir, 0o755), "drwxr-xr-x");
        assert_eq!(mode_string(Kind::File, 0o4755), "-rwsr-xr-x");
        assert_eq!(mode_string(Kind::File, 0o2640), "-rw-r-S---");
        assert_eq!(mode_string(Kind::Dir, 0o1777), "drwxrwxrwt");
        assert_eq!(mode_string(Kind::Symlink, 0o777), "lrwxrwxrwx");
    }

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
