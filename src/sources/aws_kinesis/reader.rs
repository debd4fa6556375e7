//! Reading one shard: GetShardIterator, then GetRecords no more often than the poll
//! interval, pages handed to the source's loop over a small bounded channel (so a slow
//! pipeline stops the polling). Also the shard listing both assignments use.

use super::KinesisSourceConfig;
use crate::aws::classify;
use crate::observe::ComponentMetrics;
use crate::sinks::retry::Attempt;
use aws_sdk_kinesis::types::{Shard, ShardIteratorType};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Where a reader starts.
#[derive(Debug, Clone, PartialEq)]
pub enum Start {
    Latest,
    TrimHorizon,
    At(i64),
    After(String),
}

/// One GetRecords page of one shard.
pub struct Page {
    pub shard: String,
    /// The lease it was read under (see `Assignment`).
    pub lease: u64,
    pub records: Vec<aws_sdk_kinesis::types::Record>,
    /// The shard is closed and this was its last page.
    pub closed: bool,
}

/// Every shard the stream lists now (open and closed, within retention).
pub async fn list_shards(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
) -> Result<Vec<Shard>, String> {
    let mut shards = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let request = match &token {
            Some(token) => client.list_shards().next_token(token),
            None => client.list_shards().stream_name(stream),
        };
        let page = request
            .send()
            .await
            .map_err(|e| aws_sdk_kinesis::error::DisplayErrorContext(&e).to_string())?;
        shards.extend(page.shards().iter().cloned());
        match page.next_token() {
            Some(next) => token = Some(next.to_string()),
            None => return Ok(shards),
        }
    }
}

/// The parents of a shard (a split has one, a merge two).
pub fn parents(shard: &Shard) -> Vec<String> {
    [shard.parent_shard_id(), shard.adjacent_parent_shard_id()]
        .into_iter()
        .flatten()
        .map(str::to_string)
        .collect()
}

/// One shard's reader: what it reads and where its pages go.
pub struct ShardReader {
    pub client: aws_sdk_kinesis::Client,
    pub config: KinesisSourceConfig,
    pub shard: String,
    pub lease: u64,
    pub pages: mpsc::Sender<Page>,
    pub stop: CancellationToken,
    pub metrics: ComponentMetrics,
}

impl ShardReader {
    /// Polls the shard until it is closed and read to its end, or the reader is stopped.
    pub async fn run(self, mut start: Start) {
        let ShardReader {
            client,
            config,
            shard,
            lease,
            pages,
            stop,
            metrics,
        } = self;
        let behind = metrics.gauge_with("kinesis_millis_behind_latest", "shard_id", &shard);
        let poll = Duration::from_millis(config.poll_interval_ms);
        let mut iterator: Option<String> = None;
        let mut failures = 0u32;
        loop {
            if stop.is_cancelled() {
                return;
            }
            let outcome = match &iterator {
                None => match shard_iterator(&client, &config.stream_name, &shard, &start).await {
                    Attempt::Done(it) => {
                        iterator = Some(it);
                        continue;
                    }
                    Attempt::Retry(reason, after) => Attempt::Retry(reason, after),
                    Attempt::Permanent(reason) => Attempt::Permanent(reason),
                },
                Some(current) => match client
                    .get_records()
                    .shard_iterator(current)
                    .limit(config.max_records)
                    .send()
                    .await
                {
                    Ok(page) => Attempt::Done(page),
                    Err(error) => {
                        let expired = error
                            .as_service_error()
                            .is_some_and(|e| e.is_expired_iterator_exception());
                        if expired {
                            iterator = None; // get a new one from where this reader is
                            continue;
                        }
                        classify(error)
                    }
                },
            };
            match outcome {
                Attempt::Done(page) => {
                    failures = 0;
                    if let Some(millis) = page.millis_behind_latest() {
                        behind.set(millis as f64);
                    }
                    let records = page.records().to_vec();
                    if let Some(last) = records.last() {
                        start = Start::After(last.sequence_number().to_string());
                    }
                    let next = page.next_shard_iterator().map(str::to_string);
                    let closed = next.is_none();
                    if !records.is_empty() || closed {
                        let page = Page {
                            shard: shard.clone(),
                            lease,
                            records,
                            closed,
                        };
                        tokio::select! {
                            sent = pages.send(page) => if sent.is_err() { return },
                            _ = stop.cancelled() => return,
                        }
                    }
                    if closed {
                        tracing::info!(component_id = metrics.id(), %shard, "shard closed and read to its end");
                        return;
                    }
                    iterator = next;
                    tokio::select! {
                        _ = tokio::time::sleep(poll) => {}
                        _ = stop.cancelled() => return,
                    }
                }
                Attempt::Retry(reason, _) | Attempt::Permanent(reason) => {
                    // A stream that is being created or resharded, throttling, a network
                    // outage: the reader keeps trying (and keeps its place).
                    metrics.error("get_records_failed");
                    failures += 1;
                    let wait = config.request.backoff(failures).max(poll);
                    tracing::warn!(component_id = metrics.id(), %shard, %reason, wait_ms = wait.as_millis() as u64, "Kinesis read failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.cancelled() => return,
                    }
                }
            }
        }
    }
}

async fn shard_iterator(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    shard: &str,
    start: &Start,
) -> Attempt<String> {
    let request = client
        .get_shard_iterator()
        .stream_name(stream)
        .shard_id(shard);
    let request = match start {
        Start::Latest => request.shard_iterator_type(ShardIteratorType::Latest),
        Start::TrimHorizon => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
        Start::At(millis) => request
            .shard_iterator_type(ShardIteratorType::AtTimestamp)
            .timestamp(aws_sdk_kinesis::primitives::DateTime::from_millis(*millis)),
        Start::After(sequence) => request
            .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
            .starting_sequence_number(sequence),
    };
    match request.send().await {
        Ok(output) => match output.shard_iterator() {
            Some(iterator) => Attempt::Done(iterator.to_string()),
            None => Attempt::Retry("no shard iterator returned".into(), None),
        },
        Err(error) => classify(error),
    }
}
