//! The `remap` transform: runs a VRL program on every event, in place.
//! Vector users can paste their programs: this is the real VRL compiler and standard library.

use super::remap_text::TextPlan;
use super::vrl_program::{compile, Runner};
use super::Transform;
use crate::codec::decoding::Values;
use crate::event::Event;
use crate::observe::ComponentMetrics;
use crate::topology::BuildError;
use serde::Deserialize;
use std::path::PathBuf;
use vrl::compiler::runtime::Terminate;
use vrl::compiler::Program;

/// Modify events with a VRL program.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RemapConfig {
    /// Components whose events this transform reads (ids, `id.output`, or globs like `app_*`).
    pub inputs: Vec<String>,
    /// The VRL program, inline. Exactly one of `source` and `file` is required.
    #[serde(default)]
    pub source: Option<String>,
    /// A file holding the VRL program.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Drop an event whose program fails at runtime (default false: the event passes on
    /// unmodified). Failures are counted in `component_errors_total{error_type="remap_failed"}`.
    #[serde(default)]
    pub drop_on_error: bool,
    /// Drop an event whose program calls `abort` (default true).
    #[serde(default = "default_true")]
    pub drop_on_abort: bool,
    /// Send dropped events (failed or aborted) to the named output `<id>.dropped` instead of
    /// discarding them.
    #[serde(default)]
    pub reroute_dropped: bool,
}

fn default_true() -> bool {
    true
}

impl RemapConfig {
    pub fn outputs(&self) -> Vec<Option<String>> {
        let mut outputs = vec![None];
        if self.reroute_dropped {
            outputs.push(Some("dropped".into()));
        }
        outputs
    }

    /// The program's text, and the field it came from (`source`, or the `file` read).
    fn program(&self) -> Result<(&'static str, String), BuildError> {
        match (&self.source, &self.file) {
            (Some(source), None) => Ok(("source", source.clone())),
            (None, Some(file)) => Ok((
                "file",
                std::fs::read_to_string(file).map_err(|e| {
                    BuildError::new("file", format!("cannot read {}: {e}", file.display()))
                })?,
            )),
            _ => Err(BuildError::new(
                "source",
                "set exactly one of `source` and `file`",
            )),
        }
    }

    /// Whether the program is of the text plan's shape and edits events as they come (no
    /// `parse_json`; see [`super::remap_text`]): then, where its own consumers need no values,
    /// its input is best kept as text with its fields noted.
    pub fn edits_text(&self) -> bool {
        let program = self.program().ok();
        program
            .and_then(|(_, source)| TextPlan::of(&source))
            .is_some_and(|plan| plan.edits_text())
    }

    /// The transform, for consumers that need `values` of its events: where none needs a
    /// value built, a program of the text plan's shape runs on the text (see
    /// [`super::remap_text`]).
    pub fn build(&self, id: &str, values: Values) -> Result<Remap, BuildError> {
        let (field, source) = self.program()?;
        let program = compile(id, &source).map_err(|message| BuildError::new(field, message))?;
        let info = program.info();
        // Keeping a copy of the original is only needed when the program can fail or abort
        // and the event should survive that.
        let may_terminate = info.fallible || info.abortable;
        let keep_original =
            may_terminate && (!self.drop_on_error || !self.drop_on_abort || self.reroute_dropped);
        let text_plan = match values {
            Values::Built => None,
            Values::Fields | Values::OnDemand => TextPlan::of(&source),
        };
        if text_plan.is_some() {
            tracing::debug!(component_id = %id, "remap runs its program on JSON text");
        }
        Ok(Remap {
            program,
            text_plan,
            runner: Runner::default(),
            keep_original,
            config: self.clone(),
            metrics: ComponentMetrics::new(id, "remap"),
        })
    }
}

pub struct Remap {
    program: Program,
    /// The program, run on JSON text, for the events it can take (see [`super::remap_text`]).
    text_plan: Option<TextPlan>,
    runner: Runner,
    keep_original: bool,
    config: RemapConfig,
    metrics: ComponentMetrics,
}

impl Transform for Remap {
    fn transform(&mut self, events: Vec<Event>, outputs: &mut [Vec<Event>]) {
        let (kept, rest) = outputs.split_at_mut(1);
        let kept = &mut kept[0];
        let mut dropped = rest.first_mut();
        kept.reserve(events.len());
        for event in events {
            // The text plan first, where it runs: an event it cannot take comes back.
            let planned = match &self.text_plan {
                Some(plan) => plan.apply(event),
                None => Err(event),
            };
            let mut event = match planned {
                Ok(made) => {
                    kept.push(made);
                    continue;
                }
                Err(event) => event,
            };
            let original = self.keep_original.then(|| event.clone());
            match self.runner.run(&self.program, event.value_mut()) {
                Ok(_) => kept.push(event),
                Err(terminate) => {
                    let (drop, reason) = match &terminate {
                        Terminate::Abort(_) => (self.config.drop_on_abort, "aborted"),
                        _ => {
                            self.metrics.error("remap_failed");
                            tracing::debug!(component_id = self.metrics.id(), error = %terminate, "remap failed");
                            (self.config.drop_on_error, "remap_failed")
                        }
                    };
                    let original = original.unwrap_or(event);
                    match (drop, dropped.as_deref_mut()) {
                        (false, _) => kept.push(original),
                        (true, Some(dropped)) => dropped.push(original),
                        (true, None) => self
                            .metrics
                            .discarded_with(reason, 1, || Some(terminate.to_string())),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Value;

    fn remap(source: &str, extra: &str) -> Remap {
        let yaml = format!("inputs: [x]\nsource: '{source}'\n{extra}");
        let config: RemapConfig = serde_yaml::from_str(&yaml).unwrap();
        config.build("test", Values::Built).unwrap()
    }

    fn run(remap: &mut Remap, events: Vec<Event>) -> Vec<Vec<Event>> {
        let mut outputs = vec![Vec::new(); remap.config.outputs().len()];
        remap.transform(events, &mut outputs);
        outputs
    }

    #[test]
    fn parses_json_sets_and_deletes_nested_fields() {
        let mut r = remap(
            ". = parse_json!(.message); .a.b[0] = upcase!(.name); del(.name)",
            "",
        );
        let out = run(
            &mut r,
            vec![Event::from_message(r#"{"name":"x","keep":1}"#.into())],
        );
        let event = &out[0][0];
        assert_eq!(event.get("name"), None);
        assert_eq!(event.get("keep"), Some(&Value::Integer(1)));
        let json = serde_json::to_string(event.value()).unwrap();
        assert_eq!(json, r#"{"a":{"b":["X"]},"keep":1}"#);
    }

    #[test]
    fn a_failing_event_passes_unmodified_by_default() {
        let mut r = remap(".touched = true; . = parse_json!(.message)", "");
        let out = run(&mut r, vec![Event::from_message("not json".into())]);
        assert_eq!(out[0], vec![Event::from_message("not json".into())]);
    }

    #[test]
    fn failures_and_aborts_can_be_rerouted() {
        let mut r = remap(
            "if .message == \"bad\" { abort }; .ok = true",
            "reroute_dropped: true",
        );
        let out = run(
            &mut r,
            vec![
                Event::from_message("bad".into()),
                Event::from_message("good".into()),
            ],
        );
        assert_eq!(out[0].len(), 1);
        assert_eq!(out[0][0].get("ok"), Some(&Value::Boolean(true)));
        assert_eq!(out[1], vec![Event::from_message("bad".into())]);
    }

    /// For consumers that write JSON, a program of the text plan's shape keeps the events it
    /// can as text; every event is equal to what the program makes of it, and one the plan
    /// cannot take (not JSON: an error) is handled as the program handles it.
    #[test]
    fn for_json_writers_the_text_plan_makes_the_same_events() {
        let source = ". = parse_json!(.message); .pipeline = \"p\"; del(.trace_id)";
        let build = |values: Values| {
            let yaml = format!(
                "inputs: [x]\nsource: '{source}'\ndrop_on_error: true\nreroute_dropped: true"
            );
            let config: RemapConfig = serde_yaml::from_str(&yaml).unwrap();
            config.build("test", values).unwrap()
        };
        let events = || {
            [
                r#"{"a":1,"trace_id":"t"}"#,
                "not json",
                r#"{"a":-0}"#,
                r#"{"b":"x"}"#,
            ]
            .map(|line| Event::from_message(line.into()))
            .to_vec()
        };
        let by_program = run(&mut build(Values::Built), events());
        let by_plan = run(&mut build(Values::OnDemand), events());
        // Asked first: comparing values builds them.
        let kept_as_text = |events: &[Event]| -> Vec<bool> {
            events.iter().map(|e| e.fields().is_some()).collect()
        };
        assert_eq!(kept_as_text(&by_plan[0]), vec![true, false, true]);
        assert_eq!(kept_as_text(&by_program[0]), vec![false; 3]);
        assert_eq!(by_plan, by_program);
        assert_eq!(by_plan[0].len(), 3);
        assert_eq!(by_plan[1], vec![Event::from_message("not json".into())]);
    }

    /// A program that edits events as they come keeps a source's text events as text for
    /// consumers that write JSON; others (here one the source built) run the program.
    #[test]
    fn for_json_writers_a_text_editing_program_keeps_text() {
        use crate::event::json::{read, Reading};
        let build = |values: Values| {
            let config: RemapConfig =
                serde_yaml::from_str("inputs: [x]\nsource: '.p = 1; del(.t)'").unwrap();
            config.build("test", values).unwrap()
        };
        let events = || {
            [
                (r#"{"a":1,"t":"x"}"#, Reading::TextAndFields),
                (r#"{"a":2,"t":"y"}"#, Reading::Value),
            ]
            .map(|(line, reading)| Event::from_document(read(line.as_bytes(), reading).unwrap()))
            .to_vec()
        };
        let by_program = run(&mut build(Values::Built), events());
        let by_plan = run(&mut build(Values::Fields), events());
        let kept_as_text = |events: &[Event]| -> Vec<bool> {
            events.iter().map(|e| e.fields().is_some()).collect()
        };
        assert_eq!(kept_as_text(&by_plan[0]), vec![true, false]);
        assert_eq!(kept_as_text(&by_program[0]), vec![false, false]);
        assert_eq!(by_plan, by_program);
        let mut written = Vec::new();
        by_plan[0][0].write_json(&mut written);
        assert_eq!(String::from_utf8(written).unwrap(), r#"{"a":1,"p":1}"#);
    }

    #[test]
    fn compile_errors_carry_vrl_diagnostics() {
        let config: RemapConfig =
            serde_yaml::from_str("inputs: [x]\nsource: '.a = parse_json(.b'").unwrap();
        let error = config.build("bad", Values::Built).err().unwrap();
        assert_eq!(error.field, Some("source"));
        assert!(
            error.message.contains("error["),
            "VRL diagnostic codes are shown: {}",
            error.message
        );
    }
}
