//! The S3 backend of [`ObjectStore`]: AWS S3 and S3-compatible stores through `aws-sdk-s3`.
//!
//! - **Where**: `s3://bucket/prefix` ([`S3Location`]); every key lives under the prefix.
//! - **Who and how**: credentials and region come from the standard AWS chain (environment,
//!   shared profile, web identity or pod role, container and instance roles); a custom endpoint
//!   and path-style addressing serve S3-compatible stores ([`S3Options::from_env`]).
//! - **Conditional writes**: [`PutMode::Create`] sends `If-None-Match: *` (on a single put or
//!   on completing a multipart upload) and [`PutMode::Update`] sends `If-Match: <etag>` (on
//!   single puts only: not every S3-compatible store checks it on completing a multipart
//!   upload). A 412, or a 409 between racing conditional writers, becomes
//!   [`StoreError::AlreadyExists`] or [`StoreError::Changed`].
//! - **Bounded memory**: downloads stream to the file chunk by chunk; files at or above the
//!   multipart threshold go up in parts read straight from disk, and a multipart upload that
//!   fails is aborted. Objects above the copy threshold are copied part by part on the server.
//! - **Faults** ([`S3Options`] holds every number): the SDK's standard retry mode sends a
//!   request again after throttling (503 `SlowDown`), a 5xx answer, a timeout or a broken
//!   connection, up to `max_attempts` attempts, waiting a random time up to an exponentially
//!   growing bound between them (full jitter), within a retry quota per bucket; every attempt has
//!   a connect and an attempt timeout, every request an operation timeout, and a transfer that
//!   stalls is cut by the SDK's stalled-stream protection. A response body that breaks off
//!   (connection reset, truncated, stalled) is outside the SDK's retries: [`S3Store`] resumes it
//!   itself with a ranged `GET` tied to the first answer's etag (`If-Match`), within the same
//!   number of attempts and the same backoff, so a download never mixes two versions of an
//!   object. Every retry is reported to the [`S3Observer`]s (the worker counts them by
//!   operation and [`RetryReason`]), and so is every request that fails for good, for
//!   readiness. Every error names the object as `s3://bucket/key`.
//! - **Upload links**: [`S3Store::presign_put`] signs `If-None-Match: *` into the URL, so it
//!   takes one file and never replaces one.

use std::fmt::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::interceptors::{
    BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_sdk_s3::config::retry::{RetryConfig, RetryPartition};
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, ConfigBag, Intercept, Region, RuntimeComponents, StalledStreamProtectionConfig,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::{
    Downloaded, Feed, FeedItem, ObjectMeta, ObjectStore, PutMode, Result, StoreError, check_key,
    hex,
};

/// Environment variable naming a custom endpoint (an S3-compatible store).
pub const ENDPOINT_ENV: &str = "FORCE_RETURNS_S3_ENDPOINT";
/// Environment variable choosing path-style addressing (`true`/`false`).
pub const PATH_STYLE_ENV: &str = "FORCE_RETURNS_S3_PATH_STYLE";

/// S3 allows at most this many parts in a multipart upload.
const MAX_PARTS: u64 = 10_000;
/// S3 refuses parts smaller than this (except the last).
const MIN_PART: u64 = 5 * 1024 * 1024;
/// S3's limit on a single put.
const MAX_SINGLE_PUT: u64 = 5 * 1024 * 1024 * 1024;

/// A bucket and key prefix: `s3://bucket` or `s3://bucket/some/prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    /// The bucket name.
    pub bucket: String,
    /// The key prefix, empty or ending with `/`.
    pub prefix: String,
}

impl S3Location {
    /// Reads `s3://bucket[/prefix]`.
    pub fn parse(url: &str) -> Result<S3Location> {
        let invalid = |message: &str| StoreError::Config {
            setting: "bucket URL".into(),
            message: format!("`{url}` {message}"),
        };
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| invalid("does not start with s3://"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !bucket_ok {
            return Err(invalid(
                "does not name a bucket (3 to 63 lowercase letters, digits, dots and hyphens)",
            ));
        }
        let prefix = prefix.trim_end_matches('/');
        if !prefix.is_empty() {
            check_key(prefix)?;
        }
        Ok(S3Location {
            bucket: bucket.to_owned(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
        })
    }
}

/// How the S3 client behaves. [`S3Options::from_env`] reads the endpoint settings; the rest
/// are defaults chosen for a worker that processes monthly returns (tests shorten them).
///
/// A request is tried up to `max_attempts` times. Before attempt *n* + 1 the client waits a
/// random time between 0 and `initial_backoff` × 2<sup>*n* − 1</sup> (at most `max_backoff`): with
/// the defaults at most 0.5, 1, 2 and 4 s, 7.5 s in all, so a blip of a few seconds is ridden
/// out within the run and a longer outage leaves the upload to the next run. Retries also draw
/// on the SDK's retry quota, one per bucket, which stops retrying while most requests fail and
/// refills as they succeed again.
#[derive(Debug, Clone)]
pub struct S3Options {
    /// A custom endpoint such as `http://127.0.0.1:9000` for an S3-compatible store.
    pub endpoint: Option<String>,
    /// Address buckets as `endpoint/bucket/key` rather than `bucket.endpoint/key`.
    pub path_style: bool,
    /// Attempts per request, the first included (standard retry mode); also the attempts a
    /// broken response body gets.
    pub max_attempts: u32,
    /// The bound on the first retry's random wait; it doubles for each later retry.
    pub initial_backoff: Duration,
    /// The largest wait between two attempts.
    pub max_backoff: Duration,
    /// Limit on opening a connection.
    pub connect_timeout: Duration,
    /// Limit on one attempt of one request until its answer is read: sending its body (a
    /// whole part) and, except for downloads, which stream, reading the answer.
    pub attempt_timeout: Duration,
    /// Limit on one request, every attempt and wait included (downloads: until the body
    /// starts).
    pub operation_timeout: Duration,
    /// A transfer (upload or download body) that moves no bytes for this long is cut, and
    /// retried.
    pub stall_grace: Duration,
    /// Files of at least this size are uploaded in parts.
    pub multipart_threshold: u64,
    /// Size of each uploaded part (raised when a file would need more than 10,000).
    pub part_size: u64,
    /// Objects larger than this are copied part by part (S3's single-copy limit is 5 GiB).
    pub copy_threshold: u64,
    /// Size of each copied part.
    pub copy_part_size: u64,
    /// Who hears of retries and of requests that fail for good (metrics, readiness).
    pub observers: Vec<Arc<dyn S3Observer>>,
}

impl Default for S3Options {
    fn default() -> Self {
        S3Options {
            endpoint: None,
            path_style: false,
            max_attempts: 5,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(5),
            attempt_timeout: Duration::from_mins(2),
            operation_timeout: Duration::from_mins(5),
            stall_grace: Duration::from_secs(20),
            multipart_threshold: 16 * 1024 * 1024,
            part_size: 16 * 1024 * 1024,
            copy_threshold: MAX_SINGLE_PUT,
            copy_part_size: 512 * 1024 * 1024,
            observers: Vec::new(),
        }
    }
}

impl S3Options {
    /// The defaults with the endpoint settings from the environment:
    /// `FORCE_RETURNS_S3_ENDPOINT` and `FORCE_RETURNS_S3_PATH_STYLE` (`true` or `false`).
    pub fn from_env() -> Result<S3Options> {
        let endpoint = std::env::var(ENDPOINT_ENV)
            .ok()
            .filter(|e| !e.trim().is_empty());
        let path_style = match std::env::var(PATH_STYLE_ENV) {
            Err(_) => false,
            Ok(v) => match v.trim().to_ascii_lowercase().as_str() {
                "" | "false" | "0" | "no" => false,
                "true" | "1" | "yes" => true,
                _ => {
                    return Err(StoreError::Config {
                        setting: PATH_STYLE_ENV.into(),
                        message: format!("`{v}` is not true or false"),
                    });
                }
            },
        };
        Ok(S3Options {
            endpoint,
            path_style,
            ..S3Options::default()
        })
    }

    /// The wait before retry number `retry` (1 for the first): random, up to
    /// `initial_backoff` × 2<sup>retry − 1</sup>, at most `max_backoff` (the SDK's rule, used
    /// for broken bodies too).
    fn backoff(&self, retry: u32) -> Duration {
        let bound = self
            .initial_backoff
            .saturating_mul(1 << retry.saturating_sub(1).min(20))
            .min(self.max_backoff);
        bound.mul_f64(fastrand::f64())
    }
}

/// Why an S3 request was sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RetryReason {
    /// The store asked the client to slow down (503 `SlowDown`, 429).
    Throttled,
    /// Another 5xx answer (500 `InternalError`, 502, 504).
    ServerError,
    /// An attempt ran out of time: connecting, or waiting for the answer.
    Timeout,
    /// The connection failed or was reset before an answer came.
    Connection,
    /// The answer's body broke off: reset, cut short or stalled mid-transfer.
    Body,
    /// Another answer the SDK retries (such as 400 `RequestTimeout`).
    Other,
}

impl RetryReason {
    /// Every reason, in order.
    pub const ALL: [RetryReason; 6] = [
        RetryReason::Throttled,
        RetryReason::ServerError,
        RetryReason::Timeout,
        RetryReason::Connection,
        RetryReason::Body,
        RetryReason::Other,
    ];

    /// The `reason` label: `throttled`, `server_error`, `timeout`, `connection`, `body`, `other`.
    pub fn as_str(self) -> &'static str {
        match self {
            RetryReason::Throttled => "throttled",
            RetryReason::ServerError => "server_error",
            RetryReason::Timeout => "timeout",
            RetryReason::Connection => "connection",
            RetryReason::Body => "body",
            RetryReason::Other => "other",
        }
    }
}

/// Hears what the S3 client does that the worker reports: each retry (a metric) and how each
/// request ended (readiness). Operations are named as S3 names them (`GetObject`,
/// `PutObject`, `ListObjectsV2`...).
pub trait S3Observer: Send + Sync + std::fmt::Debug {
    /// `operation` is about to be sent again, after an attempt that failed for `reason`.
    fn retried(&self, operation: &str, reason: RetryReason) {
        let _ = (operation, reason);
    }

    /// `operation` ended, after its retries. `answered` is false when the bucket failed it:
    /// no answer (connection, timeout, a body that kept breaking off), a 5xx, throttling that
    /// outlasted the retries, refused credentials (401, 403) or a missing bucket; true for
    /// every other answer, "not found" and failed conditions included.
    fn finished(&self, operation: &str, answered: bool) {
        let _ = (operation, answered);
    }
}

/// The reason the last attempt of a request failed, kept between its attempts.
#[derive(Debug, Clone, Copy)]
struct FailedAttempt(RetryReason);

impl aws_smithy_types::config_bag::Storable for FailedAttempt {
    type Storer = aws_smithy_types::config_bag::StoreReplace<FailedAttempt>;
}

/// The SDK interceptor that tells the [`S3Observer`]s of retries and outcomes.
#[derive(Debug)]
struct Watch {
    observers: Vec<Arc<dyn S3Observer>>,
}

type BoxError = aws_smithy_runtime_api::box_error::BoxError;

/// The S3 name of the operation a request belongs to.
fn operation_name(cfg: &ConfigBag) -> &str {
    cfg.load::<aws_smithy_runtime_api::client::orchestrator::Metadata>()
        .map_or(
            "unknown",
            aws_smithy_runtime_api::client::orchestrator::Metadata::name,
        )
}

impl Intercept for Watch {
    fn name(&self) -> &'static str {
        "force-returns retry and outcome watch"
    }

    fn read_before_attempt(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> std::result::Result<(), BoxError> {
        let attempt = cfg
            .load::<aws_smithy_runtime_api::client::retries::RequestAttempts>()
            .map_or(
                1,
                aws_smithy_runtime_api::client::retries::RequestAttempts::attempts,
            );
        if attempt > 1 {
            let reason = cfg
                .load::<FailedAttempt>()
                .map_or(RetryReason::Other, |f| f.0);
            let operation = operation_name(cfg);
            tracing::info!(
                operation,
                reason = reason.as_str(),
                attempt,
                "retrying an S3 request"
            );
            for o in &self.observers {
                o.retried(operation, reason);
            }
        }
        Ok(())
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> std::result::Result<(), BoxError> {
        if let Some(Err(error)) = context.output_or_error() {
            let status = context.response().map(|r| r.status().as_u16());
            let reason = match status {
                Some(429 | 503) => RetryReason::Throttled,
                Some(s) if s >= 500 => RetryReason::ServerError,
                _ if error.is_timeout_error() => RetryReason::Timeout,
                _ if error.is_response_error() => RetryReason::Body,
                _ => match error.as_connector_error() {
                    Some(c) if c.is_timeout() => RetryReason::Timeout,
                    Some(_) => RetryReason::Connection,
                    None => RetryReason::Other,
                },
            };
            cfg.interceptor_state().store_put(FailedAttempt(reason));
        }
        Ok(())
    }

    fn read_after_execution(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> std::result::Result<(), BoxError> {
        let answered = match context.output_or_error() {
            Some(Ok(_)) => true,
            Some(Err(_)) => context.response().is_some_and(|r| {
                let status = r.status().as_u16();
                let missing_bucket = r
                    .body()
                    .bytes()
                    .is_some_and(|b| b.windows(NO_SUCH_BUCKET.len()).any(|w| w == NO_SUCH_BUCKET));
                status < 500 && status != 401 && status != 403 && !missing_bucket
            }),
            None => false,
        };
        let operation = operation_name(cfg);
        for o in &self.observers {
            o.finished(operation, answered);
        }
        Ok(())
    }
}

/// How an S3 error body names a missing bucket.
const NO_SUCH_BUCKET: &[u8] = b"<Code>NoSuchBucket</Code>";

/// A presigned upload: the URL and the headers signed into it, which the `PUT` must send as
/// they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresignedPut {
    /// The URL, query string and signature included.
    pub url: String,
    /// Each header the request must carry, name and value (`If-None-Match: *`).
    pub headers: Vec<(String, String)>,
}

/// A bucket (or a prefix of one) on S3 or an S3-compatible store.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    location: S3Location,
    options: S3Options,
}

/// What a failed request means for the caller.
enum Failure {
    NotFound,
    Precondition,
    Other,
}

impl S3Store {
    /// Connects with the standard AWS credential and region chain. With a custom endpoint and
    /// no region configured, the region is `us-east-1`, as S3-compatible stores expect.
    pub async fn connect(location: S3Location, options: S3Options) -> Result<S3Store> {
        let mut sdk = aws_config::defaults(BehaviorVersion::latest()).load().await;
        if sdk.region().is_none() {
            if options.endpoint.is_none() {
                return Err(StoreError::Config {
                    setting: "AWS region".into(),
                    message: format!(
                        "no region for s3://{}: set AWS_REGION or a region in the AWS profile",
                        location.bucket
                    ),
                });
            }
            sdk = sdk
                .into_builder()
                .region(Region::from_static("us-east-1"))
                .build();
        }
        Ok(S3Store::from_sdk_config(&sdk, location, options))
    }

    /// A store using an already loaded AWS configuration (credentials, region).
    pub fn from_sdk_config(
        sdk: &aws_config::SdkConfig,
        location: S3Location,
        options: S3Options,
    ) -> S3Store {
        let mut config = aws_sdk_s3::config::Builder::from(sdk)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(options.max_attempts)
                    .with_initial_backoff(options.initial_backoff)
                    .with_max_backoff(options.max_backoff),
            )
            // One retry quota per bucket: a bucket that fails spends its own, not another's.
            .retry_partition(RetryPartition::new(format!(
                "force-returns s3://{}/{}",
                location.bucket, location.prefix
            )))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(options.connect_timeout)
                    .operation_attempt_timeout(options.attempt_timeout)
                    .operation_timeout(options.operation_timeout)
                    .build(),
            )
            .stalled_stream_protection(
                StalledStreamProtectionConfig::enabled()
                    .grace_period(options.stall_grace)
                    .build(),
            )
            .interceptor(Watch {
                observers: options.observers.clone(),
            })
            .force_path_style(options.path_style);
        if let Some(endpoint) = &options.endpoint {
            config = config.endpoint_url(endpoint);
        }
        S3Store {
            client: Client::from_conf(config.build()),
            location,
            options,
        }
    }

    /// The SDK client (for tests and tools that create buckets).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The bucket and prefix.
    pub fn s3_location(&self) -> &S3Location {
        &self.location
    }

    /// A URL anyone holding it may `PUT` one object to, at `key`, until it expires, and only
    /// while nothing is there: the `If-None-Match: *` header is signed into it, so a request
    /// without it is refused (403, the signature does not match) and a second upload finds the
    /// first in place (412). Forces without AWS tooling upload with
    /// `curl --fail -H 'If-None-Match: *' -T FILE URL`; [`PresignedPut::headers`] lists the
    /// headers the request must carry.
    pub async fn presign_put(&self, key: &str, expires_in: Duration) -> Result<PresignedPut> {
        let full = self.full_key(key)?;
        let config = PresigningConfig::expires_in(expires_in).map_err(|e| StoreError::Config {
            setting: "presigned URL expiry".into(),
            message: e.to_string(),
        })?;
        let request = self
            .client
            .put_object()
            .bucket(&self.location.bucket)
            .key(full)
            .if_none_match("*")
            .presigned(config)
            .await
            .map_err(|e| self.error("presign", key, &e).1)?;
        Ok(PresignedPut {
            url: request.uri().to_owned(),
            headers: request
                .headers()
                .map(|(name, value)| (name.to_owned(), value.to_owned()))
                .collect(),
        })
    }

    fn full_key(&self, key: &str) -> Result<String> {
        check_key(key)?;
        Ok(format!("{}{key}", self.location.prefix))
    }

    /// Maps an SDK error to what it means and a [`StoreError::Backend`] naming the object.
    fn error<E>(&self, action: &'static str, key: &str, e: &SdkError<E>) -> (Failure, StoreError)
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let status = e.raw_response().map(|r| r.status().as_u16());
        let code = e.code();
        let failure = match (status, code) {
            (_, Some("NoSuchBucket")) => Failure::Other,
            (Some(404), _) | (_, Some("NoSuchKey" | "NotFound")) => Failure::NotFound,
            (Some(412 | 409), _) | (_, Some("PreconditionFailed")) => Failure::Precondition,
            _ => Failure::Other,
        };
        let message = match (code, status) {
            (Some(code), Some(status)) => format!(
                "{code} (HTTP {status}){}",
                e.message().map(|m| format!(": {m}")).unwrap_or_default()
            ),
            _ => chain(e),
        };
        let error = StoreError::Backend {
            action,
            location: self.location(key),
            message,
        };
        (failure, error)
    }

    /// The error for a failed read: `NotFound` for a missing object.
    fn read_error<E>(&self, action: &'static str, key: &str, e: &SdkError<E>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        match self.error(action, key, e) {
            (Failure::NotFound, _) => StoreError::NotFound {
                location: self.location(key),
            },
            (_, error) => error,
        }
    }

    /// The error for a failed write in `mode`: a failed condition is `AlreadyExists` or
    /// `Changed` (an `If-Match` on a missing object is answered 404: it changed too).
    fn write_error<E>(&self, key: &str, mode: &PutMode, e: &SdkError<E>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let location = self.location(key);
        match (self.error("write", key, e), mode) {
            ((Failure::Precondition, _), PutMode::Create) => StoreError::AlreadyExists { location },
            ((Failure::Precondition | Failure::NotFound, _), PutMode::Update(_)) => {
                StoreError::Changed { location }
            }
            ((_, error), _) => error,
        }
    }

    fn io_error(&self, action: &'static str, key: &str, e: &dyn std::fmt::Display) -> StoreError {
        StoreError::Backend {
            action,
            location: self.location(key),
            message: e.to_string(),
        }
    }

    async fn put_multipart(
        &self,
        key: &str,
        src: &Path,
        size: u64,
        create_only: bool,
    ) -> Result<String> {
        let full = self.full_key(key)?;
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.location.bucket)
            .key(&full)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .send()
            .await
            .map_err(|e| self.error("start upload of", key, &e).1)?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| self.io_error("start upload of", key, &"no upload id in the answer"))?
            .to_owned();
        let result = self
            .upload_parts(key, &full, &upload_id, src, size, create_only)
            .await;
        if result.is_err() {
            // Parts of an unfinished upload are stored (and billed) until aborted.
            if let Err(e) = self
                .client
                .abort_multipart_upload()
                .bucket(&self.location.bucket)
                .key(&full)
                .upload_id(&upload_id)
                .send()
                .await
            {
                tracing::warn!(
                    location = %self.location(key),
                    error = %chain(&e),
                    "failed to abort a multipart upload; a bucket lifecycle rule should expire it"
                );
            }
        }
        result
    }

    async fn upload_parts(
        &self,
        key: &str,
        full: &str,
        upload_id: &str,
        src: &Path,
        size: u64,
        create_only: bool,
    ) -> Result<String> {
        let part_size = self
            .options
            .part_size
            .max(MIN_PART)
            .max(size.div_ceil(MAX_PARTS));
        let mut parts = Vec::new();
        let mut offset = 0;
        let mut number = 1;
        while offset < size {
            let len = part_size.min(size - offset);
            let body = ByteStream::read_from()
                .path(src)
                .offset(offset)
                .length(Length::Exact(len))
                .build()
                .await
                .map_err(|e| self.io_error("read the file for", key, &e))?;
            let part = self
                .client
                .upload_part()
                .bucket(&self.location.bucket)
                .key(full)
                .upload_id(upload_id)
                .part_number(number)
                .checksum_algorithm(ChecksumAlgorithm::Crc32)
                .content_length(len.cast_signed())
                .body(body)
                .send()
                .await
                .map_err(|e| self.error("upload a part of", key, &e).1)?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(part.e_tag().map(str::to_owned))
                    .set_checksum_crc32(part.checksum_crc32().map(str::to_owned))
                    .build(),
            );
            offset += len;
            number += 1;
        }
        let mut complete = self
            .client
            .complete_multipart_upload()
            .bucket(&self.location.bucket)
            .key(full)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            );
        let mode = if create_only {
            complete = complete.if_none_match("*");
            PutMode::Create
        } else {
            PutMode::Overwrite
        };
        let done = complete
            .send()
            .await
            .map_err(|e| self.write_error(key, &mode, &e))?;
        Ok(done.e_tag().unwrap_or_default().to_owned())
    }

    async fn copy_multipart(&self, from: &str, to: &str, size: u64) -> Result<String> {
        let full_to = self.full_key(to)?;
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.location.bucket)
            .key(&full_to)
            .send()
            .await
            .map_err(|e| self.error("start copy to", to, &e).1)?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| self.io_error("start copy to", to, &"no upload id in the answer"))?
            .to_owned();
        let result = self.copy_parts(from, to, &full_to, &upload_id, size).await;
        if result.is_err() {
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.location.bucket)
                .key(&full_to)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
    }

    async fn copy_parts(
        &self,
        from: &str,
        to: &str,
        full_to: &str,
        upload_id: &str,
        size: u64,
    ) -> Result<String> {
        let source = self.copy_source(from)?;
        let part_size = self
            .options
            .copy_part_size
            .max(MIN_PART)
            .max(size.div_ceil(MAX_PARTS));
        let mut parts = Vec::new();
        let mut offset = 0;
        let mut number = 1;
        while offset < size {
            let last = (offset + part_size).min(size) - 1;
            let part = self
                .client
                .upload_part_copy()
                .bucket(&self.location.bucket)
                .key(full_to)
                .upload_id(upload_id)
                .part_number(number)
                .copy_source(&source)
                .copy_source_range(format!("bytes={offset}-{last}"))
                .send()
                .await
                .map_err(|e| self.read_error("copy a part of", from, &e))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(
                        part.copy_part_result()
                            .and_then(|r| r.e_tag())
                            .map(str::to_owned),
                    )
                    .build(),
            );
            offset = last + 1;
            number += 1;
        }
        let done = self
            .client
            .complete_multipart_upload()
            .bucket(&self.location.bucket)
            .key(full_to)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.error("copy to", to, &e).1)?;
        Ok(done.e_tag().unwrap_or_default().to_owned())
    }

    /// `bucket/key` for a copy, percent-encoded as the `x-amz-copy-source` header needs.
    fn copy_source(&self, key: &str) -> Result<String> {
        let full = self.full_key(key)?;
        let mut out = format!("{}/", self.location.bucket);
        for b in full.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
                out.push(char::from(b));
            } else {
                let _ = write!(out, "%{b:02X}");
            }
        }
        Ok(out)
    }
}

/// An error and its sources, `outer: inner: innermost`, skipping a source whose text its
/// parent already shows.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let part = inner.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = inner.source();
    }
    text
}

/// Sends to a feed; a closed feed is dropped, and the download goes on without it.
async fn pass_on(feed: Option<Feed>, item: FeedItem) -> Option<Feed> {
    match feed {
        Some(f) if f.send(item).await.is_ok() => Some(f),
        _ => None,
    }
}

fn to_chrono(t: Option<&aws_sdk_s3::primitives::DateTime>) -> DateTime<Utc> {
    t.and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
        .unwrap_or_default()
}

fn size_of(len: Option<i64>) -> u64 {
    len.and_then(|n| u64::try_from(n).ok()).unwrap_or_default()
}

/// Where the bytes of an object being read go: memory ([`ObjectStore::get`]) or a
/// [`FileSink`] ([`ObjectStore::download`]).
trait Sink: Send {
    /// Takes the next bytes. An error here is local (the disk) and is not retried.
    fn take(
        &mut self,
        store: &S3Store,
        key: &str,
        chunk: &[u8],
    ) -> impl Future<Output = Result<()>> + Send;
}

impl Sink for Vec<u8> {
    async fn take(&mut self, _store: &S3Store, _key: &str, chunk: &[u8]) -> Result<()> {
        self.extend_from_slice(chunk);
        Ok(())
    }
}

/// A download on its way to a local file: hashed as it goes, and passed on to a feed in
/// chunks of at least [`FEED_CHUNK`].
struct FileSink<'a> {
    file: tokio::fs::File,
    path: &'a Path,
    hasher: Sha256,
    feed: Option<Feed>,
    pending: Vec<u8>,
}

/// Bytes gathered before they are passed to a download's feed.
const FEED_CHUNK: usize = 1 << 20;

impl Sink for FileSink<'_> {
    async fn take(&mut self, store: &S3Store, key: &str, chunk: &[u8]) -> Result<()> {
        self.hasher.update(chunk);
        self.file
            .write_all(chunk)
            .await
            .map_err(|e| store.local_error(key, self.path, &e))?;
        if self.feed.is_some() {
            self.pending.extend_from_slice(chunk);
            if self.pending.len() >= FEED_CHUNK {
                let bytes = std::mem::take(&mut self.pending);
                self.feed = pass_on(self.feed.take(), FeedItem::Bytes(bytes)).await;
            }
        }
        Ok(())
    }
}

impl S3Store {
    /// Sends a `GET` of an object: the response (whose body streams) and its metadata. With
    /// `version = Some(etag)` only that version is read (`If-Match`: another is
    /// [`StoreError::Changed`]); with `from > 0` only the bytes from `from` on (`Range`).
    async fn get_object(
        &self,
        key: &str,
        version: Option<&str>,
        from: u64,
    ) -> Result<(
        aws_sdk_s3::operation::get_object::GetObjectOutput,
        ObjectMeta,
    )> {
        let full = self.full_key(key)?;
        let mut request = self
            .client
            .get_object()
            .bucket(&self.location.bucket)
            .key(full)
            .set_if_match(version.map(str::to_owned));
        if from > 0 {
            request = request.range(format!("bytes={from}-"));
        }
        let out = request
            .send()
            .await
            .map_err(|e| match self.error("read", key, &e) {
                (Failure::NotFound, _) => StoreError::NotFound {
                    location: self.location(key),
                },
                (Failure::Precondition, _) if version.is_some() => StoreError::Changed {
                    location: self.location(key),
                },
                (_, error) => error,
            })?;
        let meta = ObjectMeta {
            key: key.to_owned(),
            size: size_of(out.content_length()),
            etag: out.e_tag().unwrap_or_default().to_owned(),
            last_modified: to_chrono(out.last_modified()),
        };
        Ok((out, meta))
    }

    /// Reads an object into `sink`. A body that breaks off (reset, cut short, stalled) is read
    /// on from where it stopped, by a ranged `GET` of the same version (`If-Match` on the first
    /// answer's etag), so every byte comes from one version of the object; the reads get
    /// `max_attempts` attempts in all, with the SDK's backoff between them.
    async fn read_into(
        &self,
        key: &str,
        version: Option<&str>,
        sink: &mut impl Sink,
    ) -> Result<ObjectMeta> {
        let (first, meta) = self.get_object(key, version, 0).await?;
        let mut body = first.body;
        let mut read = 0u64;
        let mut attempt = 1;
        loop {
            let broke = loop {
                match body.try_next().await {
                    Ok(Some(chunk)) => {
                        read += chunk.len() as u64;
                        sink.take(self, key, &chunk).await?;
                    }
                    Ok(None) if read == meta.size => return Ok(meta),
                    Ok(None) => {
                        break format!("the answer ended after {read} of {} bytes", meta.size);
                    }
                    Err(e) => break chain(&e),
                }
            };
            if attempt >= self.options.max_attempts || read > meta.size {
                self.tell_finished("GetObject", false);
                return Err(self.io_error(
                    "read",
                    key,
                    &format!("{broke} (after {attempt} attempts)"),
                ));
            }
            tracing::info!(
                location = %self.location(key),
                read,
                size = meta.size,
                error = %broke,
                attempt,
                "a download broke off; reading on from where it stopped"
            );
            self.tell_retried("GetObject", RetryReason::Body);
            tokio::time::sleep(self.options.backoff(attempt)).await;
            attempt += 1;
            let (next, again) = self.get_object(key, Some(&meta.etag), read).await?;
            let expected_range = format!("bytes {read}-{}/{}", meta.size - 1, meta.size);
            let fits = if read == 0 {
                again.size == meta.size
            } else {
                next.content_range() == Some(expected_range.as_str())
            };
            if again.etag != meta.etag || !fits {
                return Err(self.io_error(
                    "read",
                    key,
                    &format!(
                        "asked for {expected_range} of etag {}, got {} of etag {}",
                        meta.etag,
                        next.content_range().unwrap_or("the whole object"),
                        again.etag
                    ),
                ));
            }
            body = next.body;
        }
    }

    /// Streams an object (only the version with `etag`, if given) into `dest`, hashing it
    /// and feeding it on.
    async fn download_from(
        &self,
        key: &str,
        etag: Option<&str>,
        dest: &Path,
        feed: Option<Feed>,
    ) -> Result<Downloaded> {
        let file = tokio::fs::File::create(dest)
            .await
            .map_err(|e| self.local_error(key, dest, &e))?;
        let mut sink = FileSink {
            file,
            path: dest,
            hasher: Sha256::new(),
            feed,
            pending: Vec::new(),
        };
        let meta = self.read_into(key, etag, &mut sink).await?;
        sink.file
            .flush()
            .await
            .map_err(|e| self.local_error(key, dest, &e))?;
        let mut feed = sink.feed;
        if !sink.pending.is_empty() {
            feed = pass_on(feed, FeedItem::Bytes(sink.pending)).await;
        }
        pass_on(feed, FeedItem::End).await;
        Ok(Downloaded {
            meta,
            sha256: hex(&sink.hasher.finalize()),
        })
    }

    /// Deletes an object, only the version with `etag` if given (`If-Match`: another version
    /// is [`StoreError::Changed`] and stays); a missing object is not an error.
    async fn delete_object(&self, key: &str, etag: Option<&str>) -> Result<()> {
        let full = self.full_key(key)?;
        match self
            .client
            .delete_object()
            .bucket(&self.location.bucket)
            .key(full)
            .set_if_match(etag.map(str::to_owned))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match self.error("delete", key, &e) {
                (Failure::NotFound, _) => Ok(()),
                (Failure::Precondition, _) if etag.is_some() => Err(StoreError::Changed {
                    location: self.location(key),
                }),
                (_, error) => Err(error),
            },
        }
    }

    fn tell_retried(&self, operation: &str, reason: RetryReason) {
        for o in &self.options.observers {
            o.retried(operation, reason);
        }
    }

    fn tell_finished(&self, operation: &str, answered: bool) {
        for o in &self.options.observers {
            o.finished(operation, answered);
        }
    }

    fn local_error(&self, key: &str, path: &Path, e: &std::io::Error) -> StoreError {
        self.io_error("read", key, &format!("{}: {e}", path.display()))
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    fn location(&self, key: &str) -> String {
        format!(
            "s3://{}/{}{key}",
            self.location.bucket, self.location.prefix
        )
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.location.bucket)
            .prefix(format!("{}{prefix}", self.location.prefix))
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.error("list", prefix, &e).1)?;
            for object in page.contents() {
                let Some(key) = object
                    .key()
                    .and_then(|k| k.strip_prefix(self.location.prefix.as_str()))
                else {
                    continue;
                };
                out.push(ObjectMeta {
                    key: key.to_owned(),
                    size: size_of(object.size()),
                    etag: object.e_tag().unwrap_or_default().to_owned(),
                    last_modified: to_chrono(object.last_modified()),
                });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn get(&self, key: &str) -> Result<(Vec<u8>, ObjectMeta)> {
        let mut bytes = Vec::new();
        let meta = self.read_into(key, None, &mut bytes).await?;
        Ok((bytes, meta))
    }

    async fn download(&self, key: &str, dest: &Path, feed: Option<Feed>) -> Result<Downloaded> {
        self.download_from(key, None, dest, feed).await
    }

    async fn download_version(
        &self,
        key: &str,
        etag: &str,
        dest: &Path,
        feed: Option<Feed>,
    ) -> Result<Downloaded> {
        self.download_from(key, Some(etag), dest, feed).await
    }

    async fn put(&self, key: &str, bytes: Vec<u8>, mode: PutMode) -> Result<ObjectMeta> {
        let full = self.full_key(key)?;
        let size = bytes.len() as u64;
        let mut request = self
            .client
            .put_object()
            .bucket(&self.location.bucket)
            .key(full)
            .body(ByteStream::from(bytes));
        match &mode {
            PutMode::Overwrite => {}
            PutMode::Create => request = request.if_none_match("*"),
            PutMode::Update(etag) => request = request.if_match(etag),
        }
        let out = request
            .send()
            .await
            .map_err(|e| self.write_error(key, &mode, &e))?;
        Ok(ObjectMeta {
            key: key.to_owned(),
            size,
            etag: out.e_tag().unwrap_or_default().to_owned(),
            last_modified: Utc::now(),
        })
    }

    async fn put_file(&self, key: &str, src: &Path, mode: PutMode) -> Result<ObjectMeta> {
        let full = self.full_key(key)?;
        let size = tokio::fs::metadata(src)
            .await
            .map_err(|e| self.io_error("write", key, &format!("{}: {e}", src.display())))?
            .len();
        // `If-Match` on completing a multipart upload is not honoured everywhere (moto 5.2.5
        // ignores it), so compare-and-swap writes are single puts, up to S3's 5 GiB limit.
        let compare_and_swap = matches!(mode, PutMode::Update(_));
        if compare_and_swap && size > MAX_SINGLE_PUT {
            return Err(self.io_error(
                "write",
                key,
                &format!("a compare-and-swap write is limited to {MAX_SINGLE_PUT} bytes; the file has {size}"),
            ));
        }
        let etag = if size >= self.options.multipart_threshold && !compare_and_swap {
            self.put_multipart(key, src, size, mode == PutMode::Create)
                .await?
        } else {
            let body = ByteStream::from_path(src)
                .await
                .map_err(|e| self.io_error("write", key, &format!("{}: {e}", src.display())))?;
            let mut request = self
                .client
                .put_object()
                .bucket(&self.location.bucket)
                .key(full)
                .content_length(size.cast_signed())
                .body(body);
            match &mode {
                PutMode::Overwrite => {}
                PutMode::Create => request = request.if_none_match("*"),
                PutMode::Update(etag) => request = request.if_match(etag),
            }
            let out = request
                .send()
                .await
                .map_err(|e| self.write_error(key, &mode, &e))?;
            out.e_tag().unwrap_or_default().to_owned()
        };
        Ok(ObjectMeta {
            key: key.to_owned(),
            size,
            etag,
            last_modified: Utc::now(),
        })
    }

    async fn copy(&self, from: &str, to: &str) -> Result<ObjectMeta> {
        let full_from = self.full_key(from)?;
        let full_to = self.full_key(to)?;
        let head = self
            .client
            .head_object()
            .bucket(&self.location.bucket)
            .key(full_from)
            .send()
            .await
            .map_err(|e| self.read_error("read", from, &e))?;
        let size = size_of(head.content_length());
        let etag = if size > self.options.copy_threshold {
            self.copy_multipart(from, to, size).await?
        } else {
            let out = self
                .client
                .copy_object()
                .bucket(&self.location.bucket)
                .key(full_to)
                .copy_source(self.copy_source(from)?)
                .send()
                .await
                .map_err(|e| self.read_error("copy", from, &e))?;
            out.copy_object_result()
                .and_then(|r| r.e_tag())
                .unwrap_or_default()
                .to_owned()
        };
        Ok(ObjectMeta {
            key: to.to_owned(),
            size,
            etag,
            last_modified: Utc::now(),
        })
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.delete_object(key, None).await
    }

    async fn delete_version(&self, key: &str, etag: &str) -> Result<()> {
        self.delete_object(key, Some(etag)).await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use aws_sdk_s3::config::Credentials;

    use super::*;
    use crate::store::conformance;

    /// The S3 test server `tests/run` starts (moto). Without it the test fails, saying how
    /// to get it.
    fn moto_endpoint() -> String {
        match std::env::var("FORCE_RETURNS_TEST_S3_ENDPOINT") {
            Ok(e) if !e.trim().is_empty() => e,
            _ => panic!(
                "the S3 test server (FORCE_RETURNS_TEST_S3_ENDPOINT) is missing: run `bash tests/run`, which installs moto and starts it"
            ),
        }
    }

    async fn test_config() -> aws_config::SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
            .region(Region::from_static("us-east-1"))
            .load()
            .await
    }

    /// Options with small thresholds so a 12 MiB file exercises multipart upload and copy.
    fn test_options(endpoint: &str) -> S3Options {
        S3Options {
            endpoint: Some(endpoint.to_owned()),
            path_style: true,
            initial_backoff: Duration::from_millis(10),
            multipart_threshold: 8 * 1024 * 1024,
            part_size: MIN_PART,
            copy_threshold: 8 * 1024 * 1024,
            copy_part_size: MIN_PART,
            ..S3Options::default()
        }
    }

    async fn new_bucket(endpoint: &str, prefix: &str) -> S3Store {
        static N: AtomicUsize = AtomicUsize::new(0);
        let bucket = format!(
            "unit-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let store = S3Store::from_sdk_config(
            &test_config().await,
            S3Location::parse(&format!("s3://{bucket}/{prefix}")).unwrap(),
            test_options(endpoint),
        );
        store
            .client()
            .create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .unwrap();
        store
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn s3_store_conforms_and_leaves_no_unfinished_uploads() {
        let endpoint = moto_endpoint();
        let store = new_bucket(&endpoint, "tenant/a").await;
        let client = store.client().clone();
        let bucket = store.s3_location().bucket.clone();
        conformance::check_all(Arc::new(store)).await;
        let raw = client
            .list_objects_v2()
            .bucket(&bucket)
            .send()
            .await
            .unwrap();
        assert!(
            raw.contents()
                .iter()
                .all(|o| o.key().unwrap().starts_with("tenant/a/")),
            "every key is under the prefix"
        );
        let unfinished = client
            .list_multipart_uploads()
            .bucket(&bucket)
            .send()
            .await
            .unwrap();
        assert!(
            unfinished.uploads().is_empty(),
            "failed multipart uploads are aborted: {:?}",
            unfinished.uploads()
        );
    }

    #[test]
    fn bucket_urls_are_read_with_their_prefix() {
        let l = S3Location::parse("s3://returns-bucket").unwrap();
        assert_eq!(
            (l.bucket.as_str(), l.prefix.as_str()),
            ("returns-bucket", "")
        );
        let l = S3Location::parse("s3://returns-bucket/env/prod/").unwrap();
        assert_eq!(l.prefix, "env/prod/");
        for bad in [
            "s3://",
            "s3://Upper",
            "s3://ab",
            "s3://b_b/x",
            "s3://bucket/../x",
            "/data",
        ] {
            assert!(S3Location::parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn presigned_put_urls_sign_if_none_match_and_no_checksum_of_an_empty_body() {
        let store = S3Store::from_sdk_config(
            &test_config().await,
            S3Location::parse("s3://returns-bucket/p").unwrap(),
            test_options("http://127.0.0.1:9"),
        );
        let presigned = store
            .presign_put(
                "incoming/kent/stop_search/2020-01/a b.csv",
                Duration::from_hours(1),
            )
            .await
            .unwrap();
        let url = &presigned.url;
        assert!(
            url.starts_with(
                "http://127.0.0.1:9/returns-bucket/p/incoming/kent/stop_search/2020-01/a%20b.csv?"
            ),
            "{url}"
        );
        assert!(url.contains("X-Amz-Expires=3600"), "{url}");
        assert!(url.contains("X-Amz-Signature="), "{url}");
        assert!(
            url.contains("X-Amz-SignedHeaders=host%3Bif-none-match&"),
            "the condition is signed: a PUT without it does not match the signature: {url}"
        );
        assert_eq!(
            presigned.headers,
            [("if-none-match".to_owned(), "*".to_owned())]
        );
        let lower = url.to_ascii_lowercase();
        assert!(
            !lower.contains("x-amz-checksum") && !lower.contains("x-amz-sdk-checksum"),
            "a checksum signed into the URL would refuse the real file: {url}"
        );
    }

    /// A scripted HTTP server on a loopback port: answers each request with the next
    /// response (the last one repeats), or holds the connection open without answering
    /// when the response is `None`.
    struct FakeS3 {
        endpoint: String,
        requests: Arc<AtomicUsize>,
        heads: Arc<Mutex<BTreeMap<usize, String>>>,
    }

    impl FakeS3 {
        fn start(script: Vec<Option<String>>) -> FakeS3 {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let endpoint = format!("http://{}", listener.local_addr().unwrap());
            let requests = Arc::new(AtomicUsize::new(0));
            let heads = Arc::new(Mutex::new(BTreeMap::new()));
            let (count, seen) = (Arc::clone(&requests), Arc::clone(&heads));
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(mut stream) = stream else { return };
                    let n = count.fetch_add(1, Ordering::SeqCst);
                    let answer = script[n.min(script.len() - 1)].clone();
                    let seen = Arc::clone(&seen);
                    std::thread::spawn(move || {
                        let head = read_request(&mut stream);
                        seen.lock().unwrap().insert(n, head);
                        match answer {
                            Some(a) => {
                                let _ = stream.write_all(a.as_bytes());
                            }
                            None => std::thread::sleep(Duration::from_secs(30)),
                        }
                    });
                }
            });
            FakeS3 {
                endpoint,
                requests,
                heads,
            }
        }

        fn requests(&self) -> usize {
            self.requests.load(Ordering::SeqCst)
        }

        /// The head (request line and headers, lowercase) of request `n`, counting from 0.
        fn head(&self, n: usize) -> String {
            self.heads.lock().unwrap()[&n].to_ascii_lowercase()
        }
    }

    /// Reads one request; returns its head.
    fn read_request(stream: &mut std::net::TcpStream) -> String {
        let mut reader = BufReader::new(stream);
        let mut head = String::new();
        let mut length = 0;
        let mut chunked = false;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
            head.push_str(&line);
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            chunked |= lower.starts_with("transfer-encoding:") && lower.contains("chunked");
        }
        if chunked {
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return head;
                }
                let size = usize::from_str_radix(line.trim(), 16).unwrap_or(0);
                let mut chunk = vec![0; size + 2];
                if reader.read_exact(&mut chunk).is_err() || size == 0 {
                    return head;
                }
            }
        }
        let mut body = vec![0; length];
        let _ = reader.read_exact(&mut body);
        head
    }

    fn answer(status: &str, headers: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\n{headers}Content-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    }

    fn s3_error(status: &str, code: &str) -> String {
        answer(
            status,
            "",
            &format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{code} from the fake server</Message><RequestId>1</RequestId></Error>"
            ),
        )
    }

    /// An answer that promises `body` and sends only its first `sent` bytes before closing.
    fn cut_short(status: &str, headers: &str, body: &str, sent: usize) -> String {
        let whole = answer(status, headers, body);
        whole[..whole.len() - body.len() + sent].to_owned()
    }

    /// What an observer heard: retries and how requests ended.
    #[derive(Debug, Default)]
    struct Heard {
        retries: Mutex<Vec<(String, RetryReason)>>,
        finished: Mutex<Vec<(String, bool)>>,
    }

    impl S3Observer for Heard {
        fn retried(&self, operation: &str, reason: RetryReason) {
            self.retries
                .lock()
                .unwrap()
                .push((operation.to_owned(), reason));
        }

        fn finished(&self, operation: &str, answered: bool) {
            self.finished
                .lock()
                .unwrap()
                .push((operation.to_owned(), answered));
        }
    }

    impl Heard {
        fn retries(&self) -> Vec<(String, RetryReason)> {
            self.retries.lock().unwrap().clone()
        }

        fn finished(&self) -> Vec<(String, bool)> {
            self.finished.lock().unwrap().clone()
        }
    }

    /// Test options that report to a new [`Heard`].
    fn heard(options: S3Options) -> (S3Options, Arc<Heard>) {
        let heard = Arc::new(Heard::default());
        let observer: Arc<dyn S3Observer> = Arc::clone(&heard) as Arc<dyn S3Observer>;
        (
            S3Options {
                observers: vec![observer],
                ..options
            },
            heard,
        )
    }

    async fn fake_store(server: &FakeS3, options: S3Options) -> S3Store {
        S3Store::from_sdk_config(
            &test_config().await,
            S3Location::parse("s3://returns-bucket/p").unwrap(),
            S3Options {
                endpoint: Some(server.endpoint.clone()),
                path_style: true,
                ..options
            },
        )
    }

    #[tokio::test]
    async fn throttling_and_server_errors_are_retried_with_backoff_and_counted_by_reason() {
        let server = FakeS3::start(vec![
            Some(s3_error("503 Slow Down", "SlowDown")),
            Some(s3_error("500 Internal Server Error", "InternalError")),
            Some(String::new()),
            Some(answer("200 OK", "ETag: \"e1\"\r\n", "")),
        ]);
        let (options, heard) = heard(test_options(""));
        let store = fake_store(&server, options).await;
        let meta = store
            .put("incoming/x.csv", b"a".to_vec(), PutMode::Overwrite)
            .await
            .unwrap();
        assert_eq!(meta.etag, "\"e1\"");
        assert_eq!(server.requests(), 4);
        let put = |reason| ("PutObject".to_owned(), reason);
        assert_eq!(
            heard.retries(),
            [
                put(RetryReason::Throttled),
                put(RetryReason::ServerError),
                put(RetryReason::Connection)
            ]
        );
        assert_eq!(heard.finished(), [("PutObject".to_owned(), true)]);
    }

    #[tokio::test]
    async fn persistent_throttling_gives_up_and_names_the_object() {
        let server = FakeS3::start(vec![Some(s3_error("503 Slow Down", "SlowDown"))]);
        let (options, heard) = heard(S3Options {
            max_attempts: 3,
            ..test_options("")
        });
        let store = fake_store(&server, options).await;
        let err = store
            .put("incoming/x.csv", b"a".to_vec(), PutMode::Overwrite)
            .await
            .unwrap_err();
        assert_eq!(server.requests(), 3, "one request per attempt");
        let text = err.to_string();
        assert!(
            text.contains("s3://returns-bucket/p/incoming/x.csv") && text.contains("SlowDown"),
            "{text}"
        );
        assert_eq!(heard.retries().len(), 2);
        assert_eq!(
            heard.finished(),
            [("PutObject".to_owned(), false)],
            "a request throttled past its retries is a failure of the bucket"
        );
    }

    #[tokio::test]
    async fn answers_that_are_not_failures_of_the_bucket_are_told_apart_from_those_that_are() {
        let server = FakeS3::start(vec![
            Some(s3_error("404 Not Found", "NoSuchKey")),
            Some(s3_error("412 Precondition Failed", "PreconditionFailed")),
            Some(s3_error("403 Forbidden", "AccessDenied")),
            Some(s3_error("404 Not Found", "NoSuchBucket")),
        ]);
        let (options, heard) = heard(test_options(""));
        let store = fake_store(&server, options).await;
        assert!(matches!(
            store.get("a").await,
            Err(StoreError::NotFound { .. })
        ));
        assert!(matches!(
            store.put("a", b"1".to_vec(), PutMode::Create).await,
            Err(StoreError::AlreadyExists { .. })
        ));
        assert!(store.list("a").await.is_err());
        assert!(store.list("a").await.is_err());
        assert_eq!(
            heard.finished(),
            [
                ("GetObject".to_owned(), true),
                ("PutObject".to_owned(), true),
                ("ListObjectsV2".to_owned(), false),
                ("ListObjectsV2".to_owned(), false),
            ]
        );
        assert!(heard.retries().is_empty());
    }

    #[tokio::test]
    async fn a_silent_server_times_out_and_names_the_object() {
        let server = FakeS3::start(vec![None]);
        let (options, heard) = heard(S3Options {
            max_attempts: 2,
            attempt_timeout: Duration::from_millis(300),
            ..test_options("")
        });
        let store = fake_store(&server, options).await;
        let started = std::time::Instant::now();
        let err = store.get("snapshots/m.json").await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(
            server.requests(),
            2,
            "the timed-out attempt is retried once"
        );
        let text = err.to_string();
        assert!(
            text.contains("s3://returns-bucket/p/snapshots/m.json") && text.contains("timeout"),
            "{text}"
        );
        assert_eq!(
            heard.retries(),
            [("GetObject".to_owned(), RetryReason::Timeout)]
        );
        assert_eq!(heard.finished(), [("GetObject".to_owned(), false)]);
    }

    const OBJECT: &str = "0123456789abcdefghij";

    #[tokio::test]
    async fn a_download_cut_short_reads_on_from_where_it_stopped_in_the_same_version() {
        let server = FakeS3::start(vec![
            Some(cut_short("200 OK", "ETag: \"e1\"\r\n", OBJECT, 7)),
            Some(cut_short(
                "206 Partial Content",
                "ETag: \"e1\"\r\nContent-Range: bytes 7-19/20\r\n",
                &OBJECT[7..],
                5,
            )),
            Some(answer(
                "206 Partial Content",
                "ETag: \"e1\"\r\nContent-Range: bytes 12-19/20\r\n",
                &OBJECT[12..],
            )),
        ]);
        let (options, heard) = heard(test_options(""));
        let store = fake_store(&server, options).await;
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("upload");
        let (feed, mut reader) = crate::store::feed(4);
        let reading = std::thread::spawn(move || {
            let mut all = Vec::new();
            reader.read_to_end(&mut all).map(|_| all)
        });
        let got = store
            .download("incoming/a.csv", &dest, Some(feed))
            .await
            .unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), OBJECT.as_bytes());
        assert_eq!(
            reading.join().unwrap().unwrap(),
            OBJECT.as_bytes(),
            "the feed"
        );
        assert_eq!(got.sha256, hex(&Sha256::digest(OBJECT.as_bytes())));
        assert_eq!((got.meta.size, got.meta.etag.as_str()), (20, "\"e1\""));
        assert_eq!(server.requests(), 3);
        assert!(!server.head(0).contains("range:"), "{}", server.head(0));
        for (n, from) in [(1, 7), (2, 12)] {
            let request = server.head(n);
            assert!(
                request.contains(&format!("range: bytes={from}-\r\n"))
                    && request.contains("if-match: \"e1\"\r\n"),
                "{request}"
            );
        }
        assert_eq!(
            heard.retries(),
            [
                ("GetObject".to_owned(), RetryReason::Body),
                ("GetObject".to_owned(), RetryReason::Body)
            ]
        );
    }

    #[tokio::test]
    async fn a_small_read_cut_short_is_read_again_whole() {
        let server = FakeS3::start(vec![
            Some(cut_short("200 OK", "ETag: \"e1\"\r\n", OBJECT, 0)),
            Some(answer("200 OK", "ETag: \"e1\"\r\n", OBJECT)),
        ]);
        let store = fake_store(&server, test_options("")).await;
        let (bytes, meta) = store.get("_state/receipts/x.json").await.unwrap();
        assert_eq!(bytes, OBJECT.as_bytes());
        assert_eq!(meta.etag, "\"e1\"");
        let head = server.head(1);
        assert!(
            !head.contains("range:") && head.contains("if-match: \"e1\"\r\n"),
            "nothing was read: the whole object again, of the same version: {head}"
        );
    }

    #[tokio::test]
    async fn an_object_replaced_while_it_is_read_is_never_mixed_with_the_new_one() {
        let server = FakeS3::start(vec![
            Some(cut_short("200 OK", "ETag: \"e1\"\r\n", OBJECT, 7)),
            Some(s3_error("412 Precondition Failed", "PreconditionFailed")),
        ]);
        let store = fake_store(&server, test_options("")).await;
        let dir = tempfile::tempdir().unwrap();
        let read = store
            .download("incoming/a.csv", &dir.path().join("upload"), None)
            .await;
        assert!(
            matches!(&read, Err(StoreError::Changed { location }) if location == "s3://returns-bucket/p/incoming/a.csv"),
            "{read:?}"
        );
        assert_eq!(server.requests(), 2);
    }

    #[tokio::test]
    async fn a_body_that_keeps_breaking_off_fails_after_max_attempts_and_names_the_object() {
        let server = FakeS3::start(vec![
            Some(cut_short("200 OK", "ETag: \"e1\"\r\n", OBJECT, 3)),
            Some(cut_short(
                "206 Partial Content",
                "ETag: \"e1\"\r\nContent-Range: bytes 3-19/20\r\n",
                &OBJECT[3..],
                0,
            )),
        ]);
        let (options, heard) = heard(S3Options {
            max_attempts: 3,
            ..test_options("")
        });
        let store = fake_store(&server, options).await;
        let err = store.get("snapshots/m.json").await.unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("s3://returns-bucket/p/snapshots/m.json")
                && text.contains("after 3 attempts"),
            "{text}"
        );
        let retries = heard.retries();
        assert_eq!(
            retries
                .iter()
                .filter(|(_, r)| *r == RetryReason::Body)
                .count(),
            2,
            "{retries:?}"
        );
        assert_eq!(
            heard.finished().last(),
            Some(&("GetObject".to_owned(), false))
        );
    }

    #[tokio::test]
    async fn failed_conditions_and_conflicts_are_reported_by_mode() {
        for (status, code) in [
            ("412 Precondition Failed", "PreconditionFailed"),
            ("409 Conflict", "ConditionalRequestConflict"),
        ] {
            let server = FakeS3::start(vec![Some(s3_error(status, code))]);
            let store = fake_store(&server, test_options("")).await;
            let create = store.put("c", b"a".to_vec(), PutMode::Create).await;
            assert!(
                matches!(create, Err(StoreError::AlreadyExists { .. })),
                "{code}: {create:?}"
            );
            let update = store
                .put("c", b"a".to_vec(), PutMode::Update("\"e\"".into()))
                .await;
            assert!(
                matches!(update, Err(StoreError::Changed { .. })),
                "{code}: {update:?}"
            );
        }
    }
}
