//! Events as the `jsonschema` crate's instances, read in place: no conversion to
//! `serde_json::Value` per event (that conversion cost more than validating). Bytes,
//! strings, timestamps (RFC 3339) and regexes are JSON strings; integers and floats are numbers.

use crate::event::{ObjectMap, Value};
use jsonschema::json::{Array, Json, JsonNumber, Node, NodeIdentity, Object};
use jsonschema::types::JsonType;
use std::borrow::Cow;

/// The VRL value representation.
pub struct VrlJson;

impl Json for VrlJson {
    type Node<'a> = &'a Value;
    type PreparedKey = String;
    type StringBuffer = ();

    const ACYCLIC: bool = true;

    fn prepare_key(key: &str) -> String {
        key.to_owned()
    }

    fn with_string_node<T>((): &mut (), string: &str, f: impl FnOnce(&Value) -> T) -> T {
        // Only `propertyNames` asks for this: an allocation per name is fine there.
        f(&Value::from(string))
    }
}

/// A VRL number.
#[derive(Clone, Copy)]
pub enum Number {
    Integer(i64),
    Float(f64),
}

impl JsonNumber for Number {
    fn as_u64(&self) -> Option<u64> {
        match self {
            Number::Integer(i) => u64::try_from(*i).ok(),
            Number::Float(_) => None,
        }
    }

    fn as_i64(&self) -> Option<i64> {
        match self {
            Number::Integer(i) => Some(*i),
            Number::Float(_) => None,
        }
    }

    fn as_f64(&self) -> Option<f64> {
        Some(match self {
            Number::Integer(i) => *i as f64,
            Number::Float(f) => *f,
        })
    }

    fn as_str(&self) -> Cow<'_, str> {
        Cow::Owned(match self {
            Number::Integer(i) => i.to_string(),
            Number::Float(f) => f.to_string(),
        })
    }

    fn to_number(&self) -> Cow<'_, serde_json::Number> {
        Cow::Owned(match self {
            Number::Integer(i) => serde_json::Number::from(*i),
            Number::Float(f) => {
                serde_json::Number::from_f64(*f).unwrap_or_else(|| serde_json::Number::from(0))
            }
        })
    }

    fn is_integer(&self) -> bool {
        match self {
            Number::Integer(_) => true,
            Number::Float(f) => f.fract() == 0.0,
        }
    }

    fn is_written_as_integer(&self) -> bool {
        matches!(self, Number::Integer(_))
    }
}

impl<'a> Node<'a, VrlJson> for &'a Value {
    type Object = &'a ObjectMap;
    type Array = &'a [Value];
    type Number = Number;

    fn as_object(&self) -> Option<&'a ObjectMap> {
        match self {
            Value::Object(map) => Some(map),
            _ => None,
        }
    }

    fn as_array(&self) -> Option<&'a [Value]> {
        match self {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }

    fn as_string(&self) -> Option<Cow<'a, str>> {
        match self {
            Value::Bytes(bytes) => Some(String::from_utf8_lossy(bytes)),
            Value::String(string) => Some(Cow::Borrowed(&**string)),
            Value::Timestamp(t) => Some(Cow::Owned(
                t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            )),
            Value::Regex(regex) => Some(Cow::Owned(regex.to_string())),
            _ => None,
        }
    }

    fn as_number(&self) -> Option<Number> {
        match self {
            Value::Integer(i) => Some(Number::Integer(*i)),
            Value::Float(f) => Some(Number::Float(f.into_inner())),
            _ => None,
        }
    }

    fn as_boolean(&self) -> Option<bool> {
        match self {
            Value::Boolean(b) => Some(*b),
            _ => None,
        }
    }

    fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    fn json_type(&self) -> JsonType {
        match self {
            Value::Null => JsonType::Null,
            Value::Boolean(_) => JsonType::Boolean,
            Value::Integer(_) | Value::Float(_) => JsonType::Number,
            Value::Bytes(_) | Value::String(_) | Value::Timestamp(_) | Value::Regex(_) => {
                JsonType::String
            }
            Value::Array(_) => JsonType::Array,
            Value::Object(_) => JsonType::Object,
        }
    }

    fn to_value(&self) -> Cow<'a, serde_json::Value> {
        Cow::Owned(serde_json::to_value(*self).unwrap_or(serde_json::Value::Null))
    }

    fn identity(&self) -> Option<NodeIdentity> {
        Some(NodeIdentity::new(std::ptr::from_ref::<Value>(self) as usize))
    }
}

/// An object's members, names as `&str`.
pub struct Members<'a>(std::collections::btree_map::Iter<'a, crate::event::KeyString, Value>);

impl<'a> Iterator for Members<'a> {
    type Item = (&'a str, &'a Value);

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(|(name, value)| (name.as_str(), value))
    }
}

impl<'a> Object<'a, VrlJson> for &'a ObjectMap {
    type Node = &'a Value;
    type MemberName = &'a str;
    type MembersIter = Members<'a>;

    fn len(&self) -> usize {
        ObjectMap::len(self)
    }

    fn get(&self, key: &String) -> Option<&'a Value> {
        ObjectMap::get(self, key.as_str())
    }

    fn members(&self) -> Members<'a> {
        Members(self.iter())
    }
}

impl<'a> Array<'a, VrlJson> for &'a [Value] {
    type Node = &'a Value;
    type ElementsIter = std::slice::Iter<'a, Value>;

    fn len(&self) -> usize {
        <[Value]>::len(self)
    }

    fn elements(&self) -> std::slice::Iter<'a, Value> {
        self.iter()
    }
}
