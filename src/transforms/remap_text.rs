//! The remap transform's text plan: the most common program of all,
//!
//! ```text
//! . = parse_json!(.message)
//! .pipeline = "bench"
//! del(.trace_id)
//! ```
//!
//! (a field's JSON text made the event, then top-level fields set to literals and top-level
//! fields deleted, in any number and order), run on the JSON text itself where every consumer
//! of the transform writes events as JSON or reads top-level fields from the text: the text is
//! checked and its fields found by the event reader, the fields the program sets or deletes
//! are cut from it, and the ones it sets are added after it. No value is built unless
//! something asks for it, just as a source's `json` decoding keeps events as text for such
//! consumers (see `codec::decoding::Values`).
//!
//! **What runs is still VRL's program.** The plan is read from the program's syntax tree (VRL's
//! parser) and only in that exact shape; the program is compiled as always, and every event the
//! plan cannot take with certainty runs through it: a field that is missing or not a string,
//! or a text that is not a one-line object the event reader reads (not UTF-8, a byte-order
//! mark, big integers, `-0`, nesting past serde_json's limit, a key with escapes, a syntax
//! error: the same reader and checks as our `parse_json`, declining where they decline). So
//! every error is VRL's, and every event the plan makes is equal, as a value, to what the
//! program makes (the tests compare both on the same inputs).
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
    /// The field whose text becomes the event.
    parsed: KeyString,
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
        let mut expressions = program.iter().map(|root| match root.inner() {
            RootExpr::Expr(expression) => Some(expression.inner()),
            RootExpr::Error(_) => None,
        });
        let mut plan = TextPlan {
            parsed: parse_json_into_root(expressions.next()??)?,
            cut: Vec::new(),
            added: Vec::new(),
        };
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

    /// The event the program makes of `event`, if the plan can make it with certainty; else
    /// `None`, and the program runs.
    pub fn apply(&self, event: &Event) -> Option<Event> {
        let message = match event.field(&self.parsed)? {
            Cow::Borrowed(Value::Bytes(bytes)) => ByteString::try_from(bytes.clone()).ok()?,
            Cow::Borrowed(Value::String(text)) => text.clone(),
            _ => return None,
        };
        let (message, fields) = json::object_fields(&message)?;
        // Which fields go, one bit each (an object of more fields runs the program).
        if fields.len() > 64 {
            return None;
        }
        let is_cut = |field: &json::FieldAt| self.cut.iter().any(|key| field.key_is(&message, key));
        let cut = (fields.iter().enumerate())
            .filter(|(_, field)| is_cut(field))
            .fold(0u64, |cut, (index, _)| cut | 1 << index);
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
            assert!(TextPlan::of(source).is_some(), "{source}");
        }
        for source in [
            "",
            ".a = 1",
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

    /// The event `program` makes of `message` (or its error), as VRL runs it.
    fn by_vrl(source: &str, message: &Value) -> Result<Value, String> {
        let program = compile("t", source).unwrap();
        let mut event = Event::from(Value::from(vrl::value::ObjectMap::from([(
            KeyString::from("message"),
            message.clone(),
        )])));
        let result = Runner::default().run(&program, event.value_mut());
        result
            .map(|_| event.into_value())
            .map_err(|e| e.to_string())
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
            let plan = TextPlan::of(source).expect("of the plan's shape");
            let messages = (TAKEN.iter().map(|m| (Value::from(*m), true)))
                .chain(
                    TAKEN
                        .iter()
                        .map(|m| (Value::Bytes(bytes::Bytes::from(*m)), true)),
                )
                .chain(DECLINED.iter().map(|m| (Value::from(*m), false)))
                .chain([(non_utf8.clone(), false), (Value::Integer(1), false)]);
            for (message, taken) in messages {
                let event = Event::from(Value::from(vrl::value::ObjectMap::from([(
                    KeyString::from("message"),
                    message.clone(),
                )])));
                let made = plan.apply(&event);
                assert_eq!(made.is_some(), taken, "{source} on {message:?}");
                let Some(made) = made else { continue };
                let expected = by_vrl(source, &message).expect("the program runs");
                let Value::Object(map) = &expected else {
                    panic!("an object")
                };
                // Its fields are where the text has them (the last of a repeated key counts).
                let fields = made.fields().expect("kept as text, fields noted");
                for index in 0..fields.len() {
                    let key = fields.key(index);
                    if (index + 1..fields.len()).all(|later| !fields.key_is(later, key)) {
                        assert_eq!(map.get(key), Some(&*fields.value(index)), "{key}");
                    }
                }
                // Written, it reads back as the same JSON (in another key order).
                let mut written = Vec::new();
                made.write_json(&mut written);
                let read: serde_json::Value = serde_json::from_slice(&written).unwrap();
                assert_eq!(
                    read,
                    serde_json::to_value(&expected).unwrap(),
                    "{source} on {message:?}: {}",
                    String::from_utf8_lossy(&written)
                );
                assert_eq!(made.value(), &expected, "{source} on {message:?}");
            }
        }
    }

    #[test]
    fn leaves_the_event_to_the_program_when_the_field_is_missing() {
        let plan = TextPlan::of(BENCH).unwrap();
        let event = Event::from(Value::from(vrl::value::ObjectMap::new()));
        assert!(plan.apply(&event).is_none());
    }
}
