//! The `aws_s3` sink: batches events per rendered key prefix into objects (NDJSON/JSON/text,
//! gzip or zstd, or Parquet) and uploads each one; its events are acknowledged once the
//! upload succeeded. With `local_directory` the same objects are written to disk instead
//! of S3, so the lake layout can be tried without a cloud account.
//!
//! Object keys: `<key_prefix><UTC time of the flush, %Y%m%dT%H%M%S%.3fZ>-<8 hex digits,
//! random per process>-<6-digit sequence>.<extension>` — unique across instances and
//! sortable by time within a prefix.

pub mod column_encoding;
pub mod encode;
pub mod parquet;
pub mod store;

use super::batch::{drive_partitioned, BatchConfig, PartitionedFlush};
use super::retry::{with_retries, RequestConfig};
use super::{reject, BufferConfig, SinkContext};
use crate::aws::{AwsAuth, AwsConnection};
use crate::codec::Compression;
use crate::event::{Event, Finalizers};
use crate::observe::ComponentMetrics;
use crate::template::Template;
use crate::topology::{BuildError, ComponentError, Fanout, RunFuture};
use encode::{ObjectEncoder, ObjectEncodingConfig, Pending};
use indexmap::IndexMap;
use serde::Deserialize;
use std::path::PathBuf;
use store::{ObjectOptions, ObjectStore};

/// Write batches of events as objects to S3 (or an S3-like local directory).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct S3SinkConfig {
    /// Components whose events this sink reads.
    pub inputs: Vec<String>,
    /// The bucket (with `local_directory`: the directory under it that stands for the bucket).
    pub bucket: String,
    /// Key prefix template: strftime on the event's `timestamp` (current time without one)
    /// and `{{ field }}` values, e.g. `date=%Y-%m-%d/service={{ service }}/` (default
    /// `date=%Y-%m-%d/`). Each distinct prefix is batched separately.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// Object name extension (default from the encoding: `ndjson.gz`, `json.zst`, `log`,
    /// `parquet`, ...).
    #[serde(default)]
    pub filename_extension: Option<String>,
    /// `ndjson` (default), `json`, `text` or `parquet`, with `parquet:` options.
    #[serde(default)]
    pub encoding: ObjectEncodingConfig,
    /// Whole-object compression of line formats: `gzip` (default), `zstd` or `none`. Parquet
    /// compresses columns instead (`encoding.parquet.compression`).
    #[serde(default)]
    pub compression: Option<Compression>,
    /// `Content-Type` of the objects (default from the encoding).
    #[serde(default)]
    pub content_type: Option<String>,
    /// S3 storage class (`STANDARD`, `STANDARD_IA`, `INTELLIGENT_TIERING`, `GLACIER_IR`, ...).
    #[serde(default)]
    pub storage_class: Option<String>,
    /// Server-side encryption: `AES256` or `aws:kms`.
    #[serde(default)]
    pub server_side_encryption: Option<String>,
    /// KMS key for `server_side_encryption: aws:kms`.
    #[serde(default)]
    pub ssekms_key_id: Option<String>,
    /// Object tags.
    #[serde(default)]
    pub tags: IndexMap<String, String>,
    /// When a prefix's batch becomes an object.
    #[serde(default)]
    pub batch: ObjectBatchConfig,
    /// Objects of at least this many bytes (after encoding) are uploaded in parts (default
    /// 16 MiB).
    #[serde(default = "default_multipart_threshold")]
    pub multipart_threshold_bytes: usize,
    /// Size of each part of a multipart upload (default 8 MiB; S3's minimum is 5 MiB).
    #[serde(default = "default_part_size")]
    pub multipart_part_bytes: usize,
    /// Write objects under this local directory (`<dir>/<bucket>/<key>`) instead of S3.
    #[serde(default)]
    pub local_directory: Option<PathBuf>,
    /// AWS region (default: the standard chain: `AWS_REGION`, profile, IMDS).
    #[serde(default)]
    pub region: Option<String>,
    /// Endpoint URL for S3-compatible stores and emulators (`http://127.0.0.1:9000`).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), which most S3-compatible stores and
    /// emulators need (default false).
    #[serde(default)]
    pub force_path_style: bool,
    /// Explicit credentials (default: the standard AWS credential chain).
    #[serde(default)]
    pub auth: Option<AwsAuth>,
    /// Timeouts and retries of uploads (default: retry throttling, 5xx and connection
    /// errors without limit, with backoff).
    #[serde(default)]
    pub request: RequestConfig,
    /// The buffer in front of this sink.
    #[serde(default)]
    pub buffer: BufferConfig,
}

fn default_key_prefix() -> String {
    "date=%Y-%m-%d/".into()
}
/// When a prefix's batch becomes an object: the first limit reached. Larger than other
/// sinks' defaults, because lakes want few, large objects.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectBatchConfig {
    /// Most events per object (default 100000).
    #[serde(default = "default_max_events")]
    pub max_events: usize,
    /// Most bytes per object, measured as raw event size before encoding (default 10 MiB).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    /// Longest time an event waits for its object, in seconds (default 300).
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: f64,
}

fn default_max_events() -> usize {
    100_000
}
fn default_max_bytes() -> usize {
    10 << 20
}
fn default_timeout_secs() -> f64 {
    300.0
}

impl Default for ObjectBatchConfig {
    fn default() -> Self {
        ObjectBatchConfig {
            max_events: default_max_events(),
            max_bytes: default_max_bytes(),
            timeout_secs: default_timeout_secs(),
        }
    }
}

impl From<ObjectBatchConfig> for BatchConfig {
    fn from(c: ObjectBatchConfig) -> Self {
        BatchConfig {
            max_events: c.max_events,
            max_bytes: c.max_bytes,
            timeout_secs: c.timeout_secs,
        }
    }
}
fn default_multipart_threshold() -> usize {
    16 << 20
}
fn default_part_size() -> usize {
    8 << 20
}

impl S3SinkConfig {
    fn connection(&self) -> AwsConnection<'_> {
        AwsConnection {
            region: self.region.as_deref(),
            endpoint: self.endpoint.as_deref(),
            auth: self.auth.as_ref(),
            request: &self.request,
        }
    }

    /// `sluice validate`: the bucket exists and answers (HeadBucket), or the local directory
    /// is writable or creatable (checked, not created).
    pub async fn healthcheck(&self) -> Result<Vec<String>, String> {
        if let Some(directory) = &self.local_directory {
            let root = directory.join(&self.bucket);
            let found = crate::writable::check_dir(&root)?;
            return Ok(found.note(&root).into_iter().collect());
        }
        crate::aws::head_bucket(&self.connection(), self.force_path_style, &self.bucket).await?;
        Ok(Vec::new())
    }

    pub fn build(&self, cx: SinkContext) -> Result<RunFuture, BuildError> {
        let prefix =
            Template::parse(&self.key_prefix).map_err(|m| BuildError::new("key_prefix", m))?;
        BatchConfig::from(self.batch)
            .check()
            .map_err(|m| BuildError::new("batch", m))?;
        if self.multipart_part_bytes < 5 << 20 {
            return Err(BuildError::new(
                "multipart_part_bytes",
                "must be at least 5242880 (5 MiB, S3's minimum part size)",
            ));
        }
        if self.bucket.is_empty() || self.bucket.contains('/') {
            return Err(BuildError::new(
                "bucket",
                "must be a bucket name (no `/`; put paths in key_prefix)",
            ));
        }
        self.connection()
            .check()
            .map_err(|(field, message)| BuildError::new(field, message))?;
        let encoder = ObjectEncoder::new(&self.encoding, self.compression)
            .map_err(|(field, message)| BuildError::new(field, message))?;
        let options = ObjectOptions {
            content_type: self
                .content_type
                .clone()
                .unwrap_or_else(|| encoder.content_type().to_string()),
            content_encoding: encoder.content_encoding(),
            storage_class: self.storage_class.clone(),
            server_side_encryption: self.server_side_encryption.clone(),
            ssekms_key_id: self.ssekms_key_id.clone(),
            tagging: store::tagging(&self.tags),
            multipart_threshold: self.multipart_threshold_bytes,
            part_size: self.multipart_part_bytes,
        };
        let extension = self
            .filename_extension
            .clone()
            .unwrap_or_else(|| encoder.extension());
        let config = self.clone();
        Ok(Box::pin(async move {
            let store = match &config.local_directory {
                Some(directory) => ObjectStore::Directory {
                    root: directory.join(&config.bucket),
                },
                None => {
                    let shared = config.connection().sdk_config().await;
                    let s3 = aws_sdk_s3::config::Builder::from(&shared)
                        .force_path_style(config.force_path_style)
                        .build();
                    ObjectStore::S3 {
                        client: aws_sdk_s3::Client::from_conf(s3),
                        bucket: config.bucket.clone(),
                    }
                }
            };
            tracing::info!(component_id = %cx.id, target = %store.describe(), "writing objects");
            let mut sink = S3Sink {
                store,
                prefix,
                extension,
                encoder,
                options,
                request: config.request,
                names: ObjectNames::new(),
                metrics: cx.metrics.clone(),
                dead_letter: cx.dead_letter,
            };
            drive_partitioned(cx.input, config.batch.into(), &cx.metrics, &mut sink).await;
            Ok::<(), ComponentError>(())
        }))
    }
}

/// Unique, time-sortable object names.
struct ObjectNames {
    instance: u32,
    sequence: u64,
}

impl ObjectNames {
    fn new() -> Self {
        ObjectNames {
            instance: rand::random(),
            sequence: 0,
        }
    }

    fn next(&mut self, prefix: &str, extension: &str) -> String {
        self.sequence += 1;
        let time = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
        format!(
            "{prefix}{time}-{:08x}-{:06}.{extension}",
            self.instance, self.sequence
        )
    }
}

/// After encoding an object of at least this much raw data, the encoding thread hands its
/// free heap pages back to the system. An object's columns or lines are megabytes the
/// allocator would otherwise keep for a second (mimalloc's purge delay) while every prefix's
/// next object grows: the Parquet load bench (6 prefixes, ~8 MiB objects) peaked at 178-222
/// MiB, and at 116-127 MiB handing them back, for ~0.07 CPU s more per million events (page
/// faults as the next objects grow). Smaller objects hold too little to be worth it.
const GIVE_BACK_AFTER_BYTES: usize = 1 << 20;

struct S3Sink {
    store: ObjectStore,
    prefix: Template,
    extension: String,
    encoder: ObjectEncoder,
    options: ObjectOptions,
    request: RequestConfig,
    names: ObjectNames,
    metrics: ComponentMetrics,
    dead_letter: Fanout,
}

impl PartitionedFlush for S3Sink {
    type Pending = Pending;

    fn partition(&self, event: &Event, key: &mut String) -> Result<(), String> {
        self.prefix
            .render_into(event, key)
            .map_err(|e| format!("key_prefix: {e}"))
    }

    fn start(&self) -> Pending {
        self.encoder.start()
    }

    fn add(&mut self, pending: &mut Pending, event: Event) {
        let added = self.encoder.add(pending, &event);
        if added.skipped {
            self.metrics.error("encode_failed");
            self.metrics.discarded("encode_failed", 1);
        }
        if added.mismatches > 0 {
            self.metrics
                .errors("schema_mismatch", added.mismatches as u64);
        }
    }

    async fn flush(
        &mut self,
        prefix: String,
        pending: Pending,
        _events: usize,
        byte_size: usize,
        finalizers: Finalizers,
    ) {
        let count = ObjectEncoder::count(&pending);
        if count == 0 {
            return;
        }
        let encoder = self.encoder.clone();
        // Compression and Parquet writing are CPU work: off the async workers.
        let body = match tokio::task::spawn_blocking(move || {
            let body = encoder.finish(pending);
            if byte_size >= GIVE_BACK_AFTER_BYTES {
                crate::resident::collect_free_memory();
            }
            body
        })
        .await
        {
            Ok(Ok(body)) => body,
            Ok(Err(reason)) => {
                self.metrics.error("encode_failed");
                tracing::error!(component_id = self.metrics.id(), %reason, events = count, "cannot encode the object; its events are rejected");
                finalizers.update_status(crate::event::BatchStatus::Rejected);
                return;
            }
            Err(error) => {
                self.metrics.error("encode_failed");
                tracing::error!(component_id = self.metrics.id(), %error, events = count, "object encoder failed; its events are rejected");
                finalizers.update_status(crate::event::BatchStatus::Rejected);
                return;
            }
        };
        let key = self.names.next(&prefix, &self.extension);
        let bytes = bytes::Bytes::from(body);
        let size = bytes.len();
        let (store, options) = (&self.store, &self.options);
        let uploaded = with_retries(&self.request, &self.metrics, || {
            store.put(&key, bytes.clone(), options)
        })
        .await;
        match uploaded {
            Ok(()) => {
                tracing::debug!(component_id = self.metrics.id(), %key, events = count, bytes = size, "object written");
                self.metrics.sent(count, size);
            }
            Err(reason) => {
                // The events were dropped once encoded: decode them back for the dead letter.
                let events = if self.dead_letter.is_connected() {
                    self.encoder.decode(&bytes)
                } else {
                    vec![Event::from_message(bytes::Bytes::new()); count]
                };
                reject(
                    &mut self.dead_letter,
                    &self.metrics,
                    events,
                    finalizers,
                    &reason,
                )
                .await
            }
        }
    }

    async fn reject(&mut self, events: Vec<Event>, finalizers: Finalizers, reason: String) {
        self.metrics.error("template_failed");
        reject(
            &mut self.dead_letter,
            &self.metrics,
            events,
            finalizers,
            &reason,
        )
        .await;
    }
}
