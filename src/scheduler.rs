//! The scheduled worker: cron triggers, bounded concurrency and shutdown.
//!
//! Each pipeline follows its own schedule ([`follow`]): one run at start for the backlog, then a
//! run at every instant of its cron expression. A run is never replayed tick by tick: when ticks
//! pass while a run is going on or while the host is asleep, the next run starts at once and
//! takes everything waiting, then the schedule resumes from the start of that run. Waiting is
//! done in slices of at most [`MAX_SLEEP`] against the injected [`Clock`], so a wall clock that
//! jumps (a suspended host, a corrected clock) is noticed within one slice, and tests drive it
//! with `tokio::time::pause`.
//!
//! [`PipelineRunner`] is the real run: it lists the bucket, keeps the uploads of its dataset
//! (and those under no known dataset, which every run takes: whichever claims first rejects
//! them with `upload_location_invalid`), and processes them with at most `max_in_flight` at
//! once across all pipelines. CPU work happens in `spawn_blocking` inside
//! [`Service::process_claim`], keeping the upload's span.
//!
//! Shutdown ([`run_until_shutdown`]): once draining begins no run starts and no upload is
//! claimed; uploads in flight finish if they can before the deadline, otherwise they are
//! dropped and their claims released. Nothing half-written becomes visible, because every
//! object is written atomically and an upload's manifest entry and done-marker come after its
//! outputs (see `pipeline`).

use std::collections::BTreeSet;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{Instrument, error, info, info_span, warn};

use crate::clock::Clock;
use crate::config::Project;
use crate::layout::UNROUTED;
use crate::pipeline::{PipelineError, Service, SubmissionSummary, upload_span};
use crate::shutdown::{Shutdown, ShutdownController};
use crate::store::ObjectMeta;
use crate::telemetry::{Metrics, RunResult};

/// The longest single sleep: the wall clock is looked at again at least this often.
pub const MAX_SLEEP: Duration = Duration::from_secs(10);

/// How long abandoned uploads get to release their claims once the deadline has passed.
pub const RELEASE_GRACE: Duration = Duration::from_secs(5);

/// A problem setting the worker up.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// A pipeline's schedule does not parse (`check-config` reports it with its line).
    #[error(
        "the schedule `{expression}` of pipeline `{dataset}` is not a valid cron expression: {message}"
    )]
    Schedule {
        /// The pipeline.
        dataset: String,
        /// The expression.
        expression: String,
        /// The parser's message.
        message: String,
    },
}

/// One pipeline's dataset and its parsed schedule.
#[derive(Debug, Clone)]
pub struct ScheduledPipeline {
    /// The dataset the pipeline processes.
    pub dataset: String,
    /// When it runs.
    pub schedule: cron::Schedule,
}

impl ScheduledPipeline {
    /// Parses `expression` with the same parser `check-config` uses.
    pub fn new(dataset: &str, expression: &str) -> Result<ScheduledPipeline, SchedulerError> {
        let schedule =
            cron::Schedule::from_str(expression).map_err(|e| SchedulerError::Schedule {
                dataset: dataset.to_owned(),
                expression: expression.to_owned(),
                message: e.to_string(),
            })?;
        Ok(ScheduledPipeline {
            dataset: dataset.to_owned(),
            schedule,
        })
    }
}

/// The first instant of `schedule` strictly after `after`, if the schedule has one.
pub fn next_after(schedule: &cron::Schedule, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    schedule.after(&after).next()
}

/// One run of one pipeline. [`PipelineRunner`] is the real one; tests use recorders.
#[async_trait]
pub trait Runner: Send + Sync {
    /// Processes what is waiting for `dataset`, stopping early when `shutdown` says so.
    async fn run(&self, dataset: &str, shutdown: &Shutdown);
}

/// Waits until the wall clock reads `due`, in slices of at most [`MAX_SLEEP`]. `false` when
/// draining began first.
async fn wait_until(clock: &dyn Clock, due: DateTime<Utc>, shutdown: &Shutdown) -> bool {
    loop {
        if shutdown.is_draining() {
            return false;
        }
        let now = clock.now();
        if now >= due {
            return true;
        }
        let wait = (due - now).to_std().unwrap_or_default().min(MAX_SLEEP);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.draining() => return false,
        }
    }
}

/// Follows one pipeline's schedule until draining begins: a run at once (the backlog), then
/// one at each instant of the schedule, catching up missed instants with a single run.
pub async fn follow(
    pipeline: &ScheduledPipeline,
    clock: &dyn Clock,
    runner: &dyn Runner,
    shutdown: &Shutdown,
) {
    let mut due = clock.now();
    let mut reason = "backlog at start";
    while wait_until(clock, due, shutdown).await {
        let started = clock.now();
        let span = info_span!(
            "run",
            dataset = %pipeline.dataset,
            due = %due.to_rfc3339_opts(SecondsFormat::Secs, true),
            reason,
        );
        runner
            .run(&pipeline.dataset, shutdown)
            .instrument(span)
            .await;
        if shutdown.is_draining() {
            break;
        }
        let Some(next) = next_after(&pipeline.schedule, started) else {
            info!(dataset = %pipeline.dataset, "the schedule has no further instants; the pipeline stops");
            return;
        };
        due = next;
        reason = if next <= clock.now() {
            "catch-up: scheduled instants passed while the last run was going on"
        } else {
            "schedule"
        };
        info!(dataset = %pipeline.dataset, next = %next.to_rfc3339_opts(SecondsFormat::Secs, true), "next run");
    }
}

/// Every pipeline on its own schedule.
pub struct Worker {
    pipelines: Vec<ScheduledPipeline>,
    clock: Arc<dyn Clock>,
    runner: Arc<dyn Runner>,
}

impl Worker {
    /// A worker for every pipeline of `project`.
    pub fn new(
        project: &Project,
        clock: Arc<dyn Clock>,
        runner: Arc<dyn Runner>,
    ) -> Result<Worker, SchedulerError> {
        let pipelines = project
            .pipelines
            .values()
            .map(|p| ScheduledPipeline::new(&p.dataset, &p.schedule))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Worker::from_schedules(pipelines, clock, runner))
    }

    /// A worker for the given schedules.
    pub fn from_schedules(
        pipelines: Vec<ScheduledPipeline>,
        clock: Arc<dyn Clock>,
        runner: Arc<dyn Runner>,
    ) -> Worker {
        Worker {
            pipelines,
            clock,
            runner,
        }
    }

    /// Follows every schedule until draining begins and every run has ended.
    pub async fn run(&self, shutdown: Shutdown) {
        let mut loops = JoinSet::new();
        for pipeline in self.pipelines.clone() {
            let (clock, runner, shutdown) = (
                Arc::clone(&self.clock),
                Arc::clone(&self.runner),
                shutdown.clone(),
            );
            loops.spawn(
                async move { follow(&pipeline, clock.as_ref(), runner.as_ref(), &shutdown).await }
                    .in_current_span(),
            );
        }
        while let Some(ended) = loops.join_next().await {
            if let Err(e) = ended {
                error!(error = %e, "a pipeline's schedule loop failed");
            }
        }
    }
}

/// How the worker stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Every schedule ran out of instants (only schedules with a year field do).
    Finished,
    /// Shutdown: everything in flight finished within the deadline.
    Drained {
        /// From the start of draining to the end of the last run.
        took: Duration,
    },
    /// Shutdown: the deadline passed (or a second signal came); work in flight was dropped and
    /// its claims released.
    Abandoned {
        /// From the start of draining to the end of the last run.
        took: Duration,
    },
}

/// Runs `worker` until the controller starts draining, then waits up to `deadline` for work in
/// flight before abandoning it (at once if the controller is told to abandon sooner).
pub async fn run_until_shutdown(
    worker: &Worker,
    controller: &ShutdownController,
    deadline: Duration,
) -> Stopped {
    let shutdown = controller.subscribe();
    let work = worker.run(shutdown.clone());
    tokio::pin!(work);
    tokio::select! {
        () = &mut work => return Stopped::Finished,
        () = shutdown.draining() => {}
    }
    let started = tokio::time::Instant::now();
    info!(
        deadline_seconds = deadline.as_secs_f64(),
        "shutting down: no new uploads are claimed; waiting for those in flight"
    );
    let why = tokio::select! {
        () = &mut work => {
            return Stopped::Drained {
                took: started.elapsed(),
            };
        }
        () = tokio::time::sleep(deadline) => "the shutdown deadline passed",
        () = shutdown.abandoning() => "told to stop at once",
    };
    warn!("{why}: dropping uploads in flight and releasing their claims");
    controller.abandon();
    if tokio::time::timeout(RELEASE_GRACE, &mut work)
        .await
        .is_err()
    {
        error!(
            "uploads in flight did not release their claims in time; they will be taken over when the claims expire"
        );
    }
    Stopped::Abandoned {
        took: started.elapsed(),
    }
}

/// What one run of a pipeline did.
#[derive(Debug, Default)]
pub struct RunReport {
    /// Uploads processed to a decision.
    pub processed: Vec<SubmissionSummary>,
    /// Uploads left to another worker.
    pub skipped: usize,
    /// Uploads that failed for a reason outside the data; retried next run.
    pub failed: Vec<(String, String)>,
    /// Uploads dropped at the shutdown deadline, their claims released.
    pub released: Vec<String>,
    /// Uploads found waiting but not started because shutdown began.
    pub not_started: usize,
}

impl RunReport {
    fn result(&self) -> RunResult {
        if !self.failed.is_empty() {
            RunResult::Failed
        } else if self.not_started > 0 || !self.released.is_empty() {
            RunResult::Interrupted
        } else {
            RunResult::Ok
        }
    }
}

enum UploadResult {
    Processed(Box<SubmissionSummary>),
    Skipped,
    Failed(String),
    Released,
    NotStarted,
}

/// Runs pipelines over the bucket for the worker: the [`Runner`] of the real service.
#[derive(Clone)]
pub struct PipelineRunner {
    service: Arc<Service>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    limit: Arc<Semaphore>,
    datasets: Arc<BTreeSet<String>>,
}

impl PipelineRunner {
    /// A runner processing at most `max_in_flight` uploads at once, over all pipelines.
    pub fn new(
        service: Arc<Service>,
        project: &Project,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        max_in_flight: usize,
    ) -> PipelineRunner {
        PipelineRunner {
            service,
            metrics,
            clock,
            limit: Arc::new(Semaphore::new(max_in_flight.max(1))),
            datasets: Arc::new(project.pipelines.keys().cloned().collect()),
        }
    }

    /// Whether a run of `dataset` takes the upload at `key`, and the label it is counted under:
    /// the dataset itself, or [`UNROUTED`] when the key's dataset folder names no pipeline.
    /// `None` when another pipeline's runs take it.
    fn label_for(&self, key: &str, dataset: &str) -> Option<String> {
        match crate::layout::dataset_folder(key) {
            Some(d) if d == dataset => Some(dataset.to_owned()),
            Some(d) if self.datasets.contains(d) => None,
            _ => Some(UNROUTED.to_owned()),
        }
    }

    /// One run over `dataset`: every new upload of that dataset and every upload under no known
    /// dataset, at most `max_in_flight` at once, until done or shut down.
    pub async fn run_dataset(
        &self,
        dataset: &str,
        shutdown: &Shutdown,
    ) -> Result<RunReport, PipelineError> {
        let pending = self.service.discover().await?;
        let work: Vec<(ObjectMeta, String)> = pending
            .into_iter()
            .filter_map(|m| {
                let label = self.label_for(&m.key, dataset)?;
                Some((m, label))
            })
            .collect();
        let unrouted = work.iter().filter(|(_, l)| l == UNROUTED).count();
        self.metrics.set_backlog(dataset, work.len() - unrouted);
        self.metrics.set_backlog(UNROUTED, unrouted);
        info!(pending = work.len(), unrouted, "run started");

        let mut report = RunReport::default();
        let mut tasks = JoinSet::new();
        let mut work = work.into_iter();
        while let Some((object, label)) = work.next() {
            // Wait for a free slot, taking finished uploads as they come, unless shutdown
            // begins first.
            let permit = loop {
                tokio::select! {
                    biased;
                    () = shutdown.draining() => break None,
                    Some(joined) = tasks.join_next() => self.record(joined, &mut report),
                    permit = Arc::clone(&self.limit).acquire_owned() => break permit.ok(),
                }
            };
            let Some(permit) = permit else {
                report.not_started += 1 + work.len();
                break;
            };
            let this = self.clone();
            let shutdown = shutdown.clone();
            let span = upload_span(&object);
            tasks.spawn(
                async move {
                    let result = this.one(&object, &shutdown).await;
                    drop(permit);
                    (object.key, label, result)
                }
                .instrument(span),
            );
        }
        while let Some(joined) = tasks.join_next().await {
            self.record(joined, &mut report);
        }
        report.failed.extend(self.service.finish_run().await);
        info!(
            processed = report.processed.len(),
            skipped = report.skipped,
            failed = report.failed.len(),
            released = report.released.len(),
            not_started = report.not_started,
            "run finished"
        );
        Ok(report)
    }

    /// Adds a finished upload to the run's report and the metrics.
    fn record(
        &self,
        joined: Result<(String, String, UploadResult), tokio::task::JoinError>,
        report: &mut RunReport,
    ) {
        let (key, label, result) = match joined {
            Ok(r) => r,
            Err(e) => {
                error!(error = %e, "an upload task failed");
                report.failed.push((String::new(), e.to_string()));
                return;
            }
        };
        match result {
            UploadResult::Processed(summary) => {
                self.metrics.backlog_done(&label);
                report.processed.push(*summary);
            }
            UploadResult::Skipped => {
                self.metrics.backlog_done(&label);
                self.metrics.upload_skipped(&label);
                report.skipped += 1;
            }
            UploadResult::Failed(message) => {
                self.metrics.upload_failed(&label);
                report.failed.push((key, message));
            }
            UploadResult::Released => report.released.push(key),
            UploadResult::NotStarted => report.not_started += 1,
        }
    }

    /// Claims and processes one upload, giving the claim back if shutdown abandons it.
    async fn one(&self, object: &ObjectMeta, shutdown: &Shutdown) -> UploadResult {
        if shutdown.is_draining() {
            return UploadResult::NotStarted;
        }
        let _in_flight = self.metrics.in_flight();
        let started = Instant::now();
        let claimed = match self.service.try_claim(object).await {
            Ok(Some(c)) => c,
            Ok(None) => return UploadResult::Skipped,
            Err(e) => {
                error!(error = %e, "upload not claimed; it will be retried");
                return UploadResult::Failed(e.to_string());
            }
        };
        tokio::select! {
            biased;
            result = self.service.process_claim(&claimed) => match result {
                Ok(Some(summary)) => {
                    self.metrics
                        .upload_processed(&summary, started.elapsed().as_secs_f64());
                    UploadResult::Processed(Box::new(summary))
                }
                // Replaced since it was listed: the next run processes the new version.
                Ok(None) => UploadResult::Skipped,
                Err(e) => {
                    error!(error = %e, "upload not processed; it will be retried");
                    UploadResult::Failed(e.to_string())
                }
            },
            () = shutdown.abandoning() => {
                match self.service.release(&claimed).await {
                    Ok(()) => warn!("shutdown: upload dropped and its claim released"),
                    Err(e) => error!(error = %e, "upload dropped at shutdown but its claim could not be released; it is taken over when the claim expires"),
                }
                UploadResult::Released
            }
        }
    }
}

#[async_trait]
impl Runner for PipelineRunner {
    async fn run(&self, dataset: &str, shutdown: &Shutdown) {
        let result = match self.run_dataset(dataset, shutdown).await {
            Ok(report) => report.result(),
            Err(e) => {
                error!(error = %e, "run failed; the uploads are retried on the next run");
                RunResult::Failed
            }
        };
        self.metrics.run_finished(dataset, result, self.clock.now());
    }
}

/// Reads a duration as `30s`, `500ms`, `2m`, `1h` or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration such as 30s, 500ms, 2m or 1h"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("`{other}` is not a unit of time (ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("`{text}`: {e}"))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    /// Wall time that moves with tokio's (paused) clock, plus a jump the test can add.
    struct TokioClock {
        base: DateTime<Utc>,
        start: tokio::time::Instant,
        jump: Mutex<chrono::Duration>,
    }

    impl TokioClock {
        fn starting(text: &str) -> Arc<TokioClock> {
            Arc::new(TokioClock {
                base: at(text),
                start: tokio::time::Instant::now(),
                jump: Mutex::new(chrono::Duration::zero()),
            })
        }

        fn jump(&self, by: chrono::Duration) {
            *self.jump.lock().unwrap() += by;
        }
    }

    impl Clock for TokioClock {
        fn now(&self) -> DateTime<Utc> {
            let elapsed = chrono::Duration::from_std(self.start.elapsed()).unwrap();
            self.base + elapsed + *self.jump.lock().unwrap()
        }
    }

    /// Records when each run starts; a run may be told to take a while.
    struct Recorder {
        clock: Arc<TokioClock>,
        runs: Mutex<Vec<(String, DateTime<Utc>)>>,
        /// (run number, how long it takes).
        slow: Option<(usize, Duration)>,
        abandoned: Mutex<usize>,
    }

    impl Recorder {
        fn new(clock: &Arc<TokioClock>, slow: Option<(usize, Duration)>) -> Arc<Recorder> {
            Arc::new(Recorder {
                clock: Arc::clone(clock),
                runs: Mutex::new(Vec::new()),
                slow,
                abandoned: Mutex::new(0),
            })
        }

        fn times(&self, dataset: &str) -> Vec<String> {
            self.runs
                .lock()
                .unwrap()
                .iter()
                .filter(|(d, _)| d == dataset)
                .map(|(_, t)| t.format("%H:%M:%S%.3f").to_string())
                .collect()
        }
    }

    #[async_trait]
    impl Runner for Recorder {
        async fn run(&self, dataset: &str, shutdown: &Shutdown) {
            let n = {
                let mut runs = self.runs.lock().unwrap();
                runs.push((dataset.to_owned(), self.clock.now()));
                runs.len()
            };
            if let Some((slow, took)) = self.slow
                && slow == n
            {
                tokio::select! {
                    () = tokio::time::sleep(took) => {}
                    () = shutdown.abandoning() => *self.abandoned.lock().unwrap() += 1,
                }
            }
        }
    }

    fn worker(
        clock: &Arc<TokioClock>,
        runner: &Arc<Recorder>,
        schedules: &[(&str, &str)],
    ) -> Worker {
        Worker::from_schedules(
            schedules
                .iter()
                .map(|(d, e)| ScheduledPipeline::new(d, e).unwrap())
                .collect(),
            Arc::clone(clock) as Arc<dyn Clock>,
            Arc::clone(runner) as Arc<dyn Runner>,
        )
    }

    /// Runs the worker for `for_` of (paused) time, then drains it.
    async fn run_for(worker: Worker, for_: Duration) -> Stopped {
        let (controller, _) = ShutdownController::new();
        let drain_later = async {
            tokio::time::sleep(for_).await;
            controller.drain();
        };
        let (stopped, ()) = tokio::join!(
            run_until_shutdown(&worker, &controller, Duration::from_secs(30)),
            drain_later
        );
        stopped
    }

    #[test]
    fn next_instants_are_strictly_after_and_on_the_second() {
        let s = ScheduledPipeline::new("x", "0 */5 * * * *")
            .unwrap()
            .schedule;
        let mut t = at("2020-03-05T10:02:30Z");
        let mut got = Vec::new();
        for _ in 0..3 {
            t = next_after(&s, t).unwrap();
            got.push(t.format("%H:%M:%S").to_string());
        }
        assert_eq!(got, ["10:05:00", "10:10:00", "10:15:00"]);
        assert_eq!(
            next_after(&s, at("2020-03-05T10:05:00Z")),
            Some(at("2020-03-05T10:10:00Z"))
        );
        assert_eq!(
            next_after(&s, at("2020-03-05T10:04:59.999Z")),
            Some(at("2020-03-05T10:05:00Z"))
        );
        assert_eq!(
            next_after(&s, at("2020-03-05T10:05:00.001Z")),
            Some(at("2020-03-05T10:10:00Z"))
        );
    }

    #[test]
    fn day_of_week_counts_from_sunday_and_combines_with_day_of_month_by_and() {
        // 2020-03-01 was a Sunday: `1` in the day-of-week field.
        let sunday = ScheduledPipeline::new("x", "0 0 6 * * 1").unwrap().schedule;
        assert_eq!(
            next_after(&sunday, at("2020-02-28T00:00:00Z")),
            Some(at("2020-03-01T06:00:00Z"))
        );
        // Day 1 *and* Monday: the next 1st of a month that is a Monday (June 2020).
        let first_monday = ScheduledPipeline::new("x", "0 0 6 1 * Mon")
            .unwrap()
            .schedule;
        assert_eq!(
            next_after(&first_monday, at("2020-03-05T00:00:00Z")),
            Some(at("2020-06-01T06:00:00Z"))
        );
        // Five fields (no seconds) are refused, as check-config refuses them.
        assert!(ScheduledPipeline::new("x", "*/15 * * * *").is_err());
    }

    #[test]
    fn every_example_in_the_pipeline_docs_means_what_it_says() {
        let docs = include_str!("../docs/pipelines.md");
        let from = at("2020-03-05T10:02:30Z");
        let mut checked = 0;
        for line in docs.lines() {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let [_, expression, _, next, _] = cells.as_slice() else {
                continue;
            };
            let (Some(expression), Some(next)) = (
                expression
                    .strip_prefix('`')
                    .and_then(|e| e.strip_suffix('`')),
                next.strip_prefix('`').and_then(|e| e.strip_suffix('`')),
            ) else {
                continue;
            };
            let schedule = ScheduledPipeline::new("x", expression)
                .unwrap_or_else(|e| panic!("{line}: {e}"))
                .schedule;
            assert_eq!(next_after(&schedule, from), Some(at(next)), "{line}");
            checked += 1;
        }
        assert!(checked >= 12, "only {checked} examples found");
    }

    #[tokio::test(start_paused = true)]
    async fn every_five_minutes_runs_at_start_then_on_each_tick() {
        let clock = TokioClock::starting("2020-03-05T10:02:30Z");
        let runner = Recorder::new(&clock, None);
        let w = worker(&clock, &runner, &[("stop_search", "0 */5 * * * *")]);
        let stopped = run_for(w, Duration::from_mins(14)).await;
        assert_eq!(
            runner.times("stop_search"),
            [
                "10:02:30.000",
                "10:05:00.000",
                "10:10:00.000",
                "10:15:00.000"
            ]
        );
        assert!(matches!(stopped, Stopped::Drained { took } if took.is_zero()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_that_overruns_missed_ticks_is_followed_by_one_catch_up_run() {
        let clock = TokioClock::starting("2020-03-05T10:02:30Z");
        // The second run (10:05) takes 26 minutes, past five ticks.
        let runner = Recorder::new(&clock, Some((2, Duration::from_mins(26))));
        let w = worker(&clock, &runner, &[("stop_search", "0 */5 * * * *")]);
        run_for(w, Duration::from_mins(34)).await;
        assert_eq!(
            runner.times("stop_search"),
            [
                "10:02:30.000",
                "10:05:00.000",
                "10:31:00.000",
                "10:35:00.000"
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn after_the_host_sleeps_one_run_at_wake_up_then_the_schedule() {
        let clock = TokioClock::starting("2020-03-05T10:02:30Z");
        let runner = Recorder::new(&clock, None);
        let w = worker(&clock, &runner, &[("stop_search", "0 */5 * * * *")]);
        let sleeper = {
            let clock = Arc::clone(&clock);
            async move {
                // At 10:05:30 the wall clock jumps to 10:31:30, as after a suspended host.
                tokio::time::sleep(Duration::from_mins(3)).await;
                clock.jump(chrono::Duration::minutes(26));
            }
        };
        tokio::join!(run_for(w, Duration::from_mins(10)), sleeper);
        let times = runner.times("stop_search");
        assert_eq!(times.len(), 4, "{times:?}");
        assert_eq!(&times[..2], ["10:02:30.000", "10:05:00.000"]);
        // Noticed within one sleep slice of the jump, run once, then back on the schedule.
        assert!(
            ("10:31:30.000".."10:31:40.001").contains(&times[2].as_str()),
            "{times:?}"
        );
        assert_eq!(times[3], "10:35:00.000");
    }

    #[tokio::test(start_paused = true)]
    async fn each_pipeline_follows_its_own_schedule() {
        let clock = TokioClock::starting("2020-03-05T10:00:00.400Z");
        let runner = Recorder::new(&clock, None);
        let w = worker(
            &clock,
            &runner,
            &[("fast", "*/2 * * * * *"), ("hourly", "0 0 * * * *")],
        );
        run_for(w, Duration::from_secs(7)).await;
        assert_eq!(
            runner.times("fast"),
            [
                "10:00:00.400",
                "10:00:02.000",
                "10:00:04.000",
                "10:00:06.000"
            ]
        );
        assert_eq!(runner.times("hourly"), ["10:00:00.400"]);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_waits_for_a_run_within_the_deadline() {
        let clock = TokioClock::starting("2020-03-05T10:00:00Z");
        // The first run takes 20 s; shutdown comes 5 s into it; the deadline is 30 s.
        let runner = Recorder::new(&clock, Some((1, Duration::from_secs(20))));
        let w = worker(&clock, &runner, &[("stop_search", "*/2 * * * * *")]);
        let stopped = run_for(w, Duration::from_secs(5)).await;
        assert_eq!(
            stopped,
            Stopped::Drained {
                took: Duration::from_secs(15)
            }
        );
        assert_eq!(runner.times("stop_search"), ["10:00:00.000"]);
        assert_eq!(*runner.abandoned.lock().unwrap(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_abandons_a_run_at_the_deadline() {
        let clock = TokioClock::starting("2020-03-05T10:00:00Z");
        let runner = Recorder::new(&clock, Some((1, Duration::from_mins(10))));
        let w = worker(&clock, &runner, &[("stop_search", "*/2 * * * * *")]);
        let stopped = run_for(w, Duration::from_secs(5)).await;
        assert_eq!(
            stopped,
            Stopped::Abandoned {
                took: Duration::from_secs(30)
            }
        );
        assert_eq!(*runner.abandoned.lock().unwrap(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_signal_abandons_without_waiting_for_the_deadline() {
        let clock = TokioClock::starting("2020-03-05T10:00:00Z");
        let runner = Recorder::new(&clock, Some((1, Duration::from_mins(10))));
        let w = worker(&clock, &runner, &[("stop_search", "*/2 * * * * *")]);
        let (controller, _) = ShutdownController::new();
        let signals = async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            controller.drain();
            tokio::time::sleep(Duration::from_secs(2)).await;
            controller.abandon();
        };
        let (stopped, ()) = tokio::join!(
            run_until_shutdown(&w, &controller, Duration::from_secs(30)),
            signals
        );
        assert_eq!(
            stopped,
            Stopped::Abandoned {
                took: Duration::from_secs(2)
            }
        );
    }

    #[test]
    fn durations_read_as_operators_write_them() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_mins(2)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_mins(90)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3 fortnights").is_err());
    }
}
