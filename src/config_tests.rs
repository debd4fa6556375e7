//! `sluice test`: unit tests written in the config, next to the transforms they check, as in
//! Vector. Each test inserts events at a transform, runs them through every transform
//! downstream (in process: no sources, no sinks, no network), and checks what comes out of
//! the named outputs with VRL conditions.
//!
//! ```yaml
//! tests:
//!   - name: slow requests are flagged
//!     inputs:
//!       - insert_at: parse
//!         value: '{"status": 200, "latency_ms": 900}'   # becomes `.message`
//!       - insert_at: parse
//!         log_fields: {message: '{"status": 500}'}      # an event given field by field
//!     outputs:
//!       - extract_from: parse
//!         count: 2                       # optional: exactly this many events
//!         conditions:                    # every event must satisfy every condition
//!           - '.slow == true || .status == 500'
//!     no_outputs_from: [errors_only]     # these outputs must stay empty
//! ```
//!
//! Stateful transforms (windows, reduce) are finished at the end of the test, so what they
//! hold is emitted and checked too.

use crate::codec::decoding::Values;
use crate::config::graph::OutputId;
use crate::config::{parse_fields, Config, ConfigError, Diagnostic};
use crate::event::{Event, EventBatch, Value};
use crate::transforms::vrl_program::{compile, Runner};
use crate::transforms::{BuiltTransform, Emitted};
use indexmap::IndexMap;
use serde::Deserialize;
use std::collections::VecDeque;

/// Events waiting for a transform: (its id, the events).
type Queue = VecDeque<(String, Vec<Event>)>;

/// Hands a transform's output buckets on: to the transforms reading them, and to the capture.
type Deliver<'a> = dyn FnMut(&str, Vec<Vec<Event>>, &mut Queue) + 'a;

/// One test.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    /// Shown in the report.
    pub name: String,
    /// Events to insert, in order.
    pub inputs: Vec<TestInput>,
    /// What must come out.
    #[serde(default)]
    pub outputs: Vec<TestOutput>,
    /// Outputs (`id` or `id.name`) that must receive nothing.
    #[serde(default)]
    pub no_outputs_from: Vec<String>,
}

/// One inserted event: `value` (a string that becomes `.message`) or `log_fields`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestInput {
    /// The transform that receives it.
    pub insert_at: String,
    /// The raw line, as a source would read it.
    #[serde(default)]
    pub value: Option<String>,
    /// The event's fields.
    #[serde(default)]
    pub log_fields: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Checks on one output.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestOutput {
    /// The output to check: `id` or `id.name`.
    pub extract_from: String,
    /// VRL conditions every extracted event must satisfy.
    #[serde(default)]
    pub conditions: Vec<String>,
    /// Exactly this many events (default: at least one).
    #[serde(default)]
    pub count: Option<usize>,
}

/// The outcome of one test.
pub struct TestResult {
    pub name: String,
    pub failures: Vec<String>,
}

/// Parses and runs every test of `config`. Config mistakes in tests (unknown component,
/// bad VRL) are config errors; failed expectations are results.
pub fn run_all(config: &Config) -> Result<Vec<TestResult>, ConfigError> {
    let graph = config.graph()?;
    let mut diagnostics = Vec::new();
    let mut cases = Vec::new();
    let mut per_file: IndexMap<&str, usize> = IndexMap::new();
    for test in &config.tests {
        let counter = per_file.entry(test.file.as_str()).or_default();
        let at = TestAt {
            location: test.line.map(|line| (test.file.clone(), line)),
            index: *counter,
        };
        *counter += 1;
        match parse_fields::<TestCase>(test.value.clone()) {
            Ok(case) => cases.push((at, case)),
            Err(error) => diagnostics.push(at.diagnostic(&field_path(&error.path), error.message)),
        }
    }
    if !diagnostics.is_empty() {
        return Err(ConfigError { diagnostics });
    }
    let mut results = Vec::new();
    for (at, case) in &cases {
        results.push(run_one(config, &graph, at, case)?);
    }
    Ok(results)
}

/// Where a test is written: its file and line, and its index in that file's `tests:`.
struct TestAt {
    location: Option<(String, usize)>,
    index: usize,
}

impl TestAt {
    /// A diagnostic about `field` of this test (`outputs[0].extract_from`; empty for the test).
    fn diagnostic(&self, field: &str, message: String) -> Diagnostic {
        let separator = if field.is_empty() || field.starts_with('[') {
            ""
        } else {
            "."
        };
        Diagnostic {
            location: self.location.clone(),
            path: format!("tests[{}]{separator}{field}", self.index),
            message,
        }
    }

    fn error(&self, field: &str, message: String) -> ConfigError {
        ConfigError {
            diagnostics: vec![self.diagnostic(field, message)],
        }
    }
}

/// A field path as written in YAML terms: `outputs[0].extract_from`.
fn field_path(parts: &[String]) -> String {
    let mut path = String::new();
    for part in parts {
        if part.parse::<usize>().is_ok() {
            path.push_str(&format!("[{part}]"));
        } else {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(part);
        }
    }
    path
}

fn outputs_of(config: &Config, id: &str) -> Vec<OutputId> {
    config.transforms[id]
        .config
        .outputs()
        .into_iter()
        .map(|port| OutputId {
            component: id.to_string(),
            port,
        })
        .collect()
}

fn parse_output(text: &str) -> OutputId {
    match text.split_once('.') {
        Some((component, output)) => OutputId {
            component: component.to_string(),
            port: Some(output.to_string()),
        },
        None => OutputId {
            component: text.to_string(),
            port: None,
        },
    }
}

fn run_one(
    config: &Config,
    graph: &crate::config::graph::Graph,
    test_at: &TestAt,
    case: &TestCase,
) -> Result<TestResult, ConfigError> {
    let at = |field: &str, message: String| test_at.error(field, message);
    // Fresh transforms for every test: no state leaks from one test to the next.
    let mut built: IndexMap<String, BuiltTransform> = IndexMap::new();
    for (id, entry) in &config.transforms {
        let transform = entry.config.build(id, Values::Built).map_err(|e| {
            let field = e.field.map(|f| format!(".{f}")).unwrap_or_default();
            at("inputs", format!("transforms.{id}{field}: {}", e.message))
        })?;
        built.insert(id.clone(), transform);
    }
    let known_output = |text: &str| {
        let output = parse_output(text);
        built.contains_key(&output.component)
            && outputs_of(config, &output.component).contains(&output)
    };
    for (i, output) in case.outputs.iter().enumerate() {
        if !known_output(&output.extract_from) {
            return Err(at(
                &format!("outputs[{i}].extract_from"),
                format!("`{}` is not a transform output", output.extract_from),
            ));
        }
    }
    for text in &case.no_outputs_from {
        if !known_output(text) {
            return Err(at(
                "no_outputs_from",
                format!("`{text}` is not a transform output"),
            ));
        }
    }
    let mut captured: IndexMap<OutputId, Vec<Event>> = IndexMap::new();
    let mut queue: Queue = VecDeque::new();
    for (i, input) in case.inputs.iter().enumerate() {
        if !built.contains_key(&input.insert_at) {
            return Err(at(
                &format!("inputs[{i}].insert_at"),
                format!("`{}` is not a transform", input.insert_at),
            ));
        }
        let event = match (&input.value, &input.log_fields) {
            (Some(value), None) => Event::from_message(value.clone().into()),
            (None, Some(fields)) => {
                Event::from(Value::from(serde_json::Value::Object(fields.clone())))
            }
            _ => {
                return Err(at(
                    &format!("inputs[{i}]"),
                    "give exactly one of `value` and `log_fields`".into(),
                ))
            }
        };
        queue.push_back((input.insert_at.clone(), vec![event]));
    }
    let mut deliver = |id: &str, buckets: Vec<Vec<Event>>, queue: &mut Queue| {
        for (output, events) in outputs_of(config, id).into_iter().zip(buckets) {
            if events.is_empty() {
                continue;
            }
            for consumer in graph.consumers_of(&output) {
                if config.transforms.contains_key(consumer) {
                    queue.push_back((consumer.to_string(), events.clone()));
                }
            }
            captured.entry(output).or_default().extend(events);
        }
    };
    let run_queue =
        |built: &mut IndexMap<String, BuiltTransform>, queue: &mut Queue, deliver: &mut Deliver| {
            while let Some((id, events)) = queue.pop_front() {
                let width = outputs_of(config, &id).len();
                let buckets = match built.get_mut(&id).expect("checked") {
                    BuiltTransform::Stateless(t) => {
                        let mut buckets = vec![Vec::new(); width];
                        t.transform(events, &mut buckets);
                        buckets
                    }
                    BuiltTransform::Stateful(t) => {
                        let mut emitted: Vec<Emitted> =
                            (0..width).map(|_| Emitted::default()).collect();
                        t.transform(EventBatch::new(events, 0), &mut emitted);
                        emitted.into_iter().map(|e| e.events).collect()
                    }
                };
                deliver(&id, buckets, queue);
            }
        };
    run_queue(&mut built, &mut queue, &mut deliver);
    // The input ends: stateful transforms emit what they hold, upstream ones first.
    let ids: Vec<String> = built.keys().cloned().collect();
    for id in ids {
        let width = outputs_of(config, &id).len();
        if let Some(BuiltTransform::Stateful(t)) = built.get_mut(&id) {
            let mut emitted: Vec<Emitted> = (0..width).map(|_| Emitted::default()).collect();
            t.finish(&mut emitted);
            deliver(
                &id,
                emitted.into_iter().map(|e| e.events).collect(),
                &mut queue,
            );
            run_queue(&mut built, &mut queue, &mut deliver);
        }
    }
    let mut failures = Vec::new();
    let mut runner = Runner::default();
    for (i, output) in case.outputs.iter().enumerate() {
        let id = parse_output(&output.extract_from);
        let events = captured.get(&id).map(Vec::as_slice).unwrap_or_default();
        match output.count {
            Some(count) if events.len() != count => failures.push(format!(
                "{}: expected {count} events, got {}",
                output.extract_from,
                events.len()
            )),
            None if events.is_empty() => failures.push(format!(
                "{}: expected events, got none",
                output.extract_from
            )),
            _ => {}
        }
        let programs: Vec<(String, _)> = output
            .conditions
            .iter()
            .enumerate()
            .map(|(c, source)| {
                compile(&format!("tests[{}]", test_at.index), source)
                    .map(|p| (source.clone(), p))
                    .map_err(|m| at(&format!("outputs[{i}].conditions[{c}]"), m))
            })
            .collect::<Result<_, _>>()?;
        for event in events {
            for (source, program) in &programs {
                let mut value = event.value().clone();
                match runner.check(program, &mut value) {
                    Ok(true) => {}
                    Ok(false) => failures.push(format!(
                        "{}: condition `{}` is false for {}",
                        output.extract_from,
                        source.trim(),
                        serde_json::to_string(event.value()).unwrap_or_default()
                    )),
                    Err(error) => failures.push(format!(
                        "{}: condition `{}` failed ({error}) for {}",
                        output.extract_from,
                        source.trim(),
                        serde_json::to_string(event.value()).unwrap_or_default()
                    )),
                }
            }
        }
    }
    for text in &case.no_outputs_from {
        if let Some(events) = captured.get(&parse_output(text)).filter(|e| !e.is_empty()) {
            failures.push(format!(
                "{text}: expected no events, got {}: first {}",
                events.len(),
                serde_json::to_string(events[0].value()).unwrap_or_default()
            ));
        }
    }
    Ok(TestResult {
        name: case.name.clone(),
        failures,
    })
}
