//! Retries for sinks that call a service: exponential backoff with jitter, `Retry-After`
//! honoured, unlimited by default (a down service becomes backpressure, not loss), and a
//! permanent failure ends the attempts at once.

use crate::observe::ComponentMetrics;
use rand::Rng;
use serde::Deserialize;
use std::future::Future;
use std::time::Duration;

/// Timeouts and retries of requests.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestConfig {
    /// Time allowed for one request, in seconds (default 30).
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: f64,
    /// Retries before a batch is rejected (default: unlimited, so nothing is lost while the
    /// endpoint is down; backpressure builds up instead).
    #[serde(default)]
    pub retry_attempts: Option<u32>,
    /// First backoff, in milliseconds (default 200); doubles each retry, with jitter.
    #[serde(default = "default_initial_backoff_ms")]
    pub retry_initial_backoff_ms: u64,
    /// Longest backoff, in seconds (default 10).
    #[serde(default = "default_max_backoff_secs")]
    pub retry_max_backoff_secs: f64,
}

fn default_timeout_secs() -> f64 {
    30.0
}
fn default_initial_backoff_ms() -> u64 {
    200
}
fn default_max_backoff_secs() -> f64 {
    10.0
}

impl Default for RequestConfig {
    fn default() -> Self {
        RequestConfig {
            timeout_secs: default_timeout_secs(),
            retry_attempts: None,
            retry_initial_backoff_ms: default_initial_backoff_ms(),
            retry_max_backoff_secs: default_max_backoff_secs(),
        }
    }
}

/// The outcome of one attempt.
pub enum Attempt<T> {
    Done(T),
    /// Worth another try (connection error, timeout, throttling, 5xx), maybe not before the
    /// given time.
    Retry(String, Option<Duration>),
    /// Retrying cannot help (4xx, bad request): give up now.
    Permanent(String),
}

/// Runs `attempt` until it is done, permanent, or out of retries; every failure is counted
/// (`request_failed` / `request_rejected`) and logged. Returns why it gave up.
pub async fn with_retries<T, F, Fut>(
    request: &RequestConfig,
    metrics: &ComponentMetrics,
    mut attempt: F,
) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Attempt<T>>,
{
    let mut tries = 0u32;
    loop {
        match attempt().await {
            Attempt::Done(value) => return Ok(value),
            Attempt::Permanent(reason) => {
                metrics.error("request_rejected");
                tracing::error!(component_id = metrics.id(), %reason, "the service rejected the request; not retrying");
                return Err(reason);
            }
            Attempt::Retry(reason, retry_after) => {
                metrics.error("request_failed");
                tries += 1;
                if request.retry_attempts.is_some_and(|max| tries > max) {
                    tracing::error!(component_id = metrics.id(), %reason, attempts = tries, "retries exhausted; giving up");
                    return Err(format!("retries exhausted: {reason}"));
                }
                let wait = retry_after
                    .unwrap_or_else(|| request.backoff(tries))
                    .min(Duration::from_secs_f64(request.retry_max_backoff_secs));
                tracing::warn!(component_id = metrics.id(), %reason, attempt = tries, wait_ms = wait.as_millis() as u64, "request failed; retrying");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

impl RequestConfig {
    /// Checks the numbers are usable.
    pub fn check(&self) -> Result<(), (&'static str, &'static str)> {
        if !self.timeout_secs.is_finite() || self.timeout_secs <= 0.0 {
            return Err(("request.timeout_secs", "must be a number > 0"));
        }
        if !self.retry_max_backoff_secs.is_finite() || self.retry_max_backoff_secs < 0.0 {
            return Err(("request.retry_max_backoff_secs", "must be a number >= 0"));
        }
        Ok(())
    }

    /// The wait before retry number `attempt` (1-based): doubling, capped, with jitter.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let base = self.retry_initial_backoff_ms as f64
            * 2f64.powi(attempt.saturating_sub(1).min(20) as i32);
        let capped = base.min(self.retry_max_backoff_secs * 1000.0);
        let jittered = capped * rand::rng().random_range(0.5..1.0);
        Duration::from_millis(jittered as u64)
    }
}
