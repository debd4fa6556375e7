//! JSON text into an event [`Value`], sharing the text's buffer.
//!
//! Both ways JSON enters an event go through [`parse`]: the sources' `json` decoding and the
//! VRL function `parse_json` (see `transforms::vrl_parse_json`). Each document is copied once
//! into its own buffer and checked to be UTF-8 as a whole; then a string without escapes
//! becomes a slice of that copy (a reference count: no allocation of its own). Only strings
//! with escapes and object keys are copied one by one. VRL's own deserializer allocates every
//! string, which was ~40% of the cycles of a `parse_json` remap (perf).
//! Numbers, `null`, booleans, arrays, duplicate keys (the last one wins) and every error come
//! out exactly as VRL's `Value` deserializer makes them.
//!
//! The slices keep their document alive as long as anything holds them; each document is
//! copied into its own buffer first, so that is never more than the document itself.

use super::{KeyString, ObjectMap, Value};
use bytes::Bytes;
use bytestring::ByteString;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;
use vrl::compiler::prelude::NotNan;

/// Parses one JSON document (surrounding whitespace allowed) into a [`Value`].
pub fn parse(text: &[u8]) -> Result<Value, serde_json::Error> {
    // A copy of the text first: a frame is a slice of the source's read buffer (256 KiB for a
    // file), and a string kept by a transform (reduce, window) would keep all of that alive.
    // Copied, a kept string holds at most its own document. One allocation, where copying
    // each string took one per string.
    let Ok(text) = ByteString::try_from(Bytes::copy_from_slice(text)) else {
        // Not UTF-8, so not JSON: VRL's deserializer names the error (and, were serde_json to
        // accept the text after all, gives the value VRL would).
        return serde_json::from_slice(text);
    };
    let mut deserializer = serde_json::Deserializer::from_str(&text);
    let value = SharedValue { text: &text }.deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(value)
}

/// Deserializes a value whose borrowed strings are slices of `text`.
#[derive(Clone, Copy)]
struct SharedValue<'a> {
    text: &'a ByteString,
}

impl<'a> DeserializeSeed<'a> for SharedValue<'a> {
    type Value = Value;

    fn deserialize<D: Deserializer<'a>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'a> Visitor<'a> for SharedValue<'a> {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Boolean(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::Integer(value))
    }

    fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Value, E> {
        match i64::try_from(value) {
            Ok(value) => Ok(Value::Integer(value)),
            // As VRL: an integer beyond i64 becomes the nearest float.
            Err(_) => self.visit_f64(value as f64),
        }
    }

    fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<Value, E> {
        NotNan::new(value)
            .map(Value::Float)
            .map_err(|_| E::invalid_value(serde::de::Unexpected::Float(value), &self))
    }

    fn visit_borrowed_str<E>(self, value: &'a str) -> Result<Value, E> {
        Ok(Value::String(self.text.slice_ref(value)))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'a>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'a>>(self, mut map: A) -> Result<Value, A::Error> {
        // Built at once rather than key by key: `BTreeMap::from_iter` sorts (stably, so the
        // last of duplicate keys wins, as with inserts) and fills its nodes in order, where
        // inserts search and shift a node for every key. 7% fewer instructions per decoded
        // event (callgrind); sorting a prefix index first, tried too, cost more than it saved.
        let mut entries = Vec::with_capacity(16);
        while let Some(key) = map.next_key::<KeyString>()? {
            entries.push((key, map.next_value_seed(self)?));
        }
        Ok(Value::Object(ObjectMap::from_iter(entries)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What VRL's own deserializer makes of `text`: the reference every case is held to.
    fn vrl(text: &str) -> Result<Value, String> {
        serde_json::from_str::<Value>(text).map_err(|e| e.to_string())
    }

    fn shared(text: &str) -> Result<Value, String> {
        parse(&Bytes::copy_from_slice(text.as_bytes())).map_err(|e| e.to_string())
    }

    #[test]
    fn same_values_and_errors_as_vrl() {
        for text in [
            r#"{"a":"x","b":1,"c":-2.5,"d":true,"e":null,"f":[1,"y",{"g":[]}],"h":{}}"#,
            r#"{"esc":"a\"b\\c\n\u00e9\ud83d\ude00","plain":"héllo"}"#,
            r#"{"dup":1,"dup":2}"#,
            r#"{"b":1,"a":2,"latency_ms_p99":3,"latency_ms_p50":4,"latency":5,"":6,"a":7}"#,
            r#"{"ab\u0000c":1,"ab":2,"ab\u0000":3,"\u00e9t\u00e9":4,"zz":{"y":1,"x":[{"w":2,"v":3}]}}"#,
            r#"{"big":18446744073709551615,"neg":-9223372036854775808,"exp":1e300}"#,
            r#"  [1, 2, "three"]  "#,
            r#""just a string""#,
            "42",
            "null",
            r#"{"a":"#,
            r#"{"a":1} trailing"#,
            r#"{"a":1e400}"#,
            "",
            // Numbers at every edge VRL's deserializer has.
            r#"[0,-0,-0.0,0.0,1E5,1e-5,-1.5e+3,9223372036854775807,9223372036854775808]"#,
            r#"[-9223372036854775808,-9223372036854775809,18446744073709551616,1e-400]"#,
            r#"[1.7976931348623157e308,5e-324,0.1,0.30000000000000004,123456789012345678901234]"#,
            r#"[01]"#,
            r#"[1.]"#,
            r#"[-]"#,
            r#"[.5]"#,
            r#"[NaN]"#,
            r#"[Infinity]"#,
            // Strings: escapes, surrogates, raw control characters.
            r#"["\ud83d"]"#,
            r#"["\ude00"]"#,
            r#"["\ud83dx"]"#,
            r#"["\x"]"#,
            "[\"tab\there\"]",
            "[\"nul\u{0}\"]",
            r#"{"a":1,}"#,
            r#"[1,]"#,
            r#"{"a" 1}"#,
            r#"{1:1}"#,
            "{\"a\":1}\n\t ",
            "tru",
            "nul",
            r#"{"k":[true,false,null,{}]}"#,
        ] {
            assert_eq!(shared(text), vrl(text), "{text}");
        }
    }

    #[test]
    fn nesting_beyond_serde_jsons_limit_is_its_error() {
        for depth in [127, 128, 129, 300] {
            let text = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
            assert_eq!(shared(&text), vrl(&text), "depth {depth}");
            let text = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
            assert_eq!(shared(&text), vrl(&text), "object depth {depth}");
        }
        assert!(vrl(&format!("{}1{}", "[".repeat(129), "]".repeat(129))).is_err());
    }

    #[test]
    fn random_numbers_come_out_as_vrl_makes_them() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..2000 {
            let bits = next();
            let text = match round % 4 {
                0 => format!("[{}]", f64::from_bits(bits)),
                1 => format!("[{:e}]", f64::from_bits(bits)),
                2 => format!("[{}]", bits as i64 >> (bits % 64)),
                _ => format!("[{}.{}e{}]", bits % 1000, next() % 100000, (next() % 700) as i64 - 350),
            };
            assert_eq!(shared(&text), vrl(&text), "round {round}: {text}");
        }
    }

    #[test]
    fn random_objects_come_out_as_vrl_makes_them() {
        // Keys that share long prefixes, are prefixes of each other, repeat, or hold NUL and
        // non-ASCII bytes: the cases where the eight-byte sort key alone cannot decide.
        let parts = ["a", "ab", "latency_", "ms", "\\u0000", "é", "zzzzzzzz", ""];
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        for round in 0..500 {
            let fields: Vec<String> = (0..next(20))
                .map(|i| {
                    let key: String = (0..1 + next(3)).map(|_| parts[next(parts.len())]).collect();
                    format!("\"{key}\":{i}")
                })
                .collect();
            let text = format!("{{{}}}", fields.join(","));
            assert_eq!(shared(&text), vrl(&text), "round {round}: {text}");
        }
    }

    #[test]
    fn invalid_utf8_in_a_string_is_an_error() {
        assert!(parse(&Bytes::from_static(b"{\"a\":\"\xff\"}")).is_err());
    }

    #[test]
    fn plain_strings_share_one_copy_of_the_document_not_the_callers_buffer() {
        let text = Bytes::from_static(br#"{"a":"abc","b":"def","c":"g\nh"}"#);
        let Value::Object(map) = parse(&text).unwrap() else {
            panic!("not an object")
        };
        let string = |key: &str| match map.get(key) {
            Some(Value::String(string)) => string.clone(),
            other => panic!("{key}: {other:?}"),
        };
        let (a, b, c) = (string("a"), string("b"), string("c"));
        assert_eq!((&a[..], &b[..], &c[..]), ("abc", "def", "g\nh"));
        let in_text = |s: &ByteString| text.as_ptr_range().contains(&s.as_ptr());
        assert!(
            !in_text(&a) && !in_text(&b),
            "a kept string must not hold the caller's (source's) buffer"
        );
        let offset = |needle: &[u8]| text.windows(needle.len()).position(|w| w == needle);
        assert_eq!(
            b.as_ptr() as usize - a.as_ptr() as usize,
            offset(b"def").unwrap() - offset(b"abc").unwrap(),
            "plain strings are slices of one copy of the document"
        );
    }
}
