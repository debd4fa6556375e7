//! The on-disk record format of the disk buffer, and the binary encoding of event batches.
//!
//! A record is `[payload length: u32 LE][CRC32C of payload: u32 LE][payload]`; one record holds
//! one batch. The payload is `[byte size: varint][event count: varint][value]*`, values tagged
//! so every VRL type survives the round trip (bytes that are not UTF-8, timestamps, integers vs
//! floats) — JSON would not.

use crate::event::{Event, EventBatch, KeyString, ObjectMap, Value};
use bytes::{Buf, BufMut, Bytes};
use chrono::{DateTime, Utc};

/// Header bytes before each payload.
pub const HEADER: usize = 8;
/// Largest payload accepted on read; a larger length field means corruption.
pub const MAX_PAYLOAD: usize = 256 << 20;

const NULL: u8 = 0;
const FALSE: u8 = 1;
const TRUE: u8 = 2;
const INTEGER: u8 = 3;
const FLOAT: u8 = 4;
const BYTES: u8 = 5;
const STRING: u8 = 6;
const TIMESTAMP: u8 = 7;
const ARRAY: u8 = 8;
const OBJECT: u8 = 9;

/// Appends one framed record holding `batch` to `out`; returns the record's length.
pub fn encode_record(batch: &EventBatch, out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    put_varint(out, batch.byte_size as u64);
    put_varint(out, batch.events.len() as u64);
    for event in &batch.events {
        put_value(out, event.value());
    }
    let payload_len = out.len() - start - HEADER;
    let crc = crc32c::crc32c(&out[start + HEADER..]);
    out[start..start + 4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    out.len() - start
}

/// What the bytes at an offset hold.
#[derive(Debug)]
pub enum Read {
    /// A valid record: its payload and total length (header included).
    Record(Bytes, usize),
    /// A complete record whose checksum does not match: skip `usize` bytes.
    BadChecksum(usize),
    /// The header or payload is cut short: a torn write at the end of a file.
    Incomplete,
    /// A length no record can have: nothing after this point can be trusted.
    BadLength(u32),
}

/// Parses the record at the start of `data`.
pub fn read_record(data: &Bytes) -> Read {
    if data.len() < HEADER {
        return Read::Incomplete;
    }
    let len = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
    let crc = u32::from_le_bytes([data[4], data[5], data[6], data[7]]);
    if len as usize > MAX_PAYLOAD {
        return Read::BadLength(len);
    }
    let total = HEADER + len as usize;
    if data.len() < total {
        return Read::Incomplete;
    }
    let payload = data.slice(HEADER..total);
    if crc32c::crc32c(&payload) != crc {
        return Read::BadChecksum(total);
    }
    Read::Record(payload, total)
}

/// A payload whose checksum matched but whose contents do not decode.
#[derive(Debug, thiserror::Error)]
#[error("undecodable buffer record: {0}")]
pub struct DecodeError(&'static str);

/// Decodes a record payload back into a batch (without finalizers).
pub fn decode_batch(mut payload: Bytes) -> Result<EventBatch, DecodeError> {
    let byte_size = get_varint(&mut payload)? as usize;
    let count = get_varint(&mut payload)? as usize;
    let mut events = Vec::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        events.push(Event::from(get_value(&mut payload, 0)?));
    }
    if payload.has_remaining() {
        return Err(DecodeError("trailing bytes"));
    }
    Ok(EventBatch::new(events, byte_size))
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn get_varint(buf: &mut Bytes) -> Result<u64, DecodeError> {
    let mut n = 0u64;
    for shift in (0..64).step_by(7) {
        if !buf.has_remaining() {
            return Err(DecodeError("truncated varint"));
        }
        let byte = buf.get_u8();
        n |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(n);
        }
    }
    Err(DecodeError("varint too long"))
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.push(NULL),
        Value::Boolean(false) => out.push(FALSE),
        Value::Boolean(true) => out.push(TRUE),
        Value::Integer(i) => {
            out.push(INTEGER);
            out.put_i64_le(*i);
        }
        Value::Float(f) => {
            out.push(FLOAT);
            out.put_f64_le(f.into_inner());
        }
        Value::Bytes(b) => {
            out.push(BYTES);
            put_bytes(out, b);
        }
        Value::String(s) => {
            out.push(STRING);
            put_bytes(out, s.as_bytes());
        }
        Value::Regex(r) => {
            // Regexes only exist inside VRL programs; keep their pattern as text.
            out.push(STRING);
            put_bytes(out, r.as_str().as_bytes());
        }
        Value::Timestamp(t) => {
            out.push(TIMESTAMP);
            out.put_i64_le(t.timestamp());
            out.put_u32_le(t.timestamp_subsec_nanos());
        }
        Value::Array(items) => {
            out.push(ARRAY);
            put_varint(out, items.len() as u64);
            for item in items {
                put_value(out, item);
            }
        }
        Value::Object(map) => {
            out.push(OBJECT);
            put_varint(out, map.len() as u64);
            for (key, item) in map {
                put_bytes(out, key.as_bytes());
                put_value(out, item);
            }
        }
    }
}

fn take(buf: &mut Bytes, len: u64) -> Result<Bytes, DecodeError> {
    let len = usize::try_from(len).map_err(|_| DecodeError("length overflow"))?;
    if buf.remaining() < len {
        return Err(DecodeError("truncated value"));
    }
    Ok(buf.split_to(len))
}

fn get_value(buf: &mut Bytes, depth: usize) -> Result<Value, DecodeError> {
    if depth > 128 {
        return Err(DecodeError("nesting too deep"));
    }
    if !buf.has_remaining() {
        return Err(DecodeError("truncated value"));
    }
    Ok(match buf.get_u8() {
        NULL => Value::Null,
        FALSE => Value::Boolean(false),
        TRUE => Value::Boolean(true),
        INTEGER => Value::Integer(take(buf, 8)?.get_i64_le()),
        FLOAT => {
            let f = take(buf, 8)?.get_f64_le();
            Value::Float(ordered_float(f)?)
        }
        BYTES => {
            let len = get_varint(buf)?;
            Value::Bytes(take(buf, len)?)
        }
        STRING => {
            let len = get_varint(buf)?;
            let raw = take(buf, len)?;
            let text =
                String::from_utf8(raw.to_vec()).map_err(|_| DecodeError("string is not UTF-8"))?;
            Value::from(text)
        }
        TIMESTAMP => {
            let mut raw = take(buf, 12)?;
            let secs = raw.get_i64_le();
            let nanos = raw.get_u32_le();
            let time: DateTime<Utc> = DateTime::from_timestamp(secs, nanos)
                .ok_or(DecodeError("timestamp out of range"))?;
            Value::Timestamp(time)
        }
        ARRAY => {
            let count = get_varint(buf)?;
            let mut items = Vec::with_capacity((count as usize).min(1 << 16));
            for _ in 0..count {
                items.push(get_value(buf, depth + 1)?);
            }
            Value::Array(items)
        }
        OBJECT => {
            let count = get_varint(buf)?;
            let mut map = ObjectMap::new();
            for _ in 0..count {
                let len = get_varint(buf)?;
                let key = take(buf, len)?;
                let key = std::str::from_utf8(&key).map_err(|_| DecodeError("key is not UTF-8"))?;
                map.insert(KeyString::from(key), get_value(buf, depth + 1)?);
            }
            Value::Object(map)
        }
        _ => return Err(DecodeError("unknown value tag")),
    })
}

fn ordered_float(f: f64) -> Result<vrl::prelude::NotNan<f64>, DecodeError> {
    vrl::prelude::NotNan::new(f).map_err(|_| DecodeError("NaN float"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> EventBatch {
        let json = r#"{"a":1,"b":2.5,"c":"text","d":[true,false,null],"e":{"nested":{"x":"y"}}}"#;
        let mut event = Event::from(serde_json::from_str::<Value>(json).unwrap());
        event.insert("raw", Value::Bytes(Bytes::from_static(b"\xff\x00bytes")));
        event.insert(
            "at",
            Value::Timestamp(DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap()),
        );
        EventBatch::new(vec![event, Event::from_message("second".into())], 321)
    }

    #[test]
    fn every_value_type_round_trips() {
        let batch = sample();
        let mut out = Vec::new();
        let len = encode_record(&batch, &mut out);
        assert_eq!(len, out.len());
        let Read::Record(payload, total) = read_record(&Bytes::from(out)) else {
            panic!("valid record")
        };
        assert_eq!(total, len);
        let decoded = decode_batch(payload).unwrap();
        assert_eq!(decoded.events, batch.events);
        assert_eq!(decoded.byte_size, 321);
    }

    #[test]
    fn corruption_and_torn_writes_are_detected() {
        let mut out = Vec::new();
        encode_record(&sample(), &mut out);
        let mut flipped = out.clone();
        flipped[HEADER + 5] ^= 0x40;
        assert!(
            matches!(read_record(&Bytes::from(flipped)), Read::BadChecksum(n) if n == out.len())
        );
        let torn = Bytes::from(out[..out.len() - 3].to_vec());
        assert!(matches!(read_record(&torn), Read::Incomplete));
        let mut huge = out.clone();
        huge[3] = 0xff;
        assert!(matches!(
            read_record(&Bytes::from(huge)),
            Read::BadLength(_)
        ));
    }
}
