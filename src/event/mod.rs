//! Events and batches: the unit of data moving through a topology.
//!
//! An event is VRL's own [`Value`] tree, so the remap transform works on events in place
//! without converting them. Events always travel in [`EventBatch`]es: per-event channel sends
//! are what make agents slow. Acknowledgement handles ride on the batch (see [`finalizer`]).

pub mod finalizer;
pub mod json;
pub mod json_writer;

use bytes::Bytes;
use bytestring::ByteString;
pub use finalizer::{BatchNotifier, BatchStatus, Finalizers, SourcePosition};
use std::borrow::Cow;
use std::sync::OnceLock;
use vrl::path::{OwnedSegment, OwnedValuePath};
pub use vrl::value::{KeyString, ObjectMap, Value};

/// The field a source puts raw line bytes into, and the `text` codec writes out.
pub const MESSAGE_KEY: &str = "message";

/// One event: a JSON-like value tree (usually an object), or the JSON text of one that
/// nothing has asked to see yet.
///
/// A source whose events only go to sinks that write them as JSON keeps each decoded object
/// as its checked text (see `codec::decoding::Values`): its value is built only if something
/// asks ([`Event::value`]), and a JSON sink writes the text as it came ([`Event::write_json`]),
/// top-level fields the source added after it. Where consumers read top-level fields
/// (templates, keys, columns), the source also notes where each sits in the text, and
/// [`Event::field`] / [`Event::fields`] read them from there without building the value. Any
/// other change (`value_mut`) turns the event into its value for good, so what is written is
/// always the event as it is.
#[derive(Clone)]
pub struct Event {
    repr: Repr,
}

#[derive(Clone)]
enum Repr {
    /// The value tree: every event built at its source, and every event something changed.
    Value(Value),
    /// An object kept as its text. Boxed so that built events, the most, stay as small as a
    /// value.
    Text(Box<Text>),
}

/// An object kept as text, and what has been added to it since.
#[derive(Clone)]
struct Text {
    /// The document, trimmed and on one line, which the reader has checked it reads.
    json: ByteString,
    /// Top-level fields set (`insert`) since, in order; written after the text, so the last of
    /// a repeated key wins, in the value as in any JSON reader.
    added: Vec<(KeyString, Value)>,
    /// The value, once something has asked for it.
    value: OnceLock<Value>,
    /// Where the text's top-level fields are, if the source noted them: what
    /// [`Event::field`] and [`Event::fields`] read without building the value.
    fields: Option<Vec<json::FieldAt>>,
}

impl Text {
    /// Adds a field after the text, and sets it in the value if that is built. Out of line:
    /// `Event::insert` is inlined into the sources' per-event loops, most of whose events
    /// never take this path.
    #[inline(never)]
    fn insert(&mut self, key: KeyString, value: Value) {
        if let Some(Value::Object(map)) = self.value.get_mut() {
            map.insert(key.clone(), value.clone());
        }
        self.added.push((key, value));
    }

    fn value(&self) -> &Value {
        self.value.get_or_init(|| {
            let mut value = json::build(&self.json);
            if let Value::Object(map) = &mut value {
                for (key, field) in &self.added {
                    map.insert(key.clone(), field.clone());
                }
            }
            value
        })
    }
}

impl Event {
    /// An event `{ "message": bytes }` for a raw line, kept as bytes until something needs structure.
    pub fn from_message(bytes: Bytes) -> Self {
        let mut map = ObjectMap::new();
        map.insert(KeyString::from(MESSAGE_KEY), Value::Bytes(bytes));
        Event::from(Value::Object(map))
    }

    /// An event decoded from JSON: [`json::read`]'s document (a value, or a text).
    pub fn from_document(document: json::Document) -> Self {
        match document {
            json::Document::Value(value) => Event::from(value),
            json::Document::Text { text, fields } => Event {
                repr: Repr::Text(Box::new(Text {
                    json: text,
                    added: Vec::new(),
                    value: OnceLock::new(),
                    fields,
                })),
            },
        }
    }

    /// The event's value, built from its text on first use if the source kept only that.
    #[inline]
    pub fn value(&self) -> &Value {
        match &self.repr {
            Repr::Value(value) => value,
            Repr::Text(text) => text.value(),
        }
    }

    /// The value to change: an event kept as text becomes its value for good.
    #[inline]
    pub fn value_mut(&mut self) -> &mut Value {
        if let Repr::Text(text) = &mut self.repr {
            text.value();
            let value = text.value.take().expect("built above");
            self.repr = Repr::Value(value);
        }
        match &mut self.repr {
            Repr::Value(value) => value,
            Repr::Text(_) => unreachable!("turned into its value above"),
        }
    }

    /// The value, taken out of the event.
    pub fn into_value(self) -> Value {
        match self.repr {
            Repr::Value(value) => value,
            Repr::Text(text) => {
                text.value();
                text.value.into_inner().expect("built above")
            }
        }
    }

    /// Writes the event as one line of JSON (no newline): the text it came as and the fields
    /// added since if it was kept as text, else its value (as serde_json writes it; see
    /// [`json_writer`]).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let text = match &self.repr {
            Repr::Value(value) => return json_writer::write_value(value, out),
            Repr::Text(text) => text,
        };
        // The text is an object: `{`, its fields, `}`.
        let open = &text.json.as_bytes()[..text.json.len() - 1];
        out.extend_from_slice(open);
        let mut empty = open.trim_ascii_end() == b"{";
        for (key, value) in &text.added {
            if !std::mem::take(&mut empty) {
                out.push(b',');
            }
            json_writer::write_str(key, out);
            out.push(b':');
            json_writer::write_value(value, out);
        }
        out.push(b'}');
    }

    /// Sets a top-level field (no-op on non-object events). An event kept as text stays so,
    /// the field added after its text (and set in its value, if that is built).
    #[inline]
    pub fn insert(&mut self, key: &str, value: impl Into<Value>) {
        match &mut self.repr {
            Repr::Value(Value::Object(map)) => {
                map.insert(KeyString::from(key), value.into());
            }
            Repr::Value(_) => {}
            Repr::Text(text) => text.insert(KeyString::from(key), value.into()),
        }
    }

    /// Edits an event kept as text whose fields its source noted (and whose value nothing has
    /// built) as text: the top-level fields named in `cut` leave it (from the text, and from
    /// the fields added since), then `set` is added after it. `false`, having changed nothing,
    /// for any other event. What the remap transform's text plan does (see
    /// `transforms::remap_text`); the event's value is as if each field had been deleted and
    /// set in it.
    pub fn edit_text(&mut self, cut: &[KeyString], set: &[(KeyString, Value)]) -> bool {
        let Repr::Text(text) = &mut self.repr else {
            return false;
        };
        let Some(fields) = text
            .fields
            .as_deref()
            .filter(|_| text.value.get().is_none())
        else {
            return false;
        };
        // An object of more than 64 fields is left to the value.
        let Some(gone) = json::fields_named(&text.json, fields, cut) else {
            return false;
        };
        if gone != 0 {
            let (json, fields) =
                json::without_fields(&text.json, fields, |index| gone & 1 << index == 0);
            text.json = json;
            text.fields = Some(fields);
        }
        if !text.added.is_empty() {
            text.added.retain(|(key, _)| !cut.contains(key));
        }
        text.added.extend(set.iter().cloned());
        true
    }

    /// The value at `path`, as VRL's `Value::get` finds it. A top-level field (what most
    /// configured paths name) is one map lookup, where VRL's general path walk costs ~15% more
    /// (callgrind: ~290 against ~335 instructions in an 11-field event; both search the
    /// object's keys in order). Components read configured fields through this.
    #[inline]
    pub fn at(&self, path: &OwnedValuePath) -> Option<&Value> {
        match (self.value(), path.segments.as_slice()) {
            (Value::Object(map), [OwnedSegment::Field(key)]) => map.get(key),
            (value, _) => value.get(path),
        }
    }

    /// Reads a top-level field.
    #[inline]
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self.value() {
            Value::Object(map) => map.get(key),
            _ => None,
        }
    }

    /// The event's top-level fields as its text holds them, where its source noted them and
    /// nothing has built its value: read one by one, without building the object (no keys
    /// allocated, no map). `None` for any other event: read its value.
    #[inline]
    pub fn fields(&self) -> Option<Fields<'_>> {
        match &self.repr {
            Repr::Text(text) if text.value.get().is_none() => Some(Fields {
                text,
                indexed: text.fields.as_deref()?,
            }),
            _ => None,
        }
    }

    /// A top-level field, read from the text where the source noted its fields (see
    /// [`Event::fields`]), else looked up in the value.
    pub fn field(&self, key: &str) -> Option<Cow<'_, Value>> {
        match self.fields() {
            Some(fields) => fields.get(key),
            None => self.get(key).map(Cow::Borrowed),
        }
    }

    /// The value at `path` ([`Event::at`]), a top-level field read as [`Event::field`] reads
    /// it: what templates and configured columns read.
    pub fn field_at(&self, path: &OwnedValuePath) -> Option<Cow<'_, Value>> {
        match path.segments.as_slice() {
            [OwnedSegment::Field(key)] => self.field(key),
            _ => self.at(path).map(Cow::Borrowed),
        }
    }

    /// The value at `path` if it is a top-level string without escapes in the text the event
    /// is kept as: a slice of it, where [`Event::field_at`] would make a value sharing the text
    /// (two atomic counts, and a copy as it is written out). `None` otherwise: read
    /// [`Event::field_at`].
    pub fn plain_str_at(&self, path: &OwnedValuePath) -> Option<&str> {
        match path.segments.as_slice() {
            [OwnedSegment::Field(key)] => self.fields()?.plain_str_named(key),
            _ => None,
        }
    }
}

/// The top-level fields of an event kept as text: those of the text in its order, then those
/// added since. A key may repeat (the last one counts, as in the value).
pub struct Fields<'a> {
    text: &'a Text,
    indexed: &'a [json::FieldAt],
}

impl<'a> Fields<'a> {
    pub fn len(&self) -> usize {
        self.indexed.len() + self.text.added.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The key of field `index`.
    pub fn key(&self, index: usize) -> &'a str {
        match self.indexed.get(index) {
            Some(at) => at.key(&self.text.json),
            None => &self.text.added[index - self.indexed.len()].0,
        }
    }

    /// Whether the key of field `index` is `key`, compared without making the key a `str`.
    #[inline]
    pub fn key_is(&self, index: usize, key: &str) -> bool {
        match self.indexed.get(index) {
            Some(at) => at.key_is(&self.text.json, key),
            None => self.text.added[index - self.indexed.len()].0.as_str() == key,
        }
    }

    /// The value of field `index` if it is a plain string, borrowed (no value made): one the
    /// text holds without escapes, or an added string that is UTF-8 (a file source's path).
    pub fn plain_str(&self, index: usize) -> Option<&'a str> {
        match self.indexed.get(index) {
            Some(at) => at.plain_str(&self.text.json),
            None => match &self.text.added[index - self.indexed.len()].1 {
                Value::Bytes(bytes) => std::str::from_utf8(bytes).ok(),
                Value::String(string) => Some(string),
                _ => None,
            },
        }
    }

    /// The value of field `index` if it is a number the text makes an integer of (see
    /// [`json::FieldAt::integer`]).
    #[inline]
    pub fn integer(&self, index: usize) -> Option<i64> {
        self.indexed.get(index)?.integer(&self.text.json)
    }

    /// The value of field `index` as a float if it is a number in the text (see
    /// [`json::FieldAt::float`]).
    #[inline]
    pub fn float(&self, index: usize) -> Option<f64> {
        self.indexed.get(index)?.float(&self.text.json)
    }

    /// The value of field `index`, read from the text (strings are slices of it).
    pub fn value(&self, index: usize) -> Cow<'a, Value> {
        match self.indexed.get(index) {
            Some(at) => Cow::Owned(at.value(&self.text.json)),
            None => Cow::Borrowed(&self.text.added[index - self.indexed.len()].1),
        }
    }

    /// The value of the last field named `key`: an added field, else the text's.
    pub fn get(&self, key: &str) -> Option<Cow<'a, Value>> {
        if let Some((_, value)) = self.text.added.iter().rev().find(|(k, _)| k == key) {
            return Some(Cow::Borrowed(value));
        }
        let text: &str = &self.text.json;
        self.indexed
            .iter()
            .rev()
            .find(|at| at.key_is(text, key))
            .map(|at| Cow::Owned(at.value(&self.text.json)))
    }

    /// [`Fields::get`] where the value is a string without escapes in the text: a slice of it.
    /// `None` for any other value, and for a key an added field has (added fields count last).
    pub fn plain_str_named(&self, key: &str) -> Option<&'a str> {
        if self.text.added.iter().any(|(k, _)| k == key) {
            return None;
        }
        let text: &'a str = &self.text.json;
        let at = self.indexed.iter().rev().find(|at| at.key_is(text, key))?;
        at.plain_str(text)
    }
}

impl From<Value> for Event {
    fn from(value: Value) -> Self {
        Event {
            repr: Repr::Value(value),
        }
    }
}

/// Events are equal when their values are (the text is how one came, not what it is).
impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        self.value() == other.value()
    }
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut debug = f.debug_struct("Event");
        debug.field("value", self.value());
        if let Repr::Text(text) = &self.repr {
            debug.field("text", &text.json).field("added", &text.added);
        }
        debug.finish()
    }
}

/// A batch of events plus what they share: an estimate of their size in bytes (used by the
/// byte limits of channels and buffers) and the acknowledgement handles of their sources.
#[derive(Debug, Default)]
pub struct EventBatch {
    pub events: Vec<Event>,
    /// Approximate size of the events as they were read (raw bytes); carried, not recomputed.
    pub byte_size: usize,
    pub finalizers: Finalizers,
}

impl EventBatch {
    pub fn new(events: Vec<Event>, byte_size: usize) -> Self {
        EventBatch {
            events,
            byte_size,
            finalizers: Finalizers::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT_ONLY: json::Reading = json::Reading::Text;
    const TEXT_AND_FIELDS: json::Reading = json::Reading::TextAndFields;

    fn is_text(document: &json::Document) -> bool {
        matches!(document, json::Document::Text { .. })
    }

    /// An event kept as the text of `json` (checked, not built).
    fn kept(json: &str) -> Event {
        let document = json::read(json.as_bytes(), TEXT_ONLY).unwrap();
        assert!(is_text(&document), "{json} was not kept as text");
        Event::from_document(document)
    }

    fn written(event: &Event) -> String {
        let mut out = Vec::new();
        event.write_json(&mut out);
        String::from_utf8(out).unwrap()
    }

    fn parsed(json: &str) -> Value {
        json::parse(json.as_bytes()).unwrap()
    }

    fn set(value: &mut Value, key: &str, field: impl Into<Value>) {
        let Value::Object(map) = value else {
            panic!("not an object")
        };
        map.insert(key.into(), field.into());
    }

    #[test]
    fn an_object_kept_as_text_is_written_as_it_came_and_built_only_when_asked() {
        let text = r#"{"b": 1, "a":"x\u00e9", "n":{"z":[1.50,null]}}"#;
        let mut event = kept(&format!("  {text}\t"));
        assert!(matches!(&event.repr, Repr::Text(t) if t.value.get().is_none()));
        assert_eq!(written(&event), text, "trimmed, otherwise byte for byte");
        event.insert("file", "/var/log/a.log");
        event.insert("n", 7);
        let with_fields =
            r#"{"b": 1, "a":"x\u00e9", "n":{"z":[1.50,null]},"file":"/var/log/a.log","n":7}"#;
        assert_eq!(written(&event), with_fields);
        assert!(
            matches!(&event.repr, Repr::Text(t) if t.value.get().is_none()),
            "adding fields builds nothing"
        );
        // The value: the text's, the added fields set in order over it (the last `n` wins),
        // which is also what any reader of the written line makes of it.
        let mut expected = parsed(text);
        set(&mut expected, "file", "/var/log/a.log");
        set(&mut expected, "n", 7);
        assert_eq!(event.value(), &expected);
        assert_eq!(parsed(&written(&event)), expected);
        assert_eq!(written(&event), with_fields, "reading it kept the text");
        // A field added once it is built goes to both.
        event.insert("late", true);
        set(&mut expected, "late", true);
        assert_eq!(event.value(), &expected);
        assert_eq!(
            written(&event),
            with_fields.replace("7}", "7,\"late\":true}")
        );
        // Any other change, through `value_mut`, makes it its value for good.
        event.value_mut();
        assert!(matches!(event.repr, Repr::Value(_)));
        assert_eq!(written(&event), serde_json::to_string(&expected).unwrap());
        let mut event = kept(text);
        let Value::Object(map) = event.value_mut() else {
            panic!("not an object")
        };
        map.remove("b");
        assert_eq!(written(&event), r#"{"a":"xé","n":{"z":[1.5,null]}}"#);
        assert_eq!(kept(text).into_value(), parsed(text));
        assert_eq!(kept(text), Event::from(parsed(text)), "equal by value");
    }

    #[test]
    fn fields_added_to_an_empty_object_need_no_leading_comma() {
        for text in ["{}", "{ }"] {
            let mut event = kept(text);
            assert_eq!(written(&event), text);
            event.insert("a", 1);
            event.insert("b", "x");
            assert_eq!(parsed(&written(&event)), parsed(r#"{"a":1,"b":"x"}"#));
            assert_eq!(event.value(), &parsed(r#"{"a":1,"b":"x"}"#));
        }
    }

    #[test]
    fn only_one_line_objects_the_reader_reads_are_kept_as_text() {
        for text in [
            "[1,2]",
            "\"s\"",
            "{\"a\":\n1}",
            "{\"a\":1}\r{}",
            r#"{"big":123456789012345678901}"#,
            r#"{"a":1"#,
        ] {
            let document = json::read(text.as_bytes(), TEXT_ONLY);
            assert!(
                document.is_err() || !is_text(&document.unwrap()),
                "{text:?}"
            );
        }
        let document = json::read(b"{\"a\":1}", json::Reading::Value).unwrap();
        assert!(!is_text(&document));
    }

    #[test]
    fn top_level_fields_are_read_from_the_text_without_building_the_value() {
        let text = r#"{"a":1,"s":"x\"y","o":{"n":[1,2]},"a":2.5,"t":"2026-01-01T00:00:00Z"}"#;
        let document = json::read(text.as_bytes(), TEXT_AND_FIELDS).unwrap();
        assert!(matches!(
            document,
            json::Document::Text {
                fields: Some(_),
                ..
            }
        ));
        let mut event = Event::from_document(document);
        event.insert("file", "/var/log/x");
        event.insert("s", "again");
        let fields = event.fields().expect("fields noted, nothing built");
        let keys: Vec<&str> = (0..fields.len()).map(|i| fields.key(i)).collect();
        assert_eq!(keys, ["a", "s", "o", "a", "t", "file", "s"]);
        // The last of a repeated key counts, an added field over the text's.
        assert_eq!(
            event.field("a").as_deref(),
            Some(&Value::Float(
                vrl::compiler::prelude::NotNan::new(2.5).unwrap()
            ))
        );
        assert_eq!(event.field("s").as_deref(), Some(&Value::from("again")));
        assert_eq!(
            event.field("file").as_deref(),
            Some(&Value::from("/var/log/x"))
        );
        assert_eq!(event.field("missing"), None);
        let nested = vrl::path::parse_value_path(".o.n[1]").unwrap();
        let top = vrl::path::parse_value_path(".t").unwrap();
        assert_eq!(
            event.field_at(&top).as_deref(),
            Some(&Value::from("2026-01-01T00:00:00Z"))
        );
        // Every field, read one by one, is the value's.
        let Value::Object(map) = event.value().clone() else {
            panic!("an object")
        };
        for (key, value) in &map {
            assert_eq!(event.field(key).as_deref(), Some(value), "{key}");
        }
        // Once built, fields come from the value (and a nested path always did).
        assert!(event.fields().is_none());
        assert_eq!(event.field_at(&nested).as_deref(), Some(&Value::Integer(2)));
        assert_eq!(
            event.field("a").as_deref(),
            Some(&Value::Float(
                vrl::compiler::prelude::NotNan::new(2.5).unwrap()
            ))
        );
        // A key with escapes: read, kept as text, fields not noted.
        let document = json::read(br#"{"k\u0041":1}"#, TEXT_AND_FIELDS).unwrap();
        assert!(matches!(
            document,
            json::Document::Text { fields: None, .. }
        ));
        assert_eq!(
            Event::from_document(document).field("kA").as_deref(),
            Some(&Value::Integer(1))
        );
    }

    #[test]
    fn a_path_reads_the_same_value_as_vrls_path_walk() {
        let text = r#"{"a":1,"b":{"c":[5,{"d":"x"}]},"e.f":2,"":3}"#;
        let event = Event::from(serde_json::from_str::<Value>(text).unwrap());
        for path in [
            ".a",
            ".b",
            ".b.c",
            ".b.c[1].d",
            ".\"e.f\"",
            ".e.f",
            ".missing",
            ".\"\"",
            ".",
        ] {
            let path = vrl::path::parse_value_path(path).unwrap();
            assert_eq!(event.at(&path), event.value().get(&path), "{path}");
        }
        assert_eq!(
            event.at(&vrl::path::parse_value_path(".a").unwrap()),
            Some(&Value::Integer(1))
        );
        let scalar = Event::from(Value::Integer(7));
        assert_eq!(scalar.at(&vrl::path::parse_value_path(".a").unwrap()), None);
    }
}
