//! The `route` transform: sends each event to every named output whose VRL condition is true,
//! and to `<id>._unmatched` when none is.

use super::vrl_program::{compile, Runner};
use super::Transform;
use crate::event::Event;
use crate::observe::ComponentMetrics;
use crate::topology::BuildError;
use indexmap::IndexMap;
use serde::Deserialize;
use vrl::compiler::Program;

/// The named output for events no route matched.
pub const UNMATCHED: &str = "_unmatched";

/// Split events into named outputs by condition.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Components whose events this transform reads.
    pub inputs: Vec<String>,
    /// Output name -> VRL condition. Read an output as `<id>.<name>`. An event goes to every
    /// route it matches; a condition that fails counts as not matching (and as an error).
    pub route: IndexMap<String, String>,
}

impl RouteConfig {
    pub fn outputs(&self) -> Vec<Option<String>> {
        self.route
            .keys()
            .cloned()
            .map(Some)
            .chain(std::iter::once(Some(UNMATCHED.to_string())))
            .collect()
    }

    pub fn build(&self, id: &str) -> Result<Route, BuildError> {
        if self.route.is_empty() {
            return Err(BuildError::new(
                "route",
                "needs at least one named condition",
            ));
        }
        let mut programs = Vec::new();
        for (name, condition) in &self.route {
            if name == UNMATCHED || name.is_empty() || name.contains(['.', '*', ' ']) {
                return Err(BuildError::new(
                    "route",
                    format!("`{name}` is not a valid output name"),
                ));
            }
            let program = compile(id, condition)
                .map_err(|m| BuildError::new("route", format!("route `{name}`: {m}")))?;
            programs.push(program);
        }
        Ok(Route {
            programs,
            runner: Runner::default(),
            metrics: ComponentMetrics::new(id, "route"),
        })
    }
}

pub struct Route {
    programs: Vec<Program>,
    runner: Runner,
    metrics: ComponentMetrics,
}

impl Transform for Route {
    fn transform(&mut self, events: Vec<Event>, outputs: &mut [Vec<Event>]) {
        let unmatched = self.programs.len();
        for mut event in events {
            let mut matched: Vec<usize> = Vec::new();
            for (index, program) in self.programs.iter().enumerate() {
                match self.runner.check(program, event.value_mut()) {
                    Ok(true) => matched.push(index),
                    Ok(false) => {}
                    Err(error) => {
                        self.metrics.error("condition_failed");
                        tracing::debug!(component_id = self.metrics.id(), %error, "route condition failed");
                    }
                }
            }
            match matched.split_last() {
                None => outputs[unmatched].push(event),
                Some((last, others)) => {
                    for index in others {
                        outputs[*index].push(event.clone());
                    }
                    outputs[*last].push(event);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_to_every_match_and_unmatched() {
        let yaml = "inputs: [x]\nroute:\n  errors: '.level == \"error\"'\n  loud: 'length!(.message) > 3'\n";
        let config: RouteConfig = serde_yaml::from_str(yaml).unwrap();
        let mut route = config.build("r").unwrap();
        let mut out = vec![Vec::new(); 3];
        let mut error = Event::from_message("boom!".into());
        error.insert("level", "error");
        let quiet = Event::from_message("ok".into());
        route.transform(vec![error, quiet.clone()], &mut out);
        assert_eq!(out[0].len(), 1, "errors");
        assert_eq!(out[1].len(), 1, "loud");
        assert_eq!(out[2], vec![quiet], "_unmatched");
    }
}
