//! Retention policy: which snapshots `bk-prune` keeps and which it forgets.
//!
//! This is the pure step of prune: snapshot records in, one [`Decision`] per
//! selected snapshot out. It reads no repository and no clock, so a dry run,
//! the real run and the tests all see exactly the same answer.
//!
//! The rules are restic's `forget` rules, so operators can move their
//! existing `--keep-*` flags over unchanged:
//!
//! * Snapshots are split into groups ([`GroupBy`]); each group is judged on
//!   its own, newest first (equal times: higher id first, so the answer does
//!   not depend on input order).
//! * `last N` keeps the N newest snapshots.
//! * `hourly/daily/weekly/monthly/yearly N` keep, for each of the N newest
//!   buckets (hour, day, ISO 8601 week, month, year) *that hold a snapshot*,
//!   the newest snapshot in it. Buckets without a snapshot are skipped, not
//!   counted: `daily 7` means seven days that have backups, so a machine that
//!   was off for a week does not lose its history.
//! * `within D` keeps every snapshot newer than the group's newest snapshot
//!   minus D (see [`KeepWithin`]).
//! * `tag K=V` keeps every snapshot carrying that tag.
//! * A snapshot is kept if any rule keeps it; a policy without rules keeps
//!   everything.
//!
//! Counts are `Option<i64>`: `None` and `Some(0)` mean the rule is not given
//! (restic's 0), `Some(-1)` means unlimited (every bucket), `Some(n)` means n
//! buckets; anything below -1 is refused.
//!
//! Two deliberate differences from restic 0.17 and later: the oldest
//! snapshot of a group is *not* additionally kept when a bucket rule still
//! has counts left (a bucket rule here keeps exactly the newest snapshot of
//! each of its N buckets), and the newest snapshot is the newest of the
//! group even if it lies in the future (restic skips future ones; this
//! module has no clock).
//!
//! Snapshot times are stored in UTC, so buckets are UTC hours/days/weeks by
//! default. [`Policy::utc_offset_secs`] shifts them by a fixed offset so an
//! operator can bucket by their local day; a fixed offset has no DST jumps,
//! so every day is exactly 24 hours long.

use crate::error::{Error, Result};
use crate::format::id::ObjectId;
use crate::format::time::Timestamp;
use crate::format::wire::SnapshotRecord;
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use time::{Date, Month, OffsetDateTime, UtcOffset};

const DURATION_HINT: &str = "use numbers with units h, d, w, mo, y (e.g. 36h, 7d, 1y2mo)";

/// A `--keep-within` duration: `1y2mo3d4h` and the like.
///
/// Years and months are calendar units (a month back from 31 March is the
/// end of February), weeks, days and hours are exact (7 × 24 h, 24 h, 1 h).
/// The cutoff is computed as: newest snapshot time (in the policy's offset)
/// minus years and months, with the day of month clamped to the target
/// month's length (2026-03-31 − 1mo = 2026-02-28, 2024-02-29 − 1y =
/// 2023-02-28), then minus weeks, days and hours. Clamping differs from Go's
/// `AddDate` used by restic (which rolls 2026-02-31 over to 2026-03-03): it
/// puts the cutoff earlier, so it keeps more, never less.
///
/// A snapshot is within if it is strictly newer than the cutoff (as restic),
/// so `within 168h` of hourly snapshots keeps exactly 168 of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeepWithin {
    pub years: u32,
    pub months: u32,
    pub weeks: u32,
    pub days: u32,
    pub hours: u32,
}

impl KeepWithin {
    fn is_zero(&self) -> bool {
        *self == KeepWithin::default()
    }

    /// The cutoff in nanoseconds since the epoch; `None` when the duration
    /// reaches back past the representable calendar (everything is within).
    fn cutoff_nanos(&self, newest: Timestamp, offset: UtcOffset) -> Option<i128> {
        let local = local_time(newest, offset)?;
        let months_back = i64::from(self.years) * 12 + i64::from(self.months);
        let month_index = i64::from(local.year()) * 12 + i64::from(local.month() as u8) - 1;
        let target = month_index - months_back;
        let year = i32::try_from(target.div_euclid(12)).ok()?;
        let month = Month::try_from(u8::try_from(target.rem_euclid(12) + 1).ok()?).ok()?;
        let day = local.day().min(month.length(year));
        let date = Date::from_calendar_date(year, month, day).ok()?;
        let shifted = local.replace_date(date).unix_timestamp();
        let exact_secs = (i128::from(self.weeks) * 7 + i128::from(self.days)) * 86_400
            + i128::from(self.hours) * 3_600;
        Some((i128::from(shifted) - exact_secs) * 1_000_000_000 + i128::from(newest.nanos))
    }
}

/// The normalized form: units in the order y, mo, w, d, h, zeros left out
/// (`2m1y` and `1y02m0d` both print as `1y2m`).
impl fmt::Display for KeepWithin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            return f.write_str("0h");
        }
        for (n, unit) in [
            (self.years, "y"),
            (self.months, "mo"),
            (self.weeks, "w"),
            (self.days, "d"),
            (self.hours, "h"),
        ] {
            if n != 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

impl std::str::FromStr for KeepWithin {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        parse_within(s)
    }
}

/// Parses a `--keep-within` duration in the grammar every duration flag
/// shares (`format::duration`), with the units that count back by the
/// calendar: `h`, `d`, `w`, `mo` (months), `y`, each at most once, in any
/// order; surrounding whitespace is ignored. Refused besides what the
/// grammar refuses (a bare `m` among it: restic's reading of `1m` as a month
/// is said in the error): seconds and minutes (retention counts whole
/// hours), numbers above 4294967295, and durations that are zero in total
/// (they would keep nothing, not even the newest snapshot).
pub fn parse_within(s: &str) -> Result<KeepWithin> {
    use crate::format::duration::{terms, Unit};
    let bad =
        |detail: String| Error::Usage(format!("invalid duration {s:?}: {detail}; {DURATION_HINT}"));
    let mut w = KeepWithin::default();
    for (digits, unit) in terms(s).map_err(&bad)? {
        let n: u32 = digits
            .parse()
            .map_err(|_| bad(format!("{digits} is too large (at most {})", u32::MAX)))?;
        match unit {
            Unit::Years => w.years = n,
            Unit::Months => w.months = n,
            Unit::Weeks => w.weeks = n,
            Unit::Days => w.days = n,
            Unit::Hours => w.hours = n,
            Unit::Millis | Unit::Secs | Unit::Mins => {
                return Err(bad(format!(
                    "retention counts whole hours, not {}",
                    unit.symbol()
                )))
            }
        }
    }
    if w.is_zero() {
        return Err(bad("it is zero, which would keep nothing".into()));
    }
    Ok(w)
}

/// What to keep. `Default` is the empty policy, which keeps everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// The N newest snapshots.
    pub last: Option<i64>,
    /// The newest snapshot of each of the N newest hours that have one.
    pub hourly: Option<i64>,
    /// Likewise per day.
    pub daily: Option<i64>,
    /// Likewise per ISO 8601 week (weeks start on Monday; the days around
    /// New Year belong to the week-year of their Thursday).
    pub weekly: Option<i64>,
    /// Likewise per calendar month.
    pub monthly: Option<i64>,
    /// Likewise per calendar year.
    pub yearly: Option<i64>,
    /// Every snapshot within this duration of the group's newest snapshot.
    /// Relative to the newest snapshot rather than to now, as restic does, so
    /// a host whose backups stopped keeps its last stretch of history instead
    /// of watching it expire day by day.
    pub within: Option<KeepWithin>,
    /// Every snapshot carrying any of these tags (each pair is one rule).
    pub tags: Vec<(String, String)>,
    /// Fixed offset from UTC, in seconds, at which bucket boundaries and
    /// calendar months are computed (3600 = UTC+1). Default 0: UTC.
    pub utc_offset_secs: i32,
}

impl Policy {
    /// True when no rule is given (counts of 0 count as not given): such a
    /// policy keeps every snapshot, so a forgotten flag never empties a
    /// repository.
    pub fn is_empty(&self) -> bool {
        self.counts()
            .iter()
            .all(|(_, c)| matches!(c, None | Some(0)))
            && self.within.is_none()
            && self.tags.is_empty()
    }

    fn counts(&self) -> [(Rule, Option<i64>); 6] {
        [
            (Rule::Last, self.last),
            (Rule::Hourly, self.hourly),
            (Rule::Daily, self.daily),
            (Rule::Weekly, self.weekly),
            (Rule::Monthly, self.monthly),
            (Rule::Yearly, self.yearly),
        ]
    }

    fn offset(&self) -> Result<UtcOffset> {
        UtcOffset::from_whole_seconds(self.utc_offset_secs).map_err(|_| {
            Error::Usage(format!(
                "invalid UTC offset {} s: use whole seconds between -93599 and 93599 (e.g. 3600 for UTC+1)",
                self.utc_offset_secs
            ))
        })
    }

    fn validate(&self) -> Result<()> {
        for (rule, count) in self.counts() {
            if let Some(n) = count.filter(|&n| n < -1) {
                return Err(Error::Usage(format!(
                    "invalid --keep-{} {n}: use a number of snapshots, or -1 for unlimited",
                    rule.name()
                )));
            }
        }
        if self.within.is_some_and(|w| w.is_zero()) {
            return Err(Error::Usage(
                "invalid --keep-within: a zero duration would keep nothing; use e.g. 36h, 7d, 1y2m"
                    .into(),
            ));
        }
        self.offset().map(|_| ())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    Last,
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Rule {
    fn name(self) -> &'static str {
        match self {
            Rule::Last => "last",
            Rule::Hourly => "hourly",
            Rule::Daily => "daily",
            Rule::Weekly => "weekly",
            Rule::Monthly => "monthly",
            Rule::Yearly => "yearly",
        }
    }

    /// The bucket of the snapshot at position `nr` (newest first) with local
    /// time `t`. Keys only need to be equal within a bucket and to differ
    /// between buckets; `last` puts every snapshot in a bucket of its own.
    fn bucket(self, nr: usize, t: OffsetDateTime) -> i64 {
        let (y, m, d, h) = (
            i64::from(t.year()),
            i64::from(t.month() as u8),
            i64::from(t.day()),
            i64::from(t.hour()),
        );
        match self {
            Rule::Last => nr as i64,
            Rule::Hourly => ((y * 100 + m) * 100 + d) * 100 + h,
            Rule::Daily => (y * 100 + m) * 100 + d,
            Rule::Weekly => {
                let (week_year, week, _) = t.to_iso_week_date();
                i64::from(week_year) * 100 + i64::from(week)
            }
            Rule::Monthly => y * 100 + m,
            Rule::Yearly => y,
        }
    }
}

/// Which snapshots are judged together. The default, identity only, treats
/// each backup source as its own history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupBy {
    pub identity: bool,
    /// The host part of `user@host:/path`.
    pub host: bool,
    /// The path part of `user@host:/path`.
    pub path: bool,
    /// The whole tag set (snapshots with different tags are separate groups).
    pub tags: bool,
}

impl Default for GroupBy {
    fn default() -> Self {
        GroupBy {
            identity: true,
            host: false,
            path: false,
            tags: false,
        }
    }
}

impl GroupBy {
    /// Parses a comma list such as `host,tags` (`identity`, `host`, `path`,
    /// `tags`, at least one).
    pub fn parse(s: &str) -> Result<GroupBy> {
        let mut g = GroupBy {
            identity: false,
            host: false,
            path: false,
            tags: false,
        };
        for word in s.split(',') {
            match word.trim() {
                "identity" => g.identity = true,
                "host" => g.host = true,
                "path" => g.path = true,
                "tags" => g.tags = true,
                _ => {
                    return Err(Error::Usage(format!(
                        "invalid group-by {s:?}: use a comma list of identity, host, path, tags (e.g. host,tags)"
                    )))
                }
            }
        }
        Ok(g)
    }

    fn is_none(&self) -> bool {
        !(self.identity || self.host || self.path || self.tags)
    }

    fn key(&self, s: &SnapshotRecord) -> GroupKey {
        let (host, path) = host_and_path(&s.identity);
        GroupKey {
            identity: self.identity.then(|| s.identity.clone()),
            host: self.host.then(|| host.to_string()),
            path: self.path.then(|| path.to_string()),
            tags: self.tags.then(|| s.tags.clone()),
        }
    }
}

impl std::str::FromStr for GroupBy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        GroupBy::parse(s)
    }
}

/// Host and path of `user@host:/path`: the path is everything after the
/// first `:`, the host what lies between the last `@` before it and that
/// `:`. An identity of another shape is its own host and its own path, so it
/// still groups with itself and never with a different identity.
fn host_and_path(identity: &str) -> (&str, &str) {
    if let Some((prefix, path)) = identity.split_once(':') {
        if let Some((_, host)) = prefix.rsplit_once('@') {
            return (host, path);
        }
    }
    (identity, identity)
}

/// Grouping uses the exact values; [`GroupKey::render`] is for people.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct GroupKey {
    identity: Option<String>,
    host: Option<String>,
    path: Option<String>,
    tags: Option<BTreeMap<String, String>>,
}

impl GroupKey {
    /// `identity=alice@db1:/var/lib/pg`, `host=db1,tags=env=prod;team=db`
    /// (tags sorted by key and joined with `;`; no tags renders as `tags=`).
    fn render(&self) -> String {
        let mut parts = Vec::new();
        if let Some(i) = &self.identity {
            parts.push(format!("identity={i}"));
        }
        if let Some(h) = &self.host {
            parts.push(format!("host={h}"));
        }
        if let Some(p) = &self.path {
            parts.push(format!("path={p}"));
        }
        if let Some(t) = &self.tags {
            let tags: Vec<String> = t.iter().map(|(k, v)| format!("{k}={v}")).collect();
            parts.push(format!("tags={}", tags.join(";")));
        }
        parts.join(",")
    }
}

/// Which snapshots the policy looks at at all. Snapshots outside the
/// selection get no [`Decision`]: the caller must leave them alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Only this exact identity.
    pub identity: Option<String>,
    /// Only snapshots carrying all of these tags.
    pub tags: Vec<(String, String)>,
}

impl Selection {
    fn selects(&self, s: &SnapshotRecord) -> bool {
        self.identity.as_ref().is_none_or(|i| *i == s.identity)
            && self.tags.iter().all(|(k, v)| s.tags.get(k) == Some(v))
    }
}

/// The verdict on one selected snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub id: ObjectId,
    pub time: Timestamp,
    pub identity: String,
    /// The rendered group key, e.g. `identity=alice@db1:/var/lib/pg`.
    pub group: String,
    pub keep: bool,
    /// Every rule that keeps the snapshot, in the order `last`, `hourly`,
    /// `daily`, `weekly`, `monthly`, `yearly`, `within <D>`, then
    /// `tag <K=V>` in policy order; `no policy` for an empty policy; empty
    /// when the snapshot is forgotten.
    pub reasons: Vec<String>,
}

/// Applies `policy` to the selected snapshots, group by group.
///
/// Returns one decision per selected snapshot, ordered by group key, then
/// newest first. Refuses (with [`Error::Usage`]) an invalid policy, an empty
/// `group_by`, a snapshot id given twice, a time outside years -9999..=9999,
/// and, unless `allow_empty_group`, a policy that would forget every
/// snapshot of some group: a retention policy is there to thin out history,
/// and one that leaves a backup source with nothing is far more often a
/// mistyped tag than an intent.
pub fn decide(
    snapshots: &[SnapshotRecord],
    policy: &Policy,
    group_by: &GroupBy,
    selection: &Selection,
    allow_empty_group: bool,
) -> Result<Vec<Decision>> {
    policy.validate()?;
    let offset = policy.offset()?;
    if group_by.is_none() {
        return Err(Error::Usage(
            "nothing to group by: use one or more of identity, host, path, tags (e.g. identity)"
                .into(),
        ));
    }
    let mut seen = HashSet::new();
    let mut groups: BTreeMap<GroupKey, Vec<&SnapshotRecord>> = BTreeMap::new();
    for s in snapshots {
        if !seen.insert(s.id) {
            return Err(Error::Usage(format!(
                "snapshot {} appears twice in the input; give each snapshot once",
                s.id
            )));
        }
        if selection.selects(s) {
            groups.entry(group_by.key(s)).or_default().push(s);
        }
    }

    let mut out = Vec::new();
    let mut emptied = Vec::new();
    for (key, mut members) in groups {
        members.sort_by(|a, b| b.time.cmp(&a.time).then(b.id.cmp(&a.id)));
        let group = key.render();
        let reasons = group_reasons(&members, policy, offset)?;
        if reasons.iter().all(Vec::is_empty) {
            emptied.push((group.clone(), members.len()));
        }
        for (s, reasons) in members.into_iter().zip(reasons) {
            out.push(Decision {
                id: s.id,
                time: s.time,
                identity: s.identity.clone(),
                group: group.clone(),
                keep: !reasons.is_empty(),
                reasons,
            });
        }
    }
    if let Some((group, n)) = emptied.first().filter(|_| !allow_empty_group) {
        let more = match emptied.len() - 1 {
            0 => String::new(),
            k => format!(" (and {k} more group(s))"),
        };
        return Err(Error::Usage(format!(
            "the policy would forget all {n} snapshot(s) of group {group}{more}; pass --allow-empty-group to forget them all"
        )));
    }
    Ok(out)
}

/// The snapshot's time at the policy's offset, if the calendar can hold it.
fn local_time(t: Timestamp, offset: UtcOffset) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(t.secs)
        .ok()?
        .checked_to_offset(offset)
}

/// Reasons for each member of one group (sorted newest first); an empty
/// list means forget.
fn group_reasons(
    members: &[&SnapshotRecord],
    policy: &Policy,
    offset: UtcOffset,
) -> Result<Vec<Vec<String>>> {
    if policy.is_empty() {
        return Ok(vec![vec!["no policy".to_string()]; members.len()]);
    }
    let Some(newest) = members.first() else {
        return Ok(Vec::new());
    };
    // Per bucket rule: buckets still to fill (None = unlimited) and the
    // bucket of the last snapshot it kept.
    let mut rules: Vec<(Rule, Option<u64>, Option<i64>)> = policy
        .counts()
        .into_iter()
        .filter_map(|(rule, count)| match count {
            Some(-1) => Some((rule, None, None)),
            Some(n) if n > 0 => Some((rule, Some(n as u64), None)),
            _ => None,
        })
        .collect();
    let cutoff = policy
        .within
        .map(|w| (w, w.cutoff_nanos(newest.time, offset)));
    let mut tag_rules: Vec<&(String, String)> = Vec::new();
    for t in &policy.tags {
        if !tag_rules.contains(&t) {
            tag_rules.push(t);
        }
    }

    let mut out = Vec::with_capacity(members.len());
    for (nr, s) in members.iter().enumerate() {
        let local = local_time(s.time, offset).ok_or_else(|| {
            Error::Usage(format!(
                "snapshot {} has a time outside the years -9999..9999 ({} s since 1970), which no calendar bucket holds",
                s.id, s.time.secs
            ))
        })?;
        let mut reasons = Vec::new();
        for (rule, left, last) in rules.iter_mut() {
            if *left == Some(0) {
                continue;
            }
            let bucket = rule.bucket(nr, local);
            // As restic 0.17 and later: a rule with buckets still to fill
            // when the history runs out also keeps the group's oldest
            // snapshot (`--keep-monthly 12` over three months keeps the
            // first month's start), so a young repository keeps the
            // longest history its counts allow.
            let oldest = nr + 1 == members.len();
            let new_bucket = *last != Some(bucket);
            if new_bucket || oldest {
                *last = Some(bucket);
                if let Some(n) = left {
                    *n -= 1;
                }
                reasons.push(if new_bucket {
                    rule.name().to_string()
                } else {
                    format!("oldest {}", rule.name())
                });
            }
        }
        if let Some((w, cutoff)) = cutoff {
            if cutoff.is_none_or(|c| s.time.as_nanos() > c) {
                reasons.push(format!("within {w}"));
            }
        }
        for (k, v) in &tag_rules {
            if s.tags.get(k) == Some(v) {
                reasons.push(format!("tag {k}={v}"));
            }
        }
        out.push(reasons);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ts(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap_or_else(|| panic!("bad test time {s}"))
    }

    /// A snapshot whose id is 32 copies of `n`, so tests name them by `n`.
    fn snap(n: u8, time: &str, identity: &str, tags: &[(&str, &str)]) -> SnapshotRecord {
        SnapshotRecord {
            v: 1,
            id: ObjectId([n; 32]),
            time: ts(time),
            identity: identity.into(),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            files: 0,
            dirs: 0,
            bytes: 0,
            errors: 0,
            new_bytes: None,
            stored_bytes: None,
            new_chunks: None,
            unmodified_files: None,
            excluded: 0,
            duration_s: None,
        }
    }

    const ID: &str = "alice@db1:/var/lib/pg";

    /// Snapshots of one identity at the given times, ids 1, 2, 3… in order.
    fn series(times: &[&str]) -> Vec<SnapshotRecord> {
        times
            .iter()
            .enumerate()
            .map(|(i, t)| snap(i as u8 + 1, t, ID, &[]))
            .collect()
    }

    fn run(snaps: &[SnapshotRecord], policy: &Policy) -> Vec<Decision> {
        decide(
            snaps,
            policy,
            &GroupBy::default(),
            &Selection::default(),
            false,
        )
        .unwrap()
    }

    /// (id number, reasons) of the kept snapshots, in output order.
    fn kept(d: &[Decision]) -> Vec<(u8, Vec<&str>)> {
        d.iter()
            .filter(|d| d.keep)
            .map(|d| (d.id.0[0], d.reasons.iter().map(String::as_str).collect()))
            .collect()
    }

    fn kept_ids(d: &[Decision]) -> Vec<u8> {
        kept(d).into_iter().map(|(n, _)| n).collect()
    }

    fn usage_message(r: Result<impl fmt::Debug>) -> String {
        match r {
            Err(Error::Usage(m)) => m,
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    // ---- duration parser ----

    fn within(y: u32, m: u32, w: u32, d: u32, h: u32) -> KeepWithin {
        KeepWithin {
            years: y,
            months: m,
            weeks: w,
            days: d,
            hours: h,
        }
    }

    #[test]
    fn parse_within_accepts() {
        for (text, want, shown) in [
            ("36h", within(0, 0, 0, 0, 36), "36h"),
            ("7d", within(0, 0, 0, 7, 0), "7d"),
            ("2w", within(0, 0, 2, 0, 0), "2w"),
            ("1mo", within(0, 1, 0, 0, 0), "1mo"),
            ("1y", within(1, 0, 0, 0, 0), "1y"),
            ("1y2mo", within(1, 2, 0, 0, 0), "1y2mo"),
            ("1y2mo3d4h", within(1, 2, 0, 3, 4), "1y2mo3d4h"),
            ("1y2mo1w3d4h", within(1, 2, 1, 3, 4), "1y2mo1w3d4h"),
            ("2mo1y", within(1, 2, 0, 0, 0), "1y2mo"),
            ("4h3d", within(0, 0, 0, 3, 4), "3d4h"),
            ("007d", within(0, 0, 0, 7, 0), "7d"),
            ("1y0mo", within(1, 0, 0, 0, 0), "1y"),
            ("0d36h", within(0, 0, 0, 0, 36), "36h"),
            (" 7d\n", within(0, 0, 0, 7, 0), "7d"),
            ("4294967295h", within(0, 0, 0, 0, u32::MAX), "4294967295h"),
        ] {
            let got = parse_within(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(got, want, "{text:?}");
            assert_eq!(got.to_string(), shown, "{text:?}");
            assert_eq!(text.parse::<KeepWithin>().unwrap(), want);
        }
    }

    #[test]
    fn parse_within_rejects() {
        for (text, detail) in [
            ("", "it is empty"),
            ("   ", "it is empty"),
            ("7", "the number 7 has no unit"),
            ("1y2mo34", "the number 34 has no unit"),
            ("1m", crate::format::duration::AMBIGUOUS_M),
            ("30m", crate::format::duration::AMBIGUOUS_M),
            ("7x", "unknown unit \"x\""),
            ("7D", "unknown unit \"D\""),
            ("7s", "retention counts whole hours, not s"),
            ("7 d", "unknown unit \" \""),
            ("1.5d", "unknown unit \".\""),
            ("1d7x", "unknown unit \"x\""),
            ("7dd", "unknown unit \"dd\""),
            ("d", "expected a number at \"d\""),
            ("d7", "expected a number at \"d7\""),
            ("-7d", "expected a number at \"-7d\""),
            ("+7d", "expected a number at \"+7d\""),
            ("７d", "expected a number at \"７d\""),
            ("1d 2h", "expected a number at \" 2h\""),
            ("1d2d", "unit \"d\" appears twice"),
            ("1y2y", "unit \"y\" appears twice"),
            ("0d", "it is zero, which would keep nothing"),
            ("0y0mo0w0d0h", "it is zero, which would keep nothing"),
            (
                "4294967296h",
                "4294967296 is too large (at most 4294967295)",
            ),
            (
                "99999999999999999999d",
                "99999999999999999999 is too large (at most 4294967295)",
            ),
        ] {
            let msg = usage_message(parse_within(text));
            assert_eq!(
                msg,
                format!("invalid duration {text:?}: {detail}; use numbers with units h, d, w, mo, y (e.g. 36h, 7d, 1y2mo)"),
            );
        }
        // The shape the operator sees, in full, for the common typo.
        assert_eq!(
            usage_message(parse_within("7x")),
            "invalid duration \"7x\": unknown unit \"x\"; use numbers with units h, d, w, mo, y (e.g. 36h, 7d, 1y2mo)"
        );
    }

    // ---- single rules ----

    #[test]
    fn keep_last() {
        let snaps = series(&[
            "2026-01-01T00:00:00Z",
            "2026-01-03T00:00:00Z",
            "2026-01-02T00:00:00Z",
            "2026-01-05T00:00:00Z",
            "2026-01-04T00:00:00Z",
        ]);
        let d = run(
            &snaps,
            &Policy {
                last: Some(2),
                ..Policy::default()
            },
        );
        // Output is newest first: 4 (01-05), 5 (01-04), 3, 2, 1.
        assert_eq!(
            d.iter().map(|d| d.id.0[0]).collect::<Vec<_>>(),
            [4, 5, 2, 3, 1]
        );
        assert_eq!(kept(&d), [(4, vec!["last"]), (5, vec!["last"])]);
        assert!(d[2..].iter().all(|d| d.reasons.is_empty()));
    }

    #[test]
    fn equal_times_order_by_id_descending() {
        let t = "2026-01-01T00:00:00Z";
        let snaps = vec![
            snap(3, t, ID, &[]),
            snap(7, t, ID, &[]),
            snap(5, t, ID, &[]),
        ];
        let d = run(
            &snaps,
            &Policy {
                last: Some(1),
                ..Policy::default()
            },
        );
        assert_eq!(d.iter().map(|d| d.id.0[0]).collect::<Vec<_>>(), [7, 5, 3]);
        assert_eq!(kept_ids(&d), [7]);
    }

    #[test]
    fn hourly_skips_empty_hours() {
        let snaps = series(&[
            "2026-01-01T10:05:00Z", // 1
            "2026-01-01T10:40:00Z", // 2
            "2026-01-01T11:10:00Z", // 3
            "2026-01-01T13:59:59Z", // 4
            "2026-01-01T14:00:00Z", // 5
        ]);
        // Hours with snapshots, newest first: 14 (5), 13 (4), 11 (3), 10 (2, 1).
        // Hour 12 has none and uses no count, so the third is hour 11.
        let d = run(
            &snaps,
            &Policy {
                hourly: Some(3),
                ..Policy::default()
            },
        );
        assert_eq!(kept_ids(&d), [5, 4, 3]);
    }

    #[test]
    fn daily_skips_empty_days_and_keeps_newest_of_each() {
        let snaps = series(&[
            "2026-01-01T12:00:00Z", // 1
            "2026-01-02T08:00:00Z", // 2
            "2026-01-02T20:00:00Z", // 3
            "2026-01-05T09:00:00Z", // 4
            "2026-01-09T23:59:59Z", // 5
            "2026-01-10T00:00:00Z", // 6
            "2026-01-10T06:00:00Z", // 7
        ]);
        // Days with snapshots: 10th (7 newest), 9th (5), 5th (4), 2nd, 1st.
        let d = run(
            &snaps,
            &Policy {
                daily: Some(3),
                ..Policy::default()
            },
        );
        assert_eq!(
            kept(&d),
            [(7, vec!["daily"]), (5, vec!["daily"]), (4, vec!["daily"])]
        );
        // Unlimited: one per day with a snapshot, the newest of that day.
        let d = run(
            &snaps,
            &Policy {
                daily: Some(-1),
                ..Policy::default()
            },
        );
        assert_eq!(kept_ids(&d), [7, 5, 4, 3, 1]);
    }

    #[test]
    fn weekly_uses_iso_weeks_across_new_year() {
        let snaps = series(&[
            "2025-12-22T12:00:00Z", // 1: Mon, 2025-W52
            "2025-12-28T12:00:00Z", // 2: Sun, 2025-W52
            "2025-12-29T12:00:00Z", // 3: Mon, 2026-W01
            "2026-01-01T12:00:00Z", // 4: Thu, 2026-W01
            "2026-01-04T12:00:00Z", // 5: Sun, 2026-W01
            "2026-01-06T12:00:00Z", // 6: Tue, 2026-W02
        ]);
        // Weeks: W02 (6), W01 (5, 4, 3: newest is 5), W52 (2, 1: newest 2).
        // Week numbers paired with the calendar year would split 2025-12-29
        // from 2026-W01 and keep 3 instead of 2.
        let d = run(
            &snaps,
            &Policy {
                weekly: Some(3),
                ..Policy::default()
            },
        );
        assert_eq!(kept_ids(&d), [6, 5, 2]);

        // 2020 has a week 53 that runs to Sunday 2021-01-03.
        let snaps = series(&[
            "2020-12-31T12:00:00Z", // 1: 2020-W53
            "2021-01-03T12:00:00Z", // 2: 2020-W53
            "2021-01-04T12:00:00Z", // 3: 2021-W01
        ]);
        let d = run(
            &snaps,
            &Policy {
                weekly: Some(5),
                ..Policy::default()
            },
        );
        // W01 (3), W53 (2), and 1, the oldest, while counts are left.
        assert_eq!(kept_ids(&d), [3, 2, 1]);
    }

    #[test]
    fn restic_0_17_keeps_the_oldest_while_a_rule_has_counts_left() {
        // Three months of daily backups: --keep-monthly 12 keeps each
        // month's newest and, with 9 counts unused, the very first backup.
        let snaps = series(&[
            "2026-01-01T03:00:00Z", // 1: the oldest
            "2026-01-20T03:00:00Z", // 2
            "2026-02-14T03:00:00Z", // 3
            "2026-03-02T03:00:00Z", // 4
            "2026-03-30T03:00:00Z", // 5
        ]);
        let d = run(
            &snaps,
            &Policy {
                monthly: Some(12),
                ..Policy::default()
            },
        );
        assert_eq!(
            kept(&d),
            [
                (5, vec!["monthly"]),
                (3, vec!["monthly"]),
                (2, vec!["monthly"]),
                (1, vec!["oldest monthly"]),
            ]
        );
        // Counts used up before the history ends: the oldest goes.
        let d = run(
            &snaps,
            &Policy {
                monthly: Some(3),
                ..Policy::default()
            },
        );
        assert_eq!(kept_ids(&d), [5, 3, 2]);
    }

    #[test]
    fn monthly_and_yearly() {
        let snaps = series(&[
            "2026-01-15T00:00:00Z", // 1
            "2026-01-31T23:59:59Z", // 2
            "2026-02-10T00:00:00Z", // 3
            "2026-04-01T00:00:00Z", // 4
            "2026-04-30T00:00:00Z", // 5
        ]);
        // Months: April (5), February (3), January (2); March has none.
        // With counts left when the history ends, the oldest (1) is kept
        // too (restic 0.17's rule).
        let monthly = |n| {
            kept_ids(&run(
                &snaps,
                &Policy {
                    monthly: Some(n),
                    ..Policy::default()
                },
            ))
        };
        assert_eq!(monthly(2), [5, 3]);
        assert_eq!(monthly(3), [5, 3, 2]);
        assert_eq!(monthly(-1), [5, 3, 2, 1]);
        assert_eq!(monthly(10), [5, 3, 2, 1]);

        let snaps = series(&[
            "2023-06-01T00:00:00Z", // 1
            "2023-12-31T23:59:00Z", // 2
            "2024-01-01T00:00:00Z", // 3
            "2025-07-01T00:00:00Z", // 4
        ]);
        let yearly = |n, offset| {
            kept_ids(&run(
                &snaps,
                &Policy {
                    yearly: Some(n),
                    utc_offset_secs: offset,
                    ..Policy::default()
                },
            ))
        };
        assert_eq!(yearly(2, 0), [4, 3]);
        assert_eq!(yearly(3, 0), [4, 3, 2]);
        // At UTC+1, 2023-12-31T23:59Z is already 2024: 2023 keeps only 1.
        assert_eq!(yearly(3, 3600), [4, 3, 1]);
    }

    #[test]
    fn utc_offset_moves_day_boundaries() {
        let snaps = series(&[
            "2026-03-10T22:30:00Z", // 1
            "2026-03-10T23:30:00Z", // 2
            "2026-03-11T00:30:00Z", // 3
        ]);
        let daily = |offset| {
            kept_ids(&run(
                &snaps,
                &Policy {
                    daily: Some(5),
                    utc_offset_secs: offset,
                    ..Policy::default()
                },
            ))
        };
        // UTC: the 11th (3) and the 10th (2), and the oldest (1) since
        // counts are left.
        assert_eq!(daily(0), [3, 2, 1]);
        // UTC+2: 00:30, 01:30, 02:30 on the 11th: one day, and the oldest.
        assert_eq!(daily(7200), [3, 1]);
        // UTC-1: 21:30, 22:30, 23:30 on the 10th: one day, and the oldest.
        assert_eq!(daily(-3600), [3, 1]);
        // UTC+1:30 (a non-hour offset): 00:00, 01:00, 02:00 on the 11th.
        assert_eq!(daily(5400), [3, 1]);
    }

    #[test]
    fn unlimited_last_keeps_all() {
        let snaps = series(&["2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z"]);
        let d = run(
            &snaps,
            &Policy {
                last: Some(-1),
                ..Policy::default()
            },
        );
        assert_eq!(kept(&d), [(2, vec!["last"]), (1, vec!["last"])]);
    }

    #[test]
    fn within_is_relative_to_the_newest_and_strict() {
        let snaps = series(&[
            "2026-01-08T23:59:59Z", // 1: outside
            "2026-01-09T00:00:00Z", // 2: exactly the cutoff: outside
            "2026-01-09T00:00:01Z", // 3: inside
            "2026-01-10T12:00:00Z", // 4: newest
        ]);
        // Newest 2026-01-10T12:00 − 36h = 2026-01-09T00:00. These times are
        // years before "now": only the newest snapshot counts, not the clock.
        let d = run(
            &snaps,
            &Policy {
                within: Some(parse_within("36h").unwrap()),
                ..Policy::default()
            },
        );
        assert_eq!(kept(&d), [(4, vec!["within 36h"]), (3, vec!["within 36h"])]);
    }

    #[test]
    fn within_months_clamp_to_month_end() {
        let snaps = series(&[
            "2026-02-28T11:59:59Z", // 1: before the cutoff
            "2026-02-28T12:00:00Z", // 2: the cutoff itself
            "2026-02-28T12:00:01Z", // 3
            "2026-03-01T00:00:00Z", // 4: restic's Go AddDate cutoff (03-03) would drop it
            "2026-03-31T12:00:00Z", // 5: newest
        ]);
        // 2026-03-31 − 1 month = 2026-02-31, clamped to 2026-02-28 12:00.
        let d = run(
            &snaps,
            &Policy {
                within: Some(parse_within("1mo").unwrap()),
                ..Policy::default()
            },
        );
        assert_eq!(kept_ids(&d), [5, 4, 3]);

        // Long months are not clamped: 2026-08-31 − 1m = 2026-07-31, and
        // 2026-05-31 − 1m clamps only to April's 30th.
        let snaps = series(&[
            "2026-04-29T23:00:00Z", // 1
            "2026-04-30T12:00:00Z", // 2: the cutoff for 05-31
            "2026-04-30T12:00:01Z", // 3
            "2026-05-31T12:00:00Z", // 4
            "2026-07-31T12:00:00Z", // 5: the cutoff for 08-31
            "2026-07-31T12:00:01Z", // 6
            "2026-08-31T12:00:00Z", // 7
        ]);
        let within_1m = |snaps: &[SnapshotRecord]| {
            kept_ids(&run(
                snaps,
                &Policy {
                    within: Some(parse_within("1mo").unwrap()),
                    ..Policy::default()
                },
            ))
        };
        assert_eq!(within_1m(&snaps), [7, 6]);
        assert_eq!(within_1m(&snaps[..4]), [4, 3]);

        // Leap day minus a year: 2023-02-28.
        let snaps = series(&[
            "2023-02-28T00:00:00Z", // 1: the cutoff
            "2023-02-28T00:00:01Z", // 2
            "2024-02-29T00:00:00Z", // 3
        ]);
        let d = run(
            &snaps,
            &Policy {
                within: Some(parse_within("1y").unwrap()),
                ..Policy::default()
            },
        );
        assert_eq!(kept_ids(&d), [3, 2]);

        // Months first (clamped), then days: 03-31 − 1m = 02-28, − 1d = 02-27.
        let snaps = series(&[
            "2026-02-27T12:00:00Z", // 1: the cutoff
            "2026-02-27T12:00:01Z", // 2
            "2026-03-31T12:00:00Z", // 3
        ]);
        let d = run(
            &snaps,
            &Policy {
                within: Some(parse_within("1mo1d").unwrap()),
                ..Policy::default()
            },
        );
        assert_eq!(kept_ids(&d), [3, 2]);
    }

    #[test]
    fn within_all_units() {
        // 2026-05-10T10:00 − 1y2m = 2025-03-10T10:00, − 1w3d = 2025-02-28T10:00,
        // − 4h = 2025-02-28T06:00.
        let snaps = series(&[
            "2025-02-28T06:00:00Z",           // 1: the cutoff
            "2025-02-28T06:00:00.000000001Z", // 2
            "2026-05-10T10:00:00Z",           // 3
        ]);
        let d = run(
            &snaps,
            &Policy {
                within: Some(parse_within("1y2mo1w3d4h").unwrap()),
                ..Policy::default()
            },
        );
        assert_eq!(
            kept(&d),
            [
                (3, vec!["within 1y2mo1w3d4h"]),
                (2, vec!["within 1y2mo1w3d4h"])
            ]
        );
        // A duration longer than the calendar keeps everything.
        let d = run(
            &snaps,
            &Policy {
                within: Some(within(u32::MAX, 0, 0, 0, 0)),
                ..Policy::default()
            },
        );
        assert_eq!(kept_ids(&d), [3, 2, 1]);
    }

    #[test]
    fn within_months_use_the_offset_calendar() {
        // Calendar months are taken at the policy's offset. Newest
        // 2026-03-30T23:00Z: in UTC, 03-30 − 1m = 02-30 → 02-28T23:00Z. At
        // UTC+2 it is 03-31T01:00 local, − 1m = 02-31 → 02-28T01:00 local =
        // 02-27T23:00Z, an earlier cutoff that takes in snapshot 1.
        let snaps = series(&[
            "2026-02-28T00:00:00Z", // 1: inside at UTC+2 only
            "2026-03-30T23:00:00Z", // 2: newest
        ]);
        let within_1m = |offset| {
            kept_ids(&run(
                &snaps,
                &Policy {
                    within: Some(parse_within("1mo").unwrap()),
                    utc_offset_secs: offset,
                    ..Policy::default()
                },
            ))
        };
        assert_eq!(within_1m(0), [2]);
        assert_eq!(within_1m(7200), [2, 1]);
    }

    #[test]
    fn keep_tag() {
        let snaps = vec![
            snap(1, "2026-01-01T00:00:00Z", ID, &[("env", "prod")]),
            snap(2, "2026-01-02T00:00:00Z", ID, &[("env", "dev")]),
            snap(3, "2026-01-03T00:00:00Z", ID, &[]),
            snap(
                4,
                "2026-01-04T00:00:00Z",
                ID,
                &[("env", "prod"), ("keep", "yes")],
            ),
            snap(5, "2026-01-05T00:00:00Z", ID, &[("keep", "yes")]),
        ];
        let d = run(
            &snaps,
            &Policy {
                tags: vec![
                    ("env".into(), "prod".into()),
                    ("keep".into(), "yes".into()),
                    ("env".into(), "prod".into()),
                ],
                ..Policy::default()
            },
        );
        assert_eq!(
            kept(&d),
            [
                (5, vec!["tag keep=yes"]),
                (4, vec!["tag env=prod", "tag keep=yes"]),
                (1, vec!["tag env=prod"]),
            ]
        );
    }

    // ---- combinations ----

    #[test]
    fn last_and_daily_overlap_with_every_reason() {
        let snaps = vec![
            snap(1, "2026-01-01T12:00:00Z", ID, &[]),                // e
            snap(2, "2026-01-02T07:00:00Z", ID, &[]),                // d
            snap(3, "2026-01-02T20:00:00Z", ID, &[]),                // c
            snap(4, "2026-01-03T08:00:00Z", ID, &[]),                // b
            snap(5, "2026-01-03T18:00:00Z", ID, &[("env", "prod")]), // a
        ];
        // last 2 → 5, 4. daily 3 → newest of the 3rd (5), 2nd (3), 1st (1).
        // within 1d of 01-03T18:00 → after 01-02T18:00: 5, 4, 3.
        let d = run(
            &snaps,
            &Policy {
                last: Some(2),
                daily: Some(3),
                within: Some(parse_within("1d").unwrap()),
                tags: vec![("env".into(), "prod".into())],
                ..Policy::default()
            },
        );
        assert_eq!(
            kept(&d),
            [
                (5, vec!["last", "daily", "within 1d", "tag env=prod"]),
                (4, vec!["last", "within 1d"]),
                (3, vec!["daily", "within 1d"]),
                (1, vec!["daily"]),
            ]
        );
        assert!(!d.iter().find(|d| d.id.0[0] == 2).unwrap().keep);
    }

    #[test]
    fn every_bucket_rule_together() {
        let snaps = series(&[
            "2024-06-15T10:00:00Z", // 1
            "2025-11-20T10:00:00Z", // 2
            "2025-12-30T10:00:00Z", // 3
            "2026-01-06T09:00:00Z", // 4
            "2026-01-06T10:30:00Z", // 5
            "2026-01-07T08:00:00Z", // 6
            "2026-01-07T09:15:00Z", // 7
            "2026-01-07T09:45:00Z", // 8
        ]);
        // hourly 2: 09h of the 7th (8), 08h (6).
        // daily 2: the 7th (8), the 6th (5).
        // weekly 2: 2026-W02 (8), 2026-W01 (3: 2025-12-30 is in 2026-W01).
        // monthly 3: 2026-01 (8), 2025-12 (3), 2025-11 (2).
        // yearly 3: 2026 (8), 2025 (3), 2024 (1).
        let d = run(
            &snaps,
            &Policy {
                hourly: Some(2),
                daily: Some(2),
                weekly: Some(2),
                monthly: Some(3),
                yearly: Some(3),
                ..Policy::default()
            },
        );
        assert_eq!(
            kept(&d),
            [
                (8, vec!["hourly", "daily", "weekly", "monthly", "yearly"]),
                (6, vec!["hourly"]),
                (5, vec!["daily"]),
                (3, vec!["weekly", "monthly", "yearly"]),
                (2, vec!["monthly"]),
                (1, vec!["yearly"]),
            ]
        );
    }

    #[test]
    fn empty_policy_keeps_everything() {
        let snaps = series(&["2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"]);
        for policy in [
            Policy::default(),
            Policy {
                last: Some(0),
                daily: Some(0),
                utc_offset_secs: 3600,
                ..Policy::default()
            },
        ] {
            assert!(policy.is_empty());
            let d = run(&snaps, &policy);
            assert_eq!(kept(&d), [(2, vec!["no policy"]), (1, vec!["no policy"])]);
        }
        assert!(!Policy {
            last: Some(-1),
            ..Policy::default()
        }
        .is_empty());
        assert!(!Policy {
            tags: vec![("a".into(), "b".into())],
            ..Policy::default()
        }
        .is_empty());
    }

    // ---- grouping and selection ----

    fn fleet() -> Vec<SnapshotRecord> {
        vec![
            snap(
                1,
                "2026-01-01T00:00:00Z",
                "alice@db1:/var/lib/pg",
                &[("env", "prod")],
            ),
            snap(2, "2026-01-02T00:00:00Z", "alice@db1:/var/lib/pg", &[]),
            snap(
                3,
                "2026-01-03T00:00:00Z",
                "bob@db1:/etc",
                &[("env", "prod")],
            ),
            snap(4, "2026-01-04T00:00:00Z", "alice@web:/var/lib/pg", &[]),
            snap(5, "2026-01-05T00:00:00Z", "weird-id", &[("env", "prod")]),
            snap(6, "2026-01-06T00:00:00Z", "bob@db1:/etc", &[]),
        ]
    }

    fn groups_of(d: &[Decision]) -> Vec<(String, u8, bool)> {
        d.iter()
            .map(|d| (d.group.clone(), d.id.0[0], d.keep))
            .collect()
    }

    fn last1(group_by: &str) -> Vec<(String, u8, bool)> {
        let d = decide(
            &fleet(),
            &Policy {
                last: Some(1),
                ..Policy::default()
            },
            &GroupBy::parse(group_by).unwrap(),
            &Selection::default(),
            false,
        )
        .unwrap();
        groups_of(&d)
    }

    fn row(g: &str, n: u8, keep: bool) -> (String, u8, bool) {
        (g.to_string(), n, keep)
    }

    #[test]
    fn group_by_identity() {
        assert_eq!(
            last1("identity"),
            [
                row("identity=alice@db1:/var/lib/pg", 2, true),
                row("identity=alice@db1:/var/lib/pg", 1, false),
                row("identity=alice@web:/var/lib/pg", 4, true),
                row("identity=bob@db1:/etc", 6, true),
                row("identity=bob@db1:/etc", 3, false),
                row("identity=weird-id", 5, true),
            ]
        );
    }

    #[test]
    fn group_by_host() {
        assert_eq!(
            last1("host"),
            [
                row("host=db1", 6, true),
                row("host=db1", 3, false),
                row("host=db1", 2, false),
                row("host=db1", 1, false),
                row("host=web", 4, true),
                row("host=weird-id", 5, true),
            ]
        );
    }

    #[test]
    fn group_by_path() {
        assert_eq!(
            last1("path"),
            [
                row("path=/etc", 6, true),
                row("path=/etc", 3, false),
                row("path=/var/lib/pg", 4, true),
                row("path=/var/lib/pg", 2, false),
                row("path=/var/lib/pg", 1, false),
                row("path=weird-id", 5, true),
            ]
        );
    }

    #[test]
    fn group_by_tags_and_host_with_tags() {
        assert_eq!(
            last1("tags"),
            [
                row("tags=", 6, true),
                row("tags=", 4, false),
                row("tags=", 2, false),
                row("tags=env=prod", 5, true),
                row("tags=env=prod", 3, false),
                row("tags=env=prod", 1, false),
            ]
        );
        assert_eq!(
            last1(" tags, host "),
            [
                row("host=db1,tags=", 6, true),
                row("host=db1,tags=", 2, false),
                row("host=db1,tags=env=prod", 3, true),
                row("host=db1,tags=env=prod", 1, false),
                row("host=web,tags=", 4, true),
                row("host=weird-id,tags=env=prod", 5, true),
            ]
        );
        let mut two_tags = fleet();
        two_tags[0].tags.insert("team".into(), "db".into());
        let d = decide(
            &two_tags[..1],
            &Policy::default(),
            &GroupBy::parse("identity,tags").unwrap(),
            &Selection::default(),
            false,
        )
        .unwrap();
        assert_eq!(
            d[0].group,
            "identity=alice@db1:/var/lib/pg,tags=env=prod;team=db"
        );
    }

    #[test]
    fn host_and_path_split() {
        assert_eq!(
            host_and_path("alice@db1:/var/lib/pg"),
            ("db1", "/var/lib/pg")
        );
        assert_eq!(host_and_path("a@b@h:/p:q"), ("h", "/p:q"));
        assert_eq!(host_and_path("alice@db1:stdin-name"), ("db1", "stdin-name"));
        assert_eq!(host_and_path("weird-id"), ("weird-id", "weird-id"));
        assert_eq!(host_and_path("db1:/x@y"), ("db1:/x@y", "db1:/x@y"));
    }

    #[test]
    fn group_by_parse() {
        assert_eq!(GroupBy::parse("identity").unwrap(), GroupBy::default());
        assert_eq!(
            "host,path,tags".parse::<GroupBy>().unwrap(),
            GroupBy {
                identity: false,
                host: true,
                path: true,
                tags: true
            }
        );
        for bad in ["", "host,", "hosts", "identity,paths", "Host"] {
            assert_eq!(
                usage_message(GroupBy::parse(bad)),
                format!("invalid group-by {bad:?}: use a comma list of identity, host, path, tags (e.g. host,tags)")
            );
        }
    }

    #[test]
    fn selection_filters_what_is_judged() {
        let policy = Policy {
            last: Some(1),
            ..Policy::default()
        };
        let by_identity = Selection {
            identity: Some("bob@db1:/etc".into()),
            tags: vec![],
        };
        let d = decide(&fleet(), &policy, &GroupBy::default(), &by_identity, false).unwrap();
        assert_eq!(
            groups_of(&d),
            [
                row("identity=bob@db1:/etc", 6, true),
                row("identity=bob@db1:/etc", 3, false)
            ]
        );
        let by_tag = Selection {
            identity: None,
            tags: vec![("env".into(), "prod".into())],
        };
        let d = decide(
            &fleet(),
            &policy,
            &GroupBy::parse("host").unwrap(),
            &by_tag,
            false,
        )
        .unwrap();
        assert_eq!(
            groups_of(&d),
            [
                row("host=db1", 3, true),
                row("host=db1", 1, false),
                row("host=weird-id", 5, true)
            ]
        );
        let both = Selection {
            identity: Some("alice@db1:/var/lib/pg".into()),
            tags: vec![("env".into(), "prod".into()), ("team".into(), "db".into())],
        };
        assert!(decide(&fleet(), &policy, &GroupBy::default(), &both, false)
            .unwrap()
            .is_empty());
    }

    // ---- safety and validation ----

    #[test]
    fn refuses_to_empty_a_group_unless_allowed() {
        let policy = Policy {
            tags: vec![("env".into(), "prod".into())],
            ..Policy::default()
        };
        let msg = usage_message(decide(
            &fleet(),
            &policy,
            &GroupBy::default(),
            &Selection::default(),
            false,
        ));
        // alice@db1 has a prod snapshot; alice@web does not (and bob@db1 does).
        assert_eq!(
            msg,
            "the policy would forget all 1 snapshot(s) of group identity=alice@web:/var/lib/pg; pass --allow-empty-group to forget them all"
        );
        let msg = usage_message(decide(
            &fleet(),
            &policy,
            &GroupBy::parse("tags").unwrap(),
            &Selection::default(),
            false,
        ));
        assert_eq!(
            msg,
            "the policy would forget all 3 snapshot(s) of group tags=; pass --allow-empty-group to forget them all"
        );
        let mut fleet2 = fleet();
        fleet2[2].tags.clear();
        let msg = usage_message(decide(
            &fleet2,
            &policy,
            &GroupBy::default(),
            &Selection::default(),
            false,
        ));
        assert!(
            msg.contains("group identity=alice@web:/var/lib/pg (and 1 more group(s));"),
            "{msg}"
        );

        let d = decide(
            &fleet(),
            &policy,
            &GroupBy::default(),
            &Selection::default(),
            true,
        )
        .unwrap();
        assert_eq!(d.len(), 6);
        assert_eq!(kept_ids(&d), [1, 3, 5]);
    }

    #[test]
    fn refuses_bad_input() {
        let snaps = series(&["2026-01-01T00:00:00Z"]);
        let try_policy = |p: Policy| {
            decide(
                &snaps,
                &p,
                &GroupBy::default(),
                &Selection::default(),
                false,
            )
        };
        assert_eq!(
            usage_message(try_policy(Policy {
                daily: Some(-2),
                ..Policy::default()
            })),
            "invalid --keep-daily -2: use a number of snapshots, or -1 for unlimited"
        );
        assert!(usage_message(try_policy(Policy {
            within: Some(KeepWithin::default()),
            ..Policy::default()
        }))
        .contains("zero duration"));
        assert!(usage_message(try_policy(Policy {
            utc_offset_secs: 100_000,
            ..Policy::default()
        }))
        .starts_with("invalid UTC offset 100000 s"));
        assert!(usage_message(decide(
            &snaps,
            &Policy::default(),
            &GroupBy::parse("host")
                .map(|mut g| {
                    g.host = false;
                    g
                })
                .unwrap(),
            &Selection::default(),
            false
        ))
        .starts_with("nothing to group by"));
        let twice = vec![snaps[0].clone(), snaps[0].clone()];
        assert!(usage_message(decide(
            &twice,
            &Policy::default(),
            &GroupBy::default(),
            &Selection::default(),
            false
        ))
        .contains("appears twice"));
        let mut far = snaps[0].clone();
        far.time.secs = i64::MAX;
        assert!(usage_message(decide(
            &[far],
            &Policy {
                last: Some(1),
                ..Policy::default()
            },
            &GroupBy::default(),
            &Selection::default(),
            false
        ))
        .contains("outside the years"));
    }

    #[test]
    fn decision_json_shape() {
        let snaps = series(&["2026-01-01T00:00:00Z"]);
        let d = run(
            &snaps,
            &Policy {
                last: Some(1),
                ..Policy::default()
            },
        );
        assert_eq!(
            serde_json::to_string(&d[0]).unwrap(),
            format!(
                "{{\"id\":\"{}\",\"time\":\"2026-01-01T00:00:00.000000000Z\",\"identity\":\"{ID}\",\"group\":\"identity={ID}\",\"keep\":true,\"reasons\":[\"last\"]}}",
                "01".repeat(32)
            )
        );
    }

    // ---- seed policies ----

    /// Hourly snapshots on the hour for `hours` hours from `start`.
    fn hourly_series(start: &str, hours: u32) -> Vec<SnapshotRecord> {
        let t0 = ts(start).secs;
        (0..hours)
            .map(|h| {
                let mut s = snap(0, start, ID, &[]);
                s.id = ObjectId::digest(&h.to_le_bytes());
                s.time.secs = t0 + i64::from(h) * 3600;
                s
            })
            .collect()
    }

    #[test]
    fn seed_volsync_kopia_hourly_24_daily_7() {
        // Ten days of hourly snapshots, 2026-03-01T00:00 .. 2026-03-10T23:00
        // (240). hourly 24 keeps the 24 hours of March 10th. daily 7 keeps
        // the newest (23:00) of March 10th, 9th, …, 4th: the 10th's is
        // already kept as hourly, so 6 more. 24 + 6 = 30.
        let snaps = hourly_series("2026-03-01T00:00:00Z", 240);
        let policy = Policy {
            hourly: Some(24),
            daily: Some(7),
            ..Policy::default()
        };
        let d = run(&snaps, &policy);
        assert_eq!(d.len(), 240);
        let kept: Vec<_> = d.iter().filter(|d| d.keep).collect();
        assert_eq!(kept.len(), 30);
        assert_eq!(kept[0].time, ts("2026-03-10T23:00:00Z"));
        assert_eq!(kept[0].reasons, ["hourly", "daily"]);
        assert_eq!(kept[23].time, ts("2026-03-10T00:00:00Z"));
        assert_eq!(kept[23].reasons, ["hourly"]);
        for (i, day) in (4..=9).rev().enumerate() {
            assert_eq!(kept[24 + i].time, ts(&format!("2026-03-0{day}T23:00:00Z")));
            assert_eq!(kept[24 + i].reasons, ["daily"]);
        }

        // Shifted by 12 h (2026-03-01T12:00 .. 2026-03-11T11:00): the 24
        // hours now span the 11th (00–11h) and the 10th (12–23h), so the
        // daily rule's first two days are already kept as hourly and it adds
        // only the 9th … 5th: 24 + 5 = 29.
        let snaps = hourly_series("2026-03-01T12:00:00Z", 240);
        let d = run(&snaps, &policy);
        let daily_only: Vec<_> = d
            .iter()
            .filter(|d| d.reasons == ["daily"])
            .map(|d| d.time)
            .collect();
        assert_eq!(d.iter().filter(|d| d.keep).count(), 29);
        assert_eq!(
            daily_only,
            (5..=9)
                .rev()
                .map(|day| ts(&format!("2026-03-0{day}T23:00:00Z")))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn seed_litestream_within_168h() {
        // 240 hourly snapshots; newest 2026-03-10T23:00. 168 h back is
        // 2026-03-03T23:00, which is not strictly newer, so the kept ones are
        // 2026-03-04T00:00 … 2026-03-10T23:00: exactly 168.
        let snaps = hourly_series("2026-03-01T00:00:00Z", 240);
        let d = run(
            &snaps,
            &Policy {
                within: Some(parse_within("168h").unwrap()),
                ..Policy::default()
            },
        );
        let kept: Vec<_> = d.iter().filter(|d| d.keep).collect();
        assert_eq!(kept.len(), 168);
        assert_eq!(kept.last().unwrap().time, ts("2026-03-04T00:00:00Z"));
        assert!(kept.iter().all(|d| d.reasons == ["within 168h"]));
        // 1w is the same duration.
        let d = run(
            &snaps,
            &Policy {
                within: Some(parse_within("1w").unwrap()),
                ..Policy::default()
            },
        );
        assert_eq!(d.iter().filter(|d| d.keep).count(), 168);
    }

    #[test]
    fn seed_pgbackrest_four_fulls() {
        // A full backup every Sunday for 8 weeks, incrementals on the other
        // days, plus another database's fulls. "Keep 4 full": select this
        // identity's fulls and keep the last 4; incrementals and the other
        // identity get no decision, so prune leaves them alone.
        let pg = "postgres@db1:/var/lib/pgbackrest";
        let mut snaps = Vec::new();
        let mut n = 0u8;
        for day in 0..56i64 {
            let t = ts("2026-01-04T02:00:00Z").secs + day * 86_400; // a Sunday
            let kind = if day % 7 == 0 { "full" } else { "incr" };
            n += 1;
            let mut s = snap(n, "2026-01-04T02:00:00Z", pg, &[("type", kind)]);
            s.time.secs = t;
            snaps.push(s);
        }
        snaps.push(snap(
            200,
            "2026-03-01T02:00:00Z",
            "postgres@db2:/x",
            &[("type", "full")],
        ));
        let d = decide(
            &snaps,
            &Policy {
                last: Some(4),
                ..Policy::default()
            },
            &GroupBy::default(),
            &Selection {
                identity: Some(pg.into()),
                tags: vec![("type".into(), "full".into())],
            },
            false,
        )
        .unwrap();
        // Fulls: ids 1, 8, 15, …, 50 (days 0, 7, …, 49); the 4 newest are
        // days 49, 42, 35, 28.
        assert_eq!(
            d.iter().map(|d| (d.id.0[0], d.keep)).collect::<Vec<_>>(),
            [
                (50, true),
                (43, true),
                (36, true),
                (29, true),
                (22, false),
                (15, false),
                (8, false),
                (1, false)
            ]
        );
        assert_eq!(d[0].time, ts("2026-02-22T02:00:00Z"));
    }

    // ---- properties ----

    const IDENTITIES: [&str; 3] = ["alice@db1:/a", "bob@db1:/b", "alice@web:/a"];

    fn build(raw: &[(i64, usize, usize)]) -> Vec<SnapshotRecord> {
        raw.iter()
            .enumerate()
            .map(|(i, &(t, who, tag))| {
                let tags: &[(&str, &str)] = match tag {
                    0 => &[],
                    1 => &[("env", "prod")],
                    _ => &[("env", "dev")],
                };
                let mut s = snap(0, "2026-01-01T00:00:00Z", IDENTITIES[who], tags);
                s.id = ObjectId::digest(&(i as u64).to_le_bytes());
                // 90-minute steps: several per day, equal times now and then.
                s.time.secs += t * 5400;
                s
            })
            .collect()
    }

    fn arb_policy() -> impl Strategy<Value = Policy> {
        let count = || prop::option::of(-1i64..5);
        (
            -1i64..6,
            (count(), count(), count(), count(), count()),
            prop::option::of(1u32..100),
            any::<bool>(),
            prop::sample::select(vec![0, 3600, -7200, 19800]),
        )
            .prop_map(|(last, (h, d, w, m, y), within_h, tag, off)| Policy {
                last: Some(last),
                hourly: h,
                daily: d,
                weekly: w,
                monthly: m,
                yearly: y,
                within: within_h.map(|h| within(0, 0, 0, 0, h)),
                tags: if tag {
                    vec![("env".into(), "prod".into())]
                } else {
                    vec![]
                },
                utc_offset_secs: off,
            })
    }

    fn arb_group_by() -> impl Strategy<Value = GroupBy> {
        (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
            |(identity, host, path, tags)| GroupBy {
                identity: identity || !(host || path || tags),
                host,
                path,
                tags,
            },
        )
    }

    proptest! {
        #[test]
        fn decisions_are_complete_counted_and_order_free(
            (raw, order) in prop::collection::vec((0i64..200, 0usize..3, 0usize..3), 0..40)
                .prop_flat_map(|v| {
                    let n = v.len();
                    (Just(v), Just((0..n).collect::<Vec<usize>>()).prop_shuffle())
                }),
            policy in arb_policy(),
            group_by in arb_group_by(),
        ) {
            let snaps = build(&raw);
            let sel = Selection::default();
            let d = decide(&snaps, &policy, &group_by, &sel, true).unwrap();

            // Exactly one decision per snapshot.
            prop_assert_eq!(d.len(), snaps.len());
            let ids: HashSet<ObjectId> = d.iter().map(|d| d.id).collect();
            prop_assert_eq!(ids, snaps.iter().map(|s| s.id).collect::<HashSet<_>>());
            prop_assert!(d.iter().all(|d| d.keep != d.reasons.is_empty()));

            // keep-last N: the N newest of each group, no more, no fewer.
            let mut by_group: BTreeMap<&str, Vec<&Decision>> = BTreeMap::new();
            for x in &d {
                by_group.entry(x.group.as_str()).or_default().push(x);
            }
            for members in by_group.values() {
                let want = match policy.last {
                    Some(-1) => members.len(),
                    Some(n) => (n as usize).min(members.len()),
                    None => 0,
                };
                let lasts: Vec<bool> = members
                    .iter()
                    .map(|x| x.reasons.iter().any(|r| r == "last"))
                    .collect();
                prop_assert_eq!(lasts.iter().filter(|&&l| l).count(), want);
                prop_assert!(lasts[..want].iter().all(|&l| l));
                // Newest first, ties by id descending.
                prop_assert!(members.windows(2).all(|w| (w[0].time, w[0].id) > (w[1].time, w[1].id)));
            }

            // Input order does not matter.
            let perm: Vec<SnapshotRecord> = order.iter().map(|&i| snaps[i].clone()).collect();
            prop_assert_eq!(decide(&perm, &policy, &group_by, &sel, true).unwrap(), d);
        }

        #[test]
        fn within_display_round_trips(y in 0u32..50, m in 0u32..50, w in 0u32..50, dd in 0u32..50, h in 0u32..50) {
            let kw = within(y, m, w, dd, h);
            prop_assume!(!kw.is_zero());
            prop_assert_eq!(parse_within(&kw.to_string()).unwrap(), kw);
        }

        #[test]
        fn parse_within_never_panics(s in "\\PC{0,12}") {
            let _ = parse_within(&s);
        }
    }
}
