//! VRL's `parse_json`, registered under its own name, parsing through [`crate::event::json`]:
//! the parsed strings are slices of one copy of the input instead of a copy each.
//!
//! Everything a user sees is VRL's: the parameters, the documentation, the type the compiler
//! infers and the error messages. The `max_depth` form is VRL's own implementation unchanged;
//! the common form (`value`, optional `lossy`) runs here. With `lossy` (the default), invalid
//! UTF-8 becomes U+FFFD as in VRL: the text is parsed as it is first, and converted only if that
//! fails and the text is not valid UTF-8.

use crate::event::json;
use vrl::compiler::prelude::*;
use vrl::stdlib::ParseJson as VrlParseJson;

/// `parse_json`, as VRL defines it.
#[derive(Debug, Clone, Copy)]
pub struct ParseJson;

impl Function for ParseJson {
    fn identifier(&self) -> &'static str {
        VrlParseJson.identifier()
    }

    fn summary(&self) -> &'static str {
        VrlParseJson.summary()
    }

    fn usage(&self) -> &'static str {
        VrlParseJson.usage()
    }

    fn category(&self) -> &'static str {
        VrlParseJson.category()
    }

    fn internal_failure_reasons(&self) -> &'static [&'static str] {
        VrlParseJson.internal_failure_reasons()
    }

    fn return_kind(&self) -> u16 {
        VrlParseJson.return_kind()
    }

    fn return_rules(&self) -> &'static [&'static str] {
        VrlParseJson.return_rules()
    }

    fn notices(&self) -> &'static [&'static str] {
        VrlParseJson.notices()
    }

    fn examples(&self) -> &'static [Example] {
        VrlParseJson.examples()
    }

    fn parameters(&self) -> &'static [Parameter] {
        VrlParseJson.parameters()
    }

    fn compile(
        &self,
        state: &TypeState,
        ctx: &mut FunctionCompileContext,
        arguments: ArgumentList,
    ) -> Compiled {
        let value = arguments.required("value");
        let lossy = arguments.optional("lossy");
        let has_max_depth = arguments.optional("max_depth").is_some();
        let vrl = VrlParseJson.compile(state, ctx, arguments)?;
        if has_max_depth {
            return Ok(vrl);
        }
        Ok(ParseJsonFn { value, lossy, vrl }.as_expr())
    }
}

#[derive(Debug, Clone)]
struct ParseJsonFn {
    value: Box<dyn Expression>,
    lossy: Option<Box<dyn Expression>>,
    /// VRL's compiled form of the same call: the source of the type definition.
    vrl: Box<dyn Expression>,
}

impl FunctionExpression for ParseJsonFn {
    fn resolve(&self, ctx: &mut Context) -> Resolved {
        let text = self.value.resolve(ctx)?.try_bytes()?;
        let lossy = match &self.lossy {
            Some(lossy) => lossy.resolve(ctx)?.try_boolean()?,
            None => true,
        };
        parse(&text, lossy).map_err(|error| format!("unable to parse json: {error}").into())
    }

    fn type_def(&self, state: &TypeState) -> TypeDef {
        self.vrl.type_def(state)
    }
}

const UTF8_BOM: &[u8] = b"\xef\xbb\xbf";

fn parse(text: &[u8], lossy: bool) -> Result<Value, serde_json::Error> {
    match json::parse(strip_bom(text)) {
        Err(_) if lossy && std::str::from_utf8(text).is_err() => {
            json::parse(strip_bom(String::from_utf8_lossy(text).as_bytes()))
        }
        result => result,
    }
}

fn strip_bom(text: &[u8]) -> &[u8] {
    text.strip_prefix(UTF8_BOM).unwrap_or(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vrl::compiler::runtime::Runtime;
    use vrl::compiler::{TargetValueRef, TimeZone};
    use vrl::value::Secrets;

    /// Runs `source` on `{ "m": message }` with the given function set: the result, or the
    /// error's message.
    fn run(functions: &[Box<dyn Function>], source: &str, message: &[u8]) -> String {
        let program = vrl::compiler::compile(source, functions)
            .unwrap_or_else(|e| panic!("{source}: {e:?}"))
            .program;
        let mut value = Value::from(vrl::value::ObjectMap::from([(
            "m".into(),
            Value::Bytes(Bytes::copy_from_slice(message)),
        )]));
        let mut metadata = Value::Object(Default::default());
        let mut secrets = Secrets::default();
        let mut target = TargetValueRef {
            value: &mut value,
            metadata: &mut metadata,
            secrets: &mut secrets,
        };
        match Runtime::default().resolve(&mut target, &program, &TimeZone::default()) {
            Ok(result) => format!("ok {result:?}"),
            Err(error) => format!("error {error}"),
        }
    }

    #[test]
    fn results_and_errors_are_vrls() {
        let vrl = vrl::stdlib::all();
        let ours: Vec<Box<dyn Function>> = vec![Box::new(ParseJson)];
        let messages: &[&[u8]] = &[
            br#"{"a":"x","n":[1,2.5,null,true],"o":{"p":"q\"r"}}"#,
            b"\xef\xbb\xbf{\"bom\":1}",
            b"{\"bad\":\"\xff\xfe\"}",
            b"\xef\xbb\xbf{\"bom_and_bad\":\"\xff\"}",
            b"{\"bad_and_broken\":\"\xff\"",
            br#"{"a":1"#,
            b"",
            b"\"text\"",
        ];
        for source in [
            "parse_json!(.m)",
            "parse_json!(.m, lossy: false)",
            "parse_json!(.m, lossy: true)",
            "parse_json(.m) ?? \"failed\"",
            "parse_json!(.m, max_depth: 1)",
        ] {
            for message in messages {
                assert_eq!(
                    run(&ours, source, message),
                    run(&vrl, source, message),
                    "{source} on {}",
                    String::from_utf8_lossy(message)
                );
            }
        }
    }

    #[test]
    fn the_agents_programs_use_this_parse_json() {
        // Plain strings of one document are slices of one copy of it: "abc" and "def" lie as
        // far apart as in the text (10 bytes), which separate allocations (VRL's own
        // parse_json, 8-byte aligned) cannot.
        let program = crate::transforms::vrl_program::compile("t", ". = parse_json!(.m)").unwrap();
        let mut value = Value::from(vrl::value::ObjectMap::from([(
            "m".into(),
            Value::from(r#"{"a":"abc","b":"def"}"#),
        )]));
        crate::transforms::vrl_program::Runner::default()
            .run(&program, &mut value)
            .unwrap();
        let field = |name: &str| value.as_object().and_then(|map| map.get(name));
        let (Some(Value::String(a)), Some(Value::String(b))) = (field("a"), field("b")) else {
            panic!("{value:?}")
        };
        assert_eq!(b.as_ptr() as usize - a.as_ptr() as usize, 10);
    }

    #[test]
    fn the_type_is_vrls() {
        let ours: Vec<Box<dyn Function>> = vec![Box::new(ParseJson)];
        let program = "x = parse_json!(.m); upcase(x)";
        let theirs = vrl::compiler::compile(program, &vrl::stdlib::all()).map(|_| ());
        let mine = vrl::compiler::compile(program, &ours).map(|_| ());
        assert!(theirs.is_err(), "a JSON value is not known to be a string");
        assert_eq!(mine.is_err(), theirs.is_err());
    }
}
