//! Compiling and running VRL (Vector Remap Language) programs, shared by remap, filter and
//! route. Programs compile once at startup; compile errors are VRL's own diagnostics.

use crate::event::Value;
use std::sync::OnceLock;
use vrl::compiler::runtime::{Runtime, Terminate};
use vrl::compiler::{Function, Program, TargetValueRef, TimeZone};
use vrl::value::Secrets;

/// VRL's standard library, with `parse_json` parsing into shared buffers (see
/// [`super::vrl_parse_json`]).
fn functions() -> &'static [Box<dyn Function>] {
    static FUNCTIONS: OnceLock<Vec<Box<dyn Function>>> = OnceLock::new();
    FUNCTIONS.get_or_init(|| {
        let mut functions = vrl::stdlib::all();
        for function in &mut functions {
            if function.identifier() == super::vrl_parse_json::ParseJson.identifier() {
                *function = Box::new(super::vrl_parse_json::ParseJson);
            }
        }
        functions
    })
}

/// Compiles a program, returning VRL's formatted diagnostics on failure. Warnings are logged.
pub fn compile(id: &str, source: &str) -> Result<Program, String> {
    match vrl::compiler::compile(source, functions()) {
        Ok(result) => {
            if !result.warnings.is_empty() {
                let text = vrl::diagnostic::Formatter::new(source, result.warnings).to_string();
                tracing::warn!(component_id = %id, "VRL warnings:\n{text}");
            }
            Ok(result.program)
        }
        Err(diagnostics) => Err(format!(
            "VRL program does not compile:\n{}",
            vrl::diagnostic::Formatter::new(source, diagnostics)
        )),
    }
}

/// Runs programs against events in place.
pub struct Runner {
    runtime: Runtime,
    timezone: TimeZone,
    metadata: Value,
    secrets: Secrets,
}

impl Default for Runner {
    fn default() -> Self {
        Runner {
            runtime: Runtime::default(),
            timezone: TimeZone::default(),
            metadata: Value::Object(Default::default()),
            secrets: Secrets::default(),
        }
    }
}

impl Runner {
    /// Runs `program` on `value`, modifying it in place, and returns the program's result.
    pub fn run(&mut self, program: &Program, value: &mut Value) -> Result<Value, Terminate> {
        let mut target = TargetValueRef {
            value,
            metadata: &mut self.metadata,
            secrets: &mut self.secrets,
        };
        let result = self.runtime.resolve(&mut target, program, &self.timezone);
        self.runtime.clear();
        if let Value::Object(map) = &mut self.metadata {
            if !map.is_empty() {
                map.clear();
            }
        }
        result
    }

    /// Evaluates a condition program: `Ok(bool)`, or an error message if it failed or did not
    /// return a boolean.
    pub fn check(&mut self, program: &Program, value: &mut Value) -> Result<bool, String> {
        match self.run(program, value) {
            Ok(Value::Boolean(b)) => Ok(b),
            Ok(other) => Err(format!(
                "condition returned {} instead of a boolean",
                other.kind_str()
            )),
            Err(error) => Err(error.to_string()),
        }
    }
}
