//! The remap transform's text plan: the commonest programs of all,
//!
//! ```text
//! . = parse_json!(.message)        # optional: a field's JSON text made the event
//! .pipeline = "bench"              # top-level fields set to literals
//! del(.trace_id)                   # and deleted, in any number and order
//! ```
//!
//! run on JSON text where every consumer of the transform writes events as JSON or reads
//! top-level fields from the text: the fields the program sets or deletes are cut from the
//! text, and the ones it sets are added after it. No value is built unless something asks for
//! it, just as a source's `json` decoding keeps events as text for such consumers (see
//! `codec::decoding::Values`). With `parse_json`, the message is checked and its fields found
//! by the event reader; without, the plan edits events their source kept as text with their
//! fields noted, and the topology asks the source for those (`topology::build`,
//! `values_needed`).
//!
//! **What runs is still VRL's program.** The plan is read from the program's syntax tree (VRL's
//! parser) and only in that exact shape; the program is compiled as always, and every event the
//! plan cannot take with certainty runs through it: a field that is missing or not a string,
//! a text that is not a one-line object the event reader reads (not UTF-8, a byte-order mark,
//! big integers, `-0`, nesting past serde_json's limit, a key with escapes, a syntax error:
//! the same reader and checks as our `parse_json`, declining where they decline), an object
//! of more than 64 fields, an event not kept as text or whose value is already built. So
//! every error is VRL's, and every event the plan makes is equal, as a value, to what the
//! program makes (the unit tests and the `remap_text` fuzz target compare both on the same
//! inputs).
//!
//! What differs is only the JSON written: the text's fields in the text's order and spacing,
//! then the fields set, where a value is written with its keys sorted; the same as for the
//! events a source keeps as text.

use crate::event::json::{self, Document};
use crate::event::{Event, KeyString, Value};
use bytestring::ByteString;
use std::borrow::Cow;
use vrl::parser::ast::{
    Assignment, AssignmentOp, AssignmentTarget, Expr, FunctionCall, Literal, QueryTarget, RootExpr,
};
use vrl::path::{OwnedSegment, PathPrefix};

/// A program of the plan's shape, as the plan runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct TextPlan {
    /// The field whose JSON text becomes the event (`. = parse_json!(.field)`), if the
    /// program starts so; else the program edits the event itself, which must be kept as text
    /// with its fields noted (a source's `json` decoding).
    parsed: Option<KeyString>,
    /// The keys the program sets or deletes: their fields are cut from the text.
    cut: Vec<KeyString>,
    /// The fields set after the last delete of their key, in the order last set: added after
    /// the text.
    added: Vec<(KeyString, Value)>,
}

impl TextPlan {
    /// The plan of `source`, if the program has its shape.
    pub fn of(source: &str) -> Option<TextPlan> {
        let program = vrl::parser::parse(source).ok()?;
        let mut expressions = program
            .iter()
            .map(|root| match root.inner() {
                RootExpr::Expr(expression) => Some(expression.inner()),
                RootExpr::Error(_) => None,
            })
            .peekable();
        let mut plan = TextPlan {
            parsed: parse_json_into_root(expressions.peek().copied()??),
            cut: Vec::new(),
            added: Vec::new(),
        };
        if plan.parsed.is_some() {
            expressions.next();
        }
        for expression in expressions {
            let (key, set) = match expression? {
                Expr::Assignment(assignment) => literal_assignment(assignment.inner())?,
                Expr::FunctionCall(call) => (delete(call.inner())?, None),
                _ => return None,
            };
            plan.added.retain(|(added, _)| *added != key);
            if !plan.cut.contains(&key) {
                plan.cut.push(key.clone());
            }
            if let Some(value) = set {
                plan.added.push((key, value));
            }
        }
        Some(plan)
    }

    /// Whether the plan edits the events it takes as they are (no `parse_json`): those kept
    /// as text with their fields noted, which is what its source should then make.
    pub fn edits_text(&self) -> bool {
        self.parsed.is_none()
    }

    /// The event the program makes of `event`, if the plan can make it with certainty; else
    /// the event back, for the program to run on.
    pub fn apply(&self, mut event: Event) -> Result<Event, Event> {
        match &self.parsed {
            Some(parsed) => self.parse(&event, parsed).ok_or(event),
            None if event.edit_text(&self.cut, &self.added) => Ok(event),
            None => Err(event),
        }
    }

    /// The event `. = parse_json!(.parsed)` and the edits make of `event`.
    fn parse(&self, event: &Event, parsed: &str) -> Option<Event> {
        let message = match event.field(parsed)? {
            Cow::Borrowed(Value::Bytes(bytes)) => ByteString::try_from(bytes.clone()).ok()?,
            Cow::Borrowed(Value::String(text)) => text.clone(),
            _ => return None,
        };
        let (message, fields) = json::object_fields(&message)?;
        // An object of more than 64 fields runs the program.
        let cut = json::fields_named(&message, &fields, &self.cut)?;
        // A copy of its own, always: the message is a slice of the source's read buffer.
        let (text, fields) = json::without_fields(&message, &fields, |index| cut & 1 << index == 0);
        let mut made = Event::from_document(Document::Text {
            text,
            fields: Some(fields),
        });
        for (key, value) in &self.added {
            made.insert(key, value.clone());
        }
        Some(made)
    }
}

/// `field` of `. = parse_json!(.field)`.
fn parse_json_into_root(expression: &Expr) -> Option<KeyString> {
    let Expr::Assignment(assignment) = expression else {
        return None;
    };
    let Assignment::Single {
        target,
        op: AssignmentOp::Assign,
        expr,
    } = assignment.inner()
    else {
        return None;
    };
    let is_root = assigned_event_path(target.inner()).is_some_and(|path| path.is_empty());
    let Expr::FunctionCall(call) = expr.inner() else {
        return None;
    };
    let call = call.inner();
    let field = only_argument(call, "value").and_then(event_field)?;
    (is_root && &**call.ident.inner() == "parse_json" && call.abort_on_error).then_some(field)
}

/// The key and value of `.key = literal`.
fn literal_assignment(assignment: &Assignment) -> Option<(KeyString, Option<Value>)> {
    let Assignment::Single {
        target,
        op: AssignmentOp::Assign,
        expr,
    } = assignment
    else {
        return None;
    };
    let key = top_level_key(assigned_event_path(target.inner())?)?;
    let Expr::Literal(literal) = expr.inner() else {
        return None;
    };
    // The value VRL's compiler makes of the literal.
    use vrl::compiler::expression::Literal as Compiled;
    let value = match literal.inner() {
        Literal::String(template) => Compiled::from(template.as_literal_string()?),
        Literal::RawString(string) => Compiled::from(string.as_str()),
        Literal::Integer(integer) => Compiled::Integer(*integer),
        Literal::Float(float) => Compiled::Float(*float),
        Literal::Boolean(boolean) => Compiled::Boolean(*boolean),
        Literal::Null => Compiled::Null,
        Literal::Regex(_) | Literal::Timestamp(_) => return None,
    }
    .to_value();
    Some((key, Some(value)))
}

/// `key` of `del(.key)`.
fn delete(call: &FunctionCall) -> Option<KeyString> {
    (&**call.ident.inner() == "del")
        .then(|| only_argument(call, "path").and_then(event_field))
        .flatten()
}

/// The expression of a call's one argument, given by position or as `name`; `None` for a
/// call with a closure or any other argument.
fn only_argument<'a>(call: &'a FunctionCall, name: &str) -> Option<&'a Expr> {
    let [argument] = call.arguments.as_slice() else {
        return None;
    };
    let argument = argument.inner();
    let named_right = argument
        .ident
        .as_ref()
        .is_none_or(|ident| &**ident.inner() == name);
    (call.closure.is_none() && named_right).then(|| argument.expr.inner())
}

/// `key` of a query of the event's top-level field `.key`.
fn event_field(expression: &Expr) -> Option<KeyString> {
    let Expr::Query(query) = expression else {
        return None;
    };
    let query = query.inner();
    match query.target.inner() {
        QueryTarget::External(PathPrefix::Event) => top_level_key(&query.path.inner().segments),
        _ => None,
    }
}

/// The segments of the event path an assignment sets (none: the root); `None` for a variable
/// or metadata.
fn assigned_event_path(target: &AssignmentTarget) -> Option<&[OwnedSegment]> {
    match target {
        AssignmentTarget::External(None) => Some(&[]),
        AssignmentTarget::External(Some(path)) if path.prefix == PathPrefix::Event => {
            Some(&path.path.segments)
        }
        AssignmentTarget::Query(query) => match query.target.inner() {
            QueryTarget::External(PathPrefix::Event) => Some(&query.path.inner().segments),
            _ => None,
        },
        _ => None,
    }
}

fn top_level_key(path: &[OwnedSegment]) -> Option<KeyString> {
    match path {
        [OwnedSegment::Field(key)] => Some(key.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transforms::vrl_program::{compile, Runner};

    const BENCH: &str = ". = parse_json!(.message)\n.pipeline = \"bench\"\ndel(.trace_id)\n";

    #[test]
    fn reads_programs_of_its_shape_and_no_other() {
        for source in [
            ". = parse_json!(.message)",
            ". = parse_json!(.msg); .a = 1; .b = 2.5; .c = true; .d = null; .e = s'raw'",
            ". = parse_json!(value: .message)\ndel(.a)\ndel(path: .b)\n.a = \"x\"",
            ". = parse_json!(.\"the message\")\n.\"a b\" = \"x\"",
            BENCH,
        ] {
            let plan = TextPlan::of(source).unwrap_or_else(|| panic!("{source}"));
            assert!(!plan.edits_text(), "{source}");
        }
        for source in [
            ".a = 1",
            "del(.a)\n.b = \"x\"; del(.c)",
            ".pipeline = \"p\"; del(.trace_id)",
        ] {
            let plan = TextPlan::of(source).unwrap_or_else(|| panic!("{source}"));
            assert!(plan.edits_text(), "{source}");
        }
        for source in [
            "",
            "del(.a); .b = .c",
            "del(.file); .z = [] == []",
            "del(.a); . = parse_json!(.message)",
            ". = parse_json(.message) ?? {}",
            ". = parse_json!(.message, lossy: false)",
            ". = parse_json!(.message, max_depth: 2)",
            ". = parse_json!(.message.inner)",
            ". = parse_json!(string!(.message))",
            ". |= parse_json!(.message)",
            ".a = parse_json!(.message)",
            "x = parse_json!(.message)",
            ". = parse_json!(.message); .a.b = 1",
            ". = parse_json!(.message); .a[0] = 1",
            ". = parse_json!(.message); .a = .b",
            ". = parse_json!(.message); .a = \"{{ b }}\"",
            ". = parse_json!(.message); .a = t'2026-01-01T00:00:00Z'",
            ". = parse_json!(.message); .a = r'x'",
            ". = parse_json!(.message); .a = [1]",
            ". = parse_json!(.message); %a = 1",
            ". = parse_json!(.message); x = 1",
            ". = parse_json!(.message); del(.a.b)",
            ". = parse_json!(.message); del(.a, compact: true)",
            ". = parse_json!(.message); upcase!(.a)",
            ". = parse_json!(.message); if .a == 1 { .b = 2 }",
            ". = parse_json!(.message); abort",
            "syntax error (",
        ] {
            assert_eq!(TextPlan::of(source), None, "{source}");
        }
    }

    /// Messages of every kind: the plan takes the first group, declines the second (which
    /// the program must then run on).
    const TAKEN: &[&str] = &[
        r#"{"a":"x","trace_id":"t","b":1}"#,
        r#"{"trace_id":"t","a":"x"}"#,
        r#"{"a":"x","trace_id":"t"}"#,
        r#"{"trace_id":"t"}"#,
        r#"{}"#,
        r#"  { "a" : "x" ,  "trace_id" : [1, {"c": ","}] ,"pipeline": {"d":"}"}, "e" : -2.5e3 }  "#,
        r#"{"trace_id":1,"a":2,"trace_id":3,"pipeline":4,"a":5}"#,
        r#"{"a":"x\"y\\z\u00e9","n":{"trace_id":1},"s":[true,false,null]}"#,
        r#"{"héllo":"wörld","pipeline":"old"}"#,
        "{\"a\":1,\t\"trace_id\":2}",
    ];
    const DECLINED: &[&str] = &[
        "\u{feff}{\"a\":1}",
        "{\"a\":1,\n\"b\":2}",
        r#"{"tr\u0061ce_id":1}"#,
        r#"{"a":-0}"#,
        r#"{"a":123456789012345678901}"#,
        r#"{"a":1"#,
        r#"{"a":1}x"#,
        r#"[1,2]"#,
        r#""text""#,
        "not json",
        "",
    ];

    /// Checks what the plan makes of `event` against what the program makes of it, and that
    /// it takes the event exactly when `taken`.
    fn check(source: &str, event: Event, taken: bool) {
        let plan = TextPlan::of(source).expect("of the plan's shape");
        let mut by_vrl = event.clone();
        // Not `{event:?}`, which builds the value.
        let mut input = Vec::new();
        event.write_json(&mut input);
        let shown = format!("{source} on {}", String::from_utf8_lossy(&input));
        let made = plan.apply(event);
        assert_eq!(made.is_ok(), taken, "{shown}");
        let Ok(made) = made else { return };
        let program = compile("t", source).unwrap();
        Runner::default()
            .run(&program, by_vrl.value_mut())
            .expect("the program runs");
        crate::fuzz::assert_made_as_vrl(made, &by_vrl.into_value(), &shown);
    }

    fn with_message(message: Value) -> Event {
        Event::from(Value::from(vrl::value::ObjectMap::from([(
            KeyString::from("message"),
            message,
        )])))
    }

    #[test]
    fn makes_what_the_program_makes_and_declines_what_it_cannot_be_sure_of() {
        let programs = [
            BENCH,
            ". = parse_json!(.message)",
            ". = parse_json!(.message); del(.a); .a = 1; .pipeline = null; del(.pipeline)",
            ". = parse_json!(.message); .trace_id = \"x\"; .z = 1.5; .trace_id = false",
            ". = parse_json!(.message); del(.a); del(.b); del(.trace_id); del(.e); del(.n)",
        ];
        let non_utf8 = Value::Bytes(bytes::Bytes::from_static(b"{\"a\":\"\xff\"}"));
        for source in programs {
            let messages = (TAKEN.iter().map(|m| (Value::from(*m), true)))
                .chain(
                    TAKEN
                        .iter()
                        .map(|m| (Value::Bytes(bytes::Bytes::from(*m)), true)),
                )
                .chain(DECLINED.iter().map(|m| (Value::from(*m), false)))
                .chain([(non_utf8.clone(), false), (Value::Integer(1), false)]);
            for (message, taken) in messages {
                check(source, with_message(message), taken);
            }
            check(
                source,
                Event::from(Value::from(vrl::value::ObjectMap::new())),
                false,
            );
        }
    }

    /// A program without `parse_json` edits events a source kept as text with their fields
    /// noted, fields the source added after the text included; any other event runs it.
    #[test]
    fn edits_events_kept_as_text_and_no_other() {
        let programs = [
            ".pipeline = \"p\"; del(.trace_id)",
            "del(.a); .a = 1; .file = null; del(.e)",
            "del(.file); del(.n); .z = 2",
        ];
        let kept = |text: &str, reading| match json::read(text.as_bytes(), reading) {
            Ok(document @ Document::Text { .. }) => Event::from_document(document),
            other => panic!("{text}: {other:?}"),
        };
        for source in programs {
            for text in TAKEN {
                check(source, kept(text, json::Reading::TextAndFields), true);
                let mut added = kept(text, json::Reading::TextAndFields);
                added.insert("file", "/var/log/a.log");
                added.insert("a", 7);
                check(source, added, true);
                // Fields not noted, or a value already built: the program's to run.
                check(source, kept(text, json::Reading::Text), false);
                let built = kept(text, json::Reading::TextAndFields);
                built.value();
                check(source, built, false);
            }
            check(source, with_message(Value::from("{\"a\":1}")), false);
        }
    }
}
