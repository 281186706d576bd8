//! Wall-clock times as every bk object and record stores them.

use serde::{Deserialize, Serialize};

/// Nanosecond-precision wall-clock time, serialized as RFC 3339 UTC with
/// nine fractional digits (`2026-11-21T16:26:00.123456789Z`): readable,
/// sortable as text, exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp {
    pub secs: i64,
    pub nanos: u32,
}

impl Timestamp {
    pub fn now() -> Self {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp {
            secs: d.as_secs() as i64,
            nanos: d.subsec_nanos(),
        }
    }

    pub fn to_rfc3339(&self) -> String {
        let t = time::OffsetDateTime::from_unix_timestamp(self.secs)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
            .replace_nanosecond(self.nanos.min(999_999_999))
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        t.format(&time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z"
        ))
        .unwrap_or_default()
    }

    /// To the second, for people: `2026-12-03 10:00:00 UTC`.
    pub fn to_human(&self) -> String {
        time::OffsetDateTime::from_unix_timestamp(self.secs)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
            .format(&time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second] UTC"
            ))
            .unwrap_or_default()
    }

    /// Accepts any RFC 3339 time (any offset, any fraction length).
    pub fn parse(s: &str) -> Option<Self> {
        let t =
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
        Some(Timestamp {
            secs: t.unix_timestamp(),
            nanos: t.nanosecond(),
        })
    }

    pub fn as_nanos(&self) -> i128 {
        self.secs as i128 * 1_000_000_000 + self.nanos as i128
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Timestamp::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 time: {s:?}")))
    }
}
