//! Small pieces shared by transforms: a replaceable wall clock (so tests of processing-time
//! behaviour control time instead of waiting for it), field paths, and key hashing.

use std::sync::Arc;

#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> i64 + Send + Sync>);

impl Clock {
    pub fn system() -> Clock {
        Clock(Arc::new(|| chrono::Utc::now().timestamp_millis()))
    }

    pub fn from_fn(f: impl Fn() -> i64 + Send + Sync + 'static) -> Clock {
        Clock(Arc::new(f))
    }

    pub fn now(&self) -> i64 {
        (self.0)()
    }
}

/// Hash of the values of some fields (or of the whole event when `fields` is empty).
pub fn hash_fields(event: &crate::event::Event, fields: &[vrl::path::OwnedValuePath]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    if fields.is_empty() {
        event.value().hash(&mut hasher);
    }
    for path in fields {
        event.at(path).hash(&mut hasher);
    }
    hasher.finish()
}

/// Parses a field path written `a.b` or `.a.b`.
pub fn parse_path(field: &str) -> Result<vrl::path::OwnedValuePath, String> {
    let text = if field.starts_with('.') {
        field.to_string()
    } else {
        format!(".{field}")
    };
    vrl::path::parse_value_path(&text).map_err(|e| format!("invalid field path `{field}`: {e}"))
}

/// Parses an optional field path of a component config, naming the field on error.
pub fn optional_path(
    field: &'static str,
    value: Option<&str>,
) -> Result<Option<vrl::path::OwnedValuePath>, crate::topology::BuildError> {
    value
        .map(parse_path)
        .transpose()
        .map_err(|m| crate::topology::BuildError::new(field, m))
}

/// Parses a list of field paths of a component config, naming the field on error.
pub fn path_list(
    field: &'static str,
    values: &[String],
) -> Result<Vec<vrl::path::OwnedValuePath>, crate::topology::BuildError> {
    values
        .iter()
        .map(|v| parse_path(v))
        .collect::<Result<_, _>>()
        .map_err(|m| crate::topology::BuildError::new(field, m))
}
