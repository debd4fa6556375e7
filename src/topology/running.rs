//! A running topology: spawns components, reports the ones that fail, drains on shutdown, and
//! reloads a new config component by component.

use super::build::{self, Component, Wiring};
use super::{ComponentError, RunFuture, Shutdown};
use crate::config::{Config, ConfigError, Entry, Graph};
use indexmap::{IndexMap, IndexSet};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long sources get to save what was acknowledged once a drain deadline passed, before
/// everything still running is aborted.
const FORCE_GRACE: Duration = Duration::from_secs(2);

/// How a shutdown ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// Every component finished with its inputs.
    Complete,
    /// `shutdown_timeout_secs` passed: acknowledged positions were saved, the rest aborted.
    DeadlinePassed,
    /// A second stop signal came: acknowledged positions were saved, the rest aborted.
    Interrupted,
}

/// A config whose components are running.
pub struct Topology {
    config: Config,
    root: Shutdown,
    wiring: Wiring,
    components: IndexMap<String, Running>,
    finished_tx: mpsc::UnboundedSender<Finished>,
    finished_rx: mpsc::UnboundedReceiver<Finished>,
    /// Tasks spawned whose end has not been reported yet.
    live_tasks: usize,
    /// Source tasks among them: at zero the input channels are let go so the rest drains.
    live_sources: usize,
}

struct Running {
    shutdown: Shutdown,
    handles: Vec<JoinHandle<()>>,
}

/// What a reload did, for the log and for tests.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    pub kept: Vec<String>,
    pub rebuilt: Vec<String>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Global options changed: everything was drained and started again.
    pub restarted: bool,
}

impl ReloadSummary {
    /// The running components that go: rebuilt and removed ones.
    fn retired(&self) -> impl Iterator<Item = &String> {
        self.rebuilt.iter().chain(&self.removed)
    }

    /// The components to build: rebuilt and added ones.
    fn to_build(&self) -> impl Iterator<Item = &String> {
        self.rebuilt.iter().chain(&self.added)
    }
}

struct Finished {
    task: String,
    is_source: bool,
    outcome: Outcome,
}

enum Outcome {
    Done,
    Failed(String),
    /// Aborted after a drain deadline.
    Aborted,
}

/// Reports a task's end when dropped: normally, by panic, or by abort.
struct Reporter {
    finished: Option<Finished>,
    tx: mpsc::UnboundedSender<Finished>,
}

impl Drop for Reporter {
    fn drop(&mut self) {
        if let Some(mut finished) = self.finished.take() {
            if std::thread::panicking() {
                finished.outcome = Outcome::Failed("panicked".into());
            }
            let _ = self.tx.send(finished);
        }
    }
}

async fn report(mut reporter: Reporter, run: RunFuture) {
    let result: Result<(), ComponentError> = run.await;
    if let Some(finished) = reporter.finished.as_mut() {
        finished.outcome = match result {
            Ok(()) => Outcome::Done,
            Err(error) => Outcome::Failed(error.to_string()),
        };
    }
}

impl Topology {
    /// Builds every component of a config and starts them.
    pub fn start(config: Config) -> Result<Topology, ConfigError> {
        let graph = config.graph()?;
        let root = Shutdown {
            stop: CancellationToken::new(),
            force: CancellationToken::new(),
        };
        let mut wiring = Wiring::default();
        let built = build::build(&config, &graph, &config.component_ids(), &mut wiring, &root)?;
        let (finished_tx, finished_rx) = mpsc::unbounded_channel();
        let mut topology = Topology {
            config,
            root,
            wiring,
            components: IndexMap::new(),
            finished_tx,
            finished_rx,
            live_tasks: 0,
            live_sources: 0,
        };
        for component in built {
            topology.spawn(component);
        }
        Ok(topology)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    fn spawn(&mut self, component: Component) {
        let mut handles = Vec::new();
        for (task, run) in component.tasks {
            let reporter = Reporter {
                finished: Some(Finished {
                    task,
                    is_source: component.is_source,
                    outcome: Outcome::Aborted,
                }),
                tx: self.finished_tx.clone(),
            };
            self.live_tasks += 1;
            if component.is_source {
                self.live_sources += 1;
            }
            handles.push(tokio::spawn(report(reporter, run)));
        }
        self.components.insert(
            component.id,
            Running {
                shutdown: component.shutdown,
                handles,
            },
        );
    }

    /// Counts one task's end; returns its error if it failed.
    fn finished(&mut self, finished: Finished) -> Option<String> {
        self.live_tasks -= 1;
        if finished.is_source {
            self.live_sources -= 1;
            if self.live_sources == 0 {
                // Nothing can produce any more: let the channels close so everything drains.
                self.wiring.inputs.clear();
            }
        }
        match finished.outcome {
            Outcome::Done => {
                tracing::debug!(component_id = %finished.task, "component finished");
                None
            }
            Outcome::Aborted => {
                tracing::warn!(component_id = %finished.task, "component aborted");
                None
            }
            Outcome::Failed(error) => {
                tracing::error!(component_id = %finished.task, %error, "component failed");
                Some(format!("{}: {error}", finished.task))
            }
        }
    }

    /// Waits until a component fails (its error) or every component has finished (`None`).
    /// Cancel-safe.
    pub async fn next_failure(&mut self) -> Option<String> {
        while self.live_tasks > 0 {
            let finished = self.finished_rx.recv().await?;
            if let Some(error) = self.finished(finished) {
                return Some(error);
            }
        }
        None
    }

    /// Drains everything: sources stop, the rest ends as its inputs close, within the
    /// config's `shutdown_timeout_secs`. Returns the components that failed on the way.
    pub async fn shutdown(&mut self) -> Result<(), String> {
        self.shutdown_unless(std::future::pending())
            .await
            .map(|_| ())
    }

    /// [`Topology::shutdown`], cut short when `interrupt` completes first (a second
    /// SIGINT/SIGTERM): then, as past the deadline, sources save what was acknowledged and the
    /// rest is aborted at once. Says whether the drain was cut.
    pub async fn shutdown_unless(
        &mut self,
        interrupt: impl std::future::Future<Output = ()>,
    ) -> Result<Drain, String> {
        let timeout = Duration::from_secs(self.config.global.shutdown_timeout_secs);
        self.shutdown_within(timeout, interrupt).await
    }

    /// [`Topology::shutdown`] with another deadline. Past it (or once `interrupt` completes),
    /// sources save what was acknowledged and stop first; only then is the rest aborted, so
    /// events lost with an aborted component were never checkpointed: they are read again on
    /// the next start.
    async fn shutdown_within(
        &mut self,
        timeout: Duration,
        interrupt: impl std::future::Future<Output = ()>,
    ) -> Result<Drain, String> {
        tracing::info!(
            timeout_secs = timeout.as_secs(),
            "shutting down: sources stop, in-flight events drain"
        );
        self.root.stop.cancel();
        self.wiring.inputs.clear();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut failures = Vec::new();
        let mut drain = Drain::Complete;
        tokio::pin!(interrupt);
        while self.live_tasks > 0 {
            let cut = tokio::select! {
                finished = self.finished_rx.recv() => {
                    if let Some(error) = finished.and_then(|f| self.finished(f)) {
                        failures.push(error);
                    }
                    None
                }
                _ = tokio::time::sleep_until(deadline) => Some(Drain::DeadlinePassed),
                _ = &mut interrupt => Some(Drain::Interrupted),
            };
            if let Some(cut) = cut {
                drain = cut;
                match cut {
                    Drain::Interrupted => tracing::warn!("second stop signal: saving acknowledged positions and aborting what still runs"),
                    _ => tracing::warn!("shutdown deadline passed; saving checkpoints and aborting what still runs"),
                }
                self.root.force.cancel();
                self.abort_all_after_grace().await;
                while self.live_tasks > 0 {
                    match self.finished_rx.recv().await {
                        Some(finished) => failures.extend(self.finished(finished)),
                        None => break,
                    }
                }
            }
        }
        self.components.clear();
        if failures.is_empty() {
            Ok(drain)
        } else {
            Err(failures.join("; "))
        }
    }

    /// The tasks of the named components that have not ended (a handle must not be awaited
    /// again once it returned).
    fn unfinished_handles(&mut self, ids: &[String]) -> Vec<&mut JoinHandle<()>> {
        self.components
            .iter_mut()
            .filter(|(id, _)| ids.contains(id))
            .flat_map(|(_, running)| running.handles.iter_mut())
            .filter(|handle| !handle.is_finished())
            .collect()
    }

    /// Gives every component [`FORCE_GRACE`] to end, then aborts what still runs.
    async fn abort_all_after_grace(&mut self) {
        let all: Vec<String> = self.components.keys().cloned().collect();
        let handles = self.unfinished_handles(&all);
        let aborts: Vec<_> = handles.iter().map(|h| h.abort_handle()).collect();
        let _ = tokio::time::timeout(FORCE_GRACE, futures::future::join_all(handles)).await;
        for abort in aborts {
            abort.abort();
        }
    }

    /// Applies a new, already checked config. Unchanged components keep running with their
    /// state and are only rewired; changed and removed ones drain first (as on shutdown, with
    /// the same deadline), then the changed and added ones start. A change to `data_dir` or
    /// `acknowledgements` restarts everything. An error means the new config could not be
    /// built after the old components were drained: the agent should stop.
    pub async fn reload(&mut self, new: Config) -> Result<ReloadSummary, String> {
        let graph = new.graph().map_err(|e| e.to_string())?;
        let old = &self.config.global;
        let restart = old.data_dir != new.global.data_dir
            || old.acknowledgements != new.global.acknowledgements
            || self.live_sources == 0;
        if old.api != new.global.api || old.log != new.global.log {
            tracing::warn!("`api` and `log` settings take effect on restart, not on reload");
        }
        if restart {
            return self
                .restart(new, self.config.global.shutdown_timeout_secs)
                .await;
        }
        let summary = diff(&self.config, &new);
        let retired: Vec<String> = summary.retired().cloned().collect();
        let to_build: IndexSet<String> = summary.to_build().cloned().collect();

        // 1. The components that keep running send nothing more to the retired ones: their
        //    outputs point at the new graph, with rebuilt and added consumers paused.
        for id in &retired {
            self.wiring.inputs.swap_remove(id);
        }
        self.wiring
            .outputs
            .retain(|output, _| !retired.contains(&output.component));
        self.rewire(&graph);

        // 2. The retired ones drain, as on shutdown. One that cannot (a sink whose endpoint is
        //    down) must not be aborted while sources still listen: dropping its events would
        //    count them as delivered. Restart everything instead: sources save only what was
        //    acknowledged before anything is aborted.
        if !self.drain(&retired, &new).await {
            tracing::warn!(components = ?retired, "reload: the replaced components did not drain within shutdown_timeout_secs; restarting everything (sources keep only acknowledged positions)");
            return self.restart(new, 0).await;
        }

        // 3. The rebuilt and added ones start and take their place in the wiring.
        self.config = new;
        let built = build::build(
            &self.config,
            &graph,
            &to_build,
            &mut self.wiring,
            &self.root,
        )
        .map_err(|e| e.to_string())?;
        for component in built {
            self.spawn(component);
        }
        self.rewire(&graph);
        Ok(summary)
    }

    /// Points every kept producer's outputs at their consumers in `graph`.
    fn rewire(&self, graph: &Graph) {
        for (output, list) in &self.wiring.outputs {
            list.set(self.wiring.targets_for(graph, output));
        }
    }

    /// Shuts everything down within `timeout_secs` and starts `new` from scratch.
    async fn restart(&mut self, new: Config, timeout_secs: u64) -> Result<ReloadSummary, String> {
        self.shutdown_within(Duration::from_secs(timeout_secs), std::future::pending())
            .await?;
        *self = Topology::start(new).map_err(|e| e.to_string())?;
        Ok(ReloadSummary {
            restarted: true,
            ..Default::default()
        })
    }

    /// Stops the named components and waits for them to drain, within the new config's
    /// shutdown deadline. False if they did not (they still run).
    async fn drain(&mut self, ids: &[String], new: &Config) -> bool {
        for id in ids {
            if let Some(running) = self.components.get(id) {
                running.shutdown.stop.cancel();
            }
        }
        let timeout = Duration::from_secs(new.global.shutdown_timeout_secs);
        let handles = self.unfinished_handles(ids);
        let drained = tokio::time::timeout(timeout, futures::future::join_all(handles)).await;
        if drained.is_err() {
            return false;
        }
        for id in ids {
            self.components.swap_remove(id);
        }
        true
    }
}

/// Sorts every component into kept, rebuilt, added and removed.
fn diff(old: &Config, new: &Config) -> ReloadSummary {
    let mut summary = ReloadSummary::default();
    compare_section(&old.sources, &new.sources, &mut summary);
    compare_section(&old.transforms, &new.transforms, &mut summary);
    compare_section(&old.sinks, &new.sinks, &mut summary);
    // An id that moved to another section is removed there and added here: rebuilt.
    let moved: Vec<String> = summary
        .removed
        .iter()
        .filter(|id| summary.added.contains(id))
        .cloned()
        .collect();
    summary.added.retain(|id| !moved.contains(id));
    summary.removed.retain(|id| !moved.contains(id));
    summary.rebuilt.extend(moved);
    summary
}

fn compare_section<T>(
    old: &IndexMap<String, Entry<T>>,
    new: &IndexMap<String, Entry<T>>,
    summary: &mut ReloadSummary,
) {
    for (id, entry) in old {
        match new.get(id) {
            Some(next) if next.same_settings(entry) => summary.kept.push(id.clone()),
            Some(_) => summary.rebuilt.push(id.clone()),
            None => summary.removed.push(id.clone()),
        }
    }
    for id in new.keys() {
        if !old.contains_key(id) {
            summary.added.push(id.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::load_str("test.yaml", text).unwrap()
    }

    #[test]
    fn components_are_kept_rebuilt_added_or_removed_by_their_settings_not_their_inputs() {
        let old = config(
            "sources:\n  in: {type: demo}\n  other: {type: demo}\ntransforms:\n  t:\n    type: remap\n    inputs: [in]\n    source: .a = 1\n  moved:\n    type: filter\n    inputs: [in]\n    condition: .a == 1\nsinks:\n  s: {type: blackhole, inputs: [t, moved]}\n  gone: {type: blackhole, inputs: [other]}\n",
        );
        let new = config(
            "sources:\n  in: {type: demo}\n  other: {type: demo, interval_secs: 2}\ntransforms:\n  t:\n    type: remap\n    inputs: [in, other]\n    source: .a = 1\nsinks:\n  s: {type: blackhole, inputs: [t]}\n  moved: {type: blackhole, inputs: [in]}\n  fresh: {type: console, inputs: [t]}\n",
        );
        let summary = diff(&old, &new);
        assert_eq!(
            summary.kept,
            ["in", "t", "s"],
            "new inputs alone keep a component"
        );
        assert_eq!(
            summary.rebuilt,
            ["other", "moved"],
            "changed settings, or a new section"
        );
        assert_eq!(summary.added, ["fresh"]);
        assert_eq!(summary.removed, ["gone"]);
    }
}
