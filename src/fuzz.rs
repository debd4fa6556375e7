//! Fuzz targets: each takes arbitrary bytes and drives one parser of what comes from outside
//! (lines, JSON, compressed bodies, config files) or what is read back from our own disk
//! (buffer records, checkpoint files, objects decoded for dead letters), checking invariants
//! that must hold for *any* input. A panic, an abort or a hang in one of them is a bug.
//!
//! `tests/suite/fuzz.rs` runs them with a seeded random mutator (any toolchain; CI runs each
//! briefly), and `scripts/fuzz.sh TARGET SECONDS` runs one for longer, coverage-guided with
//! libFuzzer through `cargo fuzz` (the harnesses in `fuzz/`). Inputs that once broke a target
//! live in `tests/fuzz/regressions/<target>/` and are replayed on every run.

use crate::buffer::disk::record;
use crate::codec::compression::{decompress, Compression, DecompressError};
use crate::codec::decoding::{
    decode_frame, Decoder, DecodingCodec, DecodingConfig, OnDecodeError, Values,
};
use crate::codec::encoding::{Encoder, EncodingCodec};
use crate::codec::framing::{Frame, LineFramer, Oversize};
use crate::config::Config;
use crate::observe::ComponentMetrics;
use bytes::{Bytes, BytesMut};

/// A fuzz target: name and the function that takes one input.
pub type Target = (&'static str, fn(&[u8]));

/// Every in-process target, by name.
pub const TARGETS: &[Target] = &[
    ("lines_json", lines_json),
    ("json_value", json_value),
    ("remap_text", remap_text),
    ("decompress", decompress_body),
    ("config", config),
    ("buffer_record", buffer_record),
    ("checkpoint", checkpoint),
    ("dead_letter_object", dead_letter_object),
];

/// Runs target `name` on one input (for the libFuzzer harnesses in `fuzz/`).
pub fn run(name: &str, data: &[u8]) {
    match TARGETS.iter().find(|(n, _)| *n == name) {
        Some((_, target)) => target(data),
        None => panic!("no fuzz target {name}"),
    }
}

/// The first byte as settings, the rest as data.
fn split(data: &[u8]) -> (u8, &[u8]) {
    match data.split_first() {
        Some((first, rest)) => (*first, rest),
        None => (0, &[]),
    }
}

/// One JSON document into an event value: exactly VRL's deserializer's value or error, whether
/// parsed (`parse_json`), read by a source, or checked and kept as text to be built later;
/// kept text is one line and reads back as the same value, and its fields read one by one (where
/// noted) make that value too. The value written back out
/// (`json_writer`) is byte for byte what serde_json writes.
fn json_value(data: &[u8]) {
    use crate::event::json;
    let shown = String::from_utf8_lossy(data);
    let vrl = serde_json::from_slice::<crate::event::Value>(data).map_err(|e| e.to_string());
    let ours = json::parse(data).map_err(|e| e.to_string());
    assert_eq!(ours, vrl, "{shown:?}");
    if let Ok(value) = &ours {
        let mut written = Vec::new();
        crate::event::json_writer::write_value(value, &mut written);
        let expected = serde_json::to_vec(value).expect("a value serializes");
        assert_eq!(
            String::from_utf8_lossy(&written),
            String::from_utf8_lossy(&expected),
            "written value of {shown:?}"
        );
    }
    for reading in [
        json::Reading::Value,
        json::Reading::Text,
        json::Reading::TextAndFields,
    ] {
        let read = match json::read(data, reading) {
            Ok(json::Document::Value(built)) => Ok(built),
            Ok(json::Document::Text { text, fields }) => {
                assert_ne!(reading, json::Reading::Value, "text kept unasked");
                match &fields {
                    // Each field read on its own makes the same object (the last key wins).
                    Some(fields) => {
                        let mut object = crate::event::ObjectMap::new();
                        for field in fields {
                            object.insert(field.key(&text).into(), field.value(&text));
                        }
                        let built = json::build(&text);
                        assert_eq!(
                            crate::event::Value::Object(object),
                            built,
                            "fields of {text:?}"
                        );
                    }
                    None if reading == json::Reading::TextAndFields => {
                        assert!(
                            text.contains('\\'),
                            "fields not noted though no key has escapes: {text:?}"
                        )
                    }
                    None => {}
                }
                assert!(
                    reading == json::Reading::TextAndFields || fields.is_none(),
                    "fields noted unasked"
                );
                assert!(text.starts_with('{') && text.ends_with('}'), "{text:?}");
                assert!(
                    !text.contains(['\n', '\r']),
                    "kept text of {shown:?} is not one line"
                );
                let again = serde_json::from_str::<crate::event::Value>(&text);
                assert_eq!(again.map_err(|e| e.to_string()), vrl, "kept text {text:?}");
                Ok(json::build(&text))
            }
            Err(error) => Err(error.to_string()),
        };
        assert_eq!(read, vrl, "read ({reading:?}) of {shown:?}");
    }
}

/// The remap transform's text plan on any input: where it makes an event, the program (VRL)
/// makes the same one from the same event, the event written as JSON reads back as that
/// value, and its fields read from the text are that value's. The first byte picks the
/// program (and, from 128 on, a field the source added); the rest is the message a
/// `parse_json` program parses, or the JSON a source decoded for one that edits the event.
fn remap_text(data: &[u8]) {
    use crate::event::{json, Event, KeyString, ObjectMap, Value};
    use crate::transforms::remap_text::TextPlan;
    use crate::transforms::vrl_program::{compile, Runner};
    use std::sync::OnceLock;
    const PROGRAMS: &[&str] = &[
        ". = parse_json!(.message)",
        ". = parse_json!(.message); .pipeline = \"p\"; del(.trace_id)",
        ". = parse_json!(.message); del(.a); .b = 1; .a = null; del(.c); .c = 2.5; .c = true",
        ". = parse_json!(.message); del(.a); del(.b); del(.\"\"); .\"é\" = s'x'",
        ".pipeline = \"p\"; del(.trace_id)",
        "del(.a); .b = 1; .a = null; del(.c); .c = 2.5; del(.file)",
    ];
    static COMPILED: OnceLock<Vec<(TextPlan, vrl::compiler::Program)>> = OnceLock::new();
    let compiled = COMPILED.get_or_init(|| {
        (PROGRAMS.iter())
            .map(|source| {
                let plan = TextPlan::of(source).expect("of the plan's shape");
                (plan, compile("fuzz", source).expect("compiles"))
            })
            .collect()
    });
    let (choice, message) = split(data);
    let (plan, program) = &compiled[usize::from(choice) % compiled.len()];
    let event = match plan.edits_text() {
        true => match json::read(message, json::Reading::TextAndFields) {
            Ok(document) => Event::from_document(document),
            Err(_) => return,
        },
        false => Event::from(Value::Object(ObjectMap::from([(
            KeyString::from("message"),
            Value::Bytes(Bytes::copy_from_slice(message)),
        )]))),
    };
    let mut event = event;
    if choice >= 128 {
        event.insert("file", "/var/log/app.log");
    }
    let mut by_vrl = event.clone();
    let Ok(made) = plan.apply(event) else {
        return;
    };
    let shown = String::from_utf8_lossy(message);
    Runner::default()
        .run(program, by_vrl.value_mut())
        .unwrap_or_else(|error| panic!("the plan made an event, VRL failed: {error}: {shown:?}"));
    let expected = by_vrl.into_value();
    assert_made_as_vrl(made, &expected, &shown);
}

/// Checks an event the remap transform's text plan made against the value the program made of
/// the same input (`shown` in messages): each field read from its text, its JSON written and
/// read back, and its value. Also what the plan's unit tests check.
pub(crate) fn assert_made_as_vrl(
    made: crate::event::Event,
    expected: &crate::event::Value,
    shown: &str,
) {
    use crate::event::Value;
    let Value::Object(map) = expected else {
        panic!("the plan made an object, VRL {expected:?}: {shown}")
    };
    // Read before anything builds the value (the last of a repeated key counts).
    let fields = made.fields().expect("kept as text, fields noted");
    for index in 0..fields.len() {
        let key = fields.key(index);
        if (index + 1..fields.len()).all(|later| !fields.key_is(later, key)) {
            assert_eq!(
                map.get(key),
                Some(&*fields.value(index)),
                "{key} of {shown}"
            );
        }
    }
    let mut written = Vec::new();
    made.write_json(&mut written);
    let read: Value = serde_json::from_slice(&written).expect("written JSON reads");
    assert_eq!(
        &read,
        expected,
        "written {:?} of {shown}",
        String::from_utf8_lossy(&written)
    );
    assert_eq!(made.value(), expected, "{shown}");
}

/// Newline framing (cut into chunks at arbitrary points, as reads arrive) and JSON decoding
/// under each `on_error` policy: `pass_raw` keeps every frame, `drop` never invents events;
/// where fields are noted, reading them from the text gives the event's value.
fn lines_json(data: &[u8]) {
    let (settings, data) = split(data);
    let max_line = if settings & 1 == 0 { 16 } else { 4096 };
    let oversize = if settings & 2 == 0 {
        Oversize::Truncate
    } else {
        Oversize::Drop
    };
    let on_error = if settings & 4 == 0 {
        OnDecodeError::Drop
    } else {
        OnDecodeError::PassRaw
    };
    let values = match (settings & 0x80 != 0, settings & 0x40 != 0) {
        (false, _) => Values::Built,
        (true, false) => Values::OnDemand,
        (true, true) => Values::Fields,
    };
    let decoder = Decoder::new(
        &DecodingConfig {
            codec: DecodingCodec::Json,
            on_error: Some(on_error),
        },
        values,
    );
    let metrics = ComponentMetrics::new("fuzz", "file");
    let mut framer = LineFramer::new(max_line, oversize);
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    let mut framed_bytes = 0usize;
    let chunk = usize::from(settings >> 3).max(1);
    for piece in data.chunks(chunk) {
        buf.extend_from_slice(piece);
        while let Some(frame) = framer.next(&mut buf) {
            let line = match frame {
                Frame::Line(line) | Frame::Truncated(line) => line,
                Frame::Dropped => continue,
            };
            assert!(line.len() <= max_line, "a frame longer than max_line_bytes");
            framed_bytes += line.len();
            let failed = decoder.decode(&line, &mut Vec::new()).is_err();
            let before = events.len();
            decode_frame(&decoder, on_error, line, &mut events, &metrics);
            for event in &events[before..] {
                // Fields read from the text, one by one, are the value's.
                let Some(fields) = event.fields() else {
                    continue;
                };
                let mut read = crate::event::ObjectMap::new();
                for index in 0..fields.len() {
                    let key = fields.key(index);
                    let value = fields.get(key).expect("a key the text holds").into_owned();
                    read.insert(key.into(), value);
                }
                assert_eq!(&crate::event::Value::Object(read), event.value());
            }
            if failed {
                // A frame that does not decode is kept whole (pass_raw) or dropped (drop).
                let kept = usize::from(on_error == OnDecodeError::PassRaw);
                assert_eq!(events.len() - before, kept, "on_error {on_error:?}");
            }
        }
    }
    assert!(
        framed_bytes <= data.len(),
        "frames hold more bytes than came in"
    );
}

/// gzip and zstd bodies never inflate past the limit, whatever they claim.
fn decompress_body(data: &[u8]) {
    const LIMIT: usize = 64 * 1024;
    let (settings, data) = split(data);
    let encoding = ["gzip", "zstd", "x-gzip", "identity", "br"][usize::from(settings) % 5];
    let body = Bytes::copy_from_slice(data);
    match decompress(Some(encoding), body, LIMIT) {
        Ok(out) if encoding != "identity" => assert!(out.len() <= LIMIT, "inflated past the limit"),
        Ok(out) => assert_eq!(out.len(), data.len()),
        Err(DecompressError::Unsupported(_)) => assert_eq!(encoding, "br"),
        Err(_) => {}
    }
    // What we compress, we read back.
    let compression = [Compression::Gzip, Compression::Zstd][usize::from(settings) % 2];
    let packed = compression
        .compress(data)
        .expect("compressing memory cannot fail");
    let name = compression.content_encoding().unwrap_or("identity");
    let back = decompress(Some(name), Bytes::from(packed.into_owned()), data.len())
        .expect("our own compressed body reads back");
    assert_eq!(&back[..], data);
}

/// Config text through loading (YAML, `${VAR}` and `${file:...}` interpolation) and graph
/// validation: errors, never a panic or a hang (a secret file is read up to 1 MiB).
fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(config) = Config::load_str("fuzz.yaml", &text) {
        let _ = config.graph();
    }
}

/// Disk buffer records: any bytes either read as a record or are named as damage; a record
/// that decodes re-encodes to the same events.
fn buffer_record(data: &[u8]) {
    let data = Bytes::copy_from_slice(data);
    match record::read_record(&data) {
        record::Read::Record(payload, total) => {
            assert!(total <= data.len());
            check_payload(payload);
        }
        record::Read::BadChecksum(total) => assert!(total <= data.len()),
        record::Read::Incomplete | record::Read::BadLength(_) => {}
    }
    // The payload decoder on its own (as if the checksum had matched).
    check_payload(data);
}

fn check_payload(payload: Bytes) {
    if let Ok(batch) = record::decode_batch(payload) {
        let mut encoded = Vec::new();
        record::encode_record(&batch, &mut encoded);
        let record::Read::Record(again, _) = record::read_record(&Bytes::from(encoded)) else {
            panic!("a record we wrote does not read back");
        };
        let again = record::decode_batch(again).expect("a record we wrote decodes");
        assert_eq!(again.events, batch.events, "round trip changed the events");
    }
}

/// Checkpoint files of the file and Kinesis sources: damage is an error, never a panic.
fn checkpoint(data: &[u8]) {
    let _ = crate::sources::file::parse_checkpoints(data);
    let _ = crate::sources::aws_kinesis::parse_checkpoints(data);
}

/// Objects decoded back into events for a dead-letter output (Parquet, and NDJSON/JSON/text
/// under gzip, zstd or none).
fn dead_letter_object(data: &[u8]) {
    let (settings, data) = split(data);
    let encoder = match settings % 4 {
        0 => crate::sinks::aws_s3::encode::ObjectEncoder::Lines(
            Encoder {
                codec: EncodingCodec::Ndjson,
            },
            [Compression::None, Compression::Gzip, Compression::Zstd]
                [usize::from(settings >> 2) % 3],
        ),
        1 => crate::sinks::aws_s3::encode::ObjectEncoder::Lines(
            Encoder {
                codec: EncodingCodec::Json,
            },
            Compression::None,
        ),
        2 => crate::sinks::aws_s3::encode::ObjectEncoder::Lines(
            Encoder {
                codec: EncodingCodec::Text,
            },
            Compression::Gzip,
        ),
        _ => {
            let _ = crate::sinks::aws_s3::parquet::decode(data);
            return;
        }
    };
    let _ = encoder.decode(data);
}
