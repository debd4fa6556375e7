//! Aggregations of the window transform: one accumulator per (window, key, aggregation).

use crate::event::{Event, Value};
use crate::transforms::support::parse_path;
use cardinality_estimator::CardinalityEstimator;
use serde::Deserialize;
use sketches_ddsketch::{Config as SketchConfig, DDSketch};
use std::hash::{Hash, Hasher};
use vrl::path::OwnedValuePath;

/// What an aggregation computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Number of events (with `field`: events where the field is present and not null).
    Count,
    /// Sum of a numeric field: an integer while every value is one, else a float.
    Sum,
    Min,
    Max,
    /// Arithmetic mean of a numeric field (float).
    Mean,
    /// The field's value in the event with the earliest event time.
    First,
    /// The field's value in the event with the latest event time.
    Last,
    /// Number of distinct values: exact for small sets, HyperLogLog (~1.6% error) beyond.
    DistinctCount,
    /// A quantile (`quantile: 0.99`: the value at rank floor(q·(n−1)) of the sorted values),
    /// from a DDSketch with 1% relative accuracy.
    Percentile,
}

/// One aggregation: `{op: sum, field: bytes}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregationConfig {
    /// count, sum, min, max, mean, first, last, distinct_count or percentile.
    pub op: Op,
    /// The event field it reads (a path like `.http.status`); required except for count.
    #[serde(default)]
    pub field: Option<String>,
    /// For percentile: the quantile in [0, 1], e.g. 0.99.
    #[serde(default)]
    pub quantile: Option<f64>,
}

/// A validated aggregation.
#[derive(Debug, Clone)]
pub struct Aggregation {
    pub name: String,
    op: Op,
    field: Option<OwnedValuePath>,
    quantile: f64,
}

impl Aggregation {
    pub fn new(name: &str, config: &AggregationConfig) -> Result<Aggregation, String> {
        let field = match &config.field {
            Some(f) => Some(parse_path(f).map_err(|e| format!("aggregation `{name}`: {e}"))?),
            None if config.op == Op::Count => None,
            None => {
                return Err(format!(
                    "aggregation `{name}` ({:?}) needs a `field`",
                    config.op
                ))
            }
        };
        let quantile = match (config.op, config.quantile) {
            (Op::Percentile, Some(q)) if (0.0..=1.0).contains(&q) => q,
            (Op::Percentile, _) => {
                return Err(format!(
                    "aggregation `{name}` needs `quantile` between 0 and 1"
                ))
            }
            _ => 0.0,
        };
        Ok(Aggregation {
            name: name.to_string(),
            op: config.op,
            field,
            quantile,
        })
    }

    pub fn start(&self) -> Acc {
        match self.op {
            Op::Count => Acc::Count(0),
            Op::Sum => Acc::Sum {
                int: 0,
                float: 0.0,
                is_float: false,
                seen: false,
            },
            Op::Min | Op::Max => Acc::Extreme(None),
            Op::Mean => Acc::Mean { sum: 0.0, n: 0 },
            Op::First | Op::Last => Acc::Pick(None),
            Op::DistinctCount => Acc::Distinct(Box::default()),
            Op::Percentile => Acc::Sketch(Box::new(DDSketch::new(SketchConfig::defaults()))),
        }
    }

    /// Adds one event (at event time `time`) to the accumulator.
    pub fn add(&self, acc: &mut Acc, event: &Event, time: i64) {
        let value = match &self.field {
            Some(path) => match event.at(path) {
                Some(Value::Null) | None => return,
                Some(v) => v,
            },
            None => {
                if let Acc::Count(n) = acc {
                    *n += 1;
                }
                return;
            }
        };
        match acc {
            Acc::Count(n) => *n += 1,
            Acc::Sum {
                int,
                float,
                is_float,
                seen,
            } => match value {
                Value::Integer(i) if !*is_float => {
                    *seen = true;
                    match int.checked_add(*i) {
                        Some(total) => *int = total,
                        None => {
                            *is_float = true;
                            *float = *int as f64 + *i as f64;
                        }
                    }
                }
                other => {
                    if let Some(x) = number(other) {
                        if !*is_float {
                            *is_float = true;
                            *float = *int as f64;
                        }
                        *seen = true;
                        *float += x;
                    }
                }
            },
            Acc::Extreme(current) => {
                if let Some(x) = number(value) {
                    let better = match current {
                        None => true,
                        Some((best, _)) if self.op == Op::Min => x < *best,
                        Some((best, _)) => x > *best,
                    };
                    if better {
                        *current = Some((x, value.clone()));
                    }
                }
            }
            Acc::Mean { sum, n } => {
                if let Some(x) = number(value) {
                    *sum += x;
                    *n += 1;
                }
            }
            Acc::Pick(current) => {
                let replace = match current {
                    None => true,
                    Some((t, _)) if self.op == Op::First => time < *t,
                    Some((t, _)) => time >= *t,
                };
                if replace {
                    *current = Some((time, value.clone()));
                }
            }
            Acc::Distinct(estimator) => {
                let mut hasher = std::hash::DefaultHasher::new();
                value.hash(&mut hasher);
                estimator.insert_hash(hasher.finish());
            }
            Acc::Sketch(sketch) => {
                if let Some(x) = number(value) {
                    sketch.add(x);
                }
            }
        }
    }

    /// Combines two accumulators of this aggregation (session windows that merge).
    pub fn merge(&self, into: &mut Acc, other: Acc) {
        match (into, other) {
            (Acc::Count(a), Acc::Count(b)) => *a += b,
            (
                Acc::Sum {
                    int,
                    float,
                    is_float,
                    seen,
                },
                Acc::Sum {
                    int: i2,
                    float: f2,
                    is_float: fl2,
                    seen: s2,
                },
            ) => {
                *seen |= s2;
                if !*is_float && !fl2 {
                    match int.checked_add(i2) {
                        Some(total) => *int = total,
                        None => {
                            *is_float = true;
                            *float = *int as f64 + i2 as f64;
                        }
                    }
                } else {
                    let a = if *is_float { *float } else { *int as f64 };
                    let b = if fl2 { f2 } else { i2 as f64 };
                    *is_float = true;
                    *float = a + b;
                }
            }
            (Acc::Extreme(a), Acc::Extreme(Some((x, v)))) => {
                let better = match a {
                    None => true,
                    Some((best, _)) if self.op == Op::Min => x < *best,
                    Some((best, _)) => x > *best,
                };
                if better {
                    *a = Some((x, v));
                }
            }
            (Acc::Mean { sum, n }, Acc::Mean { sum: s2, n: n2 }) => {
                *sum += s2;
                *n += n2;
            }
            (Acc::Pick(a), Acc::Pick(Some((t, v)))) => {
                let replace = match a {
                    None => true,
                    Some((current, _)) if self.op == Op::First => t < *current,
                    Some((current, _)) => t >= *current,
                };
                if replace {
                    *a = Some((t, v));
                }
            }
            (Acc::Distinct(a), Acc::Distinct(b)) => a.merge(&b),
            (Acc::Sketch(a), Acc::Sketch(b)) => {
                let _ = a.merge(&b);
            }
            _ => {}
        }
    }

    pub fn result(&self, acc: &Acc) -> Value {
        match acc {
            Acc::Count(n) => Value::Integer(*n as i64),
            Acc::Sum { seen: false, .. } => Value::Null,
            Acc::Sum {
                int,
                is_float: false,
                ..
            } => Value::Integer(*int),
            Acc::Sum { float, .. } => float_value(*float),
            Acc::Extreme(current) => current.as_ref().map_or(Value::Null, |(_, v)| v.clone()),
            Acc::Mean { n: 0, .. } => Value::Null,
            Acc::Mean { sum, n } => float_value(sum / *n as f64),
            Acc::Pick(current) => current.as_ref().map_or(Value::Null, |(_, v)| v.clone()),
            Acc::Distinct(estimator) => Value::Integer(estimator.estimate() as i64),
            Acc::Sketch(sketch) => match sketch.quantile(self.quantile) {
                Ok(Some(x)) => float_value(x),
                _ => Value::Null,
            },
        }
    }
}

/// The running state of one aggregation.
pub enum Acc {
    Count(u64),
    Sum {
        int: i64,
        float: f64,
        is_float: bool,
        seen: bool,
    },
    Extreme(Option<(f64, Value)>),
    Mean {
        sum: f64,
        n: u64,
    },
    Pick(Option<(i64, Value)>),
    Distinct(Box<CardinalityEstimator<str>>),
    Sketch(Box<DDSketch>),
}

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Integer(i) => Some(*i as f64),
        Value::Float(f) => Some(f.into_inner()),
        _ => None,
    }
}

fn float_value(x: f64) -> Value {
    vrl::prelude::NotNan::new(x)
        .map(Value::Float)
        .unwrap_or(Value::Null)
}
