//! The scheduler's decisions, without clocks or tasks: which job is due, which starts, which queues, which is
//! skipped. Pure and driven by the caller's `now`, so DST, overlap and the concurrency cap are unit-tested.

use chrono::{DateTime, Utc};
use lifeboat_config::Schedule;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Picks a jitter delay in `[0, max)`; injected so tests are deterministic.
pub type JitterFn = Box<dyn FnMut(Duration) -> Duration + Send>;

/// Why a due run did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// The job's previous run is still going.
    StillRunning,
    /// The job's previous run is still waiting for a free slot.
    StillQueued,
}

impl SkipReason {
    /// A short word for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::StillRunning => "previous run still running",
            SkipReason::StillQueued => "previous run still queued",
        }
    }
}

/// What the caller must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Start a run of `job` now; it was due at `due`.
    Start {
        /// Job name.
        job: String,
        /// When it became due.
        due: DateTime<Utc>,
    },
    /// A run of `job` due at `due` waits for a free slot.
    Queued {
        /// Job name.
        job: String,
        /// When it became due.
        due: DateTime<Utc>,
    },
    /// A run of `job` due at `due` is dropped (counted by the caller).
    Skipped {
        /// Job name.
        job: String,
        /// When it became due.
        due: DateTime<Utc>,
        /// Why.
        reason: SkipReason,
    },
}

struct Entry {
    schedule: Schedule,
    jitter: Duration,
    /// The next fire time as the schedule gives it.
    nominal: Option<DateTime<Utc>>,
    /// `nominal` plus this fire's jitter: when the run is really due.
    due: Option<DateTime<Utc>>,
}

/// The scheduler's state: each job's next due time, the queue (in due order) and the running set.
pub struct Planner {
    max_concurrent: usize,
    jobs: BTreeMap<String, Entry>,
    /// Waiting runs, kept sorted by (due, job).
    queue: Vec<(DateTime<Utc>, String)>,
    running: BTreeSet<String>,
    jitter: JitterFn,
}

impl Planner {
    /// An empty planner running at most `max_concurrent` jobs at once (at least 1).
    pub fn new(max_concurrent: usize, jitter: JitterFn) -> Self {
        Self {
            max_concurrent: max_concurrent.max(1),
            jobs: BTreeMap::new(),
            queue: Vec::new(),
            running: BTreeSet::new(),
            jitter,
        }
    }

    /// A planner whose jitter is uniformly random.
    pub fn with_random_jitter(max_concurrent: usize) -> Self {
        Self::new(
            max_concurrent,
            Box::new(|max| {
                use rand::RngExt;
                let millis = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
                if millis == 0 {
                    Duration::ZERO
                } else {
                    Duration::from_millis(rand::rng().random_range(0..millis))
                }
            }),
        )
    }

    /// Changes the concurrency cap (config reload); runs already started are not affected.
    pub fn set_max_concurrent(&mut self, max_concurrent: usize) {
        self.max_concurrent = max_concurrent.max(1);
    }

    /// Adds or replaces a job; its next run is the schedule's first fire time after `now`.
    /// A run of the job that is running or queued stays so.
    pub fn upsert(&mut self, job: &str, schedule: Schedule, jitter: Duration, now: DateTime<Utc>) {
        let mut entry = Entry {
            schedule,
            jitter,
            nominal: None,
            due: None,
        };
        self.advance(&mut entry, now);
        self.jobs.insert(job.to_owned(), entry);
    }

    /// Removes a job: it is no longer scheduled and its queued run (if any) is dropped. A running run goes on
    /// until [`Planner::finished`].
    pub fn remove(&mut self, job: &str) {
        self.jobs.remove(job);
        self.queue.retain(|(_, j)| j != job);
    }

    /// Names of the scheduled jobs.
    pub fn jobs(&self) -> impl Iterator<Item = &str> {
        self.jobs.keys().map(String::as_str)
    }

    /// Asks for a run of `job` now, outside its schedule (catch-up at start-up). Skipped like a scheduled run
    /// if the job is already running or queued.
    pub fn run_now(&mut self, job: &str, now: DateTime<Utc>) -> Vec<Decision> {
        let mut out = Vec::new();
        if self.jobs.contains_key(job) {
            self.enqueue(job, now, &mut out);
        }
        self.start_queued(&mut out);
        out
    }

    /// Everything due at `now`: due runs are queued (or skipped when their job is still running or queued),
    /// then queued runs start while slots are free.
    pub fn poll(&mut self, now: DateTime<Utc>) -> Vec<Decision> {
        let mut out = Vec::new();
        let due: Vec<(DateTime<Utc>, String)> = self
            .jobs
            .iter()
            .filter_map(|(name, e)| e.due.filter(|d| *d <= now).map(|d| (d, name.clone())))
            .collect();
        for (at, name) in due {
            if let Some(mut entry) = self.jobs.remove(&name) {
                self.advance(&mut entry, now);
                self.jobs.insert(name.clone(), entry);
            }
            self.enqueue(&name, at, &mut out);
        }
        self.start_queued(&mut out);
        out
    }

    /// A run of `job` ended: its slot is free, and queued runs may start.
    pub fn finished(&mut self, job: &str) -> Vec<Decision> {
        self.running.remove(job);
        let mut out = Vec::new();
        self.start_queued(&mut out);
        out
    }

    /// When [`Planner::poll`] next has something to do.
    pub fn next_wakeup(&self) -> Option<DateTime<Utc>> {
        self.jobs.values().filter_map(|e| e.due).min()
    }

    /// When `job` next runs (jitter included), if it is scheduled and ever fires again.
    pub fn next_run(&self, job: &str) -> Option<DateTime<Utc>> {
        self.jobs.get(job).and_then(|e| e.due)
    }

    /// Whether `job` is running.
    pub fn is_running(&self, job: &str) -> bool {
        self.running.contains(job)
    }

    /// How many runs are running.
    pub fn running_count(&self) -> usize {
        self.running.len()
    }

    /// Drops every queued run (shutdown); returns the jobs dropped.
    pub fn drain_queue(&mut self) -> Vec<String> {
        self.queue.drain(..).map(|(_, j)| j).collect()
    }

    fn enqueue(&mut self, job: &str, due: DateTime<Utc>, out: &mut Vec<Decision>) {
        let reason = if self.running.contains(job) {
            Some(SkipReason::StillRunning)
        } else if self.queue.iter().any(|(_, j)| j == job) {
            Some(SkipReason::StillQueued)
        } else {
            None
        };
        match reason {
            Some(reason) => out.push(Decision::Skipped {
                job: job.to_owned(),
                due,
                reason,
            }),
            None => {
                let at = self
                    .queue
                    .partition_point(|(d, j)| (*d, j.as_str()) <= (due, job));
                self.queue.insert(at, (due, job.to_owned()));
                out.push(Decision::Queued {
                    job: job.to_owned(),
                    due,
                });
            }
        }
    }

    /// Starts queued runs while slots are free. A run queued and started within the same call is reported
    /// as started only.
    fn start_queued(&mut self, out: &mut Vec<Decision>) {
        while self.running.len() < self.max_concurrent && !self.queue.is_empty() {
            let (due, job) = self.queue.remove(0);
            out.retain(|d| !matches!(d, Decision::Queued { job: j, .. } if *j == job));
            self.running.insert(job.clone());
            out.push(Decision::Start { job, due });
        }
    }

    /// Moves `entry` to its first fire time after `now` (several missed fires collapse into the one just
    /// handled), with a fresh jitter.
    fn advance(&mut self, entry: &mut Entry, now: DateTime<Utc>) {
        let from = entry.nominal.map_or(now, |n| n.max(now));
        entry.nominal = entry.schedule.next_after(from);
        entry.due = entry.nominal.map(|n| {
            let delay = (self.jitter)(entry.jitter);
            n + chrono::Duration::from_std(delay).unwrap_or_default()
        });
    }
}

/// Whether a job missed a run while nothing was running it: the store's newest snapshot of the job started
/// before the schedule's most recent fire time (or there is none). `None` for `newest_started` means the store
/// holds no snapshot of the job.
pub fn missed_a_run(
    schedule: &Schedule,
    newest_started: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> bool {
    match schedule.last_at_or_before(now) {
        None => false,
        Some(last_fire) => newest_started.is_none_or(|t| t < last_fire),
    }
}

/// What "one interval" of a schedule is, for staleness alerts: the longest gap between consecutive fire times
/// over the next 64 fires (a week-day schedule's is the weekend, 72 h).
pub fn expected_interval(schedule: &Schedule, now: DateTime<Utc>) -> Option<Duration> {
    schedule
        .longest_gap_after(now, 64)
        .and_then(|d| d.to_std().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    fn schedule(expr: &str) -> Schedule {
        Schedule::new(expr, chrono_tz::UTC).unwrap()
    }

    fn no_jitter(max: usize) -> Planner {
        Planner::new(max, Box::new(|_| Duration::ZERO))
    }

    fn started(decisions: &[Decision]) -> Vec<&str> {
        decisions
            .iter()
            .filter_map(|d| match d {
                Decision::Start { job, .. } => Some(job.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_job_starts_when_due_and_not_before() {
        let mut p = no_jitter(2);
        let t0 = utc(2026, 3, 1, 10, 0);
        p.upsert("db", schedule("30 * * * *"), Duration::ZERO, t0);
        assert_eq!(p.next_run("db"), Some(utc(2026, 3, 1, 10, 30)));
        assert_eq!(p.next_wakeup(), Some(utc(2026, 3, 1, 10, 30)));
        assert!(p.poll(utc(2026, 3, 1, 10, 29)).is_empty());
        let d = p.poll(utc(2026, 3, 1, 10, 30));
        assert_eq!(
            d,
            [Decision::Start {
                job: "db".into(),
                due: utc(2026, 3, 1, 10, 30)
            }]
        );
        assert!(p.is_running("db"));
        assert_eq!(p.next_run("db"), Some(utc(2026, 3, 1, 11, 30)));
    }

    #[test]
    fn a_job_never_overlaps_itself() {
        let mut p = no_jitter(4);
        let t0 = utc(2026, 3, 1, 10, 0);
        p.upsert("db", schedule("* * * * *"), Duration::ZERO, t0);
        assert_eq!(started(&p.poll(utc(2026, 3, 1, 10, 1))), ["db"]);
        // Still running a minute later: that run is skipped, not started twice.
        let d = p.poll(utc(2026, 3, 1, 10, 2));
        assert_eq!(
            d,
            [Decision::Skipped {
                job: "db".into(),
                due: utc(2026, 3, 1, 10, 2),
                reason: SkipReason::StillRunning
            }]
        );
        assert_eq!(p.running_count(), 1);
        // Once finished, the next due time starts it again.
        assert!(p.finished("db").is_empty());
        assert_eq!(started(&p.poll(utc(2026, 3, 1, 10, 3))), ["db"]);
    }

    #[test]
    fn concurrency_cap_queues_in_due_order() {
        let mut p = no_jitter(2);
        let t0 = utc(2026, 3, 1, 9, 0);
        p.upsert("a", schedule("0 10 * * *"), Duration::ZERO, t0);
        p.upsert("b", schedule("0 10 * * *"), Duration::ZERO, t0);
        p.upsert("c", schedule("5 10 * * *"), Duration::ZERO, t0);
        p.upsert("d", schedule("1 10 * * *"), Duration::ZERO, t0);
        let d = p.poll(utc(2026, 3, 1, 10, 0));
        assert_eq!(started(&d), ["a", "b"]);
        // d (due 10:01) and c (due 10:05) wait; c is polled first but d was due first.
        let d5 = p.poll(utc(2026, 3, 1, 10, 5));
        assert_eq!(
            d5,
            [
                Decision::Queued {
                    job: "c".into(),
                    due: utc(2026, 3, 1, 10, 5)
                },
                Decision::Queued {
                    job: "d".into(),
                    due: utc(2026, 3, 1, 10, 1)
                },
            ]
        );
        assert_eq!(p.running_count(), 2);
        assert_eq!(started(&p.finished("b")), ["d"]);
        assert_eq!(started(&p.finished("a")), ["c"]);
        assert!(p.finished("d").is_empty());
        assert_eq!(p.running_count(), 1);
    }

    #[test]
    fn a_queued_job_due_again_is_skipped() {
        let mut p = no_jitter(1);
        let t0 = utc(2026, 3, 1, 9, 59);
        p.upsert("long", schedule("0 * * * *"), Duration::ZERO, t0);
        p.upsert("quick", schedule("*/30 * * * *"), Duration::ZERO, t0);
        let d = p.poll(utc(2026, 3, 1, 10, 0));
        assert_eq!(started(&d), ["long"]);
        assert!(d.contains(&Decision::Queued {
            job: "quick".into(),
            due: utc(2026, 3, 1, 10, 0)
        }));
        let d = p.poll(utc(2026, 3, 1, 10, 30));
        assert_eq!(
            d,
            [Decision::Skipped {
                job: "quick".into(),
                due: utc(2026, 3, 1, 10, 30),
                reason: SkipReason::StillQueued
            }]
        );
        let d = p.poll(utc(2026, 3, 1, 11, 0));
        assert!(d.contains(&Decision::Skipped {
            job: "quick".into(),
            due: utc(2026, 3, 1, 11, 0),
            reason: SkipReason::StillQueued
        }));
        assert!(d.contains(&Decision::Skipped {
            job: "long".into(),
            due: utc(2026, 3, 1, 11, 0),
            reason: SkipReason::StillRunning
        }));
    }

    #[test]
    fn missed_fires_after_a_pause_collapse_into_one_run() {
        let mut p = no_jitter(1);
        p.upsert(
            "db",
            schedule("*/10 * * * *"),
            Duration::ZERO,
            utc(2026, 3, 1, 9, 55),
        );
        // The process was suspended for an hour: one run, and the next is in the future.
        let d = p.poll(utc(2026, 3, 1, 11, 3));
        assert_eq!(started(&d), ["db"]);
        assert_eq!(p.next_run("db"), Some(utc(2026, 3, 1, 11, 10)));
    }

    #[test]
    fn jitter_delays_each_run_within_its_bound() {
        let mut p = Planner::new(1, Box::new(|max| max / 2));
        p.upsert(
            "db",
            schedule("0 * * * *"),
            Duration::from_secs(600),
            utc(2026, 3, 1, 9, 30),
        );
        assert_eq!(
            p.next_run("db"),
            Some(utc(2026, 3, 1, 10, 5)),
            "due at 10:00 plus 5 of at most 10 minutes"
        );
        assert!(p.poll(utc(2026, 3, 1, 10, 4)).is_empty());
        assert_eq!(started(&p.poll(utc(2026, 3, 1, 10, 5))), ["db"]);
        assert_eq!(p.next_run("db"), Some(utc(2026, 3, 1, 11, 5)));
        let mut random = Planner::with_random_jitter(1);
        for _ in 0..50 {
            random.upsert(
                "db",
                schedule("0 * * * *"),
                Duration::from_secs(600),
                utc(2026, 3, 1, 9, 30),
            );
            let next = random.next_run("db").unwrap();
            assert!(next >= utc(2026, 3, 1, 10, 0) && next < utc(2026, 3, 1, 10, 10));
        }
        // Below the millisecond resolution: no delay, no panic.
        random.upsert(
            "db",
            schedule("0 * * * *"),
            Duration::from_micros(500),
            utc(2026, 3, 1, 9, 30),
        );
        assert_eq!(random.next_run("db"), Some(utc(2026, 3, 1, 10, 0)));
    }

    #[test]
    fn run_now_starts_a_catch_up_and_respects_overlap() {
        let mut p = no_jitter(1);
        let now = utc(2026, 3, 1, 10, 7);
        p.upsert("db", schedule("0 * * * *"), Duration::ZERO, now);
        assert_eq!(started(&p.run_now("db", now)), ["db"]);
        assert!(matches!(
            p.run_now("db", now).as_slice(),
            [Decision::Skipped {
                reason: SkipReason::StillRunning,
                ..
            }]
        ));
        assert!(p.run_now("unknown", now).is_empty());
    }

    #[test]
    fn removing_a_job_drops_its_queued_run() {
        let mut p = no_jitter(1);
        let t0 = utc(2026, 3, 1, 9, 59);
        p.upsert("a", schedule("0 * * * *"), Duration::ZERO, t0);
        p.upsert("b", schedule("0 * * * *"), Duration::ZERO, t0);
        assert_eq!(started(&p.poll(utc(2026, 3, 1, 10, 0))), ["a"]);
        p.remove("b");
        assert!(p.finished("a").is_empty());
        assert_eq!(p.next_run("b"), None);
        assert_eq!(p.jobs().collect::<Vec<_>>(), ["a"]);
    }

    #[test]
    fn fire_times_follow_dst_in_the_jobs_zone() {
        let berlin = Schedule::new("30 2 * * *", chrono_tz::Europe::Berlin).unwrap();
        let mut p = no_jitter(1);
        // Spring forward: 02:30 does not exist on 2026-03-29; the run happens once, at 03:00 CEST (01:00 UTC).
        p.upsert(
            "db",
            berlin.clone(),
            Duration::ZERO,
            utc(2026, 3, 28, 12, 0),
        );
        assert_eq!(p.next_run("db"), Some(utc(2026, 3, 29, 1, 0)));
        assert_eq!(started(&p.poll(utc(2026, 3, 29, 1, 0))), ["db"]);
        p.finished("db");
        assert_eq!(p.next_run("db"), Some(utc(2026, 3, 30, 0, 30)));
        // Fall back: 02:30 happens twice on 2026-10-25; the job runs once, then the next day.
        p.upsert("db", berlin, Duration::ZERO, utc(2026, 10, 24, 12, 0));
        assert_eq!(started(&p.poll(utc(2026, 10, 25, 0, 30))), ["db"]);
        p.finished("db");
        assert!(p.poll(utc(2026, 10, 25, 1, 30)).is_empty());
        assert_eq!(p.next_run("db"), Some(utc(2026, 10, 26, 1, 30)));
    }

    #[test]
    fn catch_up_is_decided_by_the_newest_snapshot() {
        let daily = schedule("30 2 * * *");
        let now = utc(2026, 3, 2, 10, 0);
        // No snapshot at all: run now.
        assert!(missed_a_run(&daily, None, now));
        // Yesterday's 02:30 run exists but today's 02:30 was missed.
        assert!(missed_a_run(&daily, Some(utc(2026, 3, 1, 2, 30)), now));
        // Today's run exists (started at, or after, its due time).
        assert!(!missed_a_run(&daily, Some(utc(2026, 3, 2, 2, 30)), now));
        assert!(!missed_a_run(&daily, Some(utc(2026, 3, 2, 2, 41)), now));
        // Weekdays: on Sunday, Friday's snapshot is the newest one due.
        let weekdays = schedule("0 3 * * 1-5");
        let sunday = utc(2026, 3, 8, 12, 0);
        assert!(!missed_a_run(
            &weekdays,
            Some(utc(2026, 3, 6, 3, 0)),
            sunday
        ));
        assert!(missed_a_run(&weekdays, Some(utc(2026, 3, 5, 3, 0)), sunday));
    }

    #[test]
    fn expected_interval_is_the_longest_gap() {
        let now = utc(2026, 3, 2, 10, 0);
        assert_eq!(
            expected_interval(&schedule("0 */6 * * *"), now),
            Some(Duration::from_secs(6 * 3600))
        );
        assert_eq!(
            expected_interval(&schedule("0 3 * * 1-5"), now),
            Some(Duration::from_secs(72 * 3600))
        );
    }
}
