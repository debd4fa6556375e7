//! Builds a config into running tasks, wires them with bounded channels, and owns shutdown
//! and reload.
//!
//! Shutdown order (SIGTERM/SIGINT, or every source finished): sources stop reading and drop
//! their outputs; transforms and sinks drain what is queued and end when their inputs close;
//! sources save checkpoints for what was acknowledged. If the drain outlasts
//! `shutdown_timeout_secs`, sources are told to stop waiting for acknowledgements and save
//! what they have, and only then is everything still running aborted.
//!
//! Reload ([`Topology::reload`]) applies the same drain to the components that were removed or
//! changed, while the unchanged ones keep running and keep their state.

mod build;
pub mod channel;
pub mod fanout;
mod running;

use crate::event::Event;
use crate::event::EventBatch;
use crate::observe::ComponentMetrics;
use crate::transforms::{BuiltTransform, Emitted, StatefulTransform, Transform};
pub use build::{check, check_all};
pub use channel::{BufferReceiver, BufferSender, ChannelLimits, WhenFull};
pub use fanout::Fanout;
use futures::future::BoxFuture;
pub use running::{Drain, ReloadSummary, Topology};
use tokio_util::sync::CancellationToken;

/// An error a running component stops with.
pub type ComponentError = Box<dyn std::error::Error + Send + Sync>;

/// The future a built component runs as.
pub type RunFuture = BoxFuture<'static, Result<(), ComponentError>>;

/// A component config that failed to build (bad program, bad template, bad address...).
#[derive(Debug)]
pub struct BuildError {
    /// The field at fault, if one is.
    pub field: Option<&'static str>,
    pub message: String,
}

impl BuildError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        BuildError {
            field: Some(field),
            message: message.into(),
        }
    }
}

/// Signals a source receives.
#[derive(Clone)]
pub struct Shutdown {
    /// Stop reading new input.
    pub stop: CancellationToken,
    /// Stop waiting for acknowledgements; save checkpoints now.
    pub force: CancellationToken,
}

/// Runs a transform until its input ends.
async fn run_transform(
    transform: BuiltTransform,
    input: BufferReceiver,
    outputs: Vec<Fanout>,
    metrics: ComponentMetrics,
) -> Result<(), ComponentError> {
    match transform {
        BuiltTransform::Stateless(t) => run_stateless(t, input, outputs, metrics).await,
        BuiltTransform::Stateful(t) => run_stateful(t, input, outputs, metrics).await,
    }
    Ok(())
}

/// One batch in, buckets out; every output carries the batch's acknowledgement handles.
async fn run_stateless(
    mut transform: Box<dyn Transform>,
    mut input: BufferReceiver,
    mut outputs: Vec<Fanout>,
    metrics: ComponentMetrics,
) {
    let mut buckets: Vec<Vec<Event>> = outputs.iter().map(|_| Vec::new()).collect();
    while let Some(mut batch) = input.recv().await {
        metrics.received(batch.len(), batch.byte_size);
        let events = std::mem::take(&mut batch.events);
        let count = events.len();
        transform.transform(events, &mut buckets);
        for (bucket, output) in buckets.iter_mut().zip(outputs.iter_mut()) {
            if bucket.is_empty() {
                continue;
            }
            let events = std::mem::take(bucket);
            let byte_size = (batch.byte_size * events.len())
                .checked_div(count)
                .unwrap_or(0);
            let derived = EventBatch {
                events,
                byte_size,
                finalizers: batch.finalizers.clone(),
            };
            // A closed output means its consumers died; keep serving the other outputs.
            let _ = output.send(derived).await;
        }
    }
}

/// Batches in, plus periodic ticks; the transform decides which acknowledgement handles go
/// with what it emits. At the end of input it flushes what it still holds.
async fn run_stateful(
    mut transform: Box<dyn StatefulTransform>,
    mut input: BufferReceiver,
    mut outputs: Vec<Fanout>,
    metrics: ComponentMetrics,
) {
    let mut buckets: Vec<Emitted> = outputs.iter().map(|_| Emitted::default()).collect();
    let mut ticker = tokio::time::interval(transform.tick_interval());
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            batch = input.recv() => match batch {
                Some(batch) => {
                    metrics.received(batch.len(), batch.byte_size);
                    transform.transform(batch, &mut buckets);
                }
                None => {
                    transform.finish(&mut buckets);
                    ship(&mut buckets, &mut outputs).await;
                    return;
                }
            },
            _ = ticker.tick() => transform.tick(&mut buckets),
        }
        ship(&mut buckets, &mut outputs).await;
    }
}

async fn ship(buckets: &mut [Emitted], outputs: &mut [Fanout]) {
    for (bucket, output) in buckets.iter_mut().zip(outputs.iter_mut()) {
        if bucket.events.is_empty() {
            // Handles with nothing to carry them resolve here (e.g. windows dropped).
            bucket.finalizers = Default::default();
            continue;
        }
        let emitted = std::mem::take(bucket);
        let _ = output
            .send(EventBatch {
                events: emitted.events,
                byte_size: emitted.byte_size,
                finalizers: emitted.finalizers,
            })
            .await;
    }
}
