//! The `aws_kinesis_streams` and `aws_kinesis_firehose` sinks: one record per event, sent
//! with PutRecords (≤ 500 records, ≤ 5 MiB per request, ≤ 1 MiB per record including the
//! partition key) or PutRecordBatch (≤ 500 records, ≤ 4 MiB, ≤ 1000 KiB per record). Only
//! the records a partial failure names are sent again. Records of one partition key keep
//! their order unless one of them fails and is retried: it then lands after the records that
//! succeeded with it (PutRecords gives no ordering across a partial failure).

use super::aws_records::{send_batch, Limits, Record, RecordService};
use super::batch::{drive, BatchConfig, Flush};
use super::retry::{Attempt, RequestConfig};
use super::{BufferConfig, SinkContext};
use crate::aws::{classify, AwsAuth, AwsConnection};
use crate::codec::{Encoder, EncodingConfig};
use crate::event::{Event, Finalizers, Value};
use crate::observe::ComponentMetrics;
use crate::topology::{BuildError, ComponentError, Fanout, RunFuture};
use crate::transforms::support::optional_path;
use aws_sdk_kinesis::primitives::Blob;
use bytes::Bytes;
use serde::Deserialize;
use vrl::path::OwnedValuePath;

/// Send events as records to a Kinesis data stream or a Firehose delivery stream.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KinesisSinkConfig {
    /// Components whose events this sink reads.
    pub inputs: Vec<String>,
    /// The Kinesis data stream, or the Firehose delivery stream.
    pub stream_name: String,
    /// Kinesis data streams only: the field whose value is the partition key (same key, same
    /// shard, in order). Without it each record gets a random key (spread over shards).
    #[serde(default)]
    pub partition_key_field: Option<String>,
    /// `json`/`ndjson` (one JSON object per record; default) or `text` (the `message` field).
    /// Firehose records end with a newline so that its S3 objects are NDJSON.
    #[serde(default)]
    pub encoding: EncodingConfig,
    /// How many events are collected before sending (requests are cut to the service's
    /// limits from there).
    #[serde(default)]
    pub batch: BatchConfig,
    /// AWS region (default: the standard chain).
    #[serde(default)]
    pub region: Option<String>,
    /// Endpoint URL for emulators or VPC endpoints.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Explicit credentials (default: the standard AWS credential chain).
    #[serde(default)]
    pub auth: Option<AwsAuth>,
    /// Timeouts and retries (default: retry throttling, 5xx, connection errors and failed
    /// records without limit, with backoff).
    #[serde(default)]
    pub request: RequestConfig,
    /// The buffer in front of this sink.
    #[serde(default)]
    pub buffer: BufferConfig,
}

/// Which service a [`KinesisSinkConfig`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Streams,
    Firehose,
}

const STREAMS_LIMITS: Limits = Limits {
    max_records: 500,
    max_request_bytes: 5 << 20,
    max_record_bytes: 1 << 20,
};
const FIREHOSE_LIMITS: Limits = Limits {
    max_records: 500,
    max_request_bytes: 4 << 20,
    max_record_bytes: 1000 << 10,
};

impl KinesisSinkConfig {
    /// `sluice validate`: the stream exists (DescribeStreamSummary / DescribeDeliveryStream).
    pub async fn healthcheck(&self, service: Service) -> Result<(), String> {
        let connection = AwsConnection {
            region: self.region.as_deref(),
            endpoint: self.endpoint.as_deref(),
            auth: self.auth.as_ref(),
            request: &self.request,
        };
        let shared = connection.sdk_config().await;
        let outcome: Attempt<()> = match service {
            Service::Streams => match aws_sdk_kinesis::Client::new(&shared)
                .describe_stream_summary()
                .stream_name(&self.stream_name)
                .send()
                .await
            {
                Ok(_) => Attempt::Done(()),
                Err(error) => classify(error),
            },
            Service::Firehose => match aws_sdk_firehose::Client::new(&shared)
                .describe_delivery_stream()
                .delivery_stream_name(&self.stream_name)
                .send()
                .await
            {
                Ok(_) => Attempt::Done(()),
                Err(error) => classify(error),
            },
        };
        match outcome {
            Attempt::Done(()) => Ok(()),
            Attempt::Retry(reason, _) | Attempt::Permanent(reason) => {
                Err(format!("stream `{}`: {reason}", self.stream_name))
            }
        }
    }

    pub fn build(&self, service: Service, cx: SinkContext) -> Result<RunFuture, BuildError> {
        self.batch
            .check()
            .map_err(|m| BuildError::new("batch", m))?;
        if self.stream_name.is_empty() {
            return Err(BuildError::new("stream_name", "must not be empty"));
        }
        if service == Service::Firehose && self.partition_key_field.is_some() {
            return Err(BuildError::new(
                "partition_key_field",
                "Firehose has no partition keys (this is for aws_kinesis_streams)",
            ));
        }
        let connection = AwsConnection {
            region: self.region.as_deref(),
            endpoint: self.endpoint.as_deref(),
            auth: self.auth.as_ref(),
            request: &self.request,
        };
        connection
            .check()
            .map_err(|(field, message)| BuildError::new(field, message))?;
        let partition_key =
            optional_path("partition_key_field", self.partition_key_field.as_deref())?;
        let config = self.clone();
        Ok(Box::pin(async move {
            let connection = AwsConnection {
                region: config.region.as_deref(),
                endpoint: config.endpoint.as_deref(),
                auth: config.auth.as_ref(),
                request: &config.request,
            };
            let shared = connection.sdk_config().await;
            let client = match service {
                Service::Streams => Client::Streams(aws_sdk_kinesis::Client::new(&shared)),
                Service::Firehose => Client::Firehose(aws_sdk_firehose::Client::new(&shared)),
            };
            let mut sink = KinesisSink {
                client: StreamClient {
                    client,
                    stream: config.stream_name.clone(),
                },
                partition_key,
                encoder: Encoder::new(&config.encoding),
                request: config.request,
                metrics: cx.metrics.clone(),
                dead_letter: cx.dead_letter,
            };
            drive(cx.input, config.batch, &cx.metrics, &mut sink).await;
            Ok::<(), ComponentError>(())
        }))
    }
}

enum Client {
    Streams(aws_sdk_kinesis::Client),
    Firehose(aws_sdk_firehose::Client),
}

struct StreamClient {
    client: Client,
    stream: String,
}

impl RecordService for StreamClient {
    async fn put(&self, records: Vec<Record>) -> Attempt<Vec<Option<String>>> {
        match &self.client {
            Client::Streams(client) => {
                let entries = records
                    .into_iter()
                    .map(|r| {
                        aws_sdk_kinesis::types::PutRecordsRequestEntry::builder()
                            .data(Blob::new(r.data.to_vec()))
                            .partition_key(r.partition_key)
                            .build()
                            .expect("data and partition key are set")
                    })
                    .collect();
                match client
                    .put_records()
                    .stream_name(&self.stream)
                    .set_records(Some(entries))
                    .send()
                    .await
                {
                    Ok(output) => Attempt::Done(
                        output
                            .records()
                            .iter()
                            .map(|r| record_error(r.error_code(), r.error_message()))
                            .collect(),
                    ),
                    Err(error) => classify(error),
                }
            }
            Client::Firehose(client) => {
                let entries = records
                    .into_iter()
                    .map(|r| {
                        aws_sdk_firehose::types::Record::builder()
                            .data(aws_sdk_firehose::primitives::Blob::new(r.data.to_vec()))
                            .build()
                            .expect("data is set")
                    })
                    .collect();
                match client
                    .put_record_batch()
                    .delivery_stream_name(&self.stream)
                    .set_records(Some(entries))
                    .send()
                    .await
                {
                    Ok(output) => Attempt::Done(
                        output
                            .request_responses()
                            .iter()
                            .map(|r| record_error(r.error_code(), r.error_message()))
                            .collect(),
                    ),
                    Err(error) => classify(error),
                }
            }
        }
    }
}

/// A record's outcome in a PutRecords / PutRecordBatch answer: `None` when it was taken.
fn record_error(code: Option<&str>, message: Option<&str>) -> Option<String> {
    code.map(|code| format!("{code}: {}", message.unwrap_or_default()))
}

struct KinesisSink {
    client: StreamClient,
    partition_key: Option<OwnedValuePath>,
    encoder: Encoder,
    request: RequestConfig,
    metrics: ComponentMetrics,
    dead_letter: Fanout,
}

fn random_key() -> String {
    format!("{:016x}", rand::random::<u64>())
}

impl KinesisSink {
    fn key(&self, event: &Event) -> String {
        let value = self.partition_key.as_ref().and_then(|p| event.field_at(p));
        match value.as_deref() {
            None | Some(Value::Null) => random_key(),
            // Kinesis keys are 1-256 Unicode characters.
            Some(value) => {
                let key: String = value.to_string_lossy().chars().take(256).collect();
                if key.is_empty() {
                    random_key()
                } else {
                    key
                }
            }
        }
    }
}

impl Flush for KinesisSink {
    async fn flush(&mut self, events: Vec<Event>, _byte_size: usize, finalizers: Finalizers) {
        let (limits, newline) = match self.client.client {
            Client::Streams(_) => (STREAMS_LIMITS, false),
            Client::Firehose(_) => (FIREHOSE_LIMITS, true),
        };
        let mut records = Vec::with_capacity(events.len());
        let mut failed = Vec::new();
        for (index, event) in events.iter().enumerate() {
            let mut data = Vec::new();
            if let Err(error) = self.encoder.encode_line(event, &mut data) {
                self.metrics.error("encode_failed");
                failed.push((index, format!("encoding: {error}")));
                continue;
            }
            if !newline {
                data.pop();
            }
            let partition_key = match self.client.client {
                Client::Streams(_) => self.key(event),
                Client::Firehose(_) => String::new(),
            };
            records.push((
                index,
                Record {
                    data: Bytes::from(data),
                    partition_key,
                },
            ));
        }
        send_batch(
            &self.client,
            limits,
            &self.request,
            &self.metrics,
            &mut self.dead_letter,
            events,
            records,
            failed,
            finalizers,
        )
        .await;
    }
}
