//! Transforms: per-batch processing between sources and sinks. Every transform type is
//! registered here, in one place.

pub mod anomaly;
pub mod dedupe;
pub mod filter;
pub mod reduce;
pub mod remap;
pub mod remap_text;
pub mod route;
pub mod sample;
pub mod schema;
pub mod support;
pub mod throttle;
pub mod vrl_parse_json;
pub mod vrl_program;
pub mod window;

use crate::codec::decoding::Values;
use crate::config::{parse_fields, unknown_type, FieldError};
use crate::event::{Event, EventBatch, Finalizers};
use crate::topology::BuildError;

/// A running stateless transform. `outputs` has one bucket per entry of
/// [`TransformConfig::outputs`], in that order; the runner ships non-empty buckets downstream
/// with the input batch's acknowledgement handles.
pub trait Transform: Send {
    fn transform(&mut self, events: Vec<Event>, outputs: &mut [Vec<Event>]);
}

/// What a stateful transform emits on one output, with the acknowledgement handles of the
/// events it stands for.
#[derive(Default)]
pub struct Emitted {
    pub events: Vec<Event>,
    pub byte_size: usize,
    pub finalizers: Finalizers,
}

/// A transform that holds events (or what they add up to) across batches. It keeps the
/// acknowledgement handles of what it holds and attaches them to what it emits, so a source
/// never checkpoints past an event whose result has not been delivered.
pub trait StatefulTransform: Send {
    fn transform(&mut self, batch: EventBatch, outputs: &mut [Emitted]);
    /// How often [`Self::tick`] runs (processing-time progress: idle timeouts, expiries).
    fn tick_interval(&self) -> std::time::Duration;
    fn tick(&mut self, outputs: &mut [Emitted]);
    /// The input ended (shutdown or upstream finished): emit or drop what is still held.
    fn finish(&mut self, outputs: &mut [Emitted]);
}

/// A built transform of either kind.
pub enum BuiltTransform {
    Stateless(Box<dyn Transform>),
    Stateful(Box<dyn StatefulTransform>),
}

/// Every transform type, selected by `type:`.
#[derive(Debug, Clone)]
pub enum TransformConfig {
    Anomaly(anomaly::AnomalyConfig),
    Dedupe(dedupe::DedupeConfig),
    Filter(filter::FilterConfig),
    Reduce(reduce::ReduceConfig),
    Remap(remap::RemapConfig),
    Route(route::RouteConfig),
    Sample(sample::SampleConfig),
    Schema(schema::SchemaConfig),
    Throttle(throttle::ThrottleConfig),
    Window(window::WindowConfig),
}

const TYPES: &[&str] = &[
    "anomaly", "dedupe", "filter", "reduce", "remap", "route", "sample", "schema", "throttle",
    "window",
];

impl TransformConfig {
    pub fn parse(kind: &str, value: serde_yaml::Value) -> Result<Self, FieldError> {
        Ok(match kind {
            "anomaly" => Self::Anomaly(parse_fields(value)?),
            "dedupe" => Self::Dedupe(parse_fields(value)?),
            "filter" => Self::Filter(parse_fields(value)?),
            "reduce" => Self::Reduce(parse_fields(value)?),
            "sample" => Self::Sample(parse_fields(value)?),
            "schema" => Self::Schema(parse_fields(value)?),
            "throttle" => Self::Throttle(parse_fields(value)?),
            "remap" => Self::Remap(parse_fields(value)?),
            "route" => Self::Route(parse_fields(value)?),
            "window" => Self::Window(parse_fields(value)?),
            other => return Err(unknown_type(other, TYPES)),
        })
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Anomaly(_) => "anomaly",
            Self::Dedupe(_) => "dedupe",
            Self::Filter(_) => "filter",
            Self::Reduce(_) => "reduce",
            Self::Sample(_) => "sample",
            Self::Schema(_) => "schema",
            Self::Throttle(_) => "throttle",
            Self::Remap(_) => "remap",
            Self::Route(_) => "route",
            Self::Window(_) => "window",
        }
    }

    pub fn inputs(&self) -> &[String] {
        match self {
            Self::Anomaly(c) => &c.inputs,
            Self::Dedupe(c) => &c.inputs,
            Self::Filter(c) => &c.inputs,
            Self::Reduce(c) => &c.inputs,
            Self::Sample(c) => &c.inputs,
            Self::Schema(c) => &c.inputs,
            Self::Throttle(c) => &c.inputs,
            Self::Remap(c) => &c.inputs,
            Self::Route(c) => &c.inputs,
            Self::Window(c) => &c.inputs,
        }
    }

    /// The outputs: `None` is the default output (`id`), `Some(name)` a named one (`id.name`).
    pub fn outputs(&self) -> Vec<Option<String>> {
        match self {
            Self::Dedupe(_) | Self::Filter(_) | Self::Reduce(_) | Self::Sample(_) => vec![None],
            Self::Schema(c) => c.outputs(),
            Self::Anomaly(c) => c.outputs(),
            Self::Throttle(c) => c.outputs(),
            Self::Remap(c) => c.outputs(),
            Self::Route(c) => c.outputs(),
            Self::Window(c) => c.outputs(),
        }
    }

    /// Whether the transform edits JSON text as it comes where its consumers need no values
    /// (a remap of the text plan's shape without `parse_json`; see `remap_text`).
    pub fn edits_text(&self) -> bool {
        matches!(self, Self::Remap(c) if c.edits_text())
    }

    /// The transform, for consumers that need `values` of its events (what the remap
    /// transform's text plan asks; see `topology::build::values_needed`).
    pub fn build(&self, id: &str, values: Values) -> Result<BuiltTransform, BuildError> {
        use BuiltTransform::{Stateful, Stateless};
        Ok(match self {
            Self::Anomaly(c) => Stateless(Box::new(c.build(id)?)),
            Self::Dedupe(c) => Stateless(Box::new(c.build(id)?)),
            Self::Filter(c) => Stateless(Box::new(c.build(id)?)),
            Self::Reduce(c) => Stateful(Box::new(c.build(id)?)),
            Self::Sample(c) => Stateless(Box::new(c.build(id)?)),
            Self::Schema(c) => Stateless(Box::new(c.build(id)?)),
            Self::Throttle(c) => Stateless(Box::new(c.build(id)?)),
            Self::Remap(c) => Stateless(Box::new(c.build(id, values)?)),
            Self::Route(c) => Stateless(Box::new(c.build(id)?)),
            Self::Window(c) => Stateful(Box::new(c.build(id)?)),
        })
    }
}
