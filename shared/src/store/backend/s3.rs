//! A repository in an S3-compatible bucket (AWS S3, Garage, MinIO).
//!
//! Address: `s3://BUCKET[/PREFIX]`. `s3://b/app` and `s3://b/app/` name
//! the same prefix `app/`: the prefix is always a directory, so
//! `s3://b/app1` and `s3://b/app2` never see each other's objects (the
//! Kopia/VolSync trailing-slash trap in the seeds cannot happen here).
//!
//! Credentials, region and endpoint come from the standard AWS sources
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
//! `AWS_REGION`/`AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL_S3`/
//! `AWS_ENDPOINT_URL`, profiles). With a custom endpoint, path-style
//! addressing is the default (Garage and MinIO need it);
//! `BK_S3_ADDRESSING=virtual|path` overrides it. HTTPS trusts the system's
//! roots plus a private CA named by `AWS_CA_BUNDLE` (`s3_tls`).
//!
//! Durability and integrity, per the [`super::Backend`] contract:
//! * objects are published by a single PUT (or a completed multipart
//!   upload), which S3 makes visible atomically; no conditional PUT is
//!   relied on (Garage accepts `If-None-Match` and overwrites anyway);
//! * every upload carries a checksum the server verifies, so it rejects a
//!   body damaged in transit: `x-amz-checksum-sha256` (free: a
//!   content-addressed object's name is that digest) once the server has
//!   shown it verifies it by echoing the value, `Content-MD5` until then,
//!   on servers that do not echo it, and for multipart parts. Both are
//!   signed headers, so the payload itself is sent unsigned
//!   (`UNSIGNED-PAYLOAD`): hashing every body a second time for SigV4
//!   would add nothing but CPU;
//! * whole-object reads are checked against the object's name (the SHA-256
//!   of its bytes) and retried once on mismatch before an integrity error;
//!   ranged reads are authenticated by the caller (AEAD + chunk hash);
//! * a LIST that fails on any page is an error, never a short listing.
//!
//! Transient failures (5xx, 429/SlowDown, 408, timeouts, connection resets,
//! stalled transfers) are retried with exponential backoff and jitter
//! inside a bounded budget; authentication and permission errors are not
//! retried and name the bucket and endpoint.

use super::{Backend, ObjectInfo, ObjectKind};
use crate::error::{Error, Result};
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    RequestChecksumCalculation, ResponseChecksumValidation, StalledStreamProtectionConfig,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use base64::Engine;
use md5::{Digest, Md5};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Tunables, from the environment (documented in bk(7)).
#[derive(Debug, Clone)]
pub struct S3Options {
    /// Parallel transfers (`BK_S3_CONCURRENCY`, default 8).
    pub concurrency: usize,
    /// Objects larger than this use multipart upload
    /// (`BK_S3_MULTIPART_THRESHOLD`, bytes, default 64 MiB).
    pub multipart_threshold: usize,
    /// Part size for multipart uploads (`BK_S3_PART_SIZE`, default 16 MiB).
    pub part_size: usize,
    /// Attempts per request including the first (`BK_S3_MAX_ATTEMPTS`, default 6).
    pub max_attempts: u32,
    /// Per-attempt timeout (`BK_S3_ATTEMPT_TIMEOUT`, seconds, default 120).
    pub attempt_timeout: Duration,
    /// Path-style addressing (`BK_S3_ADDRESSING=path|virtual`).
    pub path_style: Option<bool>,
}

/// The value of tunable `name`, if it is set and not empty. A value that
/// does not parse is refused: silently using the default instead would
/// leave a typo (`BK_S3_ADDRESSING=virutal`) in a CronJob unnoticed.
fn env_value<T>(
    name: &str,
    expected: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Option<T>> {
    let Some(raw) = std::env::var_os(name) else {
        return Ok(None);
    };
    // Not UTF-8: the replacement characters do not parse either.
    let value = raw.to_string_lossy();
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    parse(trimmed).map(Some).ok_or_else(|| {
        Error::Usage(format!(
            "{name}={value:?}: expected {expected} (see bk(7), S3 tunables)"
        ))
    })
}

/// Path-style unless `BK_S3_ADDRESSING` says otherwise or there is no
/// endpoint (AWS itself, where virtual-hosted is the norm).
fn path_style(opts: &S3Options, endpoint: Option<&String>) -> bool {
    opts.path_style.unwrap_or(endpoint.is_some())
}

fn env_num<T: std::str::FromStr>(name: &str) -> Result<Option<T>> {
    env_value(name, "a whole number", |v| v.parse().ok())
}

impl S3Options {
    pub fn from_env() -> Result<Self> {
        Ok(S3Options {
            concurrency: env_num("BK_S3_CONCURRENCY")?.unwrap_or(8).clamp(1, 256),
            multipart_threshold: env_num("BK_S3_MULTIPART_THRESHOLD")?
                .unwrap_or(64 << 20)
                .max(5 << 20),
            part_size: env_num("BK_S3_PART_SIZE")?.unwrap_or(16 << 20).max(5 << 20),
            max_attempts: env_num("BK_S3_MAX_ATTEMPTS")?.unwrap_or(6).clamp(1, 20),
            attempt_timeout: Duration::from_secs(
                env_num("BK_S3_ATTEMPT_TIMEOUT")?.unwrap_or(120).max(1),
            ),
            path_style: env_value("BK_S3_ADDRESSING", "path or virtual", |v| match v {
                "path" => Some(true),
                "virtual" => Some(false),
                _ => None,
            })?,
        })
    }
}

/// Splits `s3://bucket/prefix` into the bucket and a normalized prefix that
/// is empty or ends with exactly one `/`.
pub fn parse_location(location: &str) -> Result<(String, String)> {
    let rest = location
        .strip_prefix("s3://")
        .ok_or_else(|| Error::Usage(format!("not an s3:// address: {location:?}")))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() || bucket.contains(['?', '#', '@', ':']) {
        return Err(Error::Usage(format!(
            "{location:?}: expected s3://BUCKET[/PREFIX]"
        )));
    }
    let parts: Vec<&str> = prefix.split('/').filter(|p| !p.is_empty()).collect();
    if parts.iter().any(|p| *p == "." || *p == "..") {
        return Err(Error::Usage(format!(
            "{location:?}: '.' and '..' are not allowed in the prefix"
        )));
    }
    let prefix = if parts.is_empty() {
        String::new()
    } else {
        format!("{}/", parts.join("/"))
    };
    Ok((bucket.to_string(), prefix))
}

/// An endpoint URL fit for printing: any `user:password@` is removed.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            let redacted = if host.len() != authority.len() {
                "***@"
            } else {
                ""
            };
            format!("{scheme}://{redacted}{host}{path}")
        }
        None => url
            .rsplit_once('@')
            .map_or(url.to_string(), |(_, h)| format!("***@{h}")),
    }
}

/// The endpoint URL, unless it carries `user[:password]@`. S3 requests are
/// signed with the access key; the SDK would sign the userinfo into the
/// host and every request would fail as a signature mismatch, a misleading
/// "access denied" for what is a mistake in the URL.
fn refuse_userinfo(source: &str, url: String) -> Result<String> {
    if redact_url(&url) == url {
        return Ok(url);
    }
    Err(Error::Usage(format!(
        "{source} {}: an S3 endpoint takes no user or password; remove it from the URL (requests are signed with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)",
        redact_url(&url)
    )))
}

#[derive(Debug)]
pub struct S3Backend {
    client: aws_sdk_s3::Client,
    rt: tokio::runtime::Runtime,
    bucket: String,
    prefix: String,
    endpoint: Option<String>,
    opts: S3Options,
    limit: Arc<tokio::sync::Semaphore>,
    /// What the server does with `x-amz-checksum-sha256`: one of
    /// `CHECKSUM_UNKNOWN`, `CHECKSUM_VERIFIED`, `CHECKSUM_IGNORED`.
    /// Servers that verify it echo it in the PUT response (AWS, Garage
    /// 2.x, s3s); one that ignores it would leave uploads unchecked, so
    /// `Content-MD5` goes along until an echo has been seen.
    sha256_checksums: AtomicU8,
}

const CHECKSUM_UNKNOWN: u8 = 0;
const CHECKSUM_VERIFIED: u8 = 1;
const CHECKSUM_IGNORED: u8 = 2;

/// Credentials a parent bk process handed over on a pipe
/// (`crate::cli::take_handed_over_secrets`) instead of the environment,
/// so they never appear in this process's `/proc/PID/environ`.
static HANDED_OVER: std::sync::OnceLock<aws_sdk_s3::config::Credentials> =
    std::sync::OnceLock::new();

/// Uses these credentials for every S3 repository this process opens.
pub fn set_handed_over_credentials(key_id: &str, secret: &str, session_token: Option<&str>) {
    let c = aws_sdk_s3::config::Credentials::new(
        key_id,
        secret,
        session_token.map(str::to_string),
        None,
        "bk-handover",
    );
    let _ = HANDED_OVER.set(c);
}

fn handed_over_credentials() -> Option<aws_sdk_s3::config::Credentials> {
    HANDED_OVER.get().cloned()
}

impl S3Backend {
    pub fn open(location: &str) -> Result<Self> {
        let (bucket, prefix) = parse_location(location)?;
        let opts = S3Options::from_env()?;
        let ca_bundle = super::s3_tls::ca_bundle_from_env()?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("bk-s3")
            .enable_all()
            .build()
            .map_err(|e| Error::internal("starting the S3 runtime", e))?;
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(c) = handed_over_credentials() {
            loader = loader.credentials_provider(c);
        }
        let sdk = rt.block_on(loader.load());
        let endpoint = ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]
            .iter()
            .find_map(|v| {
                let url = std::env::var(v).ok().filter(|s| !s.is_empty())?;
                Some((*v, url))
            })
            .or_else(|| {
                sdk.endpoint_url()
                    .map(|u| ("the profile's endpoint_url", u.to_string()))
            })
            .map(|(source, url)| refuse_userinfo(source, url))
            .transpose()?;
        let mut b = aws_sdk_s3::config::Builder::from(&sdk)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(opts.max_attempts)
                    .with_initial_backoff(Duration::from_millis(200))
                    .with_max_backoff(Duration::from_secs(10)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .operation_attempt_timeout(opts.attempt_timeout)
                    .build(),
            )
            .stalled_stream_protection(
                StalledStreamProtectionConfig::enabled()
                    .grace_period(Duration::from_secs(10))
                    .build(),
            )
            // bk sends Content-MD5 itself and checks every object it reads;
            // the SDK's newer default checksums are not understood by every
            // S3-compatible server.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .force_path_style(path_style(&opts, endpoint.as_ref()))
            .retry_classifier(super::s3_tls::NoRetryOnTlsFailure);
        let plain_http = endpoint
            .as_ref()
            .is_some_and(|e| e.to_ascii_lowercase().starts_with("http://"));
        if let Some(e) = &endpoint {
            b = b.endpoint_url(e.clone());
        }
        if plain_http {
            b = b.http_client(super::quickack_http::client());
        } else if let Some(bundle) = ca_bundle {
            b = b.http_client(super::s3_tls::https_client(bundle)?);
        }
        if sdk.region().is_none() {
            b = b.region(aws_sdk_s3::config::Region::new("us-east-1"));
        }
        let client = aws_sdk_s3::Client::from_conf(b.build());
        let limit = Arc::new(tokio::sync::Semaphore::new(opts.concurrency));
        Ok(S3Backend {
            client,
            rt,
            bucket,
            prefix,
            endpoint,
            opts,
            limit,
            sha256_checksums: AtomicU8::new(CHECKSUM_UNKNOWN),
        })
    }

    fn key(&self, kind: ObjectKind, name: &str) -> String {
        format!("{}{}", self.prefix, kind.path(name))
    }

    fn where_(&self) -> String {
        match &self.endpoint {
            Some(e) => format!("bucket {} at {}", self.bucket, redact_url(e)),
            None => format!("bucket {}", self.bucket),
        }
    }

    /// Maps an SDK error to ours: not-found and auth are classified, the
    /// rest carries the retryable flag the SDK's classification implies.
    fn map_err<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
        &self,
        what: String,
        e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> Error {
        if let Some(message) = super::s3_tls::handshake_failure(&e) {
            return Error::Storage {
                object: what,
                source: std::io::Error::other(format!("{message} ({})", self.where_())),
                retryable: false,
            };
        }
        let status = http_status(&e);
        let code = e.code().map(str::to_string);
        let kind = match (&e, status, code.as_deref()) {
            (_, Some(404), _) | (_, _, Some("NoSuchKey")) | (_, _, Some("NotFound")) => std::io::ErrorKind::NotFound,
            (_, _, Some("NoSuchBucket")) => {
                return Error::NoRepository { location: format!("s3://{}/{} ({}: no such bucket)", self.bucket, self.prefix, self.where_()) }
            }
            (_, Some(401 | 403), _)
            | (_, _, Some("AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "ExpiredToken" | "InvalidToken")) => {
                return Error::Storage {
                    object: what,
                    source: std::io::Error::new(
                        std::io::ErrorKind::PermissionDenied,
                        format!(
                            "access denied by {} ({}); check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY and the bucket policy",
                            self.where_(),
                            code.as_deref().unwrap_or("HTTP 403")
                        ),
                    ),
                    retryable: false,
                }
            }
            (SdkError::TimeoutError(_), _, _) => std::io::ErrorKind::TimedOut,
            // A body damaged in transit: the server refused it. The SDK
            // does not resend a 400, so it is classed with bodies broken
            // mid-transfer, which `retrying` sends again.
            (_, _, Some("BadDigest" | "XAmzContentSHA256Mismatch" | "InvalidDigest")) => {
                std::io::ErrorKind::Interrupted
            }
            (_, _, Some("RequestTimeout" | "SlowDown" | "InternalError")) => std::io::ErrorKind::TimedOut,
            (SdkError::DispatchFailure(_), _, _) | (SdkError::ResponseError(_), _, _) => std::io::ErrorKind::ConnectionReset,
            (_, Some(s), _) if s >= 500 || s == 429 || s == 408 => std::io::ErrorKind::TimedOut,
            _ => std::io::ErrorKind::Other,
        };
        let detail = match (&code, e.message()) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            (Some(c), None) => c.clone(),
            _ => {
                let chain = error_chain(&e);
                if chain.contains("credentials") {
                    "no usable AWS credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)".to_string()
                } else if matches!(e, SdkError::DispatchFailure(_)) {
                    let virtual_hosted =
                        self.endpoint.is_some() && !path_style(&self.opts, self.endpoint.as_ref());
                    if virtual_hosted && chain.contains("dns error") {
                        format!(
                            "cannot reach the server: {chain}; BK_S3_ADDRESSING=virtual sends requests to {}.<endpoint's host>, a name that must resolve (BK_S3_ADDRESSING=path does not need it)",
                            self.bucket
                        )
                    } else {
                        format!("cannot reach the server: {chain}")
                    }
                } else if status == Some(400) {
                    // A HEAD answer has no body to name the error.
                    "HTTP 400 Bad Request with no error code; a region other than the server's is the usual cause (set AWS_REGION, e.g. to \"garage\")".to_string()
                } else if let Some(s) = status {
                    format!("HTTP {s} with no error code: {chain}")
                } else {
                    chain
                }
            }
        };
        Error::storage(
            what,
            std::io::Error::new(kind, format!("{detail} ({})", self.where_())),
        )
    }

    /// Retries what the SDK could not retry itself: a transient failure
    /// after the headers (a body cut or stalled mid-way, or an upload the
    /// server refused as damaged) up to twice, and a
    /// read whose content fails its check once, with backoff and jitter.
    fn retrying<T>(&self, mut op: impl FnMut() -> Result<T>) -> Result<T> {
        let mut delay = Duration::from_millis(200);
        let (mut transient, mut mismatches) = (0, 0);
        loop {
            match op() {
                // The SDK already spent its attempts on errors it saw; only
                // a body that broke after the headers is retried here.
                Err(Error::Storage { ref source, .. })
                    if source.kind() == std::io::ErrorKind::Interrupted && transient < 2 =>
                {
                    transient += 1
                }
                Err(e @ Error::Integrity { .. }) if mismatches < 1 => {
                    log::warn!("{e}; reading it again");
                    mismatches += 1;
                }
                r => return r,
            }
            let jitter = rand::random::<u64>() % (delay.as_millis() as u64 + 1);
            std::thread::sleep(delay + Duration::from_millis(jitter));
            delay *= 4;
        }
    }

    /// One PUT carrying `sha256` (the body's digest) as its checksum, and
    /// `Content-MD5` as well unless the server is known to verify the
    /// former.
    async fn put_single(&self, key: &str, data: bytes::Bytes, sha256: &[u8; 32]) -> Result<()> {
        let sha256 = B64.encode(sha256);
        let verified = self.sha256_checksums.load(Ordering::Relaxed) == CHECKSUM_VERIFIED;
        let md5 = (!verified).then(|| B64.encode(Md5::digest(&data)));
        let _permit = self
            .limit
            .acquire()
            .await
            .map_err(|_| Error::internal("talking to S3", "the S3 runtime closed"))?;
        let out = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .checksum_sha256(&sha256)
            .set_content_md5(md5)
            .content_length(data.len() as i64)
            .body(ByteStream::from(data))
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| self.map_err(key.to_string(), e))?;
        if !verified {
            let echoed = out.checksum_sha256() == Some(sha256.as_str());
            self.sha256_checksums.store(
                if echoed {
                    CHECKSUM_VERIFIED
                } else {
                    CHECKSUM_IGNORED
                },
                Ordering::Relaxed,
            );
        }
        Ok(())
    }

    async fn put_multipart(&self, key: &str, data: bytes::Bytes) -> Result<()> {
        let what = key.to_string();
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.map_err(what.clone(), e))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| {
                Error::internal(
                    "starting a multipart upload",
                    format!("{key}: the server sent no upload id"),
                )
            })?
            .to_string();
        let part_size = self.opts.part_size;
        let parts = (0..data.len().div_ceil(part_size)).map(|i| {
            let part = data.slice(i * part_size..((i + 1) * part_size).min(data.len()));
            let (upload_id, what) = (upload_id.clone(), what.clone());
            async move {
                let _permit = self
                    .limit
                    .acquire()
                    .await
                    .map_err(|_| Error::internal("talking to S3", "the S3 runtime closed"))?;
                let n = i as i32 + 1;
                let out = self
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .part_number(n)
                    .content_md5(B64.encode(Md5::digest(&part)))
                    .content_length(part.len() as i64)
                    .body(ByteStream::from(part))
                    .customize()
                    .disable_payload_signing()
                    .send()
                    .await
                    .map_err(|e| self.map_err(format!("{what} part {n}"), e))?;
                Ok::<_, Error>(
                    CompletedPart::builder()
                        .part_number(n)
                        .set_e_tag(out.e_tag().map(str::to_string))
                        .build(),
                )
            }
        });
        let results = futures_util::future::join_all(parts).await;
        let mut done = Vec::with_capacity(results.len());
        let mut failure = None;
        for r in results {
            match r {
                Ok(p) => done.push(p),
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        if let Some(e) = failure {
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await;
            return Err(e);
        }
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(&upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(done))
                    .build(),
            )
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.map_err(what.clone(), e))
    }

    async fn get_bytes(&self, key: &str, range: Option<(u64, u64)>) -> Result<Vec<u8>> {
        let _permit = self
            .limit
            .acquire()
            .await
            .map_err(|_| Error::internal("talking to S3", "the S3 runtime closed"))?;
        let mut req = self.client.get_object().bucket(&self.bucket).key(key);
        if let Some((off, len)) = range {
            req = req.range(format!("bytes={}-{}", off, off + len - 1));
        }
        let out = req.send().await.map_err(|e| {
            let st = http_status(&e);
            if st == Some(416) {
                return Error::storage(
                    key,
                    std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "range beyond the end of the object",
                    ),
                );
            }
            self.map_err(key.to_string(), e)
        })?;
        // Frames are appended to one buffer, so the body is copied once
        // (collecting and flattening it copied a ranged read twice). It is
        // sized from the range asked for, else from Content-Length capped
        // at the largest pack a repository allows.
        let expected = match range {
            Some((_, len)) => len as usize,
            None => out
                .content_length()
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(0)
                .min(1 << 30),
        };
        // The body is gathered by a task on the runtime's workers, beside
        // the connection that receives it. Polled where `block_on` runs, in
        // the calling thread, every frame woke that thread through a futex.
        let mut body = out.body;
        let key = key.to_string();
        let gathered = tokio::spawn(async move {
            let mut data = Vec::with_capacity(expected);
            while let Some(frame) = body.next().await {
                let frame = frame.map_err(|e| {
                    Error::storage(
                        &key,
                        std::io::Error::new(
                            std::io::ErrorKind::Interrupted,
                            format!("reading the body failed: {e}"),
                        ),
                    )
                })?;
                data.extend_from_slice(&frame);
            }
            Ok(data)
        });
        gathered
            .await
            .map_err(|e| Error::internal("reading an S3 body", e))?
    }
}

fn http_status<E>(e: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

/// "a: b: c" from an error and its sources, without repeats or Debug dumps.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = err.source();
    }
    parts.join(": ")
}

impl Backend for S3Backend {
    fn location(&self) -> String {
        match &self.endpoint {
            Some(e) => format!(
                "s3://{}/{} (endpoint {})",
                self.bucket,
                self.prefix,
                redact_url(e)
            ),
            None => format!("s3://{}/{}", self.bucket, self.prefix),
        }
    }

    fn create(&self) -> Result<()> {
        self.rt.block_on(async {
            // A listing, not HeadBucket: its error body names the problem
            // (a wrong region, a missing bucket), where a HEAD has none.
            let existing = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&self.prefix)
                .max_keys(2)
                .send()
                .await
                .map_err(|e| {
                    if http_status(&e) == Some(404) || e.code() == Some("NoSuchBucket") {
                        return Error::Usage(format!(
                            "{} does not exist: create the bucket first",
                            self.where_()
                        ));
                    }
                    self.map_err(format!("list {}", self.prefix), e)
                })?;
            let keys: Vec<&str> = existing.contents().iter().filter_map(|o| o.key()).collect();
            if keys.contains(&format!("{}config", self.prefix).as_str()) {
                return Err(Error::RepositoryExists {
                    location: self.location(),
                });
            }
            if !keys.is_empty() {
                return Err(Error::Usage(format!(
                    "{} is not empty; choose an empty prefix (one prefix holds one repository)",
                    self.location()
                )));
            }
            Ok(())
        })
    }

    fn put(&self, kind: ObjectKind, name: &str, data: &[u8]) -> Result<()> {
        self.put_owned(kind, name, data.to_vec())
    }

    fn put_owned(&self, kind: ObjectKind, name: &str, data: Vec<u8>) -> Result<()> {
        // A content-addressed object's name is the SHA-256 of its bytes
        // (the packer hashed the pack as it wrote it; reads check it), so
        // the upload checksum costs nothing; config and keys are small.
        let sha256 = kind
            .digest_name(name)
            .and_then(crate::format::id::ObjectId::from_hex)
            .unwrap_or_else(|| crate::format::id::ObjectId::digest(&data));
        let sha256 = *sha256.as_bytes();
        let data = bytes::Bytes::from(data);
        let key = self.key(kind, name);
        if kind == ObjectKind::Config {
            // No conditional PUT: check first (init is the only writer).
            match self.rt.block_on(self.get_bytes(&key, Some((0, 1)))) {
                Ok(_) => {
                    return Err(Error::RepositoryExists {
                        location: self.location(),
                    })
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        if matches!(kind, ObjectKind::Wal | ObjectKind::Sqlite) {
            // Check first, as for the config: one archiver per cluster
            // writes a stanza's names, so no two writers race for one.
            match self.rt.block_on(self.get_bytes(&key, Some((0, 1)))) {
                Ok(_) => {
                    return Err(Error::storage(
                        kind.path(name),
                        std::io::Error::from(std::io::ErrorKind::AlreadyExists),
                    ))
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        self.retrying(|| {
            self.rt.block_on(async {
                if data.len() > self.opts.multipart_threshold {
                    self.put_multipart(&key, data.clone()).await
                } else {
                    self.put_single(&key, data.clone(), &sha256).await
                }
            })
        })
    }

    fn get(&self, kind: ObjectKind, name: &str) -> Result<Vec<u8>> {
        let key = self.key(kind, name);
        let digest_name = kind.digest_name(name);
        self.retrying(|| {
            let data = self.rt.block_on(self.get_bytes(&key, None))?;
            if digest_name.is_some_and(|d| crate::format::id::ObjectId::digest(&data).to_hex() != d)
            {
                return Err(Error::damaged(
                    kind,
                    name,
                    "content read back does not match its name",
                ));
            }
            Ok(data)
        })
    }

    fn get_range(&self, kind: ObjectKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let key = self.key(kind, name);
        self.retrying(|| {
            let data = self
                .rt
                .block_on(self.get_bytes(&key, Some((offset, len))))?;
            if data.len() as u64 != len {
                return Err(Error::storage(
                    &key,
                    std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("short read: {} of {len} bytes", data.len()),
                    ),
                ));
            }
            Ok(data)
        })
    }

    fn get_range_upto(
        &self,
        kind: ObjectKind,
        name: &str,
        offset: u64,
        max_len: u64,
    ) -> Result<Vec<u8>> {
        let key = self.key(kind, name);
        self.retrying(|| {
            self.rt
                .block_on(self.get_bytes(&key, Some((offset, max_len.max(1)))))
        })
    }

    fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>> {
        let dir = match kind {
            ObjectKind::Config => format!("{}config", self.prefix),
            k => format!("{}{}/", self.prefix, k.dir()),
        };
        self.rt.block_on(async {
            let mut out = Vec::new();
            // Debug builds page by BK_TEST_S3_LIST_PAGE keys, so tests can
            // fail a listing in the middle of its pages with few objects.
            #[cfg(debug_assertions)]
            let page_keys = std::env::var("BK_TEST_S3_LIST_PAGE")
                .ok()
                .and_then(|s| s.parse::<i32>().ok());
            #[cfg(not(debug_assertions))]
            let page_keys: Option<i32> = None;
            let mut pages = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&dir)
                .set_max_keys(page_keys)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| self.map_err(format!("list {dir}"), e))?;
                if page.is_truncated() == Some(true) && page.next_continuation_token().is_none() {
                    return Err(Error::storage(
                        format!("list {dir}"),
                        std::io::Error::other(format!(
                            "the server said the listing is truncated but gave no continuation token ({})",
                            self.where_()
                        )),
                    ));
                }
                for o in page.contents() {
                    let Some(key) = o.key() else { continue };
                    let rel = &key[self.prefix.len().min(key.len())..];
                    let name = match kind {
                        ObjectKind::Config if rel == "config" => "config",
                        ObjectKind::Config => continue,
                        _ => rel.rsplit('/').next().unwrap_or(rel),
                    };
                    if name.is_empty() || (kind != ObjectKind::Config && kind.path(name) != rel) {
                        continue;
                    }
                    out.push(ObjectInfo {
                        name: name.to_string(),
                        size: o.size().unwrap_or(0).max(0) as u64,
                        modified: o
                            .last_modified()
                            .and_then(|t| std::time::SystemTime::try_from(*t).ok()),
                    });
                }
            }
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        })
    }

    fn delete(&self, kind: ObjectKind, name: &str) -> Result<()> {
        let key = self.key(kind, name);
        self.rt.block_on(async {
            self.client
                .delete_object()
                .bucket(&self.bucket)
                .key(&key)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| self.map_err(key.clone(), e))
        })
    }

    fn incomplete(&self) -> Result<Vec<ObjectInfo>> {
        self.rt.block_on(async {
            let mut out = Vec::new();
            let (mut key_marker, mut upload_marker) = (None::<String>, None::<String>);
            loop {
                let resp = self
                    .client
                    .list_multipart_uploads()
                    .bucket(&self.bucket)
                    .prefix(&self.prefix)
                    .set_key_marker(key_marker.take())
                    .set_upload_id_marker(upload_marker.take())
                    .send()
                    .await;
                let page = match resp {
                    Ok(p) => p,
                    // Servers without multipart listing have nothing we
                    // could clean up through it.
                    Err(e) if http_status(&e) == Some(501) => return Ok(out),
                    Err(e) => return Err(self.map_err("list multipart uploads".into(), e)),
                };
                for u in page.uploads() {
                    let (Some(key), Some(id)) = (u.key(), u.upload_id()) else {
                        continue;
                    };
                    let rel = &key[self.prefix.len().min(key.len())..];
                    out.push(ObjectInfo {
                        name: format!("{rel}#{id}"),
                        size: 0,
                        modified: u
                            .initiated()
                            .and_then(|t| std::time::SystemTime::try_from(*t).ok()),
                    });
                }
                if page.is_truncated() != Some(true) {
                    return Ok(out);
                }
                key_marker = page.next_key_marker().map(str::to_string);
                upload_marker = page.next_upload_id_marker().map(str::to_string);
                if key_marker.is_none() && upload_marker.is_none() {
                    return Err(Error::storage(
                        "list multipart uploads",
                        std::io::Error::other(format!(
                            "the server said the listing is truncated but gave no marker ({})",
                            self.where_()
                        )),
                    ));
                }
            }
        })
    }

    fn remove_incomplete(&self, name: &str) -> Result<()> {
        let Some((rel, id)) = name.split_once('#') else {
            return Err(Error::Usage(format!("not an incomplete upload: {name:?}")));
        };
        let key = format!("{}{rel}", self.prefix);
        self.rt.block_on(async {
            self.client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(&key)
                .upload_id(id)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| self.map_err(key.clone(), e))
        })
    }

    fn read_window(&self) -> Option<u64> {
        Some(4 << 20)
    }

    fn write_concurrency(&self) -> usize {
        self.opts.concurrency
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_directories() {
        assert_eq!(parse_location("s3://b").unwrap(), ("b".into(), "".into()));
        assert_eq!(parse_location("s3://b/").unwrap(), ("b".into(), "".into()));
        assert_eq!(
            parse_location("s3://b/app").unwrap(),
            ("b".into(), "app/".into())
        );
        assert_eq!(
            parse_location("s3://b/app/").unwrap(),
            ("b".into(), "app/".into())
        );
        assert_eq!(
            parse_location("s3://b//x//y/").unwrap(),
            ("b".into(), "x/y/".into())
        );
        for bad in ["s3:///x", "s3://b/../x", "s3://user:pw@b/x", "b/x"] {
            assert!(matches!(parse_location(bad), Err(Error::Usage(_))), "{bad}");
        }
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("http://key:secret@127.0.0.1:3900/x"),
            "http://***@127.0.0.1:3900/x"
        );
        assert_eq!(
            redact_url("https://s3.example.com"),
            "https://s3.example.com"
        );
        assert_eq!(redact_url("http://a:b@h"), "http://***@h");
        // An '@' in the path is not userinfo.
        assert_eq!(redact_url("http://h/x@y"), "http://h/x@y");
        // Without a scheme, everything before the last '@' goes.
        assert_eq!(redact_url("key:secret@h:3900"), "***@h:3900");
    }

    #[test]
    fn endpoints_with_userinfo_are_refused_without_printing_it() {
        let err =
            refuse_userinfo("AWS_ENDPOINT_URL", "http://key:secret@h:3900".into()).unwrap_err();
        assert!(matches!(err, Error::Usage(_)), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("AWS_ENDPOINT_URL http://***@h:3900"),
            "{text}"
        );
        assert!(!text.contains("secret") && !text.contains("key:"), "{text}");
        assert_eq!(
            refuse_userinfo("AWS_ENDPOINT_URL", "http://h:3900/x@y".into()).unwrap(),
            "http://h:3900/x@y"
        );
    }
}
