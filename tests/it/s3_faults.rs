//! S3 faults, through the fault proxy in front of the S3 test server (moto): each kind of fault,
//! for a few requests, leaves every upload processed exactly once, with complete outputs and
//! the retries counted; an outage longer than the retry budget leaves the upload to the next
//! run, which processes it, and `/readyz` says the bucket is failing meanwhile.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use force_returns::api::{self, ApiState, Readiness};
use force_returns::clock::{Clock, FixedClock};
use force_returns::layout;
use force_returns::pipeline::{RunOptions, RunOutcome, Service};
use force_returns::shutdown::ShutdownController;
use force_returns::state::lease;
use force_returns::store::{ObjectStore, PutMode, S3Location, S3Observer, S3Options, S3Store};
use force_returns::telemetry::Metrics;

use crate::common::{check_processed_exactly_once, new_s3_bucket, project, s3_endpoint};
use crate::fault_proxy::{Fault, FaultProxy, Rule, RuleHandle};

/// How long readiness trusts what it heard, in these tests.
const READY_INTERVAL: Duration = Duration::from_secs(30);

/// A bucket on the S3 test server, reached directly (to set up and to check) and through the
/// fault proxy (by the service under test, with metrics and readiness listening).
struct Faulty {
    proxy: FaultProxy,
    direct: Arc<S3Store>,
    store: Arc<S3Store>,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    clock: Arc<FixedClock>,
}

impl Faulty {
    /// The bucket without the proxy, as the shared checks take it.
    fn dyn_direct(&self) -> Arc<dyn ObjectStore> {
        Arc::clone(&self.direct) as Arc<dyn ObjectStore>
    }

    async fn new(attempt_timeout: Duration) -> Faulty {
        let endpoint = s3_endpoint();
        let direct = new_s3_bucket(&endpoint).await;
        let proxy = FaultProxy::start(&endpoint);
        let clock = Arc::new(FixedClock::new("2020-03-05T09:00:00Z".parse().unwrap()));
        let metrics = Arc::new(Metrics::new(["stop_search"]));
        let readiness = Arc::new(Readiness::new(
            Arc::clone(&clock) as Arc<dyn Clock>,
            READY_INTERVAL,
        ));
        let sdk = aws_config::defaults(BehaviorVersion::latest())
            .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
            .region(Region::from_static("us-east-1"))
            .load()
            .await;
        let store = Arc::new(S3Store::from_sdk_config(
            &sdk,
            S3Location::parse(&format!("s3://{}", direct.s3_location().bucket)).unwrap(),
            S3Options {
                endpoint: Some(proxy.endpoint().to_owned()),
                path_style: true,
                initial_backoff: Duration::from_millis(10),
                max_backoff: Duration::from_millis(200),
                attempt_timeout,
                observers: vec![
                    Arc::clone(&metrics) as Arc<dyn S3Observer>,
                    Arc::clone(&readiness) as Arc<dyn S3Observer>,
                ],
                ..S3Options::default()
            },
        ));
        Faulty {
            proxy,
            direct,
            store,
            metrics,
            readiness,
            clock,
        }
    }

    fn service(&self) -> Service {
        Service::new(
            project(),
            Arc::clone(&self.store) as Arc<dyn ObjectStore>,
            Arc::clone(&self.clock) as Arc<dyn Clock>,
            RunOptions::default(),
        )
    }

    /// Uploads one clean January 2020 extract for each force, straight to the bucket.
    async fn upload(&self, forces: &[&str]) -> Vec<String> {
        let mut keys = Vec::new();
        for (n, force) in forces.iter().enumerate() {
            let key = format!("incoming/{force}/stop_search/2020-01/extract.csv");
            self.direct
                .put(&key, extract(200 + n * 7), PutMode::Overwrite)
                .await
                .unwrap();
            keys.push(key);
        }
        keys
    }

    /// The value of a counter of the S3 client, 0 when it has no series yet.
    fn counter(&self, series: &str) -> u64 {
        let text = self.metrics.render();
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)?
                    .strip_prefix(' ')?
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or(0)
    }

    fn retries(&self, operation: &str, reason: &str) -> u64 {
        self.counter(&format!(
            "force_returns_s3_retries_total{{operation=\"{operation}\",reason=\"{reason}\"}}"
        ))
    }

    fn later(&self, by: Duration) {
        self.clock
            .set(self.clock.now() + chrono::Duration::from_std(by).unwrap());
    }
}

const HEADER: &str = "Type,Date,Part of a policing operation,Policing operation,Latitude,Longitude,Gender,Age range,Self-defined ethnicity,Officer-defined ethnicity,Legislation,Object of search,Outcome,Outcome linked to object of search,Removal of more than just outer clothing\n";

/// A clean January 2020 extract of `rows` searches, every day of the month covered.
fn extract(rows: usize) -> Vec<u8> {
    let mut s = String::from(HEADER);
    for i in 0..rows {
        let _ = writeln!(
            s,
            "Person search,2020-01-{:02}T{:02}:{:02}:00+00:00,False,,53.{:04},-1.{:04},Male,18-24,White - English/Welsh/Scottish/Northern Irish/British,White,Misuse of Drugs Act 1971 (section 23),Controlled drugs,A no further action disposal,False,False",
            i % 31 + 1,
            i / 31 % 24,
            i % 60,
            i % 10_000,
            i * 7 % 10_000,
        );
    }
    s.into_bytes()
}

/// The run processed every upload once and the bucket shows it.
async fn assert_all_processed(f: &Faulty, keys: &[String], outcome: &RunOutcome) {
    assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);
    let mut processed: Vec<_> = outcome
        .processed
        .iter()
        .map(|s| s.received.upload.source_key.clone())
        .collect();
    processed.sort();
    let mut expected = keys.to_vec();
    expected.sort();
    assert_eq!(processed, expected, "every upload processed, once");
    let rows = check_processed_exactly_once(&f.dyn_direct()).await;
    assert_eq!(
        rows,
        (0..keys.len()).map(|n| 200 + n as u64 * 7).sum::<u64>()
    );
}

/// Runs the pipeline over three uploads with `rule` in force and checks that the fault hit
/// `times` requests, each was retried and counted under `operation` and `reason`, and the run
/// ended consistent.
async fn survives(rule: Rule, times: usize, operation: &str, reason: &str) {
    survives_with(rule, times, operation, reason, Duration::from_secs(30)).await;
}

async fn survives_with(
    rule: Rule,
    times: usize,
    operation: &str,
    reason: &str,
    attempt_timeout: Duration,
) {
    let f = Faulty::new(attempt_timeout).await;
    let keys = f.upload(&["kent", "durham", "dorset"]).await;
    let handle: RuleHandle = f.proxy.add(rule.times(times));
    let outcome = f.service().run_once().await.unwrap();
    assert_eq!(
        handle.hits(),
        times,
        "the fault hit as many requests as it was told; requests: {:#?}",
        f.proxy.seen()
    );
    assert_all_processed(&f, &keys, &outcome).await;
    let counted = f.retries(operation, reason);
    let times = times as u64;
    assert!(
        counted >= times,
        "{operation} retried for {reason}: {counted} of {times} faults counted\n{}",
        f.metrics.render()
    );
    if reason != "timeout" {
        // A slow moment of the test server may add a retry for a timeout; nothing else
        // adds one of these.
        assert_eq!(counted, times, "{}", f.metrics.render());
    }
    assert!(
        f.readiness.bucket_ok(f.store.as_ref()).await,
        "every request ended answered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_snapshot_writes_are_retried() {
    survives(
        Rule::new("PUT", "^snapshots/stop_search/period=", Fault::SlowDown),
        2,
        "PutObject",
        "throttled",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_on_downloads_are_retried() {
    survives(
        Rule::new("GET", "^incoming/", Fault::ServerError),
        3,
        "GetObject",
        "server_error",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_reset_before_a_write_arrives_are_retried() {
    survives(
        Rule::new("PUT", "^feedback/", Fault::Reset),
        2,
        "PutObject",
        "connection",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overwrite_whose_answer_was_lost_is_sent_again() {
    survives(
        Rule::new("PUT", "^quality/submissions/", Fault::ResetAfterForward),
        2,
        "PutObject",
        "connection",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_cut_short_read_on_from_where_they_stopped() {
    survives(
        Rule::new("GET", "^incoming/", Fault::Truncate),
        3,
        "GetObject",
        "body",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_reads_cut_short_are_read_again() {
    let f = Faulty::new(Duration::from_secs(30)).await;
    // A first run makes the manifest, so that the second reads one (not a 404).
    let first = f.upload(&["kent"]).await;
    let outcome = f.service().run_once().await.unwrap();
    assert_eq!(outcome.processed.len(), 1, "{:?}", outcome.failed);
    let keys = f.upload(&["kent", "durham", "dorset"]).await;
    assert_eq!(keys[0], first[0]);
    let rule = f.proxy.add(
        Rule::new(
            "GET",
            r"^snapshots/stop_search/_manifest/2020\.json\?",
            Fault::Truncate,
        )
        .times(2),
    );
    let outcome = f.service().run_once().await.unwrap();
    assert_eq!(rule.hits(), 2);
    assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);
    assert_eq!(outcome.processed.len(), 2, "the two new uploads");
    check_processed_exactly_once(&f.dyn_direct()).await;
    assert_eq!(f.retries("GetObject", "body"), 2, "{}", f.metrics.render());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_cut_short_are_retried() {
    survives(
        Rule::new("GET", r"^\?.*prefix=incoming/", Fault::Truncate),
        1,
        "ListObjectsV2",
        "body",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_delayed_past_the_attempt_timeout_are_retried() {
    survives_with(
        Rule::new("GET", "^incoming/", Fault::Delay(Duration::from_secs(6))),
        2,
        "GetObject",
        "timeout",
        Duration::from_secs(2),
    )
    .await;
}

/// A plain HTTP/1.1 GET: status and body.
async fn http_get(addr: std::net::SocketAddr, path: &'static str) -> (u16, String) {
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let status = text[9..12].parse().unwrap();
        (status, text.split_once("\r\n\r\n").unwrap().1.to_owned())
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_past_the_retry_budget_leaves_the_upload_to_the_next_run_and_readyz_says_so() {
    let f = Faulty::new(Duration::from_secs(30)).await;
    let keys = f.upload(&["kent"]).await;
    let (_controller, shutdown) = ShutdownController::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(api::serve(
        listener,
        ApiState {
            metrics: Arc::clone(&f.metrics),
            store: Arc::clone(&f.store) as Arc<dyn ObjectStore>,
            readiness: Arc::clone(&f.readiness),
            shutdown,
        },
        std::future::pending(),
    ));
    assert_eq!(http_get(addr, "/readyz").await, (200, "ready\n".to_owned()));

    // The bucket fails everything from the moment the upload is claimed and its download
    // starts, for longer than the retries last.
    f.proxy.add(Rule::new("GET", "^incoming/", Fault::Hold));
    let service = Arc::new(f.service());
    let run = {
        let service = Arc::clone(&service);
        tokio::spawn(async move { service.run_once().await })
    };
    let held = f.proxy.next_held(Duration::from_mins(1)).await;
    let outage = f
        .proxy
        .add(Rule::new("*", "", Fault::SlowDown).times(usize::MAX));
    held.release();
    let outcome = run.await.unwrap().unwrap();
    assert!(outcome.processed.is_empty());
    assert!(
        outcome
            .failed
            .iter()
            .any(|(key, error)| key == &keys[0] && error.contains("SlowDown")),
        "the run reports the upload it could not process: {:?}",
        outcome.failed
    );
    assert!(outage.hits() >= 5, "every attempt met the outage");
    assert!(f.retries("GetObject", "throttled") >= 4);
    assert!(
        f.counter("force_returns_s3_requests_failed_total{operation=\"GetObject\"}") >= 1,
        "{}",
        f.metrics.render()
    );

    // Nothing is done; the claim is released or expires.
    assert!(f.direct.list(layout::DONE).await.unwrap().is_empty());
    let ttl = chrono::Duration::from_std(RunOptions::default().claim_ttl).unwrap();
    for (key, claim) in lease::records(f.direct.as_ref(), layout::CLAIMS)
        .await
        .unwrap()
    {
        let expires: chrono::DateTime<chrono::Utc> = claim.expires_at.parse().unwrap();
        assert!(
            expires <= f.clock.now() + ttl,
            "{key} expires at {expires}, within the claim time to live"
        );
    }

    // Meanwhile /readyz says the bucket is failing, and asking again and again does not make
    // the service ask the bucket again.
    let before = f.proxy.requests();
    for _ in 0..20 {
        assert_eq!(
            http_get(addr, "/readyz").await,
            (503, "not ready: bucket unreachable\n".to_owned())
        );
    }
    assert_eq!(f.proxy.requests(), before, "answered from what it heard");
    f.later(READY_INTERVAL);
    assert_eq!(
        http_get(addr, "/readyz").await,
        (503, "not ready: bucket unreachable\n".to_owned())
    );
    assert!(f.proxy.requests() > before, "a new probe, into the outage");

    // The outage ends: ready again once the interval has passed, and the next run, after the
    // claim has expired, processes the upload.
    f.proxy.clear();
    f.later(READY_INTERVAL);
    assert_eq!(http_get(addr, "/readyz").await, (200, "ready\n".to_owned()));
    f.later(RunOptions::default().claim_ttl);
    let next = service.run_once().await.unwrap();
    assert_all_processed(&f, &keys, &next).await;
}
