//! The pure decision of `lifeboat prune`: which snapshots a grandfather-father-son policy keeps, with the
//! semantics of restic's `forget --keep-*`, and the safety rules (newest, minimum count, object locks) on top.

use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc};
use chrono_tz::Tz;

/// How many snapshots each rule keeps; 0 switches a rule off (restic's `--keep-*` options).
///
/// A snapshot kept by several rules is kept once and counts against every rule that matched it. Calendar rules
/// work on natural boundaries in the job's time zone and only count periods that have at least one snapshot.
/// `u32::MAX` is in effect "unlimited" (restic's `unlimited`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Keep the `keep_last` newest snapshots.
    pub keep_last: u32,
    /// For the newest `keep_hourly` hours that have a snapshot, keep the newest snapshot of each hour.
    pub keep_hourly: u32,
    /// For the newest `keep_daily` days that have a snapshot, keep the newest snapshot of each day.
    pub keep_daily: u32,
    /// For the newest `keep_weekly` ISO weeks (Monday to Sunday, keyed by ISO year and week) that have a
    /// snapshot, keep the newest snapshot of each week.
    pub keep_weekly: u32,
    /// For the newest `keep_monthly` months that have a snapshot, keep the newest snapshot of each month.
    pub keep_monthly: u32,
    /// For the newest `keep_yearly` calendar years that have a snapshot, keep the newest snapshot of each year.
    pub keep_yearly: u32,
}

impl RetentionPolicy {
    /// True when every rule is 0. [`apply`] then keeps everything (reason [`KeepReason::NoPolicy`]) where
    /// restic would refuse to run.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The rules in restic's evaluation order, with their counts.
    fn rules(&self) -> [(Rule, u32); 6] {
        [
            (Rule::Last, self.keep_last),
            (Rule::Hourly, self.keep_hourly),
            (Rule::Daily, self.keep_daily),
            (Rule::Weekly, self.keep_weekly),
            (Rule::Monthly, self.keep_monthly),
            (Rule::Yearly, self.keep_yearly),
        ]
    }
}

/// Why a snapshot is kept. A kept snapshot lists every rule that holds it, policy rules first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeepReason {
    /// One of the `keep_last` newest snapshots.
    Last,
    /// The newest snapshot of one of the `keep_hourly` newest hours (or the oldest snapshot, see [`apply`]).
    Hourly,
    /// The newest snapshot of one of the `keep_daily` newest days (or the oldest snapshot, see [`apply`]).
    Daily,
    /// The newest snapshot of one of the `keep_weekly` newest ISO weeks (or the oldest snapshot, see [`apply`]).
    Weekly,
    /// The newest snapshot of one of the `keep_monthly` newest months (or the oldest snapshot, see [`apply`]).
    Monthly,
    /// The newest snapshot of one of the `keep_yearly` newest years (or the oldest snapshot, see [`apply`]).
    Yearly,
    /// The newest snapshot, which is never removed ([`with_safety`]).
    NewestComplete,
    /// The policy is empty, so nothing is removed ([`apply`]).
    NoPolicy,
    /// Its object lock is still in force, so it cannot (and must not) be removed ([`with_safety`]).
    StillLocked,
    /// One of the `min_keep` newest snapshots ([`with_safety`]).
    MinimumKept,
}

/// The decision for one item: keep it or remove it, and why it is kept (empty when removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision<T> {
    /// The caller's item (a snapshot id, a manifest, …).
    pub item: T,
    /// Whether the item is kept.
    pub keep: bool,
    /// Every rule that keeps the item; empty exactly when `keep` is false.
    pub reasons: Vec<KeepReason>,
}

impl<T> Decision<T> {
    /// Keeps the item for `reason`, listing the reason once.
    fn hold(&mut self, reason: KeepReason) {
        self.keep = true;
        if !self.reasons.contains(&reason) {
            self.reasons.push(reason);
        }
    }
}

/// A `keep_*` rule of [`RetentionPolicy`].
#[derive(Debug, Clone, Copy)]
enum Rule {
    Last,
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Rule {
    fn reason(self) -> KeepReason {
        match self {
            Rule::Last => KeepReason::Last,
            Rule::Hourly => KeepReason::Hourly,
            Rule::Daily => KeepReason::Daily,
            Rule::Weekly => KeepReason::Weekly,
            Rule::Monthly => KeepReason::Monthly,
            Rule::Yearly => KeepReason::Yearly,
        }
    }

    /// The period of `local` this rule groups by; for `Last` every snapshot (its `position`) is its own.
    fn bucket(self, local: &DateTime<Tz>, position: usize) -> Bucket {
        match self {
            Rule::Last => Bucket::Position(position),
            Rule::Hourly => Bucket::Hour(local.date_naive(), local.hour()),
            Rule::Daily => Bucket::Day(local.date_naive()),
            Rule::Weekly => {
                let week = local.iso_week();
                Bucket::Week(week.year(), week.week())
            }
            Rule::Monthly => Bucket::Month(local.year(), local.month()),
            Rule::Yearly => Bucket::Year(local.year()),
        }
    }
}

/// A period in local wall-clock time. An hour repeated by a DST change is one bucket, as in restic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bucket {
    Position(usize),
    Hour(NaiveDate, u32),
    Day(NaiveDate),
    Week(i32, u32),
    Month(i32, u32),
    Year(i32),
}

/// Applies `policy` to `items` with their time; returns one decision per item, newest first.
///
/// Exactly restic's `forget` (0.17+): items are sorted newest first (stable, so equal times keep their input
/// order); each rule walks them with its own counter and keeps an item when it opens a new period (for
/// `keep_last`: every item) while the counter is not used up, then counts it down. If a rule still has count
/// left when it reaches the oldest item, that item is kept too (restic's "oldest daily snapshot" etc.), so an
/// unfilled policy keeps the longest history. Periods are computed in `tz`. An empty policy keeps everything
/// with [`KeepReason::NoPolicy`].
pub fn apply<T: Clone>(
    policy: &RetentionPolicy,
    tz: Tz,
    items: &[(T, DateTime<Utc>)],
) -> Vec<Decision<T>> {
    let mut order: Vec<&(T, DateTime<Utc>)> = items.iter().collect();
    // `sort_by_key` is stable: ties keep their input order, like restic's `sort.Stable`.
    order.sort_by_key(|(_, time)| std::cmp::Reverse(*time));
    let local: Vec<DateTime<Tz>> = order.iter().map(|(_, t)| t.with_timezone(&tz)).collect();
    let mut decisions: Vec<Decision<T>> = order
        .iter()
        .map(|(item, _)| Decision {
            item: item.clone(),
            keep: false,
            reasons: Vec::new(),
        })
        .collect();

    if policy.is_empty() {
        for decision in &mut decisions {
            decision.hold(KeepReason::NoPolicy);
        }
        return decisions;
    }

    let oldest = decisions.len().saturating_sub(1);
    for (rule, count) in policy.rules() {
        let mut left = count;
        let mut previous: Option<Bucket> = None;
        for (position, (decision, time)) in decisions.iter_mut().zip(&local).enumerate() {
            if left == 0 {
                break;
            }
            let bucket = rule.bucket(time, position);
            if previous != Some(bucket) || position == oldest {
                previous = Some(bucket);
                left -= 1;
                decision.hold(rule.reason());
            }
        }
    }
    decisions
}

/// Applies the safety rules to `decisions` (newest first, as [`apply`] returns them); they only ever turn a
/// removal into a keep.
///
/// - the newest item is always kept ([`KeepReason::NewestComplete`]);
/// - the `min_keep` newest items are always kept ([`KeepReason::MinimumKept`]; the design's
///   `keep_verified_min`, default 3), so a long outage followed by age-based retention cannot delete
///   everything;
/// - an item whose lock is still in force at `now` (`retain_until(item)` later than `now`) is kept
///   ([`KeepReason::StillLocked`]); a lock that ends exactly at `now` has expired.
///
/// Each rule that matches adds its reason, also to items the policy already keeps, so the reasons say
/// everything that holds an item.
pub fn with_safety<T: Clone>(
    mut decisions: Vec<Decision<T>>,
    min_keep: usize,
    retain_until: impl Fn(&T) -> Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Vec<Decision<T>> {
    for (position, decision) in decisions.iter_mut().enumerate() {
        if position == 0 {
            decision.hold(KeepReason::NewestComplete);
        }
        if position < min_keep {
            decision.hold(KeepReason::MinimumKept);
        }
        if retain_until(&decision.item).is_some_and(|until| until > now) {
            decision.hold(KeepReason::StillLocked);
        }
    }
    decisions
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use std::collections::{BTreeMap, BTreeSet};

    use KeepReason::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    /// Items whose identity is their time.
    fn timed(times: &[DateTime<Utc>]) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
        times.iter().map(|&t| (t, t)).collect()
    }

    fn kept(decisions: &[Decision<DateTime<Utc>>]) -> BTreeSet<DateTime<Utc>> {
        decisions
            .iter()
            .filter(|d| d.keep)
            .map(|d| d.item)
            .collect()
    }

    fn reasons_of(decisions: &[Decision<DateTime<Utc>>], at: &str) -> Vec<KeepReason> {
        let at = utc(at);
        decisions
            .iter()
            .find(|d| d.item == at)
            .map(|d| d.reasons.clone())
            .unwrap()
    }

    /// An independent model of restic's rules: group by a formatted key, keep the newest of the `count`
    /// newest groups, and the oldest item as well when there are fewer groups than `count`. Times must be
    /// unique (they are the items' identity).
    fn brute_force(
        policy: &RetentionPolicy,
        tz: Tz,
        times: &[DateTime<Utc>],
    ) -> BTreeSet<DateTime<Utc>> {
        let rules = [
            (policy.keep_last, "%Y-%m-%dT%H:%M:%S%.f"),
            (policy.keep_hourly, "%Y-%m-%d %H"),
            (policy.keep_daily, "%Y-%m-%d"),
            (policy.keep_weekly, "%G-W%V"),
            (policy.keep_monthly, "%Y-%m"),
            (policy.keep_yearly, "%Y"),
        ];
        let mut keep = BTreeSet::new();
        for (count, format) in rules {
            if count == 0 {
                continue;
            }
            let mut newest_by_key: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
            for &t in times {
                let key = t.with_timezone(&tz).format(format).to_string();
                let newest = newest_by_key.entry(key).or_insert(t);
                *newest = (*newest).max(t);
            }
            let mut newest: Vec<DateTime<Utc>> = newest_by_key.into_values().collect();
            newest.sort_by_key(|&t| std::cmp::Reverse(t));
            if newest.len() < count as usize {
                keep.extend(times.iter().min().copied());
            }
            keep.extend(newest.into_iter().take(count as usize));
        }
        keep
    }

    fn berlin() -> Tz {
        chrono_tz::Europe::Berlin
    }

    #[test]
    fn empty_policy_keeps_everything_and_says_so() {
        let policy = RetentionPolicy::default();
        assert!(policy.is_empty());
        assert!(!RetentionPolicy {
            keep_yearly: 1,
            ..policy
        }
        .is_empty());
        let items = timed(&[utc("2026-01-01T00:00:00Z"), utc("2026-01-02T00:00:00Z")]);
        let decisions = apply(&policy, Tz::UTC, &items);
        assert_eq!(decisions.len(), 2);
        assert!(decisions
            .iter()
            .all(|d| d.keep && d.reasons == vec![NoPolicy]));
        assert!(apply(&policy, Tz::UTC, &timed(&[])).is_empty());
        let some = RetentionPolicy {
            keep_last: 1,
            ..policy
        };
        assert!(apply(&some, Tz::UTC, &timed(&[])).is_empty());
    }

    #[test]
    fn output_is_newest_first_whatever_the_input_order() {
        let items = vec![
            ("b", utc("2026-01-02T00:00:00Z")),
            ("c", utc("2026-01-03T00:00:00Z")),
            ("a", utc("2026-01-01T00:00:00Z")),
            ("d", utc("2026-01-04T00:00:00Z")),
        ];
        let policy = RetentionPolicy {
            keep_last: 2,
            ..Default::default()
        };
        let decisions = apply(&policy, Tz::UTC, &items);
        let order: Vec<(&str, bool)> = decisions.iter().map(|d| (d.item, d.keep)).collect();
        assert_eq!(
            order,
            vec![("d", true), ("c", true), ("b", false), ("a", false)]
        );
        assert_eq!(decisions[0].reasons, vec![Last]);
        assert!(decisions[2].reasons.is_empty());
    }

    /// restic's docs: one backup every Sunday for 12 weeks; `--keep-daily 4` keeps the last four Sundays.
    #[test]
    fn restic_docs_twelve_sundays_keep_daily_4() {
        let first = utc("2019-09-01T11:00:00Z");
        let times: Vec<_> = (0..12).map(|w| first + Duration::weeks(w)).collect();
        let policy = RetentionPolicy {
            keep_daily: 4,
            ..Default::default()
        };
        let decisions = apply(&policy, Tz::UTC, &timed(&times));
        let expected: BTreeSet<_> = [
            "2019-10-27T11:00:00Z",
            "2019-11-03T11:00:00Z",
            "2019-11-10T11:00:00Z",
            "2019-11-17T11:00:00Z",
        ]
        .iter()
        .map(|s| utc(s))
        .collect();
        assert_eq!(kept(&decisions), expected);
        assert!(decisions
            .iter()
            .all(|d| d.reasons == if d.keep { vec![Daily] } else { vec![] }));
        assert_eq!(decisions.iter().filter(|d| !d.keep).count(), 8);
    }

    /// restic's docs: one backup a day for 100 years with `--keep-daily 7 --keep-weekly 5 --keep-monthly 12
    /// --keep-yearly 75`: 7 dailies, weekly ones of which the dailies already include one, 12 monthly and 75
    /// yearly, overlapping. Ending on Sunday 2025-12-28, Sunday 2025-11-30 is both weekly and monthly, so the
    /// total is 7 + 4 + 10 + 74.
    #[test]
    fn restic_docs_one_backup_a_day_for_100_years() {
        let first = utc("1926-01-01T12:00:00Z");
        let last = utc("2025-12-28T12:00:00Z");
        let days = (last - first).num_days();
        let times: Vec<_> = (0..=days).map(|d| first + Duration::days(d)).collect();
        let policy = RetentionPolicy {
            keep_daily: 7,
            keep_weekly: 5,
            keep_monthly: 12,
            keep_yearly: 75,
            ..Default::default()
        };
        let decisions = apply(&policy, Tz::UTC, &timed(&times));
        let with = |reason: KeepReason| {
            decisions
                .iter()
                .filter(|d| d.reasons.contains(&reason))
                .count()
        };
        assert_eq!(
            (with(Daily), with(Weekly), with(Monthly), with(Yearly)),
            (7, 5, 12, 75)
        );
        assert_eq!(kept(&decisions).len(), 7 + 4 + 10 + 74);
        assert_eq!(
            reasons_of(&decisions, "2025-11-30T12:00:00Z"),
            vec![Weekly, Monthly]
        );
        assert_eq!(reasons_of(&decisions, "1951-12-31T12:00:00Z"), vec![Yearly]);
        assert!(reasons_of(&decisions, "1950-12-31T12:00:00Z").is_empty());
        assert_eq!(kept(&decisions), brute_force(&policy, Tz::UTC, &times));
    }

    /// 400 snapshots, one every 6 hours for 100 days, from 2025-10-31 23:30 UTC (already November in Berlin)
    /// to 2026-02-08 17:30 UTC, across a year boundary.
    fn synthetic_history() -> Vec<DateTime<Utc>> {
        let first = utc("2025-10-31T23:30:00Z");
        (0..400).map(|i| first + Duration::hours(6 * i)).collect()
    }

    fn gfs_policy() -> RetentionPolicy {
        RetentionPolicy {
            keep_last: 3,
            keep_daily: 7,
            keep_weekly: 4,
            keep_monthly: 6,
            keep_yearly: 2,
            ..Default::default()
        }
    }

    #[test]
    fn synthetic_history_matches_brute_force() {
        let times = synthetic_history();
        assert_eq!(times.len(), 400);
        assert_eq!(times[399], utc("2026-02-08T17:30:00Z"));
        let policies = [
            gfs_policy(),
            RetentionPolicy {
                keep_hourly: 30,
                keep_weekly: 20,
                ..Default::default()
            },
            RetentionPolicy {
                keep_last: 500,
                ..Default::default()
            },
            RetentionPolicy {
                keep_daily: 1000,
                ..Default::default()
            },
            RetentionPolicy {
                keep_monthly: 2,
                keep_yearly: 5,
                ..Default::default()
            },
        ];
        for tz in [
            berlin(),
            Tz::UTC,
            chrono_tz::America::New_York,
            chrono_tz::Asia::Kolkata,
        ] {
            for policy in &policies {
                let decisions = apply(policy, tz, &timed(&times));
                assert_eq!(decisions.len(), 400);
                assert_eq!(
                    kept(&decisions),
                    brute_force(policy, tz, &times),
                    "{policy:?} in {tz}"
                );
                assert!(decisions.iter().all(|d| d.keep != d.reasons.is_empty()));
            }
        }
    }

    /// Hand-checked: the kept set of the GFS policy over the synthetic history, in Berlin.
    #[test]
    fn synthetic_history_hand_checked_in_berlin() {
        let times = synthetic_history();
        let decisions = apply(&gfs_policy(), berlin(), &timed(&times));
        let expected: BTreeSet<_> = [
            // keep_last 3 (the newest is also daily, weekly, monthly and yearly)
            "2026-02-08T17:30:00Z",
            "2026-02-08T11:30:00Z",
            "2026-02-08T05:30:00Z",
            // keep_daily 7: the newest of each Berlin day is 17:30 UTC (23:30 UTC is the next day)
            "2026-02-07T17:30:00Z",
            "2026-02-06T17:30:00Z",
            "2026-02-05T17:30:00Z",
            "2026-02-04T17:30:00Z",
            "2026-02-03T17:30:00Z",
            "2026-02-02T17:30:00Z",
            // keep_weekly 4: W06 is the newest; then Sundays of W05, W04, W03
            "2026-02-01T17:30:00Z",
            "2026-01-25T17:30:00Z",
            "2026-01-18T17:30:00Z",
            // keep_monthly 6: Feb (newest), Jan, Dec, Nov, and with counts left the oldest
            "2026-01-31T17:30:00Z",
            "2025-12-31T17:30:00Z",
            "2025-11-30T17:30:00Z",
            "2025-10-31T23:30:00Z",
            // keep_yearly 2: 2026 (newest) and 2025 (2025-12-31 17:30, already monthly)
        ]
        .iter()
        .map(|s| utc(s))
        .collect();
        assert_eq!(kept(&decisions), expected);
        assert_eq!(kept(&decisions).len(), 16);
        assert_eq!(
            reasons_of(&decisions, "2026-02-08T17:30:00Z"),
            vec![Last, Daily, Weekly, Monthly, Yearly]
        );
        assert_eq!(reasons_of(&decisions, "2026-02-08T11:30:00Z"), vec![Last]);
        assert_eq!(
            reasons_of(&decisions, "2025-12-31T17:30:00Z"),
            vec![Monthly, Yearly]
        );
        assert_eq!(
            reasons_of(&decisions, "2025-10-31T23:30:00Z"),
            vec![Monthly]
        );
        assert!(reasons_of(&decisions, "2026-02-01T23:30:00Z").is_empty());
        assert!(reasons_of(&decisions, "2026-01-11T17:30:00Z").is_empty());
    }

    /// The same history in UTC: other days, weeks and months.
    #[test]
    fn synthetic_history_spot_values_in_utc() {
        let times = synthetic_history();
        let decisions = apply(&gfs_policy(), Tz::UTC, &timed(&times));
        // Sunday 23:30 is still W05 in UTC (it is Monday in Berlin).
        assert_eq!(reasons_of(&decisions, "2026-02-01T23:30:00Z"), vec![Weekly]);
        assert!(reasons_of(&decisions, "2026-02-01T17:30:00Z").is_empty());
        // 2025-10-31 23:30 is October in UTC: a month of its own, kept as monthly.
        assert_eq!(
            reasons_of(&decisions, "2025-10-31T23:30:00Z"),
            vec![Monthly]
        );
        assert_eq!(
            reasons_of(&decisions, "2025-12-31T23:30:00Z"),
            vec![Monthly, Yearly]
        );
        assert_eq!(kept(&decisions).len(), 16);
    }

    #[test]
    fn only_the_newest_snapshot_of_an_hour_counts() {
        let times = [
            utc("2026-03-10T12:10:00Z"),
            utc("2026-03-10T12:40:00Z"),
            utc("2026-03-10T11:15:00Z"),
            utc("2026-03-10T11:45:00Z"),
            utc("2026-03-10T10:30:00Z"),
            utc("2026-03-10T09:00:00Z"),
        ];
        let policy = RetentionPolicy {
            keep_hourly: 3,
            ..Default::default()
        };
        let decisions = apply(&policy, Tz::UTC, &timed(&times));
        let expected: BTreeSet<_> = [
            utc("2026-03-10T12:40:00Z"),
            utc("2026-03-10T11:45:00Z"),
            utc("2026-03-10T10:30:00Z"),
        ]
        .into();
        assert_eq!(kept(&decisions), expected);
        assert_eq!(reasons_of(&decisions, "2026-03-10T12:40:00Z"), vec![Hourly]);
    }

    #[test]
    fn equal_times_keep_input_order() {
        let t = utc("2026-03-10T12:00:00Z");
        let items = vec![
            ("first", t),
            ("second", t),
            ("older", t - Duration::hours(1)),
        ];
        let policy = RetentionPolicy {
            keep_hourly: 1,
            ..Default::default()
        };
        let decisions = apply(&policy, Tz::UTC, &items);
        let order: Vec<(&str, bool)> = decisions.iter().map(|d| (d.item, d.keep)).collect();
        assert_eq!(
            order,
            vec![("first", true), ("second", false), ("older", false)]
        );
    }

    /// restic 0.17+: a rule with count left at the oldest snapshot keeps it, even in an already kept period.
    #[test]
    fn unfilled_rule_keeps_the_oldest_snapshot() {
        let times = [
            utc("2026-03-10T14:00:00Z"),
            utc("2026-03-10T12:00:00Z"),
            utc("2026-03-10T10:00:00Z"),
        ];
        let policy = RetentionPolicy {
            keep_daily: 3,
            ..Default::default()
        };
        let decisions = apply(&policy, Tz::UTC, &timed(&times));
        let expected: BTreeSet<_> = [times[0], times[2]].into();
        assert_eq!(kept(&decisions), expected);
        assert_eq!(reasons_of(&decisions, "2026-03-10T10:00:00Z"), vec![Daily]);
        // A used-up count does not keep the oldest.
        let policy = RetentionPolicy {
            keep_daily: 1,
            ..Default::default()
        };
        assert_eq!(
            kept(&apply(&policy, Tz::UTC, &timed(&times))),
            [times[0]].into()
        );
    }

    #[test]
    fn a_day_without_snapshots_does_not_use_up_a_daily_slot() {
        // Mon 9, Tue 10, (no Wed 11), Thu 12, Fri 13 March 2026, and Sun 8 before.
        let times = [
            utc("2026-03-13T20:00:00Z"),
            utc("2026-03-12T20:00:00Z"),
            utc("2026-03-10T20:00:00Z"),
            utc("2026-03-09T20:00:00Z"),
            utc("2026-03-08T20:00:00Z"),
        ];
        let policy = RetentionPolicy {
            keep_daily: 4,
            ..Default::default()
        };
        let decisions = apply(&policy, Tz::UTC, &timed(&times));
        let expected: BTreeSet<_> = times[..4].iter().copied().collect();
        assert_eq!(kept(&decisions), expected);
        assert_eq!(kept(&decisions), brute_force(&policy, Tz::UTC, &times));
    }

    #[test]
    fn periods_are_in_the_jobs_time_zone() {
        // 23:30 UTC on 10 March is 00:30 on 11 March in Berlin (CET, UTC+1).
        let late = utc("2026-03-10T23:30:00Z");
        let evening = utc("2026-03-10T20:00:00Z");
        let day_before = utc("2026-03-09T12:00:00Z");
        let times = [late, evening, day_before];
        let policy = RetentionPolicy {
            keep_daily: 2,
            ..Default::default()
        };
        let in_utc = kept(&apply(&policy, Tz::UTC, &timed(&times)));
        assert_eq!(in_utc, [late, day_before].into());
        let in_berlin = kept(&apply(&policy, berlin(), &timed(&times)));
        assert_eq!(in_berlin, [late, evening].into());
    }

    #[test]
    fn an_hour_repeated_by_dst_is_one_bucket() {
        // Berlin falls back on 2026-10-25 at 03:00 CEST: 00:30 UTC and 01:30 UTC are both 02:30 local.
        let times = [
            utc("2026-10-25T01:30:00Z"),
            utc("2026-10-25T00:30:00Z"),
            utc("2026-10-24T23:30:00Z"),
        ];
        let policy = RetentionPolicy {
            keep_hourly: 2,
            ..Default::default()
        };
        let decisions = apply(&policy, berlin(), &timed(&times));
        assert_eq!(kept(&decisions), [times[0], times[2]].into());
        assert_eq!(kept(&decisions), brute_force(&policy, berlin(), &times));
    }

    #[test]
    fn weeks_are_iso_year_weeks() {
        let week = |s: &str| {
            let local = utc(s).with_timezone(&Tz::UTC);
            Rule::Weekly.bucket(&local, 0)
        };
        assert_eq!(week("2026-12-31T12:00:00Z"), Bucket::Week(2026, 53));
        assert_eq!(week("2027-01-03T12:00:00Z"), Bucket::Week(2026, 53));
        assert_eq!(week("2027-01-04T12:00:00Z"), Bucket::Week(2027, 1));
        assert_eq!(week("2024-12-30T12:00:00Z"), Bucket::Week(2025, 1));
        assert_eq!(week("2024-12-29T12:00:00Z"), Bucket::Week(2024, 52));

        // Mon 28 Dec 2026 .. Sun 3 Jan 2027 are one week (2026-W53); Mon 4 Jan 2027 starts 2027-W01.
        let times = [
            utc("2027-01-04T12:00:00Z"),
            utc("2027-01-03T12:00:00Z"),
            utc("2027-01-01T12:00:00Z"),
            utc("2026-12-31T12:00:00Z"),
            utc("2026-12-28T12:00:00Z"),
            utc("2026-12-27T12:00:00Z"),
        ];
        let weekly = RetentionPolicy {
            keep_weekly: 2,
            ..Default::default()
        };
        assert_eq!(
            kept(&apply(&weekly, Tz::UTC, &timed(&times))),
            [times[0], times[1]].into()
        );
        // Years are calendar years, not ISO years.
        let yearly = RetentionPolicy {
            keep_yearly: 2,
            ..Default::default()
        };
        assert_eq!(
            kept(&apply(&yearly, Tz::UTC, &timed(&times))),
            [times[0], times[3]].into()
        );
    }

    fn removed_all(n: usize) -> Vec<Decision<usize>> {
        (0..n)
            .map(|item| Decision {
                item,
                keep: false,
                reasons: Vec::new(),
            })
            .collect()
    }

    #[test]
    fn safety_always_keeps_the_newest() {
        let now = utc("2026-03-10T12:00:00Z");
        let decisions = with_safety(removed_all(3), 0, |_| None, now);
        assert!(decisions[0].keep);
        assert_eq!(decisions[0].reasons, vec![NewestComplete]);
        assert!(decisions[1..]
            .iter()
            .all(|d| !d.keep && d.reasons.is_empty()));
        assert!(with_safety(removed_all(0), 3, |_| None, now).is_empty());
    }

    #[test]
    fn safety_keeps_the_min_keep_newest() {
        let now = utc("2026-03-10T12:00:00Z");
        let decisions = with_safety(removed_all(5), 3, |_| None, now);
        let keep: Vec<bool> = decisions.iter().map(|d| d.keep).collect();
        assert_eq!(keep, vec![true, true, true, false, false]);
        assert_eq!(decisions[0].reasons, vec![NewestComplete, MinimumKept]);
        assert_eq!(decisions[2].reasons, vec![MinimumKept]);
        let all = with_safety(removed_all(2), 3, |_| None, now);
        assert!(all.iter().all(|d| d.keep));
    }

    #[test]
    fn safety_keeps_items_still_locked() {
        let now = utc("2026-03-10T12:00:00Z");
        let lock = |item: &usize| match item {
            2 => Some(now + Duration::seconds(1)),
            3 => Some(now),
            4 => Some(now - Duration::days(1)),
            _ => None,
        };
        let decisions = with_safety(removed_all(5), 1, lock, now);
        let keep: Vec<bool> = decisions.iter().map(|d| d.keep).collect();
        assert_eq!(keep, vec![true, false, true, false, false]);
        assert_eq!(decisions[2].reasons, vec![StillLocked]);
    }

    #[test]
    fn safety_adds_to_policy_reasons_and_is_idempotent() {
        let times = synthetic_history();
        let decisions = apply(&gfs_policy(), berlin(), &timed(&times));
        let newest = utc("2026-02-08T17:30:00Z");
        let locked_until = utc("2026-03-01T00:00:00Z");
        let lock = |t: &DateTime<Utc>| (*t >= utc("2026-02-07T00:00:00Z")).then_some(locked_until);
        let now = utc("2026-02-20T00:00:00Z");
        let safe = with_safety(decisions.clone(), 3, lock, now);
        assert_eq!(
            reasons_of(&safe, "2026-02-08T17:30:00Z"),
            vec![
                Last,
                Daily,
                Weekly,
                Monthly,
                Yearly,
                NewestComplete,
                MinimumKept,
                StillLocked
            ]
        );
        assert_eq!(safe[0].item, newest);
        // Removed by policy, still locked: kept.
        assert_eq!(reasons_of(&safe, "2026-02-07T05:30:00Z"), vec![StillLocked]);
        // Policy decisions outside the safety rules are unchanged.
        for (before, after) in decisions.iter().zip(&safe) {
            if after.item < utc("2026-02-07T00:00:00Z") {
                assert_eq!(before, after);
            }
        }
        assert_eq!(with_safety(safe.clone(), 3, lock, now), safe);
    }
}
