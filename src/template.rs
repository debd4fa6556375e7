//! Templates for paths and names: `{{ field.path }}` inserts an event field, and strftime
//! specifiers (`%Y-%m-%d`) format the event's `timestamp` field (or the current time when the
//! event has no timestamp). Example: `/var/log/out/{{ service }}/%Y-%m-%d.log`.

use crate::event::{Event, Value};
use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, Utc};
use vrl::path::OwnedValuePath;

#[derive(Debug, Clone)]
enum Part {
    Literal(String),
    /// A literal with strftime specifiers, parsed once.
    Time(Vec<Item<'static>>),
    Field(String, OwnedValuePath),
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    parts: Vec<Part>,
    has_strftime: bool,
    has_fields: bool,
}

/// A template could not be rendered for an event.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("field `{0}` is missing or not a string or number")]
pub struct RenderError(pub String);

impl Template {
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Literal(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| format!("unclosed `{{{{` in template `{text}`"))?;
            let name = after[..end].trim();
            let path_text = if name.starts_with('.') {
                name.to_string()
            } else {
                format!(".{name}")
            };
            let path = vrl::path::parse_value_path(&path_text)
                .map_err(|e| format!("invalid field `{name}` in template `{text}`: {e}"))?;
            parts.push(Part::Field(name.to_string(), path));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        for part in &mut parts {
            if let Part::Literal(literal) = part {
                if literal.contains('%') {
                    let items = StrftimeItems::new(literal)
                        .parse_to_owned()
                        .map_err(|_| format!("invalid strftime specifier in template `{text}`"))?;
                    *part = Part::Time(items);
                }
            }
        }
        let has_strftime = parts.iter().any(|p| matches!(p, Part::Time(..)));
        let has_fields = parts.iter().any(|p| matches!(p, Part::Field(..)));
        Ok(Template {
            parts,
            has_strftime,
            has_fields,
        })
    }

    /// True when every event renders the same string.
    pub fn is_static(&self) -> bool {
        !self.has_strftime && !self.has_fields
    }

    /// Renders for one event. Field values have `/` replaced by `_` so an event cannot steer
    /// a path outside the directory the template names.
    pub fn render(&self, event: &Event) -> Result<String, RenderError> {
        let mut out = String::with_capacity(64);
        self.render_into(event, &mut out)?;
        Ok(out)
    }

    /// [`Template::render`] appending to `out` (a buffer used again for every event: no
    /// allocation per event). On an error `out` holds part of the rendering.
    pub fn render_into(&self, event: &Event, out: &mut String) -> Result<(), RenderError> {
        use std::fmt::Write;
        let time = self.has_strftime.then(|| event_time(event));
        for part in &self.parts {
            match part {
                Part::Literal(literal) => out.push_str(literal),
                Part::Time(items) => {
                    if let Some(time) = time {
                        let _ = write!(out, "{}", time.format_with_items(items.iter()));
                    }
                }
                Part::Field(name, path) => {
                    let start = out.len();
                    if let Some(text) = event.plain_str_at(path) {
                        out.push_str(text);
                        confine(out, start);
                        continue;
                    }
                    let _ = match event.field_at(path).as_deref() {
                        Some(v @ (Value::Bytes(_) | Value::String(_))) => {
                            out.push_str(&v.to_str_lossy().unwrap_or_default());
                            Ok(())
                        }
                        Some(Value::Integer(i)) => write!(out, "{i}"),
                        Some(Value::Float(f)) => write!(out, "{f}"),
                        Some(Value::Boolean(b)) => write!(out, "{b}"),
                        Some(Value::Timestamp(t)) => write!(out, "{}", t.to_rfc3339()),
                        _ => return Err(RenderError(name.clone())),
                    };
                    confine(out, start);
                }
            }
        }
        Ok(())
    }
}

/// Makes the field value at `out[start..]` a plain name: `/` and NUL become `_`, and `..`
/// becomes `__`. Values are short: a plain loop finds `/` and NUL, where `memchr2`'s setup
/// cost ~90 instructions a value (callgrind).
fn confine(out: &mut String, start: usize) {
    if &out[start..] == ".." {
        out.replace_range(start.., "__");
    } else if out.as_bytes()[start..]
        .iter()
        .any(|&byte| byte == b'/' || byte == b'\0')
    {
        let confined = out[start..].replace(['/', '\0'], "_");
        out.replace_range(start.., &confined);
    }
}

fn event_time(event: &Event) -> DateTime<Utc> {
    match event.field("timestamp").as_deref() {
        Some(Value::Timestamp(t)) => *t,
        Some(v @ (Value::Bytes(_) | Value::String(_))) => v
            .to_str_lossy()
            .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(Utc::now),
        _ => Utc::now(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(json: &str) -> Event {
        Event::from(serde_json::from_str::<Value>(json).unwrap())
    }

    #[test]
    fn renders_fields_and_event_time() {
        let t = Template::parse("/out/{{ service }}/{{.a.b}}-%Y-%m-%d.log").unwrap();
        let e = event(r#"{"service":"api","a":{"b":7},"timestamp":"2024-03-05T10:00:00Z"}"#);
        assert_eq!(t.render(&e).unwrap(), "/out/api/7-2024-03-05.log");
    }

    #[test]
    fn renders_every_scalar_and_strftime_between_fields() {
        let t = Template::parse("{{ n }}_{{ f }}_{{ b }}/%H%%{{ s }}/date=%Y-%m-%d/").unwrap();
        let e = event(
            r#"{"n":-42,"f":1.5,"b":true,"s":"a/b\u0000c","timestamp":"2024-03-05T10:00:00Z"}"#,
        );
        assert_eq!(
            t.render(&e).unwrap(),
            "-42_1.5_true/10%a_b_c/date=2024-03-05/"
        );
        let mut with_time = e.clone();
        let at = chrono::DateTime::parse_from_rfc3339("2025-12-31T23:00:00Z").unwrap();
        with_time.insert("timestamp", Value::Timestamp(at.with_timezone(&Utc)));
        assert_eq!(
            t.render(&with_time).unwrap(),
            "-42_1.5_true/23%a_b_c/date=2025-12-31/"
        );
    }

    #[test]
    fn text_with_noted_fields_renders_as_its_value_does() {
        use crate::event::json::{read, Reading};
        let t = Template::parse("{{ s }}/{{ n }}/{{ e }}/{{ d }}/{{ .o.k }}").unwrap();
        let lines = [
            r#"{"s":"plain","n":7,"e":"tab\there","d":"first","d":"last","o":{"k":"x"}}"#,
            r#"{"s":"a/b","n":-1.5,"e":"..","d":"..","o":{"k":"y"}}"#,
        ];
        for line in lines {
            let mut text =
                Event::from_document(read(line.as_bytes(), Reading::TextAndFields).unwrap());
            let mut value = event(line);
            assert!(text.fields().is_some(), "{line}: kept as text with fields");
            assert_eq!(t.render(&text), t.render(&value), "{line}");
            // A field added since the text was read counts over the text's.
            text.insert("s", "added");
            value.insert("s", "added");
            assert_eq!(t.render(&text), t.render(&value), "{line}");
            assert!(t.render(&text).unwrap().starts_with("added/"));
        }
        let first =
            Event::from_document(read(lines[0].as_bytes(), Reading::TextAndFields).unwrap());
        assert_eq!(t.render(&first).unwrap(), "plain/7/tab\there/last/x");
    }

    #[test]
    fn a_missing_field_is_an_error_naming_it() {
        let t = Template::parse("{{ service }}.log").unwrap();
        assert_eq!(t.render(&event("{}")), Err(RenderError("service".into())));
    }

    #[test]
    fn field_values_cannot_escape_the_directory() {
        let t = Template::parse("/out/{{ s }}.log").unwrap();
        assert_eq!(
            t.render(&event(r#"{"s":"../../etc/passwd"}"#)).unwrap(),
            "/out/.._.._etc_passwd.log"
        );
        assert_eq!(t.render(&event(r#"{"s":".."}"#)).unwrap(), "/out/__.log");
    }

    #[test]
    fn bad_templates_are_rejected_at_parse_time() {
        assert!(Template::parse("{{ x").is_err());
        assert!(Template::parse("%Q").is_err());
        assert!(Template::parse("plain.log").unwrap().is_static());
    }
}
