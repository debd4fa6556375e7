//! The topology graph: resolves every `inputs:` entry (exact ids, `id.output` names and globs
//! such as `app_*`) to component outputs, and rejects dangling inputs, components without
//! inputs, and cycles.

use super::{error::did_you_mean, Config, ConfigError, Diagnostic};
use indexmap::{IndexMap, IndexSet};
use std::fmt;

/// The named output of every sink: events it gave up on (see `sinks::reject`).
pub const DEAD_LETTER: &str = "dead_letter";

/// One output of a component: its default output (`id`) or a named one (`id.name`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OutputId {
    pub component: String,
    pub port: Option<String>,
}

impl fmt::Display for OutputId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.port {
            Some(port) => write!(f, "{}.{port}", self.component),
            None => f.write_str(&self.component),
        }
    }
}

/// The validated wiring of a config.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    /// Every output in the config.
    pub outputs: Vec<OutputId>,
    /// For each transform and sink, the outputs it reads, in the order they were written.
    pub inputs: IndexMap<String, Vec<OutputId>>,
}

impl Graph {
    /// The ids of components reading `output`.
    pub fn consumers_of<'a>(&'a self, output: &'a OutputId) -> impl Iterator<Item = &'a str> + 'a {
        self.inputs
            .iter()
            .filter(move |(_, inputs)| inputs.contains(output))
            .map(|(id, _)| id.as_str())
    }
}

pub fn build(config: &Config) -> Result<Graph, ConfigError> {
    let (graph, diagnostics) = build_partial(config);
    if diagnostics.is_empty() {
        Ok(graph)
    } else {
        Err(ConfigError { diagnostics })
    }
}

/// The graph of whatever resolves, and the wiring errors of the rest. Inputs naming a
/// component that did not parse (`Config::unparsed`) are left out without an error: that
/// component's own error is reported.
pub fn build_partial(config: &Config) -> (Graph, Vec<Diagnostic>) {
    let mut diagnostics = Vec::new();
    let mut graph = Graph::default();

    let mut seen: IndexMap<&str, &str> = IndexMap::new();
    let sections = [
        ("sources", config.sources.keys().collect::<Vec<_>>()),
        ("transforms", config.transforms.keys().collect()),
        ("sinks", config.sinks.keys().collect()),
    ];
    for (section, ids) in &sections {
        for id in ids {
            if let Some(other) = seen.insert(id.as_str(), section) {
                diagnostics.push(Diagnostic {
                    location: None,
                    path: format!("{section}.{id}"),
                    message: format!("id is also used in `{other}`; ids must be unique"),
                });
            }
        }
    }

    for id in config.sources.keys() {
        graph.outputs.push(OutputId {
            component: id.clone(),
            port: None,
        });
    }
    for (id, entry) in &config.transforms {
        for port in entry.config.outputs() {
            graph.outputs.push(OutputId {
                component: id.clone(),
                port,
            });
        }
    }
    for id in config.sinks.keys() {
        graph.outputs.push(OutputId {
            component: id.clone(),
            port: Some(DEAD_LETTER.to_string()),
        });
    }

    let wanted = config
        .transforms
        .iter()
        .map(|(id, e)| {
            (
                "transforms",
                id,
                e.config.inputs(),
                e.diagnostic("transforms", id, &["inputs"], String::new()),
            )
        })
        .chain(config.sinks.iter().map(|(id, e)| {
            (
                "sinks",
                id,
                e.config.inputs(),
                e.diagnostic("sinks", id, &["inputs"], String::new()),
            )
        }));
    for (section, id, inputs, at) in wanted {
        let mut resolved: IndexSet<OutputId> = IndexSet::new();
        let mut fail = |message: String| {
            diagnostics.push(Diagnostic {
                message,
                ..at.clone()
            });
        };
        if inputs.is_empty() {
            fail(format!(
                "a {} needs at least one input",
                &section[..section.len() - 1]
            ));
        }
        for input in inputs {
            let is_glob = input.contains(['*', '?', '[']);
            if is_glob {
                match glob::Pattern::new(input) {
                    Ok(pattern) => {
                        let matched: Vec<&OutputId> = graph
                            .outputs
                            .iter()
                            .filter(|o| o.component != *id && pattern.matches(&o.to_string()))
                            .collect();
                        let may_match_unparsed =
                            config.unparsed.iter().any(|id| pattern.matches(id));
                        if matched.is_empty() && !may_match_unparsed {
                            fail(format!("input pattern `{input}` matches no component"));
                        }
                        resolved.extend(matched.into_iter().cloned());
                    }
                    Err(error) => fail(format!("input pattern `{input}` is invalid: {error}")),
                }
                continue;
            }
            let component = input.split('.').next().unwrap_or_default();
            if config.unparsed.contains(component) {
                continue;
            }
            match graph.outputs.iter().find(|o| o.to_string() == *input) {
                Some(output) => {
                    resolved.insert(output.clone());
                }
                None => {
                    let named: Vec<String> = graph
                        .outputs
                        .iter()
                        .filter(|o| o.component == *input)
                        .map(|o| format!("`{o}`"))
                        .collect();
                    if config.sinks.contains_key(input.as_str()) {
                        fail(format!(
                            "input `{input}` is a sink; its only output is `{input}.{DEAD_LETTER}`"
                        ));
                    } else if !named.is_empty() {
                        fail(format!(
                            "input `{input}` has no default output; use one of {}",
                            named.join(", ")
                        ));
                    } else {
                        let names: Vec<String> =
                            graph.outputs.iter().map(|o| o.to_string()).collect();
                        fail(format!(
                            "input `{input}` does not exist{}",
                            did_you_mean(input, names.iter().map(String::as_str))
                        ));
                    }
                }
            }
        }
        graph
            .inputs
            .insert(id.clone(), resolved.into_iter().collect());
    }

    if let Some(cycle) = find_cycle(&graph) {
        diagnostics.push(Diagnostic {
            location: None,
            path: cycle[0].clone(),
            message: format!("cycle in the topology: {}", cycle.join(" -> ")),
        });
    }

    (graph, diagnostics)
}

/// A cycle among components with inputs (transforms, and sinks through their dead-letter
/// outputs), as the list of ids along it (first id repeated at the end).
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    fn visit(
        id: &str,
        graph: &Graph,
        marks: &mut IndexMap<String, Mark>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(id).copied().unwrap_or(Mark::New) {
            Mark::Done => return None,
            Mark::Active => {
                let start = stack.iter().position(|s| s == id).unwrap_or(0);
                let mut cycle = stack[start..].to_vec();
                cycle.push(id.to_string());
                return Some(cycle);
            }
            Mark::New => {}
        }
        marks.insert(id.to_string(), Mark::Active);
        stack.push(id.to_string());
        for input in graph.inputs.get(id).into_iter().flatten() {
            if graph.inputs.contains_key(&input.component) {
                if let Some(cycle) = visit(&input.component, graph, marks, stack) {
                    return Some(cycle);
                }
            }
        }
        stack.pop();
        marks.insert(id.to_string(), Mark::Done);
        None
    }
    let mut marks = IndexMap::new();
    for id in graph.inputs.keys() {
        let mut stack = Vec::new();
        if let Some(cycle) = visit(id, graph, &mut marks, &mut stack) {
            return Some(cycle);
        }
    }
    None
}
