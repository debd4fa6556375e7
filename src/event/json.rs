//! JSON text into an event [`Value`], sharing the text's buffer.
//!
//! Both ways JSON enters an event go through one reader: the sources' `json` decoding
//! ([`read`]) and the VRL function `parse_json` ([`parse`]; see `transforms::vrl_parse_json`).
//! Each document is copied once into its own buffer and checked to be UTF-8 as a whole; then
//! a string without escapes becomes a slice of that copy (a reference count: no allocation of
//! its own). Only strings with escapes and object keys are copied one by one. VRL's own
//! deserializer allocates every string, which was ~40% of the cycles of a `parse_json` remap
//! (perf).
//!
//! A source may also keep a one-line object as its text ([`Document::Text`]), checked by the
//! same reader stepping over it without building anything (`skip_value`: the same token
//! readers, so it accepts exactly what building accepts); [`build`] makes the value later if
//! anything asks. Checking costs a third of building and dropping a value: in the load bench,
//! what JSON decoding adds to file → blackhole fell from 0.68 to 0.22 CPU s per million
//! events.
//!
//! **Who decides what a document means: VRL's deserializer.** The reader here builds VRL
//! values straight from the text for documents it can read with certainty, and declines
//! (returns nothing) at anything else: any syntax error, a raw control character or a lone
//! surrogate in a string, an integer beyond 18 digits, `-0`, a float out of range, nesting
//! deeper than serde_json's limit. A declined document goes whole to VRL's `Value`
//! deserializer (serde_json), whose value or error is the answer, so errors read exactly as
//! VRL's and every accepted document is one serde_json accepts with the same value (the tests
//! and the `json_value` fuzz target hold it to that).
//!
//! Why a reader of our own rather than a crate's (callgrind, instructions per decoded event
//! of the bench's 11-field lines): serde_json's `Deserializer` with a visitor 11,810, most of
//! its reading in serde's per-token calls; jiter (pydantic's JSON iterator) 13,400; sonic-rs
//! under the same visitor about serde_json's; this reader 10,710. The strings of log events
//! are short (~8 bytes), so what pays is little work per token: one call per token, a string
//! scanned 16 bytes at a time with SSE2 (one compare for most), and the document's UTF-8
//! checked once, not per string.
//!
//! The slices keep their document alive as long as anything holds them; each document is
//! copied into its own buffer first, so that is never more than the document itself.

use super::{KeyString, ObjectMap, Value};
use bytes::Bytes;
use bytestring::ByteString;
use std::borrow::Cow;
use std::ops::Range;
use vrl::compiler::prelude::NotNan;

/// serde_json's nesting limit (127 arrays or objects deep): a deeper document is its error.
const MAX_DEPTH: usize = 127;

/// Parses one JSON document (surrounding whitespace allowed) into a [`Value`].
pub fn parse(text: &[u8]) -> Result<Value, serde_json::Error> {
    let Some(text) = copy(text) else {
        // Not UTF-8, so not JSON: VRL's deserializer names the error (and, were serde_json to
        // accept the text after all, gives the value VRL would).
        return serde_json::from_slice(text);
    };
    match Reader::new(&text).document() {
        Some(value) => Ok(value),
        None => serde_json::from_str(&text),
    }
}

/// A document as a source decodes it.
#[derive(Debug)]
pub enum Document {
    /// Its value.
    Value(Value),
    /// An object on one line that this reader reads (so [`build`] makes its value without
    /// fail), kept as its text, trimmed.
    Text {
        text: ByteString,
        /// Where its top-level fields are, when asked for and no key has escapes.
        fields: Option<Vec<FieldAt>>,
    },
}

/// Where one top-level field of a kept text is: its key (between the quotes; a key with
/// escapes is never indexed) and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldAt {
    key: u32,
    key_len: u32,
    /// The value's first byte.
    value: u32,
    /// For a string without escapes (most values of log events), its length between the
    /// quotes: read as a slice of the text without scanning it again. Else [`NOT_PLAIN`].
    plain_len: u32,
}

/// Whether two keys are equal. Keys are short: up to 16 bytes they are compared as two
/// overlapping words each, inline, where `==` calls `memcmp` (~50 instructions a key; a
/// tenth of what writing the bench's log lines into Parquet columns cost, callgrind).
#[inline(always)]
pub fn same_key(a: &[u8], b: &[u8]) -> bool {
    let len = a.len();
    if len != b.len() {
        return false;
    }
    let u64_at = |bytes: &[u8], at: usize| {
        u64::from_le_bytes(bytes[at..at + 8].try_into().expect("eight bytes"))
    };
    let u32_at = |bytes: &[u8], at: usize| {
        u32::from_le_bytes(bytes[at..at + 4].try_into().expect("four bytes"))
    };
    match len {
        0..=3 => a.iter().zip(b).all(|(x, y)| x == y),
        4..=7 => u32_at(a, 0) == u32_at(b, 0) && u32_at(a, len - 4) == u32_at(b, len - 4),
        8..=16 => u64_at(a, 0) == u64_at(b, 0) && u64_at(a, len - 8) == u64_at(b, len - 8),
        _ => a == b,
    }
}

/// [`FieldAt::plain_len`] of a value that is not a string without escapes.
const NOT_PLAIN: u32 = u32::MAX;

impl FieldAt {
    /// The key, in the text it was found in.
    pub fn key<'a>(&self, text: &'a str) -> &'a str {
        &text[self.key as usize..(self.key + self.key_len) as usize]
    }

    /// Whether the key is `key` (its length compared first: most keys differ in it).
    #[inline]
    pub fn key_is(&self, text: &str, key: &str) -> bool {
        let start = self.key as usize;
        // Bytes, not a `str` slice: the key's ends need no check for character boundaries.
        self.key_len as usize == key.len()
            && (text.as_bytes().get(start..start + key.len()))
                .is_some_and(|own| same_key(own, key.as_bytes()))
    }

    /// The value if it is a string without escapes: a slice of the text it was found in.
    pub fn plain_str<'a>(&self, text: &'a str) -> Option<&'a str> {
        let start = self.value as usize + 1;
        (self.plain_len != NOT_PLAIN).then(|| &text[start..start + self.plain_len as usize])
    }

    /// The value if it is a number [`FieldAt::value`] makes an integer of: read straight from
    /// the text, no value made.
    #[inline]
    pub fn integer(&self, text: &ByteString) -> Option<i64> {
        let number = self.number_reader(text)?.number_token()?;
        (!number.float).then(|| number.integer())?
    }

    /// The value as a float if it is a number (an integer converted): what a float64 column
    /// holds of [`FieldAt::value`], read straight from the text.
    #[inline]
    pub fn float(&self, text: &ByteString) -> Option<f64> {
        match self.number_reader(text)?.number()? {
            Value::Float(float) => Some(float.into_inner()),
            Value::Integer(integer) => Some(integer as f64),
            _ => None,
        }
    }

    /// A reader at the value, if the value starts as a number does.
    #[inline(always)]
    fn number_reader<'a>(&self, text: &'a ByteString) -> Option<Reader<'a>> {
        let mut reader = Reader::new(text);
        reader.at = self.value as usize;
        matches!(reader.bytes.get(reader.at), Some(b'-' | b'0'..=b'9')).then_some(reader)
    }

    /// The value, read from the text it was found in.
    pub fn value(&self, text: &ByteString) -> Value {
        if let Some(plain) = self.plain_str(text) {
            return Value::String(text.slice_ref(plain));
        }
        let mut reader = Reader::new(text);
        reader.at = self.value as usize;
        reader
            .value()
            .expect("the reader builds what it checked (the json_value fuzz target holds it)")
    }
}

/// What [`read`] makes of a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// Build its value.
    Value,
    /// Keep a one-line object as its text, checked, for [`build`] to make its value later if
    /// anything asks.
    Text,
    /// [`Reading::Text`], noting where its top-level fields are too, for consumers that read
    /// fields straight from the text.
    TextAndFields,
}

/// Reads one JSON document from a source's frame: its value, or a one-line object's text, as
/// `reading` asks. A document that is not a one-line object the reader reads is always built.
pub fn read(frame: &[u8], reading: Reading) -> Result<Document, serde_json::Error> {
    let Some(text) = copy(frame) else {
        return serde_json::from_slice(frame).map(Document::Value);
    };
    if reading != Reading::Value {
        if let Some((within, fields)) = checked_object(&text, reading == Reading::TextAndFields) {
            // Most lines have no whitespace around the object: the copy itself is kept (a
            // slice of it would share it, an allocation and two atomic counts per event).
            let text = match within == (0..text.len()) {
                true => text,
                false => text.slice_ref(&text[within]),
            };
            return Ok(Document::Text { text, fields });
        }
    }
    match Reader::new(&text).document() {
        Some(value) => Ok(Document::Value(value)),
        None => serde_json::from_str(&text).map(Document::Value),
    }
}

/// `text` trimmed (a slice of it) if it is a one-line object the reader reads, as [`read`]
/// keeps one, with where its top-level fields are; `None` for any other document, and for an
/// object with a key that has escapes (which is not indexed). What the remap transform's text
/// plan reads a message with; [`without_fields`] makes the copy it keeps.
pub fn object_fields(text: &ByteString) -> Option<(ByteString, Vec<FieldAt>)> {
    let (within, fields) = checked_object(text, true)?;
    Some((text.slice_ref(&text[within]), fields?))
}

/// Where in `text` the object is, without the whitespace around it, if `text` is a one-line
/// object the reader reads; and where its fields are (from the object's start) if `index`
/// (`Some(None)` for an object with a key that has escapes).
fn checked_object(text: &ByteString, index: bool) -> Option<(Range<usize>, Option<Vec<FieldAt>>)> {
    let bytes = text.as_bytes();
    // JSON's whitespace only: `trim_ascii` also takes a form feed, which JSON (and VRL's
    // `parse_json`) reject after a document (found by the remap_text fuzz target).
    let space = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    let start = bytes.iter().position(|b| !space(b))?;
    let end = bytes.len() - bytes.iter().rev().position(|b| !space(b))?;
    // A raw line break can only be whitespace between tokens (inside strings JSON escapes it);
    // a text with one could not be written out as one line.
    if bytes[start] != b'{' || memchr::memchr2(b'\n', b'\r', &bytes[start..end]).is_some() {
        return None;
    }
    let mut reader = Reader::new(text);
    reader.at = start;
    let fields = match index {
        true => reader.index_object(),
        false => reader.skip_value().map(|()| None),
    }?;
    if reader.at != end {
        return None;
    }
    let mut fields = fields;
    if let Some(fields) = fields.as_mut().filter(|_| start > 0) {
        // From the object's start, as the object's text is kept.
        for field in fields {
            field.key -= start as u32;
            field.value -= start as u32;
        }
    }
    Some((start..end, fields))
}

/// Which of `fields` (of `text`) have one of `keys`, one bit each by index; `None` for more
/// than 64 fields.
pub fn fields_named(text: &str, fields: &[FieldAt], keys: &[KeyString]) -> Option<u64> {
    (fields.len() <= 64).then(|| {
        (fields.iter().enumerate())
            .filter(|(_, field)| keys.iter().any(|key| field.key_is(text, key)))
            .fold(0, |named, (index, _)| named | 1 << index)
    })
}

/// A copy of the object `text` (as [`object_fields`] found it, with its `fields`) without
/// the fields `keep` declines, by index, and where the rest now are. Each run of kept fields
/// is copied as it was, key to value; runs are joined by a bare comma.
pub fn without_fields(
    text: &ByteString,
    fields: &[FieldAt],
    keep: impl Fn(usize) -> bool,
) -> (ByteString, Vec<FieldAt>) {
    let bytes = text.as_bytes();
    // Where field `index`'s value ends: before the next field's key, or the closing brace,
    // less the whitespace and the comma between.
    let value_end = |index: usize| {
        let next = fields
            .get(index + 1)
            .map_or(bytes.len() - 1, |next| next.key as usize - 1);
        let between = bytes[..next].trim_ascii_end();
        match between.last() {
            Some(b',') => between[..between.len() - 1].trim_ascii_end().len(),
            _ => between.len(),
        }
    };
    let mut out = String::with_capacity(bytes.len());
    let mut kept = Vec::with_capacity(fields.len());
    out.push('{');
    let mut index = 0;
    while index < fields.len() {
        if !keep(index) {
            index += 1;
            continue;
        }
        let first = index;
        while index < fields.len() && keep(index) {
            index += 1;
        }
        if !kept.is_empty() {
            out.push(',');
        }
        // From the first key's opening quote.
        let start = fields[first].key as usize - 1;
        let moved_back = (start - out.len()) as u32;
        out.push_str(&text[start..value_end(index - 1)]);
        kept.extend(fields[first..index].iter().map(|field| FieldAt {
            key: field.key - moved_back,
            value: field.value - moved_back,
            ..*field
        }));
    }
    out.push('}');
    let text = ByteString::from(out);
    (text, kept)
}

/// The value of a document [`read`] kept as text: the reader checked it, so it reads it.
pub fn build(text: &ByteString) -> Value {
    Reader::new(text)
        .document()
        .expect("the reader builds what it checked (the json_value fuzz target holds it)")
}

/// A copy of the text first: a frame is a slice of the source's read buffer (256 KiB for a
/// file), and a string kept by a transform (reduce, window) would keep all of that alive.
/// Copied, a kept string holds at most its own document. One allocation, where copying each
/// string took one per string. `None` if it is not UTF-8 (so not JSON).
fn copy(frame: &[u8]) -> Option<ByteString> {
    ByteString::try_from(Bytes::copy_from_slice(frame)).ok()
}

/// Reads one document; `None` wherever VRL's deserializer must decide.
struct Reader<'a> {
    /// The document, which plain strings are slices of.
    text: &'a ByteString,
    /// `text`'s bytes, held as a plain slice for the scanning loops.
    bytes: &'a [u8],
    /// The next byte to read.
    at: usize,
    /// Arrays and objects open around `at`.
    depth: usize,
}

impl<'a> Reader<'a> {
    fn new(text: &'a ByteString) -> Self {
        Reader {
            text,
            bytes: text.as_bytes(),
            at: 0,
            depth: 0,
        }
    }

    fn document(mut self) -> Option<Value> {
        let value = self.value()?;
        // Only whitespace may follow.
        self.peek().is_none().then_some(value)
    }

    fn value(&mut self) -> Option<Value> {
        Some(match self.peek()? {
            b'"' => Value::String(self.string()?),
            b'{' => self.object()?,
            b'[' => self.array()?,
            b't' => self.word(b"true", Value::Boolean(true))?,
            b'f' => self.word(b"false", Value::Boolean(false))?,
            b'n' => self.word(b"null", Value::Null)?,
            _ => self.number()?,
        })
    }

    /// Steps over a value, deciding everything [`Self::value`] decides (the same token
    /// readers) but building nothing: `Some` exactly where `value` would build one.
    fn skip_value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.skip_string().map(drop),
            b'{' => self.skip_object(),
            b'[' => self.skip_array(),
            b't' => self.word(b"true", ()),
            b'f' => self.word(b"false", ()),
            b'n' => self.word(b"null", ()),
            _ => self.skip_number(),
        }
    }

    /// [`Self::object`] without building it. The walk mirrors `object`'s line for line; one
    /// walk taking a closure for both, tried, cost 5% more instructions per checked event and
    /// 0.7% per built one (callgrind).
    fn skip_object(&mut self) -> Option<()> {
        self.enter()?;
        if self.peek()? == b'}' {
            self.at += 1;
        } else {
            loop {
                if self.peek()? != b'"' {
                    return None;
                }
                self.skip_string()?;
                if self.peek()? != b':' {
                    return None;
                }
                self.at += 1;
                self.skip_value()?;
                if self.closes(b'}')? {
                    break;
                }
            }
        }
        self.depth -= 1;
        Some(())
    }

    /// [`Self::skip_object`] for the document's own object, noting where each field's key and
    /// value are: `Some(None)` if a key has escapes (read, but not indexed). It mirrors
    /// `skip_object`'s walk line for line, as that one mirrors `object`'s (see there why the
    /// walks are not one).
    fn index_object(&mut self) -> Option<Option<Vec<FieldAt>>> {
        let mut fields = Vec::with_capacity(16);
        let mut plain_keys = true;
        self.enter()?;
        if self.peek()? == b'}' {
            self.at += 1;
        } else {
            loop {
                if self.peek()? != b'"' {
                    return None;
                }
                let key = self.at + 1;
                let key_len = match self.skip_string()? {
                    true => self.at - 1 - key,
                    false => {
                        plain_keys = false;
                        0
                    }
                };
                if self.peek()? != b':' {
                    return None;
                }
                self.at += 1;
                let first = self.peek()?;
                let value = self.at;
                // `skip_value`, keeping the length of a string without escapes.
                let plain_len = match first {
                    b'"' => match self.skip_string()? {
                        true => self.at - 2 - value,
                        false => NOT_PLAIN as usize,
                    },
                    _ => {
                        self.skip_value()?;
                        NOT_PLAIN as usize
                    }
                };
                let at = |offset: usize| u32::try_from(offset).ok();
                match (at(key), at(key_len), at(value), at(plain_len)) {
                    (Some(key), Some(key_len), Some(value), Some(plain_len)) => {
                        fields.push(FieldAt {
                            key,
                            key_len,
                            value,
                            plain_len,
                        })
                    }
                    _ => plain_keys = false,
                }
                if self.closes(b'}')? {
                    break;
                }
            }
        }
        self.depth -= 1;
        Some(plain_keys.then_some(fields))
    }

    /// [`Self::array`] without building it.
    fn skip_array(&mut self) -> Option<()> {
        self.enter()?;
        if self.peek()? == b']' {
            self.at += 1;
        } else {
            loop {
                self.skip_value()?;
                if self.closes(b']')? {
                    break;
                }
            }
        }
        self.depth -= 1;
        Some(())
    }

    fn object(&mut self) -> Option<Value> {
        self.enter()?;
        // Built at once rather than key by key: `BTreeMap::from_iter` sorts (stably, so the
        // last of duplicate keys wins, as with inserts) and fills its nodes in order, where
        // inserts search and shift a node for every key. 7% fewer instructions per decoded
        // event (callgrind); sorting a prefix index first, tried too, cost more than it saved.
        let mut entries = Vec::with_capacity(16);
        if self.peek()? == b'}' {
            self.at += 1;
        } else {
            loop {
                if self.peek()? != b'"' {
                    return None;
                }
                let key = KeyString::from(&*self.string_token()?);
                if self.peek()? != b':' {
                    return None;
                }
                self.at += 1;
                entries.push((key, self.value()?));
                if self.closes(b'}')? {
                    break;
                }
            }
        }
        self.depth -= 1;
        Some(Value::Object(ObjectMap::from_iter(entries)))
    }

    fn array(&mut self) -> Option<Value> {
        self.enter()?;
        let mut items = Vec::new();
        if self.peek()? == b']' {
            self.at += 1;
        } else {
            loop {
                items.push(self.value()?);
                if self.closes(b']')? {
                    break;
                }
            }
        }
        self.depth -= 1;
        Some(Value::Array(items))
    }

    /// After an element: steps over a comma (`false`) or the closing `close` (`true`).
    fn closes(&mut self, close: u8) -> Option<bool> {
        let byte = self.peek()?;
        self.at += 1;
        match byte {
            b',' => Some(false),
            _ => (byte == close).then_some(true),
        }
    }

    /// The next byte that is not whitespace, stepped to but not over.
    fn peek(&mut self) -> Option<u8> {
        loop {
            match *self.bytes.get(self.at)? {
                b' ' | b'\n' | b'\r' | b'\t' => self.at += 1,
                byte => return Some(byte),
            }
        }
    }

    /// Steps over the `[` or `{` at `at`; `None` past serde_json's nesting limit.
    fn enter(&mut self) -> Option<()> {
        self.at += 1;
        self.depth += 1;
        (self.depth <= MAX_DEPTH).then_some(())
    }

    /// The string starting at the `"` at `at`: a slice of the document when it has no escapes.
    fn string(&mut self) -> Option<ByteString> {
        Some(match self.string_token()? {
            Cow::Borrowed(string) => self.text.slice_ref(string),
            Cow::Owned(string) => ByteString::from(string),
        })
    }

    /// The string starting at the `"` at `at`, borrowed from the document when it has no
    /// escapes.
    fn string_token(&mut self) -> Option<Cow<'a, str>> {
        let text: &'a str = self.text;
        let start = self.at + 1;
        let end = special_byte(self.bytes, start)?;
        if self.bytes[end] == b'"' {
            self.at = end + 1;
            // Both ends are ASCII quotes of a UTF-8 text: the bytes between are UTF-8 too.
            return Some(Cow::Borrowed(&text[start..end]));
        }
        self.escaped_string(start, end).map(Cow::Owned)
    }

    /// [`Self::string_token`] without making the string: whether it has no escapes (it then
    /// ends just before the new `at`).
    // Inlined: called for every key and string value checked, ~10% fewer instructions per
    // checked log line than as a call (callgrind).
    #[inline(always)]
    fn skip_string(&mut self) -> Option<bool> {
        let start = self.at + 1;
        let end = special_byte(self.bytes, start)?;
        if self.bytes[end] == b'"' {
            self.at = end + 1;
            return Some(true);
        }
        self.escaped_string(start, end).map(|_| false)
    }

    /// The rest of a string with escapes, from the first `\` at `at`, decoded into a copy.
    fn escaped_string(&mut self, start: usize, mut at: usize) -> Option<String> {
        let mut decoded = String::with_capacity(at - start + 16);
        let mut done = start;
        loop {
            match self.bytes[at] {
                b'"' => {
                    decoded.push_str(&self.text[done..at]);
                    self.at = at + 1;
                    return Some(decoded);
                }
                b'\\' => {
                    decoded.push_str(&self.text[done..at]);
                    let escape = *self.bytes.get(at + 1)?;
                    at += 2;
                    match escape {
                        b'"' => decoded.push('"'),
                        b'\\' => decoded.push('\\'),
                        b'/' => decoded.push('/'),
                        b'b' => decoded.push('\u{8}'),
                        b'f' => decoded.push('\u{c}'),
                        b'n' => decoded.push('\n'),
                        b'r' => decoded.push('\r'),
                        b't' => decoded.push('\t'),
                        b'u' => {
                            let (character, after) = unicode_escape(self.bytes, at)?;
                            decoded.push(character);
                            at = after;
                        }
                        _ => return None,
                    }
                    done = at;
                }
                // A raw control character: serde_json's error.
                _ => return None,
            }
            at = special_byte(self.bytes, at)?;
        }
    }

    /// A number at `at`, as VRL's deserializer makes it: an integer of up to 18 digits stays
    /// one; with a fraction or an exponent it is the nearest `f64` (correctly rounded, as is
    /// serde_json's with `float_roundtrip`, which the build enables). Longer integers, `-0`
    /// and floats out of range are left to VRL's deserializer, and so is anything that is not
    /// a JSON number.
    // Inlined: called from `value` and `skip_value`, LLVM otherwise makes it a call, which
    // cost ~160 instructions per decoded event of the bench (callgrind).
    #[inline(always)]
    fn number(&mut self) -> Option<Value> {
        let number = self.number_token()?;
        if number.float {
            if !number.exponent && number.digits + number.fraction_digits <= 15 {
                // Clinger's fast path: digits and power of ten both exact in an `f64`, so one
                // division rounds once, correctly, as converting the text does (a tenth of
                // decoding a log line with one float in it, callgrind).
                let magnitude = number.mantissa as f64 / POWERS_OF_TEN[number.fraction_digits];
                let value = if number.negative {
                    -magnitude
                } else {
                    magnitude
                };
                return NotNan::new(value).ok().map(Value::Float);
            }
            let value: f64 = self.text[number.start..self.at].parse().ok()?;
            return NotNan::new(value)
                .ok()
                .filter(|v| v.is_finite())
                .map(Value::Float);
        }
        number.integer().map(Value::Integer)
    }

    /// [`Self::number`] without making the number, deciding the same. A float's text is
    /// converted only when it could be out of range (an exponent, or 300 digits and more):
    /// any other JSON float is finite, and converting it was a tenth of checking a log line
    /// with one float in it (callgrind).
    #[inline(always)]
    fn skip_number(&mut self) -> Option<()> {
        let number = self.number_token()?;
        if !number.float {
            return number.integer().map(drop);
        }
        if !number.exponent && self.at - number.start < 300 {
            return Some(());
        }
        // Read again, converting this time.
        self.at = number.start;
        self.number().map(drop)
    }

    /// Steps over a number's text, checking its syntax: `None` if it is not a JSON number or
    /// starts with a zero it may not have.
    #[inline(always)]
    fn number_token(&mut self) -> Option<NumberToken> {
        let bytes = self.bytes;
        let start = self.at;
        let mut at = start + usize::from(bytes[start] == b'-');
        let digits = at;
        let mut integer: i64 = 0;
        while let Some(digit) = bytes.get(at).filter(|b| b.is_ascii_digit()) {
            integer = integer
                .wrapping_mul(10)
                .wrapping_add(i64::from(digit - b'0'));
            at += 1;
        }
        let count = at - digits;
        if count == 0 || (count > 1 && bytes[digits] == b'0') {
            return None;
        }
        let mut float = false;
        let mut fraction_digits = 0;
        if bytes.get(at) == Some(&b'.') {
            at += 1;
            let fraction = at;
            while let Some(digit) = bytes.get(at).filter(|b| b.is_ascii_digit()) {
                integer = integer
                    .wrapping_mul(10)
                    .wrapping_add(i64::from(digit - b'0'));
                at += 1;
            }
            fraction_digits = at - fraction;
            if fraction_digits == 0 {
                return None;
            }
            float = true;
        }
        let exponent = matches!(bytes.get(at), Some(b'e' | b'E'));
        if exponent {
            at += 1;
            if matches!(bytes.get(at), Some(b'+' | b'-')) {
                at += 1;
            }
            at = ascii_digits(bytes, at)?;
        }
        self.at = at;
        Some(NumberToken {
            start,
            negative: digits > start,
            digits: count,
            fraction_digits,
            mantissa: integer,
            float: float || exponent,
            exponent,
        })
    }

    /// `word` (`true`, `false`, `null`) at `at`.
    fn word<T>(&mut self, word: &[u8], value: T) -> Option<T> {
        let end = self.at + word.len();
        (self.bytes.get(self.at..end) == Some(word)).then(|| {
            self.at = end;
            value
        })
    }
}

/// The powers of ten an `f64` holds exactly, for [`Reader::number`]'s fast path.
const POWERS_OF_TEN: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// A number's text as [`Reader::number_token`] stepped over it.
struct NumberToken {
    /// Its first byte.
    start: usize,
    negative: bool,
    /// How many digits its integer part has.
    digits: usize,
    /// How many digits its fraction has.
    fraction_digits: usize,
    /// Its digits, integer part then fraction, as one integer, wrapped past `i64` (only read
    /// when there are at most 18).
    mantissa: i64,
    /// Whether it has a fraction or an exponent.
    float: bool,
    exponent: bool,
}

impl NumberToken {
    /// The integer, if it is one VRL's deserializer makes the same (up to 18 digits, not `-0`).
    fn integer(&self) -> Option<i64> {
        match (self.digits, self.negative) {
            (19.., _) => None,
            (_, true) if self.mantissa == 0 => None,
            (_, true) => Some(-self.mantissa),
            (_, false) => Some(self.mantissa),
        }
    }
}

/// The index after one or more ASCII digits from `at`.
fn ascii_digits(bytes: &[u8], at: usize) -> Option<usize> {
    let count = bytes[at.min(bytes.len())..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    (count > 0).then_some(at + count)
}

/// The index of the first `"`, `\` or control character in `bytes` from `at`, sixteen
/// bytes at a time. A chunk may reach past the string's end into the rest of the document:
/// only the first hit counts, so what lies beyond the closing quote does not matter, and a
/// short key is one chunk, not a byte-by-byte loop.
pub(super) fn special_byte(bytes: &[u8], mut at: usize) -> Option<usize> {
    while let Some(chunk) = bytes.get(at..at + 16) {
        let hits = special_mask(chunk.try_into().expect("sixteen bytes"));
        if hits != 0 {
            return Some(at + hits.trailing_zeros() as usize);
        }
        at += 16;
    }
    bytes[at.min(bytes.len())..]
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .map(|position| at + position)
}

/// Bit `i` set where `chunk[i]` is `"`, `\` or below 0x20: three SSE2 compares and one
/// `movemask` (SSE2 is part of x86-64).
#[cfg(target_arch = "x86_64")]
pub(super) fn special_mask(chunk: &[u8; 16]) -> u32 {
    use std::arch::x86_64::*;
    // SAFETY: SSE2 is always there on x86-64; the load is unaligned and reads 16 bytes of
    // `chunk`.
    unsafe {
        let bytes = _mm_loadu_si128(chunk.as_ptr().cast());
        let quote = _mm_cmpeq_epi8(bytes, _mm_set1_epi8(b'"' as i8));
        let backslash = _mm_cmpeq_epi8(bytes, _mm_set1_epi8(b'\\' as i8));
        // Unsigned `b < 0x20` is `min(b, 0x1f) == b`.
        let control = _mm_cmpeq_epi8(_mm_min_epu8(bytes, _mm_set1_epi8(0x1f)), bytes);
        _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), control)) as u32
    }
}

#[cfg(not(target_arch = "x86_64"))]
pub(super) fn special_mask(chunk: &[u8; 16]) -> u32 {
    portable_special_mask(chunk)
}

/// [`special_mask`] without SIMD (other architectures; on x86-64 the tests hold the SSE2 one
/// to it).
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn portable_special_mask(chunk: &[u8; 16]) -> u32 {
    let mut hits = 0;
    for (i, &b) in chunk.iter().enumerate() {
        hits |= u32::from(b == b'"' || b == b'\\' || b < 0x20) << i;
    }
    hits
}

/// The character of the `\u` escape whose hex digits start at `at` (a surrogate pair takes a
/// second escape), and the index after it; `None` for a lone surrogate or bad hex.
fn unicode_escape(bytes: &[u8], at: usize) -> Option<(char, usize)> {
    let high = hex4(bytes, at)?;
    match high {
        0xD800..=0xDBFF => {
            if bytes.get(at + 4..at + 6) != Some(b"\\u") {
                return None;
            }
            let low = hex4(bytes, at + 6)?;
            if !(0xDC00..=0xDFFF).contains(&low) {
                return None;
            }
            let code = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
            Some((char::from_u32(code)?, at + 10))
        }
        _ => Some((char::from_u32(high)?, at + 4)),
    }
}

/// Four hex digits at `at`.
fn hex4(bytes: &[u8], at: usize) -> Option<u32> {
    let digits = std::str::from_utf8(bytes.get(at..at + 4)?).ok()?;
    if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(digits, 16).ok()
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
    fn keys_are_equal_exactly_when_their_bytes_are() {
        let keys: Vec<String> = (0..=20)
            .flat_map(|len| {
                let base: String = (0..len).map(|i| char::from(b'a' + i as u8)).collect();
                // The same length, differing at each position in turn.
                let variants: Vec<String> = (0..len)
                    .map(|at| {
                        let mut bytes = base.clone().into_bytes();
                        bytes[at] = b'Z';
                        String::from_utf8(bytes).unwrap()
                    })
                    .collect();
                std::iter::once(base).chain(variants)
            })
            .collect();
        for a in &keys {
            for b in &keys {
                assert_eq!(same_key(a.as_bytes(), b.as_bytes()), a == b, "{a:?} {b:?}");
            }
        }
    }

    /// Documents at every edge the reader has.
    const EDGES: &[&str] = &[
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
    ];

    /// Floats around the length from which a float without an exponent is converted when
    /// checked (300 characters; from 310 digits on it is out of range).
    fn long_floats() -> Vec<String> {
        [298, 299, 300, 301, 308, 309, 310, 400]
            .iter()
            .flat_map(|&digits| {
                let integer = "9".repeat(digits);
                [format!("[{integer}.5]"), format!("{{\"v\":-{integer}.25}}")]
            })
            .collect()
    }

    #[test]
    fn same_values_and_errors_as_vrl() {
        let long = long_floats();
        for text in EDGES.iter().copied().chain(long.iter().map(String::as_str)) {
            assert_eq!(shared(text), vrl(text), "{text}");
        }
    }

    /// A document kept as text (checked, not built) is kept exactly where building it would
    /// succeed, and builds to the same value.
    #[test]
    fn checking_accepts_exactly_what_building_accepts() {
        let long = long_floats();
        let values = EDGES.iter().copied().chain(long.iter().map(String::as_str));
        // As the only field of a one-line object, which is what may be kept as text, bare and
        // between whitespace JSON allows or not (a form feed, a vertical tab).
        let padding = [
            ("", ""),
            (" \t", "\t "),
            ("\u{c}", ""),
            ("", " \u{c} "),
            ("", "\u{b}"),
        ];
        let objects = values.flat_map(|text| {
            (padding.iter()).map(move |(before, after)| format!("{before}{{\"v\":{text}}}{after}"))
        });
        for object in objects {
            let built = read(object.as_bytes(), Reading::Value)
                .map(|document| match document {
                    Document::Value(value) => value,
                    Document::Text { .. } => panic!("text kept unasked"),
                })
                .map_err(|e| e.to_string());
            for reading in [Reading::Text, Reading::TextAndFields] {
                let kept = read(object.as_bytes(), reading).map_err(|e| e.to_string());
                match (kept, &built) {
                    (Ok(Document::Text { text, fields }), Ok(value)) => {
                        assert_eq!(&super::build(&text), value, "{object}");
                        // Noted fields are where they are in the text kept (the whitespace
                        // around the object is not).
                        for field in fields.iter().flatten() {
                            let Value::Object(object_value) = value else {
                                panic!("{object}: kept as text, but not an object");
                            };
                            let key = field.key(&text);
                            assert_eq!(
                                object_value.get(key),
                                Some(&field.value(&text)),
                                "{object}"
                            );
                        }
                    }
                    (Ok(Document::Text { .. }), Err(error)) => {
                        panic!("{object}: kept as text, but building it fails: {error}")
                    }
                    (Ok(Document::Value(value)), built) => {
                        assert_eq!(Ok(&value), built.as_ref(), "{object}")
                    }
                    (Err(error), built) => assert_eq!(Err(&error), built.as_ref(), "{object}"),
                }
            }
        }
    }

    #[test]
    fn the_chunk_scan_finds_what_the_portable_one_finds() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let alphabet = [b'"', b'\\', 0, 0x1f, 0x20, b'a', 0x7f, 0x80, 0xff, b'0'];
        for _ in 0..20_000 {
            let mut chunk = [0u8; 16];
            for byte in &mut chunk {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *byte = alphabet[(state % 10) as usize];
            }
            assert_eq!(
                special_mask(&chunk),
                portable_special_mask(&chunk),
                "{chunk:?}"
            );
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
        for round in 0..5000 {
            let bits = next();
            let text = match round % 5 {
                // Short decimals, as logs have them, around the fast path's 15 digits.
                4 => {
                    let fraction_digits = 1 + (bits % 9) as usize;
                    let integer_digits = 1 + (bits >> 8) % 9;
                    let sign = if bits >> 20 & 1 == 1 { "-" } else { "" };
                    format!(
                        "[{sign}{}.{:0fraction_digits$}]",
                        (bits >> 24) % 10u64.pow(integer_digits as u32),
                        next() % 10u64.pow(fraction_digits as u32),
                    )
                }
                0 => format!("[{}]", f64::from_bits(bits)),
                1 => format!("[{:e}]", f64::from_bits(bits)),
                2 => format!("[{}]", bits as i64 >> (bits % 64)),
                _ => format!(
                    "[{}.{}e{}]",
                    bits % 1000,
                    next() % 100000,
                    (next() % 700) as i64 - 350
                ),
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

    /// An integer read from the text is exactly the value's integer, and nothing else is one;
    /// a float read from it is exactly the value's number, and nothing else is one.
    #[test]
    fn numbers_read_from_the_text_are_the_values_numbers() {
        let long: Vec<String> = [17, 18, 19, 20, 300, 308, 309]
            .iter()
            .map(|&digits| format!("9{}.25", "1".repeat(digits - 1)))
            .collect();
        let numbers = [
            "0",
            "7",
            "-7",
            "42",
            "-0",
            "0.0",
            "1.5",
            "-1.5e3",
            "1e3",
            "1E+2",
            "123456789012345678",
            "-123456789012345678",
            "1234567890123456789",
            "9223372036854775807",
            "\"7\"",
            "true",
            "null",
            "[1]",
            "{\"a\":1}",
            "420.51",
            "0.1",
            "-0.0",
            "123456789.123456789",
            "1.7976931348623157e308",
            "2.2250738585072014e-308",
            "5e-324",
            "1e400",
        ];
        for number in numbers.into_iter().chain(long.iter().map(String::as_str)) {
            let object = format!(r#"{{"n":{number},"m" : {number} }}"#);
            let Some((text, fields)) = object_fields(&ByteString::from(object.as_str())) else {
                // Not kept as text (e.g. `-0`, 19 digits): the value decides, nothing to read.
                continue;
            };
            for field in &fields {
                let value = field.value(&text);
                let expected = match value {
                    Value::Integer(integer) => Some(integer),
                    _ => None,
                };
                assert_eq!(field.integer(&text), expected, "{object}");
                let expected = match value {
                    Value::Integer(integer) => Some(integer as f64),
                    Value::Float(float) => Some(float.into_inner()),
                    _ => None,
                };
                let float = field.float(&text);
                assert_eq!(
                    float.map(f64::to_bits),
                    expected.map(f64::to_bits),
                    "{object}"
                );
            }
        }
        let (text, fields) = object_fields(&ByteString::from(r#"{"a":12,"b":-3}"#)).unwrap();
        assert_eq!(
            fields.iter().map(|f| f.integer(&text)).collect::<Vec<_>>(),
            [Some(12), Some(-3)]
        );
    }

    /// Cutting any set of fields leaves an object that reads as the rest, in order, with the
    /// rest where the index says (what the remap transform's text plan keeps).
    #[test]
    fn cutting_fields_leaves_the_rest_where_the_index_finds_them() {
        let objects = [
            r#"{"a":1,"b":"x","c":[1,{"d":","}],"e":{"f":"}"},"g":null}"#,
            r#"  {  "a" : 1 ,"b":"x"  ,  "c" : "y" ,"a":2 }  "#,
            "{\"a\":\"é\",\t\"b\":\"a\\\"b\",\"c\":-1.5e3,\"d\":true}",
            r#"{"only":1}"#,
        ];
        for object in objects {
            let (text, fields) = object_fields(&ByteString::from(object)).expect("indexed");
            for cut in 0u32..1 << fields.len() {
                let keep = |index: usize| cut & 1 << index == 0;
                let (rest, at) = without_fields(&text, &fields, keep);
                let case = format!("{object} less {cut:b}: {rest}");
                let (reread, indexed) = object_fields(&rest).expect(&case);
                assert_eq!(reread, rest, "{case}");
                assert_eq!(indexed, at, "{case}");
                let kept: Vec<_> = (0..fields.len()).filter(|&index| keep(index)).collect();
                assert_eq!(at.len(), kept.len(), "{case}");
                for (field, &index) in at.iter().zip(&kept) {
                    assert_eq!(field.key(&rest), fields[index].key(&text), "{case}");
                    assert_eq!(field.value(&rest), fields[index].value(&text), "{case}");
                }
            }
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
