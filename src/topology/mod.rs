//! Builds a config into running tasks, wires them with bounded channels, and owns shutdown.
//!
//! Shutdown order (SIGTERM/SIGINT, or every source finished): sources stop reading and drop
//! their outputs; transforms and sinks drain what is queued and end when their inputs close;
//! sources save checkpoints for what was acknowledged. If the drain outlasts
//! `shutdown_timeout_secs`, sources are told to stop waiting for acknowledgements and save
//! what they have, and only then is everything still running aborted.

pub mod channel;
pub mod fanout;

use crate::config::graph::DEAD_LETTER;
use crate::config::{Config, ConfigError, Diagnostic, Graph, OutputId};
use crate::event::Event;
use crate::event::EventBatch;
use crate::observe::ComponentMetrics;
use crate::sinks::SinkContext;
use crate::sources::SourceContext;
use crate::transforms::{BuiltTransform, Emitted, StatefulTransform, Transform};
pub use channel::{BufferReceiver, BufferSender, ChannelLimits, WhenFull};
pub use fanout::Fanout;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use indexmap::IndexMap;
use std::future::Future;
use std::time::Duration;
use tokio::task::JoinHandle;
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

/// Everything built from a config, not yet running.
pub struct Built {
    sources: Vec<(String, RunFuture)>,
    transforms: Vec<(String, RunFuture)>,
    sinks: Vec<(String, RunFuture)>,
    shutdown: Shutdown,
    pub graph: Graph,
}

/// Builds every component of a validated config, wiring channels. Reports all build errors
/// at once. Nothing runs until [`Built::run`].
pub fn build(config: &Config) -> Result<Built, ConfigError> {
    let graph = config.graph()?;
    let shutdown = Shutdown {
        stop: CancellationToken::new(),
        force: CancellationToken::new(),
    };
    let mut diagnostics: Vec<Diagnostic> = Vec::new();

    // One input channel per transform and sink.
    let mut senders: IndexMap<String, (BufferSender, ComponentMetrics)> = IndexMap::new();
    let mut receivers: IndexMap<String, BufferReceiver> = IndexMap::new();
    for (id, entry) in &config.transforms {
        let (tx, rx) = channel::channel(ChannelLimits::default());
        senders.insert(
            id.clone(),
            (tx, ComponentMetrics::new(id, entry.config.kind())),
        );
        receivers.insert(id.clone(), rx);
    }
    for (id, entry) in &config.sinks {
        let (tx, rx) = channel::channel(entry.config.buffer().limits());
        senders.insert(
            id.clone(),
            (tx, ComponentMetrics::new(id, entry.config.kind())),
        );
        receivers.insert(id.clone(), rx);
    }
    let fanout_for = |output: &OutputId, producer: &ComponentMetrics| {
        let mut fanout = Fanout::new(producer.clone());
        for consumer in graph.consumers_of(output) {
            if let Some((tx, metrics)) = senders.get(consumer) {
                fanout.add(consumer, tx.clone(), metrics.clone());
            }
        }
        fanout
    };

    let mut built = Built {
        sources: Vec::new(),
        transforms: Vec::new(),
        sinks: Vec::new(),
        shutdown: shutdown.clone(),
        graph: graph.clone(),
    };

    for (id, entry) in &config.sources {
        let metrics = ComponentMetrics::new(id, entry.config.kind());
        let out = fanout_for(
            &OutputId {
                component: id.clone(),
                port: None,
            },
            &metrics,
        );
        if !out.is_connected() {
            tracing::warn!(component_id = %id, "source has no consumers; its events are discarded");
        }
        let cx = SourceContext {
            id: id.clone(),
            out,
            shutdown: shutdown.clone(),
            data_dir: config.component_data_dir(id),
            acknowledgements: config.global.acknowledgements,
            metrics,
        };
        match entry.config.build(cx) {
            Ok(run) => built.sources.push((id.clone(), run)),
            Err(e) => {
                diagnostics.push(entry.diagnostic("sources", id, e.field.as_slice(), e.message))
            }
        }
    }

    for (id, entry) in &config.transforms {
        let metrics = senders[id].1.clone();
        let outputs: Vec<Fanout> = entry
            .config
            .outputs()
            .into_iter()
            .map(|port| {
                fanout_for(
                    &OutputId {
                        component: id.clone(),
                        port,
                    },
                    &metrics,
                )
            })
            .collect();
        match entry.config.build(id) {
            Ok(transform) => {
                let input = receivers
                    .swap_remove(id)
                    .expect("every transform has an input channel");
                built.transforms.push((
                    id.clone(),
                    Box::pin(run_transform(transform, input, outputs, metrics)),
                ));
            }
            Err(e) => {
                diagnostics.push(entry.diagnostic("transforms", id, e.field.as_slice(), e.message))
            }
        }
    }

    for (id, entry) in &config.sinks {
        let mut input = receivers
            .swap_remove(id)
            .expect("every sink has an input channel");
        if let Some(settings) = entry.config.buffer().disk() {
            // upstream -> [staging] -> disk buffer -> [feed] -> sink
            let (feed_tx, feed_rx) = channel::channel(ChannelLimits {
                max_events: 2048,
                max_bytes: 2 << 20,
                when_full: WhenFull::Block,
            });
            let dir = config.global.data_dir.join("buffers").join(id);
            let run = crate::buffer::disk::run(
                dir,
                settings,
                input,
                feed_tx,
                senders[id].1.clone(),
                shutdown.clone(),
            );
            built
                .sinks
                .push((format!("{id} (disk buffer)"), Box::pin(run)));
            input = feed_rx;
        }
        let dead_letter_metrics =
            ComponentMetrics::new(&format!("{id}.{DEAD_LETTER}"), entry.config.kind());
        let dead_letter = fanout_for(
            &OutputId {
                component: id.clone(),
                port: Some(DEAD_LETTER.to_string()),
            },
            &dead_letter_metrics,
        );
        let cx = SinkContext {
            id: id.clone(),
            input,
            dead_letter,
            metrics: senders[id].1.clone(),
            data_dir: config.component_data_dir(id),
        };
        match entry.config.build(cx) {
            Ok(run) => built.sinks.push((id.clone(), run)),
            Err(e) => {
                diagnostics.push(entry.diagnostic("sinks", id, e.field.as_slice(), e.message))
            }
        }
    }

    if diagnostics.is_empty() {
        Ok(built)
    } else {
        Err(ConfigError { diagnostics })
    }
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

impl Built {
    /// Runs until every component has finished, or `signal` fires and the drain completes
    /// (or its deadline passes). Returns Err if a component failed.
    pub async fn run(
        self,
        signal: impl Future<Output = ()>,
        shutdown_timeout: Duration,
    ) -> Result<(), String> {
        let Built {
            sources,
            transforms,
            sinks,
            shutdown,
            ..
        } = self;
        let mut handles: Vec<(String, JoinHandle<Result<(), ComponentError>>)> = Vec::new();
        for (id, run) in sources.into_iter().chain(transforms).chain(sinks) {
            handles.push((id, tokio::spawn(run)));
        }
        let aborts: Vec<_> = handles.iter().map(|(_, h)| h.abort_handle()).collect();
        let mut running: FuturesUnordered<_> = handles
            .into_iter()
            .map(|(id, handle)| async move { (id, handle.await) })
            .collect();

        tokio::pin!(signal);
        let mut deadline: Option<tokio::time::Instant> = None;
        let mut failures = Vec::new();
        loop {
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut signal, if deadline.is_none() => {
                    tracing::info!(timeout_secs = shutdown_timeout.as_secs(), "shutting down: sources stop, in-flight events drain");
                    shutdown.stop.cancel();
                    deadline = Some(tokio::time::Instant::now() + shutdown_timeout);
                }
                next = running.next() => match next {
                    None => break,
                    Some((id, result)) => {
                        let error = match result {
                            Ok(Ok(())) => None,
                            Ok(Err(error)) => Some(error.to_string()),
                            Err(join) if join.is_panic() => Some(format!("panicked: {join}")),
                            Err(_) => None,
                        };
                        if let Some(error) = error {
                            tracing::error!(component_id = %id, %error, "component failed; shutting down");
                            failures.push(format!("{id}: {error}"));
                            if deadline.is_none() {
                                shutdown.stop.cancel();
                                deadline = Some(tokio::time::Instant::now() + shutdown_timeout);
                            }
                        } else {
                            tracing::debug!(component_id = %id, "component finished");
                        }
                    }
                },
                _ = sleep => {
                    tracing::warn!("shutdown deadline passed; saving checkpoints and aborting what still runs");
                    shutdown.force.cancel();
                    // Give sources a moment to write what was acknowledged, then stop everything.
                    let _ = tokio::time::timeout(Duration::from_secs(2), async {
                        while running.next().await.is_some() {}
                    }).await;
                    for abort in &aborts {
                        abort.abort();
                    }
                    break;
                }
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.join("; "))
        }
    }
}
