//! Transforms: per-batch processing between sources and sinks. Every transform type is
//! registered here, in one place.

pub mod filter;
pub mod remap;
pub mod route;
pub mod vrl_program;

use crate::config::{parse_fields, unknown_type, FieldError};
use crate::event::Event;
use crate::topology::BuildError;

/// A running transform. `outputs` has one bucket per entry of
/// [`TransformConfig::outputs`], in that order; the runner ships non-empty buckets downstream.
pub trait Transform: Send {
    fn transform(&mut self, events: Vec<Event>, outputs: &mut [Vec<Event>]);
}

/// Every transform type, selected by `type:`.
#[derive(Debug, Clone)]
pub enum TransformConfig {
    Filter(filter::FilterConfig),
    Remap(remap::RemapConfig),
    Route(route::RouteConfig),
}

const TYPES: &[&str] = &["filter", "remap", "route"];

impl TransformConfig {
    pub fn parse(kind: &str, value: serde_yaml::Value) -> Result<Self, FieldError> {
        Ok(match kind {
            "filter" => Self::Filter(parse_fields(value)?),
            "remap" => Self::Remap(parse_fields(value)?),
            "route" => Self::Route(parse_fields(value)?),
            other => return Err(unknown_type(other, TYPES)),
        })
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Filter(_) => "filter",
            Self::Remap(_) => "remap",
            Self::Route(_) => "route",
        }
    }

    pub fn inputs(&self) -> &[String] {
        match self {
            Self::Filter(c) => &c.inputs,
            Self::Remap(c) => &c.inputs,
            Self::Route(c) => &c.inputs,
        }
    }

    /// The outputs: `None` is the default output (`id`), `Some(name)` a named one (`id.name`).
    pub fn outputs(&self) -> Vec<Option<String>> {
        match self {
            Self::Filter(_) => vec![None],
            Self::Remap(c) => c.outputs(),
            Self::Route(c) => c.outputs(),
        }
    }

    pub fn build(&self, id: &str) -> Result<Box<dyn Transform>, BuildError> {
        Ok(match self {
            Self::Filter(c) => Box::new(c.build(id)?),
            Self::Remap(c) => Box::new(c.build(id)?),
            Self::Route(c) => Box::new(c.build(id)?),
        })
    }
}
