//! Builds components of a config and wires them with bounded channels: on start all of them,
//! on reload only the changed and added ones, wired to the ones that keep running.

use super::channel::{self, BufferReceiver, BufferSender, ChannelLimits, WhenFull};
use super::fanout::{ConsumerList, Fanout, Target};
use super::{run_transform, RunFuture, Shutdown};
use crate::codec::decoding::Values;
use crate::config::graph::DEAD_LETTER;
use crate::config::{Config, ConfigError, Graph, OutputId};
use crate::observe::ComponentMetrics;
use crate::sinks::SinkContext;
use crate::sources::SourceContext;
use indexmap::{IndexMap, IndexSet};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The channels between running components.
#[derive(Default)]
pub(super) struct Wiring {
    /// The input channel of every running transform and sink.
    pub inputs: IndexMap<String, (BufferSender, ComponentMetrics)>,
    /// The consumer list of every output of a running component.
    pub outputs: IndexMap<OutputId, Arc<ConsumerList>>,
}

impl Wiring {
    /// The consumers `graph` gives `output`; one with no input channel here (being rebuilt,
    /// or not built yet) is paused.
    pub fn targets_for(&self, graph: &Graph, output: &OutputId) -> Vec<Target> {
        graph
            .consumers_of(output)
            .map(|consumer| match self.inputs.get(consumer) {
                Some((tx, metrics)) => Target::new(consumer, tx.clone(), metrics.clone()),
                None => Target::paused(consumer),
            })
            .collect()
    }

    /// A fan-out for a new producer's output, registered so a reload can rewire it.
    fn fanout(&mut self, graph: &Graph, output: OutputId, producer: &ComponentMetrics) -> Fanout {
        let list = Arc::new(ConsumerList::default());
        list.set(self.targets_for(graph, &output));
        self.outputs.insert(output, list.clone());
        Fanout::shared(producer.clone(), list)
    }
}

/// A built component, not yet running: one task, or two for a sink with a disk buffer.
pub(super) struct Component {
    pub id: String,
    pub is_source: bool,
    /// Stops this component alone (a child of the topology's shutdown).
    pub shutdown: Shutdown,
    pub tasks: Vec<(String, RunFuture)>,
}

/// Builds and discards every component: the config would start. For `validate` and for a
/// reload's new config before anything running is touched.
pub fn check(config: &Config) -> Result<(), ConfigError> {
    let diagnostics = check_all(config);
    if diagnostics.is_empty() {
        Ok(())
    } else {
        Err(ConfigError { diagnostics })
    }
}

/// Every wiring and build error of `config`, in one pass: the graph's errors do not stop the
/// build of the components that parsed (a VRL error is found in the same run as a dangling
/// input).
pub fn check_all(config: &Config) -> Vec<crate::config::Diagnostic> {
    let (graph, mut diagnostics) = crate::config::graph::build_partial(config);
    let all = config.component_ids();
    let root = Shutdown {
        stop: CancellationToken::new(),
        force: CancellationToken::new(),
    };
    if let Err(error) = build(config, &graph, &all, &mut Wiring::default(), &root) {
        diagnostics.extend(error.diagnostics);
    }
    diagnostics
}

/// What the consumers of `source` (a source's, or a transform's, output) need of its events:
/// values if any is a transform (but a remap that edits text: see there), else what the most
/// demanding sink needs (see `SinkConfig::needs`). A consumer added by a later reload may find
/// values built on demand: the same events, the work done later.
fn values_needed(config: &Config, graph: &Graph, source: &OutputId) -> Values {
    needed_after(config, graph, source, &mut Vec::new())
}

/// [`values_needed`], through the remaps that edit text in `within` (what is being decided
/// already: a cycle, which the build reports as an error of its own, asks for values).
fn needed_after<'a>(
    config: &'a Config,
    graph: &Graph,
    source: &OutputId,
    within: &mut Vec<&'a str>,
) -> Values {
    graph
        .consumers_of(source)
        .map(|consumer| match config.sinks.get(consumer) {
            Some(sink) => sink.config.needs(),
            // A remap that edits text as it comes: text with fields noted, unless its own
            // consumers need values.
            None => match config.transforms.get_key_value(consumer) {
                Some((id, transform))
                    if transform.config.edits_text() && !within.contains(&id.as_str()) =>
                {
                    let output = OutputId {
                        component: id.clone(),
                        port: None,
                    };
                    within.push(id);
                    let needed = needed_after(config, graph, &output, within);
                    within.pop();
                    match needed {
                        Values::Built => Values::Built,
                        Values::Fields | Values::OnDemand => Values::Fields,
                    }
                }
                _ => Values::Built,
            },
        })
        .fold(Values::OnDemand, Values::and)
}

/// Builds the components named in `ids`, taking input channels for their transforms and sinks
/// and consumer lists for their outputs into `wiring`. Reports all build errors at once.
pub(super) fn build(
    config: &Config,
    graph: &Graph,
    ids: &IndexSet<String>,
    wiring: &mut Wiring,
    root: &Shutdown,
) -> Result<Vec<Component>, ConfigError> {
    let (exactly_once, mut diagnostics) = crate::exactly_once::check_paths(config, graph);
    let mut built = Vec::new();
    let child = || Shutdown {
        stop: root.stop.child_token(),
        force: root.force.child_token(),
    };

    // One input channel per transform and sink to build, first, so every producer built
    // below finds all its consumers.
    let mut receivers: IndexMap<String, BufferReceiver> = IndexMap::new();
    let transforms = config.transforms.iter().filter(|(id, _)| ids.contains(*id));
    let sinks = config.sinks.iter().filter(|(id, _)| ids.contains(*id));
    for (id, entry) in transforms.clone() {
        let (tx, rx) = channel::channel(ChannelLimits::default());
        let metrics = ComponentMetrics::new(id, entry.config.kind());
        tx.report_fill(&metrics);
        wiring.inputs.insert(id.clone(), (tx, metrics));
        receivers.insert(id.clone(), rx);
    }
    for (id, entry) in sinks.clone() {
        let (tx, rx) = channel::channel(entry.config.buffer().limits());
        let metrics = ComponentMetrics::new(id, entry.config.kind());
        tx.report_fill(&metrics);
        wiring.inputs.insert(id.clone(), (tx, metrics));
        receivers.insert(id.clone(), rx);
    }
    let output = |id: &str, port: Option<String>| OutputId {
        component: id.to_string(),
        port,
    };

    for (id, entry) in config.sources.iter().filter(|(id, _)| ids.contains(*id)) {
        let metrics = ComponentMetrics::new(id, entry.config.kind());
        let out = wiring.fanout(graph, output(id, None), &metrics);
        if !out.is_connected() {
            tracing::warn!(component_id = %id, "source has no consumers; its events are discarded");
        }
        let shutdown = child();
        let cx = SourceContext {
            id: id.clone(),
            out,
            shutdown: shutdown.clone(),
            data_dir: config.component_data_dir(id),
            acknowledgements: config.global.acknowledgements,
            metrics,
            position_store: exactly_once
                .get(id)
                .and_then(|sink| config.sinks.get(sink))
                .and_then(|sink| sink.config.position_store(&exactly_once[id])),
            values: values_needed(config, graph, &output(id, None)),
        };
        match entry.config.build(cx) {
            Ok(run) => built.push(Component {
                id: id.clone(),
                is_source: true,
                shutdown,
                tasks: vec![(id.clone(), run)],
            }),
            Err(e) => {
                diagnostics.push(entry.diagnostic("sources", id, e.field.as_slice(), e.message))
            }
        }
    }

    for (id, entry) in transforms {
        let metrics = wiring.inputs[id].1.clone();
        let outputs: Vec<Fanout> = entry
            .config
            .outputs()
            .into_iter()
            .map(|port| wiring.fanout(graph, output(id, port), &metrics))
            .collect();
        match (entry.config).build(id, values_needed(config, graph, &output(id, None))) {
            Ok(transform) => {
                let input = receivers
                    .swap_remove(id)
                    .expect("every transform has an input channel");
                built.push(Component {
                    id: id.clone(),
                    is_source: false,
                    shutdown: child(),
                    tasks: vec![(
                        id.clone(),
                        Box::pin(run_transform(transform, input, outputs, metrics)),
                    )],
                });
            }
            Err(e) => {
                diagnostics.push(entry.diagnostic("transforms", id, e.field.as_slice(), e.message))
            }
        }
    }

    for (id, entry) in sinks {
        let mut input = receivers
            .swap_remove(id)
            .expect("every sink has an input channel");
        let metrics = wiring.inputs[id].1.clone();
        let shutdown = child();
        let mut tasks: Vec<(String, RunFuture)> = Vec::new();
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
                metrics.clone(),
                shutdown.clone(),
            );
            tasks.push((format!("{id} (disk buffer)"), Box::pin(run)));
            input = feed_rx;
        }
        let dead_letter_metrics =
            ComponentMetrics::for_output(id, entry.config.kind(), DEAD_LETTER);
        let dead_letter = wiring.fanout(
            graph,
            output(id, Some(DEAD_LETTER.to_string())),
            &dead_letter_metrics,
        );
        let cx = SinkContext {
            id: id.clone(),
            input,
            dead_letter,
            metrics,
            data_dir: config.component_data_dir(id),
        };
        match entry.config.build(cx) {
            Ok(run) => {
                tasks.push((id.clone(), run));
                built.push(Component {
                    id: id.clone(),
                    is_source: false,
                    shutdown,
                    tasks,
                });
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What `values_needed` decides for source `in` of a config whose sinks section is `sinks`
    /// (and transforms section `transforms`).
    fn values_of(transforms: &str, sinks: &str) -> Values {
        let text = format!(
            "sources:\n  in:\n    type: stdin\n    decoding:\n      codec: json\n{transforms}sinks:\n{sinks}"
        );
        let config = Config::load_str("test.yaml", &text).expect("the config loads");
        let (graph, diagnostics) = crate::config::graph::build_partial(&config);
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        values_needed(
            &config,
            &graph,
            &OutputId {
                component: "in".into(),
                port: None,
            },
        )
    }

    /// What the consumers of each component need, by id, for a config of `transforms` and
    /// `sinks` after a `json`-decoding source `in`.
    fn needs_of(transforms: &str, sinks: &str, ids: &[&str]) -> Vec<Values> {
        let text = format!(
            "sources:\n  in:\n    type: stdin\n    decoding:\n      codec: json\ntransforms:\n{transforms}sinks:\n{sinks}"
        );
        let config = Config::load_str("test.yaml", &text).expect("the config loads");
        let (graph, diagnostics) = crate::config::graph::build_partial(&config);
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        let output = |id: &str| OutputId {
            component: id.into(),
            port: None,
        };
        (ids.iter())
            .map(|id| values_needed(&config, &graph, &output(id)))
            .collect()
    }

    /// A transform's consumers are weighed as a source's; a remap that edits text as it comes
    /// (see `transforms::remap_text`) asks its input for text with fields where its own
    /// consumers need no values.
    #[test]
    fn a_remap_that_edits_text_passes_on_what_its_consumers_need() {
        let remap = |id: &str, input: &str, source: &str| {
            format!("  {id}:\n    type: remap\n    inputs: [{input}]\n    source: '{source}'\n")
        };
        let edits = |id: &str, input: &str| remap(id, input, ".x = 1; del(.y)");
        let blackhole = |input: &str| format!("  b:\n    type: blackhole\n    inputs: [{input}]\n");
        let by_field = |input: &str| {
            format!("  f:\n    type: file\n    inputs: [{input}]\n    path: \"/tmp/{{{{ a }}}}.ndjson\"\n")
        };
        use Values::*;
        assert_eq!(
            needs_of(&edits("t", "in"), &blackhole("t"), &["in", "t"]),
            [Fields, OnDemand]
        );
        let other = remap("u", "t", ".a = upcase!(.b)");
        assert_eq!(
            needs_of(
                &format!("{}{other}", edits("t", "in")),
                &blackhole("u"),
                &["in", "t", "u"]
            ),
            [Built, Built, OnDemand]
        );
        let parse = remap("p", "in", ". = parse_json!(.message)");
        assert_eq!(
            needs_of(
                &format!("{parse}{}", edits("t", "p")),
                &by_field("t"),
                &["in", "p", "t"]
            ),
            [Built, Fields, Fields]
        );
        let two = format!("{}{}", edits("t", "in"), edits("v", "t"));
        assert_eq!(
            needs_of(
                &two,
                &format!("{}{}", blackhole("v"), by_field("in")),
                &["in", "t", "v"]
            ),
            [Fields, Fields, OnDemand]
        );
    }

    /// A cycle of remaps that edit text (an error the build reports) ends the search: values.
    #[test]
    fn a_cycle_of_text_editing_remaps_asks_for_values() {
        let text = "sources:\n  in:\n    type: stdin\ntransforms:\n  a:\n    type: remap\n    inputs: [in, b]\n    source: '.x = 1'\n  b:\n    type: remap\n    inputs: [a]\n    source: '.y = 1'\nsinks:\n  out:\n    type: console\n    inputs: [b]\n";
        let config = Config::load_str("test.yaml", text).expect("the config loads");
        let (graph, diagnostics) = crate::config::graph::build_partial(&config);
        assert!(!diagnostics.is_empty(), "the cycle is an error");
        let output = OutputId {
            component: "in".into(),
            port: None,
        };
        assert_eq!(values_needed(&config, &graph, &output), Values::Built);
    }

    #[test]
    fn what_a_sources_events_are_decoded_into_follows_what_its_consumers_need() {
        let blackhole = "  a:\n    type: blackhole\n    inputs: [in]\n";
        let file = |path: &str, extra: &str| {
            let name = format!("f{}", path.len() + extra.len());
            format!("  {name}:\n    type: file\n    inputs: [in]\n    path: {path}\n{extra}")
        };
        // Only writing JSON: text alone.
        assert_eq!(values_of("", blackhole), Values::OnDemand);
        let plain = file("/tmp/out.ndjson", "");
        assert_eq!(
            values_of("", &format!("{blackhole}{plain}")),
            Values::OnDemand
        );
        let kafka = |extra: &str| {
            format!("  k:\n    type: kafka\n    inputs: [in]\n    bootstrap_servers: 127.0.0.1:9\n    topic: logs\n{extra}")
        };
        assert_eq!(values_of("", &kafka("")), Values::OnDemand);
        // Writing JSON and reading a top-level field (a templated path, a key): the text and
        // where its fields are; Parquet columns read fields from the text too.
        let by_field = file("\"/tmp/{{ service }}.ndjson\"", "");
        assert_eq!(values_of("", &by_field), Values::Fields);
        assert_eq!(
            values_of("", &format!("{blackhole}{by_field}")),
            Values::Fields
        );
        let parquet = "  p:\n    type: aws_s3\n    inputs: [in]\n    bucket: b\n    local_directory: /tmp/lake\n    encoding:\n      codec: parquet\n";
        assert_eq!(values_of("", parquet), Values::Fields);
        let postgres = "  pg:\n    type: postgres\n    inputs: [in]\n    endpoint: postgres://x@127.0.0.1:9/db\n    table: t\n    columns: {status: status}\n";
        assert_eq!(values_of("", postgres), Values::Fields);
        let keyed = kafka("    key_field: host\n");
        assert_eq!(values_of("", &keyed), Values::Fields);
        assert_eq!(
            values_of("", &format!("{blackhole}{keyed}")),
            Values::Fields
        );
        // Not writing JSON (a text codec), a disk buffer (which records values), and any
        // transform: values.
        let text = file("/tmp/out.log", "    encoding:\n      codec: text\n");
        assert_eq!(values_of("", &text), Values::Built);
        let disk = file(
            "/tmp/out.ndjson",
            "    buffer:\n      type: disk\n      max_size: 268435488\n",
        );
        assert_eq!(values_of("", &disk), Values::Built);
        assert_eq!(values_of("", &format!("{by_field}{disk}")), Values::Built);
        let filter =
            "transforms:\n  f:\n    type: filter\n    inputs: [in]\n    condition: .a == 1\n";
        let after_filter = "  c:\n    type: blackhole\n    inputs: [f]\n";
        assert_eq!(
            values_of(filter, &format!("{after_filter}{blackhole}")),
            Values::Built
        );
    }
}
