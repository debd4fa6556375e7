//! Event values into JSON text: byte for byte what serde_json writes through VRL's
//! `Serialize` for [`Value`], in a fraction of the instructions.
//!
//! Why not serde_json: it escapes strings one byte at a time through a table, and goes through
//! serde's per-value calls. Writing the events of a `parse_json` remap, that was 20% of the
//! pipeline's instructions (callgrind: ~4,100 per 11-field event), half of it the escaping
//! loop. Here each string is first checked whole for the only bytes JSON escapes (`"`, `\`,
//! controls), sixteen or eight bytes at a time with the last step overlapping the one before
//! (so a short string is one or two steps, not a byte loop), and then copied in one piece:
//! ~3,200 instructions per event. Earlier writers that scanned chunk by chunk and finished
//! byte by byte were no cheaper than serde_json (README, Performance: "the JSON writer,
//! fields read from the text").
//!
//! Numbers are spelled by the crates serde_json itself uses (itoa, zmij), so integers and
//! floats come out identical; the tests and the `json_value` fuzz target hold every value kind
//! to serde_json's output.

use super::json::{special_byte, special_mask};
use super::Value;
use chrono::SecondsFormat;

/// Appends `value` as JSON, as `serde_json::to_writer(out, value)` would.
pub fn write_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::String(string) => write_str(string, out),
        Value::Object(map) => {
            out.push(b'{');
            for (index, (key, value)) in map.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_str(key, out);
                out.push(b':');
                write_value(value, out);
            }
            out.push(b'}');
        }
        Value::Integer(integer) => {
            out.extend_from_slice(itoa::Buffer::new().format(*integer).as_bytes())
        }
        Value::Float(float) => write_f64(float.into_inner(), out),
        Value::Boolean(true) => out.extend_from_slice(b"true"),
        Value::Boolean(false) => out.extend_from_slice(b"false"),
        Value::Null => out.extend_from_slice(b"null"),
        Value::Array(items) => {
            out.push(b'[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_value(item, out);
            }
            out.push(b']');
        }
        Value::Bytes(bytes) => write_str(&String::from_utf8_lossy(bytes), out),
        // VRL's `timestamp_to_string`.
        Value::Timestamp(timestamp) => {
            write_str(&timestamp.to_rfc3339_opts(SecondsFormat::AutoSi, true), out)
        }
        Value::Regex(regex) => write_str(regex.as_str(), out),
    }
}

/// serde_json's float: the shortest spelling that reads back the same, `null` if not finite.
fn write_f64(float: f64, out: &mut Vec<u8>) {
    if float.is_finite() {
        out.extend_from_slice(zmij::Buffer::new().format_finite(float).as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

/// Appends `string` quoted, escaped as serde_json escapes: `\"`, `\\`, the short forms of
/// backspace, tab, line feed, form feed and carriage return, `\u00xx` for other controls;
/// everything else (DEL and all of Unicode) as it is.
pub fn write_str(string: &str, out: &mut Vec<u8>) {
    let bytes = string.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    if !has_special(bytes) {
        // Nearly every string of an event: checked whole, copied whole.
        out.extend_from_slice(bytes);
    } else {
        let mut done = 0;
        while let Some(at) = special_byte(bytes, done) {
            out.extend_from_slice(&bytes[done..at]);
            write_escape(bytes[at], out);
            done = at + 1;
        }
        out.extend_from_slice(&bytes[done..]);
    }
    out.push(b'"');
}

/// Whether `bytes` holds a `"`, `\` or control character. Most strings of events are short
/// (keys, levels, hosts): sixteen bytes at a time, the last sixteen overlapping the chunk
/// before; eight and eight for shorter ones; a table for the shortest.
fn has_special(bytes: &[u8]) -> bool {
    let len = bytes.len();
    if len >= 16 {
        let chunk = |at: usize| -> &[u8; 16] { bytes[at..at + 16].try_into().expect("sixteen") };
        let mut at = 0;
        while at + 16 <= len {
            if special_mask(chunk(at)) != 0 {
                return true;
            }
            at += 16;
        }
        return at < len && special_mask(chunk(len - 16)) != 0;
    }
    if len >= 8 {
        let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("eight"));
        return word_has_special(word(0)) || word_has_special(word(len - 8));
    }
    bytes.iter().any(|&b| SPECIAL[usize::from(b)])
}

/// Whether any byte of `word` is `"`, `\` or below 0x20 (exact as a whole, though not which
/// byte: the borrow of the subtraction may mark the byte after a hit).
fn word_has_special(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let below = |x: u64, n: u64| x.wrapping_sub(ONES * n) & !x & HIGHS;
    (below(word, 0x20) | below(word ^ (ONES * 0x22), 1) | below(word ^ (ONES * 0x5c), 1)) != 0
}

/// The bytes JSON escapes.
static SPECIAL: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = true;
        byte += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

fn write_escape(byte: u8, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let short = match byte {
        b'"' => b'"',
        b'\\' => b'\\',
        0x08 => b'b',
        b'\t' => b't',
        b'\n' => b'n',
        0x0c => b'f',
        b'\r' => b'r',
        _ => {
            let long = [
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 0xf)],
            ];
            out.extend_from_slice(&long);
            return;
        }
    };
    out.extend_from_slice(&[b'\\', short]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ObjectMap;
    use bytes::Bytes;
    use chrono::TimeZone;
    use vrl::compiler::prelude::NotNan;

    fn written(value: &Value) -> String {
        let mut out = Vec::new();
        write_value(value, &mut out);
        String::from_utf8(out).expect("the writer writes UTF-8")
    }

    fn serde_json(value: &Value) -> String {
        serde_json::to_string(value).unwrap()
    }

    #[test]
    fn every_kind_of_value_is_written_as_serde_json_writes_it() {
        let every_control: String = (0u8..0x20).map(char::from).collect();
        let float = |f: f64| Value::Float(NotNan::new(f).unwrap());
        let values = vec![
            Value::from(""),
            Value::from("plain"),
            Value::from(every_control.as_str()),
            Value::from("quote \" backslash \\ slash / del \u{7f} é 漢 🦀"),
            Value::from("a string longer than sixteen bytes with \"quotes\" and\ttabs past them\n"),
            Value::Bytes(Bytes::from_static(b"not utf-8: \xff\xfe, then \"text\"")),
            Value::Integer(0),
            Value::Integer(i64::MIN),
            Value::Integer(i64::MAX),
            float(0.0),
            float(-0.0),
            float(1.5),
            float(420.51),
            float(1e300),
            float(-2.5e-308),
            float(f64::INFINITY),
            float(f64::NEG_INFINITY),
            float(f64::MIN_POSITIVE),
            Value::Boolean(true),
            Value::Boolean(false),
            Value::Null,
            Value::Timestamp(
                chrono::Utc
                    .timestamp_opt(1_767_225_600, 123_456_000)
                    .unwrap(),
            ),
            Value::Timestamp(chrono::Utc.timestamp_opt(0, 0).unwrap()),
            Value::Regex(regex::Regex::new(r#"^a\d+"$"#).unwrap().into()),
            Value::Array(vec![]),
            Value::Object(ObjectMap::new()),
        ];
        for value in &values {
            assert_eq!(written(value), serde_json(value), "{value:?}");
        }
        let nested = Value::Object(ObjectMap::from_iter([
            ("all".into(), Value::Array(values.clone())),
            ("key with \"escapes\"\n".into(), Value::Integer(1)),
            (
                "inner".into(),
                Value::Object(ObjectMap::from_iter([(
                    "x".into(),
                    Value::Array(vec![Value::Null]),
                )])),
            ),
        ]));
        assert_eq!(written(&nested), serde_json(&nested));
    }

    #[test]
    fn every_byte_in_every_position_is_found_and_escaped_as_serde_json_escapes_it() {
        // Each byte before, inside and after a sixteen-byte chunk, in strings of each length
        // up to two chunks: the chunked scan and the byte loop after it both see it.
        for len in 1..=33 {
            for at in 0..len {
                for byte in 0u8..=0xff {
                    let mut text = vec![b'a'; len];
                    text[at] = byte;
                    let escaped = byte == b'"' || byte == b'\\' || byte < 0x20;
                    assert_eq!(
                        has_special(&text),
                        escaped,
                        "len {len} at {at} byte {byte:#x}"
                    );
                    if byte >= 0x80 {
                        continue; // not UTF-8 alone
                    }
                    let value = Value::from(String::from_utf8(text).unwrap());
                    assert_eq!(
                        written(&value),
                        serde_json(&value),
                        "len {len} at {at} byte {byte:#x}"
                    );
                }
            }
        }
    }
}
