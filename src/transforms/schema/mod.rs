//! The `schema` transform: a JSON Schema as a contract at the door. Valid events go on (with
//! `coerce`, strings turned into the numbers and booleans the schema asks for); invalid ones go
//! to `<id>.invalid` tagged with every violation (`_invalid: [{path, reason}]`), or are counted
//! as discarded when nothing reads that output.
//!
//! Validation is the `jsonschema` crate's (drafts 4 to 2020-12, by the schema's `$schema`;
//! 2020-12 when it names none); `$ref`s to files resolve next to `json_schema_file`.
//! Metrics: `data_quality_events_total{component_id, result}` and
//! `data_quality_violations_total{component_id, path, rule}`, where `path` is the schema
//! location that failed (bounded by the schema, not by the data) and `rule` its keyword.

mod vrl_json;

use super::Transform;
use crate::event::{Event, KeyString, ObjectMap, Value};
use crate::topology::BuildError;
use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{JsonType, Validator};
use serde::Deserialize;
use std::path::PathBuf;
use vrl_json::VrlJson;

/// Validate events against a JSON Schema.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SchemaConfig {
    /// Components whose events this transform reads.
    pub inputs: Vec<String>,
    /// A JSON Schema file (JSON, or YAML); relative `$ref`s resolve next to it.
    #[serde(default)]
    pub json_schema_file: Option<PathBuf>,
    /// The schema inline, instead of a file.
    #[serde(default)]
    pub json_schema: Option<serde_json::Value>,
    /// Turn strings into the integer, number or boolean the schema asks for (`"200"` → 200,
    /// `"1.5"` → 1.5, `"true"` → true) before judging; default false.
    #[serde(default)]
    pub coerce: bool,
    /// Violations listed on an invalid event (default 10; all are counted).
    #[serde(default = "default_max_errors")]
    pub max_errors_per_event: usize,
}

fn default_max_errors() -> usize {
    10
}

/// The field an invalid event carries its violations in.
pub const INVALID_FIELD: &str = "_invalid";

impl SchemaConfig {
    pub fn outputs(&self) -> Vec<Option<String>> {
        vec![None, Some("invalid".into())]
    }

    /// The schema document and the base URI its relative `$ref`s resolve against.
    fn document(&self) -> Result<(serde_json::Value, Option<String>), BuildError> {
        match (&self.json_schema_file, &self.json_schema) {
            (Some(_), Some(_)) => Err(BuildError::new(
                "json_schema",
                "give json_schema_file or json_schema, not both",
            )),
            (None, None) => Err(BuildError::new(
                "json_schema_file",
                "needs json_schema_file or json_schema",
            )),
            (None, Some(inline)) => Ok((inline.clone(), None)),
            (Some(path), None) => {
                let field = "json_schema_file";
                let text = std::fs::read_to_string(path).map_err(|e| {
                    BuildError::new(field, format!("cannot read {}: {e}", path.display()))
                })?;
                let document = match serde_json::from_str(&text) {
                    Ok(document) => document,
                    Err(json) => serde_yaml::from_str(&text).map_err(|_| {
                        BuildError::new(
                            field,
                            format!("{} is not JSON (nor YAML): {json}", path.display()),
                        )
                    })?,
                };
                let absolute = std::path::absolute(path)
                    .map_err(|e| BuildError::new(field, format!("{}: {e}", path.display())))?;
                Ok((document, Some(format!("file://{}", absolute.display()))))
            }
        }
    }

    pub fn build(&self, id: &str) -> Result<SchemaTransform, BuildError> {
        let (document, base) = self.document()?;
        let field = if self.json_schema_file.is_some() {
            "json_schema_file"
        } else {
            "json_schema"
        };
        let mut options = jsonschema::options_for::<VrlJson>();
        if let Some(base) = base {
            options = options.with_base_uri(base);
        }
        let validator = options.build(&document).map_err(|e| {
            // Checked against its meta-schema, the schema is the instance: the place is where
            // in the schema document the error is.
            let place = match e.instance_path().as_str() {
                "" => String::new(),
                at => format!(" at {at}"),
            };
            let file = self
                .json_schema_file
                .as_ref()
                .map(|p| format!("{}: ", p.display()))
                .unwrap_or_default();
            BuildError::new(field, format!("{file}invalid schema{place}: {e}"))
        })?;
        if self.max_errors_per_event == 0 {
            return Err(BuildError::new(
                "max_errors_per_event",
                "must be at least 1",
            ));
        }
        Ok(SchemaTransform {
            validator,
            coerce: self.coerce,
            max_errors: self.max_errors_per_event,
            id: id.to_string(),
        })
    }
}

pub struct SchemaTransform {
    validator: Validator<VrlJson>,
    coerce: bool,
    max_errors: usize,
    id: String,
}

/// One violation, as the event carries it and the metric counts it.
struct Violation {
    /// Where in the event (a JSON pointer).
    path: String,
    reason: String,
    /// Where in the schema, without the keyword; bounded by the schema.
    schema_path: String,
    rule: String,
}

impl SchemaTransform {
    /// The violations of `instance`, up to `max_errors` listed and all counted in the metric.
    fn violations(&self, instance: &Value) -> Vec<Violation> {
        let mut listed = Vec::new();
        for error in self.validator.iter_errors(instance) {
            // The path through the schema, across `$ref`s (bounded by the schema).
            let schema_path = error.evaluation_path().as_str();
            let (parent, keyword) = schema_path.rsplit_once('/').unwrap_or(("", schema_path));
            metrics::counter!("data_quality_violations_total",
                "component_id" => self.id.clone(),
                "path" => if parent.is_empty() { "/".to_string() } else { parent.to_string() },
                "rule" => keyword.to_string())
            .increment(1);
            if listed.len() < self.max_errors {
                listed.push(Violation {
                    path: error.instance_path().as_str().to_string(),
                    reason: error.to_string(),
                    schema_path: parent.to_string(),
                    rule: keyword.to_string(),
                });
            }
        }
        listed
    }

    /// Coerces every string the schema wanted as an integer, number or boolean and that reads
    /// as one; true if anything changed.
    fn coerce(&self, event: &mut Event) -> bool {
        let mut fixes = Vec::new();
        for error in self.validator.iter_errors(event.value()) {
            let ValidationErrorKind::Type { kind } = error.kind() else {
                continue;
            };
            let wants = |t: JsonType| match kind {
                TypeKind::Single(single) => *single == t,
                TypeKind::Multiple(set) => set.contains(t),
            };
            let pointer = error.instance_path().as_str().to_string();
            let text = match error.instance().as_ref() {
                serde_json::Value::String(text) => text.trim().to_string(),
                _ => continue,
            };
            let integer = || text.parse::<i64>().ok().map(Value::Integer);
            let fixed = if wants(JsonType::Integer) {
                integer()
            } else {
                None
            }
            .or_else(|| {
                if !wants(JsonType::Number) {
                    return None;
                }
                integer().or_else(|| {
                    let float = text.parse::<f64>().ok().filter(|f| f.is_finite())?;
                    vrl::prelude::NotNan::new(float).ok().map(Value::Float)
                })
            })
            .or_else(|| {
                wants(JsonType::Boolean)
                    .then(|| text.parse::<bool>().ok())
                    .flatten()
                    .map(Value::Boolean)
            });
            if let Some(value) = fixed {
                fixes.push((pointer, value));
            }
        }
        for (pointer, value) in &fixes {
            if let Some(slot) = pointer_mut(event.value_mut(), pointer) {
                *slot = value.clone();
            }
        }
        !fixes.is_empty()
    }
}

/// The value at a JSON pointer inside a VRL value.
fn pointer_mut<'a>(mut value: &'a mut Value, pointer: &str) -> Option<&'a mut Value> {
    if pointer.is_empty() {
        return Some(value);
    }
    for token in pointer.strip_prefix('/')?.split('/') {
        let token = token.replace("~1", "/").replace("~0", "~");
        value = match value {
            Value::Object(map) => map.get_mut(token.as_str())?,
            Value::Array(items) => items.get_mut(token.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(value)
}

impl Transform for SchemaTransform {
    fn transform(&mut self, events: Vec<Event>, outputs: &mut [Vec<Event>]) {
        let (mut valid, mut invalid) = (0u64, 0u64);
        for mut event in events {
            if self.validator.is_valid(event.value()) {
                valid += 1;
                outputs[0].push(event);
                continue;
            }
            if self.coerce && self.coerce(&mut event) && self.validator.is_valid(event.value()) {
                valid += 1;
                outputs[0].push(event);
                continue;
            }
            invalid += 1;
            let violations = self.violations(event.value());
            let tags: Vec<Value> = violations
                .into_iter()
                .map(|v| {
                    let mut tag = ObjectMap::new();
                    tag.insert(KeyString::from("path"), Value::from(v.path));
                    tag.insert(KeyString::from("reason"), Value::from(v.reason));
                    tag.insert(KeyString::from("rule"), Value::from(v.rule));
                    tag.insert(KeyString::from("schema_path"), Value::from(v.schema_path));
                    Value::Object(tag)
                })
                .collect();
            if !matches!(event.value(), Value::Object(_)) {
                // A scalar or array event keeps its value under `message`.
                let value = std::mem::replace(event.value_mut(), Value::Object(ObjectMap::new()));
                event.insert("message", value);
            }
            event.insert(INVALID_FIELD, Value::Array(tags));
            outputs[1].push(event);
        }
        for (result, count) in [("valid", valid), ("invalid", invalid)] {
            if count > 0 {
                metrics::counter!("data_quality_events_total",
                    "component_id" => self.id.clone(), "result" => result)
                .increment(count);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(yaml: &str) -> SchemaTransform {
        let config: SchemaConfig = serde_yaml::from_str(yaml).unwrap();
        config.build("contract").unwrap()
    }

    fn event(json: &str) -> Event {
        Event::from(serde_json::from_str::<Value>(json).unwrap())
    }

    const ORDER: &str = r#"
inputs: [x]
json_schema:
  type: object
  required: [id, status]
  properties:
    id: {type: integer}
    status: {type: integer, minimum: 100, maximum: 599}
    ok: {type: boolean}
    price: {type: number}
"#;

    #[test]
    fn valid_events_pass_and_invalid_ones_carry_every_violation() {
        let mut t = build(ORDER);
        let mut out = vec![Vec::new(), Vec::new()];
        t.transform(
            vec![
                event(r#"{"id":1,"status":200}"#),
                event(r#"{"id":"x","status":700}"#),
                event(r#"{"status":"200"}"#),
            ],
            &mut out,
        );
        assert_eq!(out[0].len(), 1);
        assert_eq!(out[1].len(), 2);
        let tags = out[1][0].get(INVALID_FIELD).unwrap().as_array().unwrap();
        let mut found: Vec<(String, String)> = tags
            .iter()
            .map(|t| {
                let t = t.as_object().unwrap();
                (
                    t.get("path").unwrap().to_string_lossy().into_owned(),
                    t.get("rule").unwrap().to_string_lossy().into_owned(),
                )
            })
            .collect();
        found.sort();
        assert_eq!(
            found,
            [
                ("/id".to_string(), "type".to_string()),
                ("/status".to_string(), "maximum".to_string())
            ]
        );
        let missing = out[1][1].get(INVALID_FIELD).unwrap().as_array().unwrap();
        assert_eq!(missing.len(), 2, "id is required and status is a string");
    }

    /// One event per kind of violation, and a valid one: each invalid event carries exactly
    /// its violation (path and rule), and the valid one passes unchanged.
    #[test]
    fn every_kind_of_violation_is_reported_at_its_path() {
        let mut t = build(
            r#"
inputs: [x]
json_schema:
  type: object
  required: [id]
  additionalProperties: false
  properties:
    id: {type: integer}
    level: {enum: [info, warn, error]}
    code: {type: string, pattern: "^[A-Z]{3}$"}
    status: {type: integer, minimum: 100, maximum: 599}
    items:
      type: array
      items:
        type: object
        required: [sku]
        properties: {sku: {type: string}, qty: {type: integer, minimum: 1}}
"#,
        );
        let cases = [
            (r#"{"level":"info"}"#, "", "required"),
            (r#"{"id":"1"}"#, "/id", "type"),
            (r#"{"id":1,"level":"fatal"}"#, "/level", "enum"),
            (r#"{"id":1,"code":"ab"}"#, "/code", "pattern"),
            (r#"{"id":1,"status":99}"#, "/status", "minimum"),
            (r#"{"id":1,"extra":true}"#, "", "additionalProperties"),
            (
                r#"{"id":1,"items":[{"sku":"a"},{"sku":"b","qty":0}]}"#,
                "/items/1/qty",
                "minimum",
            ),
            (r#"{"id":1,"items":[{"qty":1}]}"#, "/items/0", "required"),
        ];
        let valid =
            r#"{"id":1,"level":"warn","code":"ABC","status":200,"items":[{"sku":"a","qty":2}]}"#;
        let mut out = vec![Vec::new(), Vec::new()];
        let mut events: Vec<Event> = cases.iter().map(|(json, _, _)| event(json)).collect();
        events.push(event(valid));
        t.transform(events, &mut out);
        assert_eq!(out[0], vec![event(valid)], "the valid event, unchanged");
        assert_eq!(out[1].len(), cases.len());
        for ((json, path, rule), invalid) in cases.iter().zip(&out[1]) {
            let tags = invalid.get(INVALID_FIELD).unwrap().as_array().unwrap();
            assert_eq!(tags.len(), 1, "{json}: {tags:?}");
            let tag = tags[0].as_object().unwrap();
            assert_eq!(tag.get("path").unwrap(), &Value::from(*path), "{json}");
            assert_eq!(tag.get("rule").unwrap(), &Value::from(*rule), "{json}");
            assert!(!tag.get("reason").unwrap().to_string_lossy().is_empty());
        }
    }

    #[test]
    fn coerce_turns_strings_into_what_the_schema_asks_for() {
        let mut t = build(&format!("{ORDER}coerce: true\n"));
        let mut out = vec![Vec::new(), Vec::new()];
        t.transform(
            vec![
                event(r#"{"id":"7","status":" 200","ok":"true","price":"1.5"}"#),
                event(r#"{"id":"seven","status":"200"}"#),
            ],
            &mut out,
        );
        assert_eq!(out[0].len(), 1);
        let e = &out[0][0];
        assert_eq!(e.get("id"), Some(&Value::Integer(7)));
        assert_eq!(e.get("status"), Some(&Value::Integer(200)));
        assert_eq!(e.get("ok"), Some(&Value::Boolean(true)));
        assert_eq!(
            e.get("price").unwrap().as_float().unwrap().into_inner(),
            1.5
        );
        assert_eq!(out[1].len(), 1, "`seven` is no integer");
    }

    #[test]
    fn a_bad_schema_or_reference_is_a_build_error_naming_the_place() {
        let config: SchemaConfig = serde_yaml::from_str(
            "inputs: [x]\njson_schema: {type: object, properties: {a: {type: integr}}}\n",
        )
        .unwrap();
        let error = config.build("c").err().unwrap();
        assert_eq!(error.field, Some("json_schema"));
        assert!(error.message.contains("/properties/a"), "{}", error.message);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("order.json");
        std::fs::write(&file, r#"{"$ref": "missing.json"}"#).unwrap();
        let config = SchemaConfig {
            inputs: vec![],
            json_schema_file: Some(file.clone()),
            json_schema: None,
            coerce: false,
            max_errors_per_event: 10,
        };
        let error = config.build("c").err().unwrap();
        assert_eq!(error.field, Some("json_schema_file"));
        assert!(
            error.message.contains("order.json") && error.message.contains("missing.json"),
            "{}",
            error.message
        );
    }
}
