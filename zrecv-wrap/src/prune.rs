//! Snapshot lists as pull mode reads them, and pruning by the time written
//! in snapshot names.
//!
//! Pruning follows the classic cron scripts: a snapshot's age is the time
//! its *name* carries under the `--snapshot` strftime format (not its
//! `creation` property, which a received copy shares with the source
//! anyway), and only names that match the format completely are candidates,
//! so snapshots made by hand or by other tools are never touched. Never
//! pruned: the newest snapshot both sides have in common (by guid), and any
//! snapshot with a hold (`userrefs` > 0).

use chrono::{DateTime, Local, NaiveDate, NaiveDateTime, TimeZone};
use zpipe_core::exit;

pub use zsend_wrap::zfs::PULLED_PROP;

/// One snapshot with the properties pull mode lists
/// ([`zsend_wrap::serve::SNAPSHOT_PROPS`]).
pub type SnapInfo = zsend_wrap::zfs::Snapshot;

/// Parses pull mode's `zfs get -Hp -o name,property,value -d 1 …` listing
/// into snapshots, oldest first.
pub fn parse_list(text: &str) -> anyhow::Result<Vec<SnapInfo>> {
    zsend_wrap::zfs::parse_snapshot_props(text)
}

/// The time a snapshot's short name carries under strftime `format`, or
/// `None` when the name does not match the format completely. Formats with
/// a date but no time of day mean midnight, local time.
pub fn name_time(short: &str, format: &str) -> Option<DateTime<Local>> {
    let naive = NaiveDateTime::parse_from_str(short, format)
        .ok()
        .or_else(|| {
            NaiveDate::parse_from_str(short, format)
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        })?;
    Local.from_local_datetime(&naive).earliest()
}

/// Formats `time` with strftime `format`; an invalid format is a usage
/// error naming `--snapshot`.
pub fn format_name(time: &DateTime<Local>, format: &str) -> anyhow::Result<String> {
    use chrono::format::{Item, StrftimeItems};
    use std::fmt::Write;
    if StrftimeItems::new(format).any(|i| matches!(i, Item::Error)) {
        return Err(exit::usage(format!(
            "--snapshot: '{format}' is not a valid strftime format"
        )));
    }
    let mut name = String::new();
    write!(name, "{}", time.format(format)).map_err(|_| {
        exit::usage(format!(
            "--snapshot: '{format}' cannot be formatted (strftime)"
        ))
    })?;
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | ' '));
    if !ok {
        return Err(exit::usage(format!(
            "--snapshot: '{format}' makes the name '{name}'; ZFS snapshot names take only \
             letters, digits and _-.: and space"
        )));
    }
    Ok(name)
}

/// What pruning decides for one snapshot older than the cut-off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Destroy it.
    Destroy,
    /// Keep it: it is the newest snapshot both sides have.
    KeepCommon,
    /// Keep it: it has holds.
    KeepHeld(u64),
}

/// The snapshots of `snaps` whose names (under `format`) are older than
/// `cutoff`, each with its verdict; `protect` is the guid of the newest
/// common snapshot.
pub fn select<'a>(
    snaps: &'a [SnapInfo],
    format: &str,
    cutoff: DateTime<Local>,
    protect: Option<u64>,
) -> Vec<(&'a SnapInfo, Verdict)> {
    snaps
        .iter()
        .filter_map(|s| {
            let t = name_time(s.short_name(), format)?;
            if t >= cutoff {
                return None;
            }
            let v = if Some(s.guid) == protect {
                Verdict::KeepCommon
            } else if s.userrefs > 0 {
                Verdict::KeepHeld(s.userrefs)
            } else {
                Verdict::Destroy
            };
            Some((s, v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(short: &str, guid: u64, userrefs: u64) -> SnapInfo {
        SnapInfo {
            name: format!("p/ds@{short}"),
            guid,
            createtxg: guid,
            creation: 0,
            userrefs,
            pulled: false,
        }
    }

    fn at(s: &str) -> DateTime<Local> {
        name_time(s, "%Y-%m-%d %H:%M").unwrap()
    }

    #[test]
    fn names_parse_only_when_they_match_completely() {
        let f = "zpipe-%Y%m%d-%H%M";
        assert_eq!(
            name_time("zpipe-20260105-1030", f),
            Some(at("2026-01-05 10:30"))
        );
        assert_eq!(name_time("zpipe-20260105-1030x", f), None);
        assert_eq!(name_time("manual", f), None);
        assert_eq!(name_time("other-20260105-1030", f), None);
        assert_eq!(
            name_time("daily-2026-01-05", "daily-%Y-%m-%d"),
            Some(at("2026-01-05 00:00"))
        );
    }

    #[test]
    fn format_round_trips_and_rejects_bad_names() {
        let t = at("2026-03-04 05:06");
        let n = format_name(&t, "zpipe-%Y%m%d-%H%M").unwrap();
        assert_eq!(n, "zpipe-20260304-0506");
        assert_eq!(name_time(&n, "zpipe-%Y%m%d-%H%M"), Some(t));
        assert!(format_name(&t, "a/%Y").is_err());
        assert!(format_name(&t, "%Q").is_err());
        assert!(format_name(&t, "x@%Y").is_err());
    }

    #[test]
    fn pruning_spares_common_and_held() {
        let f = "s-%Y%m%d";
        let snaps = [
            snap("s-20260101", 1, 0),
            snap("s-20260102", 2, 1),
            snap("s-20260103", 3, 0),
            snap("handmade", 4, 0),
            snap("s-20260110", 5, 0),
        ];
        let got = select(&snaps, f, at("2026-01-05 00:00"), Some(3));
        let v: Vec<(&str, Verdict)> = got
            .iter()
            .map(|(s, v)| (s.short_name(), v.clone()))
            .collect();
        assert_eq!(
            v,
            [
                ("s-20260101", Verdict::Destroy),
                ("s-20260102", Verdict::KeepHeld(1)),
                ("s-20260103", Verdict::KeepCommon),
            ]
        );
    }

    #[test]
    fn list_rows_with_userrefs() {
        let text = "p/ds\tguid\t1\np/ds\tuserrefs\t-\np/ds@a\tzpipe:pulled\th:x\np/ds@b\tzpipe:pulled\t-\np/ds@b\tguid\t9\np/ds@b\tcreatetxg\t20\np/ds@b\tuserrefs\t2\np/ds@a\tguid\t8\np/ds@a\tcreatetxg\t10\n";
        let s = parse_list(text).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].short_name(), "a");
        assert_eq!(s[1].userrefs, 2);
        assert!(s[0].pulled && !s[1].pulled);
        assert!(parse_list("garbage").is_err());
    }
}
