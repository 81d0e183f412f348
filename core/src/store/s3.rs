//! The `s3` store: any S3-compatible service through aws-sdk-s3, multipart uploads from memory with Content-MD5,
//! Object Lock on every object, the lock read back (and extended) after upload, and aborts on any failure.

use super::{
    AdminStore, LockSpec, LockStatus, ObjectInfo, ObjectLock, ObjectReader, PutReceipt, ReadStore,
    StoreError, WriteStore,
};
use crate::pipeline::{Chunk, PartReceiver};
use crate::secret::Secret;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, ObjectCannedAcl, ObjectLockEnabled, ObjectLockMode,
    ObjectLockRetention, ObjectLockRetentionMode,
};
use base64::Engine;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use lifeboat_config::{LockMode, S3Config};
use md5::{Digest, Md5};
use std::sync::Arc;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Static credentials resolved from the config's `*_env` / `*_file` references.
pub struct S3Credentials {
    /// Access key id.
    pub access_key_id: Secret,
    /// Secret access key.
    pub secret_access_key: Secret,
    /// Session token, for temporary credentials.
    pub session_token: Option<Secret>,
}

/// A store in an S3 bucket.
#[derive(Debug, Clone)]
pub struct S3Store {
    name: String,
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    parts_in_flight: usize,
}

fn render<E>(e: &S3Error<E>) -> String
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
{
    match e.as_service_error() {
        Some(service) => match (service.code(), service.message()) {
            (Some(code), Some(msg)) => format!("{code}: {msg}"),
            (Some(code), None) => code.to_owned(),
            // No error document (HEAD answers have no body): the status is all there is.
            _ => match e.raw_response() {
                Some(raw) => format!("HTTP {} without an error code", raw.status().as_u16()),
                None => DisplayErrorContext(e).to_string(),
            },
        },
        None => DisplayErrorContext(e).to_string(),
    }
}

/// The SDK's error type for one operation.
type S3Error<E> = SdkError<E, aws_sdk_s3::config::http::HttpResponse>;

fn is_404<E: ProvideErrorMetadata>(e: &S3Error<E>) -> bool {
    if let Some(code) = e.as_service_error().and_then(|s| s.code()) {
        if matches!(code, "NoSuchKey" | "NotFound" | "NoSuchVersion") {
            return true;
        }
    }
    e.raw_response().map(|r| r.status().as_u16()) == Some(404)
}

/// Whether an error is worth re-sending the same request for: no answer (connection refused or reset, timeout,
/// unreadable response), a 5xx, or throttling. A 4xx answer (bad digest, no such upload) is final.
fn is_transient<E: ProvideErrorMetadata>(e: &S3Error<E>) -> bool {
    match e {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            status >= 500
                || status == 429
                || matches!(
                    service.err().code(),
                    Some("SlowDown" | "RequestTimeout" | "InternalError" | "ServiceUnavailable")
                )
        }
        _ => false,
    }
}

/// Attempts per part on top of the SDK's own retries: the multipart upload stays open meanwhile, so a store
/// that is away for up to ~30 s costs a pause, not the snapshot.
const PART_ATTEMPTS: u32 = 5;

/// Pause before re-sending a part: 1, 2, 4, 8 s.
fn part_backoff(attempt: u32) -> std::time::Duration {
    std::time::Duration::from_secs(1 << attempt.saturating_sub(1).min(5))
}

/// A version id worth keeping: an unversioned bucket has none, though some stores (moto) answer `null`, which they
/// then refuse as a `versionId` parameter.
fn real_version(v: Option<&str>) -> Option<String> {
    v.filter(|v| !v.is_empty() && *v != "null")
        .map(str::to_owned)
}

fn to_smithy(t: DateTime<Utc>) -> aws_sdk_s3::primitives::DateTime {
    aws_sdk_s3::primitives::DateTime::from_secs(t.timestamp())
}

fn from_smithy(t: &aws_sdk_s3::primitives::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

/// Keeps the `Date` header of the response (for [`S3Store::server_time`]).
#[derive(Debug)]
struct DateHeader(Arc<std::sync::Mutex<Option<String>>>);

impl aws_smithy_runtime_api::client::interceptors::Intercept for DateHeader {
    fn name(&self) -> &'static str {
        "DateHeader"
    }

    fn read_before_deserialization(
        &self,
        context: &aws_smithy_runtime_api::client::interceptors::context::BeforeDeserializationInterceptorContextRef<'_>,
        _runtime_components: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        _cfg: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        if let Some(date) = context.response().headers().get("date") {
            if let Ok(mut slot) = self.0.lock() {
                *slot = Some(date.to_owned());
            }
        }
        Ok(())
    }
}

fn md5_b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Md5::digest(bytes))
}

impl S3Store {
    /// Builds a client for the store. Credentials: the given static ones, else the standard AWS chain
    /// (environment, profile, web identity / IRSA, instance metadata).
    pub async fn connect(
        name: &str,
        cfg: &S3Config,
        credentials: Option<S3Credentials>,
    ) -> Result<S3Store, StoreError> {
        let region = aws_config::meta::region::RegionProviderChain::first_try(
            cfg.region.clone().map(aws_sdk_s3::config::Region::new),
        )
        .or_default_provider()
        .or_else(aws_sdk_s3::config::Region::new("us-east-1"));
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).region(region);
        if let Some(profile) = &cfg.profile {
            loader = loader.profile_name(profile);
        }
        if let Some(c) = credentials {
            loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
                c.access_key_id.expose(),
                c.secret_access_key.expose(),
                c.session_token.map(|t| t.expose().to_owned()),
                None,
                "lifeboat-config",
            ));
        }
        let shared = loader.load().await;
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(cfg.path_style)
            // We send Content-MD5 ourselves on every part; SDK-added checksums trip some stores.
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            )
            .response_checksum_validation(
                aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
            );
        if let Some(endpoint) = &cfg.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        Ok(S3Store {
            name: name.to_owned(),
            client: aws_sdk_s3::Client::from_conf(builder.build()),
            bucket: cfg.bucket.clone(),
            prefix: cfg.prefix.clone(),
            parts_in_flight: cfg.parts_in_flight.max(1),
        })
    }

    /// The bucket this store writes to.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The store's clock: the `Date` header of a HeadBucket answer (error answers included), with the local time
    /// just before and just after the request. Object Lock dates are the store's; a skewed local clock shifts them.
    pub async fn server_time(
        &self,
    ) -> Result<(DateTime<Utc>, DateTime<Utc>, DateTime<Utc>), StoreError> {
        let seen = Arc::new(std::sync::Mutex::new(None));
        let before = Utc::now();
        let outcome = self
            .client
            .head_bucket()
            .bucket(&self.bucket)
            .customize()
            .interceptor(DateHeader(seen.clone()))
            .send()
            .await;
        let after = Utc::now();
        let date = seen.lock().ok().and_then(|d| d.clone());
        match (date, outcome) {
            (Some(text), _) => match DateTime::parse_from_rfc2822(&text) {
                Ok(t) => Ok((before, t.with_timezone(&Utc), after)),
                Err(e) => Err(self.backend(
                    "HeadBucket",
                    &self.bucket,
                    format!("the store's Date header {text:?} does not parse: {e}"),
                )),
            },
            (None, Err(e)) => Err(self.backend("HeadBucket", &self.bucket, render(&e))),
            (None, Ok(_)) => Err(self.backend(
                "HeadBucket",
                &self.bucket,
                "the store's answer has no Date header".to_owned(),
            )),
        }
    }

    /// The key prefix (`""` or ending in `/`) under which this store keeps its objects.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The underlying SDK client (for the harness and admin commands).
    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Maps a read's error: a missing object is [`StoreError::NotFound`], anything else a backend error.
    fn read_error<E>(&self, op: &'static str, key: &str, e: &S3Error<E>) -> StoreError
    where
        E: std::error::Error + ProvideErrorMetadata + 'static,
    {
        if is_404(e) {
            StoreError::NotFound {
                store: self.name.clone(),
                key: key.to_owned(),
            }
        } else {
            self.backend(op, key, render(e))
        }
    }

    fn backend(&self, op: &'static str, key: &str, message: String) -> StoreError {
        StoreError::Backend {
            store: self.name.clone(),
            op,
            key: key.to_owned(),
            message,
        }
    }

    async fn abort(&self, full: &str, upload_id: &str) {
        let res = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(full)
            .upload_id(upload_id)
            .send()
            .await;
        if let Err(e) = res {
            tracing::warn!(store = %self.name, key = full, error = %render(&e), "Could not abort the multipart upload; the bucket's lifecycle rule for incomplete uploads will remove it.");
        }
    }

    /// Reads the lock back; where the store applied less than asked (Ceph ignores lock headers on
    /// multipart uploads, others substitute the bucket default), extends it with PutObjectRetention.
    async fn ensure_lock(
        &self,
        key: &str,
        version_id: Option<String>,
        lock: &LockSpec,
    ) -> Result<(ObjectLock, Option<String>, u64), StoreError> {
        let info = self.head_version(key, version_id.as_deref()).await?;
        let version_id = info.version_id.clone().or(version_id);
        let current = info.lock.clone().unwrap_or(ObjectLock {
            mode: "NONE".to_owned(),
            retain_until: None,
        });
        if current.satisfies(lock) {
            return Ok((current, version_id, info.size));
        }
        let (Some(until), Some(mode)) = (lock.retain_until, retention_mode(lock.mode)) else {
            return Ok((current, version_id, info.size));
        };
        let retention = ObjectLockRetention::builder()
            .mode(mode)
            .retain_until_date(to_smithy(until))
            .build();
        self.client
            .put_object_retention()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .set_version_id(version_id.clone())
            .retention(retention)
            .send()
            .await
            .map_err(|e| self.backend("PutObjectRetention", key, render(&e)))?;
        let after = self.head_version(key, version_id.as_deref()).await?;
        let applied = after.lock.clone().unwrap_or(ObjectLock {
            mode: "NONE".to_owned(),
            retain_until: None,
        });
        if !applied.satisfies(lock) {
            return Err(StoreError::LockNotApplied {
                store: self.name.clone(),
                key: key.to_owned(),
                wanted: format!(
                    "{} until {}",
                    lock.mode_name(),
                    lock.retain_until
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_default()
                ),
                got: format!(
                    "{} until {}",
                    applied.mode,
                    applied
                        .retain_until
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_else(|| "(none)".to_owned())
                ),
            });
        }
        Ok((applied, version_id, after.size))
    }

    async fn head_version(
        &self,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<ObjectInfo, StoreError> {
        let out = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .set_version_id(version_id.map(str::to_owned))
            .send()
            .await
            .map_err(|e| self.read_error("HeadObject", key, &e))?;
        let lock = out.object_lock_mode().map(|m| ObjectLock {
            mode: m.as_str().to_owned(),
            retain_until: out.object_lock_retain_until_date().and_then(from_smithy),
        });
        Ok(ObjectInfo {
            key: key.to_owned(),
            size: out.content_length().unwrap_or(0).max(0) as u64,
            version_id: real_version(out.version_id()),
            lock,
        })
    }

    async fn get_object(
        &self,
        key: &str,
    ) -> Result<aws_sdk_s3::operation::get_object::GetObjectOutput, StoreError> {
        self.client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map_err(|e| self.read_error("GetObject", key, &e))
    }

    /// Objects are written once. `If-None-Match: *` enforces that where the store supports it (AWS, moto);
    /// Ceph RGW 16 ignores it, so check first as well (a race remains there, but keys hold a random id).
    async fn refuse_existing(&self, key: &str) -> Result<(), StoreError> {
        match self.head_version(key, None).await {
            Ok(_) => Err(StoreError::AlreadyExists {
                store: self.name.clone(),
                key: key.to_owned(),
            }),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn upload_parts(
        &self,
        full: &str,
        key: &str,
        upload_id: &str,
        parts: &mut PartReceiver,
    ) -> Result<Vec<CompletedPart>, StoreError> {
        let semaphore = Arc::new(Semaphore::new(self.parts_in_flight));
        let mut tasks: JoinSet<Result<CompletedPart, StoreError>> = JoinSet::new();
        let mut part_number: i32 = 0;
        let mut done = Vec::new();
        let mut committed = false;
        loop {
            // Take a slot before accepting the next part, so at most `parts_in_flight` parts are held here.
            let permit = tokio::select! {
                permit = semaphore.clone().acquire_owned() => permit.map_err(|e| self.backend("UploadPart", key, e.to_string()))?,
                Some(finished) = tasks.join_next(), if !tasks.is_empty() => {
                    done.push(self.joined(key, finished)?);
                    continue;
                }
            };
            let chunk = tokio::select! {
                chunk = parts.recv() => chunk,
                Some(finished) = tasks.join_next(), if !tasks.is_empty() => {
                    drop(permit);
                    done.push(self.joined(key, finished)?);
                    continue;
                }
            };
            match chunk {
                Some(Chunk::Part(bytes)) => {
                    part_number += 1;
                    if part_number > 10_000 {
                        return Err(self.backend(
                            "UploadPart",
                            key,
                            "more than 10,000 parts: raise part_size".to_owned(),
                        ));
                    }
                    let client = self.client.clone();
                    let (bucket, full, upload_id, key_owned, store) = (
                        self.bucket.clone(),
                        full.to_owned(),
                        upload_id.to_owned(),
                        key.to_owned(),
                        self.name.clone(),
                    );
                    let number = part_number;
                    tasks.spawn(async move {
                        let _permit = permit;
                        let md5 = md5_b64(&bytes);
                        let len = bytes.len() as i64;
                        let mut attempt = 1;
                        let out = loop {
                            let sent = client
                                .upload_part()
                                .bucket(&bucket)
                                .key(&full)
                                .upload_id(&upload_id)
                                .part_number(number)
                                .content_length(len)
                                .content_md5(&md5)
                                .body(ByteStream::from(bytes.clone()))
                                .send()
                                .await;
                            match sent {
                                Ok(out) => break out,
                                Err(e) if attempt < PART_ATTEMPTS && is_transient(&e) => {
                                    let wait = part_backoff(attempt);
                                    tracing::warn!(store = %store, key = %key_owned, part = number, attempt, wait_s = wait.as_secs(), error = %render(&e), "Part upload failed; re-sending it.");
                                    tokio::time::sleep(wait).await;
                                    attempt += 1;
                                }
                                Err(e) => {
                                    return Err(StoreError::Backend {
                                        store,
                                        op: "UploadPart",
                                        key: key_owned,
                                        message: render(&e),
                                    })
                                }
                            }
                        };
                        Ok(CompletedPart::builder()
                            .part_number(number)
                            .set_e_tag(out.e_tag().map(str::to_owned))
                            .build())
                    });
                }
                Some(Chunk::Commit) => {
                    committed = true;
                    break;
                }
                None => break,
            }
        }
        while let Some(finished) = tasks.join_next().await {
            done.push(self.joined(key, finished)?);
        }
        if !committed {
            return Err(StoreError::Aborted {
                store: self.name.clone(),
                key: key.to_owned(),
            });
        }
        done.sort_by_key(|p| p.part_number());
        Ok(done)
    }

    fn joined(
        &self,
        key: &str,
        finished: Result<Result<CompletedPart, StoreError>, tokio::task::JoinError>,
    ) -> Result<CompletedPart, StoreError> {
        finished.map_err(|e| self.backend("UploadPart", key, e.to_string()))?
    }
}

fn retention_mode(mode: LockMode) -> Option<ObjectLockRetentionMode> {
    match mode {
        LockMode::Compliance => Some(ObjectLockRetentionMode::Compliance),
        LockMode::Governance => Some(ObjectLockRetentionMode::Governance),
        LockMode::None => None,
    }
}

fn object_lock_mode(mode: LockMode) -> Option<ObjectLockMode> {
    match mode {
        LockMode::Compliance => Some(ObjectLockMode::Compliance),
        LockMode::Governance => Some(ObjectLockMode::Governance),
        LockMode::None => None,
    }
}

impl ReadStore for S3Store {
    fn name(&self) -> &str {
        &self.name
    }

    async fn version_count(&self, key: &str) -> Result<usize, StoreError> {
        let full = self.full_key(key);
        let mut count = 0;
        let mut key_marker: Option<String> = None;
        let mut version_marker: Option<String> = None;
        loop {
            let out = self
                .client
                .list_object_versions()
                .bucket(&self.bucket)
                .prefix(&full)
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .send()
                .await
                .map_err(|e| self.backend("ListObjectVersions", key, render(&e)))?;
            count += out
                .versions()
                .iter()
                .filter(|v| v.key() == Some(full.as_str()))
                .count();
            count += out
                .delete_markers()
                .iter()
                .filter(|m| m.key() == Some(full.as_str()))
                .count();
            if out.is_truncated() != Some(true) {
                return Ok(count);
            }
            key_marker = out.next_key_marker().map(str::to_owned);
            version_marker = out.next_version_id_marker().map(str::to_owned);
            if key_marker.is_none() && version_marker.is_none() {
                return Ok(count);
            }
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(self.full_key(prefix))
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.backend("ListObjectsV2", prefix, render(&e)))?;
            for obj in page.contents() {
                let Some(full) = obj.key() else { continue };
                let Some(key) = full.strip_prefix(&self.prefix) else {
                    continue;
                };
                out.push(ObjectInfo {
                    key: key.to_owned(),
                    size: obj.size().unwrap_or(0).max(0) as u64,
                    version_id: None,
                    lock: None,
                });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn head(&self, key: &str) -> Result<ObjectInfo, StoreError> {
        self.head_version(key, None).await
    }

    async fn get(&self, key: &str) -> Result<ObjectReader, StoreError> {
        let out = self.get_object(key).await?;
        Ok(Box::pin(out.body.into_async_read()))
    }

    async fn get_small(&self, key: &str, max_bytes: u64) -> Result<Bytes, StoreError> {
        let out = self.get_object(key).await?;
        let len = out.content_length().unwrap_or(0).max(0) as u64;
        if len > max_bytes {
            return Err(self.backend(
                "GetObject",
                key,
                format!("object is {len} bytes, more than the {max_bytes} expected"),
            ));
        }
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| self.backend("GetObject", key, e.to_string()))?;
        Ok(body.into_bytes())
    }

    async fn lock_status(&self) -> Result<LockStatus, StoreError> {
        match self
            .client
            .get_object_lock_configuration()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(out) => {
                let Some(cfg) = out.object_lock_configuration() else {
                    return Ok(LockStatus {
                        enabled: false,
                        detail: format!("bucket {} has no Object Lock configuration", self.bucket),
                    });
                };
                let enabled = cfg.object_lock_enabled() == Some(&ObjectLockEnabled::Enabled);
                let default = cfg
                    .rule()
                    .and_then(|r| r.default_retention())
                    .map(|d| {
                        format!(
                            "; bucket default {} {} days {} years",
                            d.mode().map(|m| m.as_str()).unwrap_or("?"),
                            d.days().unwrap_or(0),
                            d.years().unwrap_or(0)
                        )
                    })
                    .unwrap_or_else(|| "; no bucket default retention".to_owned());
                Ok(LockStatus {
                    enabled,
                    detail: if enabled {
                        format!("bucket {} has Object Lock enabled{default}", self.bucket)
                    } else {
                        format!("bucket {} does not have Object Lock enabled", self.bucket)
                    },
                })
            }
            Err(e) => {
                let code = e.as_service_error().and_then(|s| s.code()).unwrap_or("");
                if code == "ObjectLockConfigurationNotFoundError"
                    || code == "ObjectLockConfigurationNotFound"
                {
                    Ok(LockStatus {
                        enabled: false,
                        detail: format!("bucket {} does not have Object Lock enabled", self.bucket),
                    })
                } else {
                    Err(self.backend("GetObjectLockConfiguration", &self.bucket, render(&e)))
                }
            }
        }
    }
}

impl WriteStore for S3Store {
    async fn put_stream(
        &self,
        key: &str,
        mut parts: PartReceiver,
        lock: &LockSpec,
    ) -> Result<PutReceipt, StoreError> {
        self.refuse_existing(key).await?;
        let full = self.full_key(key);
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&full)
            .acl(ObjectCannedAcl::BucketOwnerFullControl)
            .set_object_lock_mode(object_lock_mode(lock.mode))
            .set_object_lock_retain_until_date(match lock.mode {
                LockMode::None => None,
                _ => lock.retain_until.map(to_smithy),
            })
            .send()
            .await
            .map_err(|e| self.backend("CreateMultipartUpload", key, render(&e)))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| {
                self.backend(
                    "CreateMultipartUpload",
                    key,
                    "no upload id in the answer".to_owned(),
                )
            })?
            .to_owned();
        let completed = match self.upload_parts(&full, key, &upload_id, &mut parts).await {
            Ok(done) => done,
            Err(e) => {
                self.abort(&full, &upload_id).await;
                return Err(e);
            }
        };
        let complete = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&full)
            .upload_id(&upload_id)
            .if_none_match("*")
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            )
            .send()
            .await;
        let out = match complete {
            Ok(out) => out,
            Err(e) => {
                self.abort(&full, &upload_id).await;
                return Err(self.backend("CompleteMultipartUpload", key, render(&e)));
            }
        };
        let (lock, version_id, size) = self
            .ensure_lock(key, real_version(out.version_id()), lock)
            .await?;
        Ok(PutReceipt {
            key: key.to_owned(),
            size,
            version_id,
            lock,
        })
    }

    async fn put_small(
        &self,
        key: &str,
        body: Bytes,
        lock: &LockSpec,
    ) -> Result<PutReceipt, StoreError> {
        self.refuse_existing(key).await?;
        let md5 = md5_b64(&body);
        let out = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .acl(ObjectCannedAcl::BucketOwnerFullControl)
            .content_md5(md5)
            .content_length(body.len() as i64)
            .if_none_match("*")
            .set_object_lock_mode(object_lock_mode(lock.mode))
            .set_object_lock_retain_until_date(match lock.mode {
                LockMode::None => None,
                _ => lock.retain_until.map(to_smithy),
            })
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| {
                if e.as_service_error().and_then(|s| s.code()) == Some("PreconditionFailed") {
                    StoreError::AlreadyExists {
                        store: self.name.clone(),
                        key: key.to_owned(),
                    }
                } else {
                    self.backend("PutObject", key, render(&e))
                }
            })?;
        let (lock, version_id, size) = self
            .ensure_lock(key, real_version(out.version_id()), lock)
            .await?;
        Ok(PutReceipt {
            key: key.to_owned(),
            size,
            version_id,
            lock,
        })
    }
}

impl AdminStore for S3Store {
    async fn list_versions(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, Option<String>)>, StoreError> {
        let full = self.full_key(prefix);
        let mut out = Vec::new();
        let mut key_marker: Option<String> = None;
        let mut version_marker: Option<String> = None;
        loop {
            let page = self
                .client
                .list_object_versions()
                .bucket(&self.bucket)
                .prefix(&full)
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .send()
                .await
                .map_err(|e| self.backend("ListObjectVersions", prefix, render(&e)))?;
            let relative = |k: Option<&str>| {
                k.and_then(|k| k.strip_prefix(&self.prefix))
                    .map(str::to_owned)
            };
            for v in page.versions() {
                if let Some(key) = relative(v.key()) {
                    out.push((key, real_version(v.version_id())));
                }
            }
            for m in page.delete_markers() {
                if let Some(key) = relative(m.key()) {
                    out.push((key, real_version(m.version_id())));
                }
            }
            if page.is_truncated() != Some(true) {
                return Ok(out);
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            version_marker = page.next_version_id_marker().map(str::to_owned);
            if key_marker.is_none() && version_marker.is_none() {
                return Ok(out);
            }
        }
    }

    async fn delete_version(&self, key: &str, version_id: Option<&str>) -> Result<(), StoreError> {
        #[allow(clippy::disallowed_methods)] // AdminStore is the one place allowed to delete.
        let request = self.client.delete_object();
        request
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .set_version_id(version_id.map(str::to_owned))
            .send()
            .await
            .map_err(|e| {
                let status = e.raw_response().map(|r| r.status().as_u16());
                if status == Some(403)
                    || e.as_service_error().and_then(|s| s.code()) == Some("AccessDenied")
                {
                    StoreError::DeleteRefused {
                        store: self.name.clone(),
                        key: key.to_owned(),
                        reason: render(&e),
                    }
                } else {
                    self.backend("DeleteObject", key, render(&e))
                }
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_s3::config::http::HttpResponse;
    use aws_sdk_s3::error::ErrorMetadata;
    use aws_sdk_s3::operation::upload_part::UploadPartError;
    use aws_smithy_types::body::SdkBody;

    fn service(status: u16, code: &str) -> S3Error<UploadPartError> {
        let raw = HttpResponse::new(status.try_into().unwrap(), SdkBody::empty());
        let err = UploadPartError::generic(ErrorMetadata::builder().code(code).build());
        SdkError::service_error(err, raw)
    }

    #[test]
    fn only_unanswered_server_side_and_throttled_requests_are_retried() {
        assert!(is_transient(&service(503, "ServiceUnavailable")));
        assert!(is_transient(&service(500, "InternalError")));
        assert!(is_transient(&service(429, "TooManyRequests")));
        assert!(is_transient(&service(400, "RequestTimeout")));
        assert!(is_transient(
            &SdkError::<UploadPartError, HttpResponse>::timeout_error("slow")
        ));
        assert!(!is_transient(&service(400, "InvalidDigest")));
        assert!(!is_transient(&service(404, "NoSuchUpload")));
        assert!(!is_transient(&service(403, "AccessDenied")));
        assert_eq!(part_backoff(1).as_secs(), 1);
        assert_eq!(part_backoff(4).as_secs(), 8);
        let total: u64 = (1..PART_ATTEMPTS).map(|a| part_backoff(a).as_secs()).sum();
        assert_eq!(
            total, 15,
            "a part waits out a store outage of about 15 s plus SDK retries"
        );
    }
}
