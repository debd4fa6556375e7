//! The `filter` transform: keeps events for which a VRL condition is true.

use super::vrl_program::{compile, Runner};
use super::Transform;
use crate::event::Event;
use crate::observe::ComponentMetrics;
use crate::topology::BuildError;
use serde::Deserialize;
use vrl::compiler::Program;

/// Keep only events matching a condition.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Components whose events this transform reads.
    pub inputs: Vec<String>,
    /// A VRL expression returning a boolean, e.g. `.status >= 500`. Events for which it is
    /// false are dropped (counted as `filtered`); events for which it fails are dropped and
    /// counted as errors (`condition_failed`).
    pub condition: String,
}

impl FilterConfig {
    pub fn build(&self, id: &str) -> Result<Filter, BuildError> {
        let program = compile(id, &self.condition).map_err(|m| BuildError::new("condition", m))?;
        Ok(Filter {
            program,
            runner: Runner::default(),
            metrics: ComponentMetrics::new(id, "filter"),
        })
    }
}

pub struct Filter {
    program: Program,
    runner: Runner,
    metrics: ComponentMetrics,
}

impl Transform for Filter {
    fn transform(&mut self, events: Vec<Event>, outputs: &mut [Vec<Event>]) {
        let total = events.len();
        let mut failed = 0;
        let mut failure = None;
        for mut event in events {
            // Conditions must not change the event: run on a scratch copy only if needed.
            match self.runner.check(&self.program, event.value_mut()) {
                Ok(true) => outputs[0].push(event),
                Ok(false) => {}
                Err(error) => {
                    failed += 1;
                    tracing::debug!(component_id = self.metrics.id(), %error, "filter condition failed");
                    failure.get_or_insert(error);
                }
            }
        }
        if failed > 0 {
            self.metrics.errors("condition_failed", failed as u64);
        }
        self.metrics
            .discarded("filtered", total - outputs[0].len() - failed);
        self.metrics.discarded_with("condition_failed", failed, || {
            failure.map(|e| e.to_string())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_matching_events_only() {
        let config: FilterConfig = serde_yaml::from_str(
            "inputs: [x]\ncondition: 'contains(string!(.message), \"error\")'",
        )
        .unwrap();
        let mut filter = config.build("f").unwrap();
        let mut out = vec![Vec::new()];
        let events = ["an error", "fine", "error again"]
            .map(|m| Event::from_message(m.into()))
            .to_vec();
        filter.transform(events, &mut out);
        assert_eq!(out[0].len(), 2);
    }
}
