//! Sending batches of records to a service that takes up to N records per request and may
//! fail some of them (Kinesis PutRecords, Firehose PutRecordBatch): requests are cut to the
//! service's limits, oversize records are rejected and counted, and after a partial failure
//! only the failed records are sent again, with backoff.

use super::reject_some;
use super::retry::{Attempt, RequestConfig};
use crate::event::{Event, Finalizers};
use crate::observe::ComponentMetrics;
use crate::topology::Fanout;
use bytes::Bytes;
use std::time::Duration;

/// One record ready to send.
#[derive(Debug, Clone)]
pub struct Record {
    pub data: Bytes,
    /// Kinesis partition key (empty for Firehose).
    pub partition_key: String,
}

impl Record {
    /// Its size as the service counts it (data plus partition key).
    pub fn size(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }
}

/// The service's per-request limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_records: usize,
    pub max_request_bytes: usize,
    pub max_record_bytes: usize,
}

/// A service taking record batches.
pub trait RecordService {
    /// Sends the records in one request; on success, the error of each record (`None` for
    /// records the service took), in order.
    fn put(
        &self,
        records: Vec<Record>,
    ) -> impl std::future::Future<Output = Attempt<Vec<Option<String>>>> + Send;
}

/// Cuts `records` (with their event indices) into requests within `limits`.
fn requests(records: Vec<(usize, Record)>, limits: Limits) -> Vec<Vec<(usize, Record)>> {
    let mut out = Vec::new();
    let mut current: Vec<(usize, Record)> = Vec::new();
    let mut bytes = 0;
    for (index, record) in records {
        let size = record.size();
        if !current.is_empty()
            && (current.len() == limits.max_records || bytes + size > limits.max_request_bytes)
        {
            out.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += size;
        current.push((index, record));
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Sends one batch of events; `records` holds the encoded record of each event that could be
/// encoded (index into `events`), `failed` those that could not. Everything the service
/// finally refuses is rejected (dead letter where configured).
#[allow(clippy::too_many_arguments)]
pub async fn send_batch(
    service: &impl RecordService,
    limits: Limits,
    request: &RequestConfig,
    metrics: &ComponentMetrics,
    dead_letter: &mut Fanout,
    events: Vec<Event>,
    records: Vec<(usize, Record)>,
    mut failed: Vec<(usize, String)>,
    finalizers: Finalizers,
) {
    let mut sendable = Vec::with_capacity(records.len());
    for (index, record) in records {
        if record.size() > limits.max_record_bytes {
            metrics.error("record_too_large");
            failed.push((
                index,
                format!(
                    "record of {} bytes exceeds the service's limit of {}",
                    record.size(),
                    limits.max_record_bytes
                ),
            ));
        } else {
            sendable.push((index, record));
        }
    }
    let (mut sent, mut bytes) = (0, 0);
    for mut pending in requests(sendable, limits) {
        let mut attempt = 0u32;
        loop {
            let batch: Vec<Record> = pending.iter().map(|(_, r)| r.clone()).collect();
            let outcome = service.put(batch).await;
            let reason = match outcome {
                Attempt::Done(errors) => {
                    let mut retry = Vec::new();
                    let mut first_error = None;
                    let (sent_now, answered) = (pending.len(), errors.len());
                    let mut answers = std::mem::take(&mut pending).into_iter();
                    // `errors` first: zip stops on it without taking a record it cannot pair.
                    for (error, (index, record)) in errors.into_iter().zip(answers.by_ref()) {
                        match error {
                            None => {
                                sent += 1;
                                bytes += record.data.len();
                            }
                            Some(error) => {
                                first_error.get_or_insert(error);
                                retry.push((index, record));
                            }
                        }
                    }
                    // An answer that leaves records out does not count them delivered: they
                    // are sent again.
                    let unaccounted: Vec<(usize, Record)> = answers.collect();
                    if !unaccounted.is_empty() {
                        metrics.error("response_incomplete");
                        first_error.get_or_insert(format!(
                            "the answer accounts for {answered} of {sent_now} records"
                        ));
                        retry.extend(unaccounted);
                    }
                    pending = retry;
                    match first_error {
                        None => break,
                        Some(error) => {
                            metrics.errors("record_failed", pending.len() as u64);
                            format!("{} records failed: {error}", pending.len())
                        }
                    }
                }
                Attempt::Permanent(reason) => {
                    metrics.error("request_rejected");
                    tracing::error!(component_id = metrics.id(), %reason, records = pending.len(), "the service rejected the request; not retrying");
                    failed.extend(pending.drain(..).map(|(i, _)| (i, reason.clone())));
                    break;
                }
                Attempt::Retry(reason, _) => {
                    metrics.error("request_failed");
                    reason
                }
            };
            attempt += 1;
            if request.retry_attempts.is_some_and(|max| attempt > max) {
                tracing::error!(component_id = metrics.id(), %reason, attempts = attempt, "retries exhausted; giving up on records");
                let why = format!("retries exhausted: {reason}");
                failed.extend(pending.drain(..).map(|(i, _)| (i, why.clone())));
                break;
            }
            let wait = request
                .backoff(attempt)
                .min(Duration::from_secs_f64(request.retry_max_backoff_secs));
            tracing::warn!(component_id = metrics.id(), %reason, attempt, wait_ms = wait.as_millis() as u64, "request failed; retrying");
            tokio::time::sleep(wait).await;
        }
    }
    metrics.sent(sent, bytes);
    if !failed.is_empty() {
        failed.sort_by_key(|(i, _)| *i);
        reject_some(dead_letter, metrics, &events, &failed, finalizers).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(size: usize) -> Record {
        Record {
            data: Bytes::from(vec![b'x'; size]),
            partition_key: String::new(),
        }
    }

    /// A service in memory that fails each record whose data starts with `flaky` on its
    /// first attempt (as Kinesis does under throttling of one shard), to check the partial
    /// failure bookkeeping; the sinks themselves are tested against moto.
    #[derive(Default)]
    struct Flaky {
        calls: std::sync::Mutex<Vec<Vec<String>>>,
        taken: std::sync::Mutex<Vec<String>>,
    }

    impl RecordService for Flaky {
        async fn put(&self, records: Vec<Record>) -> Attempt<Vec<Option<String>>> {
            let texts: Vec<String> = records
                .iter()
                .map(|r| String::from_utf8(r.data.to_vec()).unwrap())
                .collect();
            let seen_before: Vec<String> = self.calls.lock().unwrap().concat();
            self.calls.lock().unwrap().push(texts.clone());
            let mut outcome = Vec::new();
            for text in texts {
                if text.starts_with("flaky") && !seen_before.contains(&text) {
                    outcome.push(Some(
                        "ProvisionedThroughputExceededException: slow down".into(),
                    ));
                } else {
                    self.taken.lock().unwrap().push(text);
                    outcome.push(None);
                }
            }
            Attempt::Done(outcome)
        }
    }

    /// Sends one batch of `texts` (one event and record each) through `service`; the batch's
    /// final status.
    async fn send_texts(
        service: &impl RecordService,
        texts: &[String],
    ) -> crate::event::BatchStatus {
        let metrics = ComponentMetrics::new("out", "aws_kinesis_streams");
        let mut dead_letter = Fanout::new(metrics.clone());
        let events: Vec<Event> = texts
            .iter()
            .map(|t| Event::from_message(t.clone().into()))
            .collect();
        let records = texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let data = Bytes::from(t.clone());
                (
                    i,
                    Record {
                        data,
                        partition_key: "k".into(),
                    },
                )
            })
            .collect();
        let request = RequestConfig {
            retry_initial_backoff_ms: 1,
            ..RequestConfig::default()
        };
        let limits = Limits {
            max_records: 500,
            max_request_bytes: 1 << 20,
            max_record_bytes: 1 << 10,
        };
        let (notifier, status) = crate::event::BatchNotifier::new();
        send_batch(
            service,
            limits,
            &request,
            &metrics,
            &mut dead_letter,
            events,
            records,
            Vec::new(),
            Finalizers::new(notifier),
        )
        .await;
        status.await.unwrap()
    }

    #[tokio::test]
    async fn after_a_partial_failure_only_the_failed_records_are_sent_again() {
        let service = Flaky::default();
        let texts: Vec<String> = ["a", "flaky-1", "b", "flaky-2", "c"]
            .iter()
            .map(|t| t.to_string())
            .collect();
        let status = send_texts(&service, &texts).await;
        let calls = service.calls.lock().unwrap().clone();
        assert_eq!(calls.len(), 2);
        assert_eq!(
            calls[1],
            ["flaky-1", "flaky-2"],
            "only the failed records, in order"
        );
        let mut taken = service.taken.lock().unwrap().clone();
        taken.sort();
        assert_eq!(
            taken,
            ["a", "b", "c", "flaky-1", "flaky-2"],
            "each record taken once"
        );
        assert_eq!(status, crate::event::BatchStatus::Delivered);
    }

    /// Answers for the first half of the records only (a truncated response).
    #[derive(Default)]
    struct HalfAnswers {
        taken: std::sync::Mutex<Vec<String>>,
    }

    impl RecordService for HalfAnswers {
        async fn put(&self, records: Vec<Record>) -> Attempt<Vec<Option<String>>> {
            let answered = records.len().div_ceil(2);
            let mut taken = self.taken.lock().unwrap();
            taken.extend(
                records[..answered]
                    .iter()
                    .map(|r| String::from_utf8(r.data.to_vec()).unwrap()),
            );
            Attempt::Done(vec![None; answered])
        }
    }

    /// Fails without the check: the unanswered half counted as delivered.
    #[tokio::test]
    async fn records_an_answer_leaves_out_are_sent_again_not_counted_delivered() {
        let service = HalfAnswers::default();
        let texts: Vec<String> = (0..9).map(|i| format!("r{i}")).collect();
        let status = send_texts(&service, &texts).await;
        let mut taken = service.taken.lock().unwrap().clone();
        taken.sort();
        assert_eq!(taken, texts, "every record taken once");
        assert_eq!(status, crate::event::BatchStatus::Delivered);
    }

    #[test]
    fn requests_respect_record_count_and_byte_limits() {
        let limits = Limits {
            max_records: 3,
            max_request_bytes: 100,
            max_record_bytes: 60,
        };
        let records = (0..7).map(|i| (i, record(40))).collect();
        let sizes: Vec<usize> = requests(records, limits).iter().map(Vec::len).collect();
        // 40 + 40 fits 100, a third would make 120.
        assert_eq!(sizes, vec![2, 2, 2, 1]);
        let records = (0..7).map(|i| (i, record(10))).collect();
        let sizes: Vec<usize> = requests(records, limits).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![3, 3, 1]);
    }
}
