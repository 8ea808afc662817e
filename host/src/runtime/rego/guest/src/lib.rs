//! The Rego interpreter of Portcullis's Rego runtime: one policy (a
//! Gatekeeper template's Rego and its libraries) parsed and prepared once,
//! then evaluated against one input at a time.
//!
//! Built for `wasm32-wasip1` this crate is the interpreter guest the host
//! embeds (`portcullis-interpreter-guest`'s ABI, [`guest`]): the host calls
//! `init` once and snapshots the instance's memory, so every evaluation
//! starts from a fresh instance with the policy already parsed. Built
//! natively it is the same code as a library ([`Policy`]), which the host's
//! bench runs beside the guest.

#![deny(missing_docs)]

use regorus::{Engine, Value};

/// One Rego file: its name (as errors cite it) and its text.
#[derive(Debug, Clone)]
pub struct Module {
    /// The name errors cite, e.g. `template.yaml#rego`.
    pub name: String,
    /// The Rego text.
    pub text: String,
}

/// A place in a module, 1-based.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The module's name.
    pub file: String,
    /// Line, from 1.
    pub line: u32,
    /// Column, from 1.
    pub column: u32,
}

/// Why a policy cannot be loaded or evaluated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// What is wrong, one line.
    pub message: String,
    /// Where, when the interpreter says.
    pub location: Option<Location>,
    /// The interpreter's whole report (location, the line with a caret,
    /// message).
    pub report: String,
}

impl Error {
    /// Reads regorus's report: `--> FILE:LINE:COL`, the line of Rego with a
    /// caret, then `error: MESSAGE`. Errors without a position (a data
    /// document that is not an object) are their text.
    fn from_report(error: &anyhow::Error) -> Self {
        let report = format!("{error:#}");
        let location = report
            .lines()
            .find_map(|line| line.trim_start().strip_prefix("--> "))
            .and_then(parse_location);
        let message = match location {
            Some(_) => report
                .lines()
                .rev()
                .find_map(|line| line.strip_prefix("error: "))
                .unwrap_or(report.trim()),
            None => report.trim(),
        };
        Self {
            message: message.trim().to_owned(),
            location,
            report: report.trim().to_owned(),
        }
    }

    fn plain(message: impl Into<String>) -> Self {
        let message = message.into();
        Self {
            report: message.clone(),
            message,
            location: None,
        }
    }
}

/// `FILE:LINE:COL`, the file name itself possibly holding colons.
fn parse_location(text: &str) -> Option<Location> {
    let mut parts = text.trim().rsplitn(3, ':');
    let column = parts.next()?.parse().ok()?;
    let line = parts.next()?.parse().ok()?;
    let file = parts.next()?.to_owned();
    Some(Location { file, line, column })
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.location {
            Some(at) => write!(f, "{}:{}:{}: {}", at.file, at.line, at.column, self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for Error {}

/// A parsed, prepared policy and the rule it evaluates.
#[derive(Clone)]
pub struct Policy {
    engine: Engine,
    rule: String,
}

impl Policy {
    /// Parses `modules` (Rego v0 syntax when `rego_v0`) and prepares the
    /// evaluation of `rule` in the package of the first module: everything
    /// that does not depend on the input is done here, once.
    pub fn new(modules: Vec<Module>, rule: &str, rego_v0: bool) -> Result<Self, Error> {
        if modules.is_empty() {
            return Err(Error::plain("no Rego module given"));
        }
        let mut engine = Engine::new();
        engine.set_rego_v0(rego_v0);
        // As OPA evaluates for Gatekeeper (`rego.New` without
        // `StrictBuiltinErrors`): a builtin's error makes its expression
        // undefined; other errors (conflicts) are still errors.
        engine.set_strict_builtin_errors(false);
        let entry = modules[0].name.clone();
        let mut package = None;
        for module in modules {
            let added = engine
                .add_policy(module.name, module.text)
                .map_err(|e| Error::from_report(&e))?;
            package.get_or_insert(added);
        }
        // The rule must be the first module's own (Gatekeeper requires its
        // template's Rego to define `violation`).
        let declared = engine
            .has_declared_rule_rooted_at(&entry, rule)
            .map_err(|e| Error::from_report(&e))?;
        if !declared {
            return Err(Error::plain(format!(
                "{entry}: no rule `{rule}` is defined"
            )));
        }
        let rule = format!("{}.{rule}", package.expect("one module at least"));
        // Analyses the modules (schedules, imports, functions, rule index) and
        // checks that the rule exists; the engine keeps that preparation, so
        // evaluations start from it.
        engine
            .compile_with_entrypoint(&rule.as_str().into())
            .map_err(|e| Error::from_report(&e))?;
        Ok(Self { engine, rule })
    }

    /// The rule evaluated, e.g. `data.k8srequiredlabels.violation`.
    pub fn rule(&self) -> &str {
        &self.rule
    }

    /// Evaluates the rule with `input` (JSON) and, when given, `data` (a
    /// JSON object merged into the data document). Returns the rule's value
    /// as JSON, or `None` when it is undefined for this input. The policy
    /// stays as it was, ready for the next evaluation.
    pub fn evaluate(&mut self, input: &str, data: Option<&str>) -> Result<Option<String>, Error> {
        let input = Value::from_json_str(input).map_err(|e| Error::plain(format!("input: {e}")))?;
        let data = data
            .map(|data| Value::from_json_str(data).map_err(|e| Error::plain(format!("data: {e}"))))
            .transpose()?;
        match data {
            // Data changes the engine's preparation: do that on a copy, so the
            // prepared policy stays as it was for the next evaluation.
            Some(data) => self.clone().evaluate_once(input, Some(data)),
            None => self.evaluate_once(input, None),
        }
    }

    /// Evaluates the rule once with `input` and `data` (merged into the data
    /// document for good): what a throwaway instance does.
    pub fn evaluate_once(
        &mut self,
        input: Value,
        data: Option<Value>,
    ) -> Result<Option<String>, Error> {
        if let Some(data) = data {
            self.engine
                .add_data(data)
                .map_err(|e| Error::plain(format!("data: {e}")))?;
        }
        self.engine.set_input(input);
        let value = self
            .engine
            .eval_rule(self.rule.clone())
            .map_err(|e| Error::from_report(&e))?;
        if value == Value::Undefined {
            return Ok(None);
        }
        serde_json::to_string(&value)
            .map(Some)
            .map_err(|e| Error::plain(format!("the result is not JSON: {e}")))
    }
}

pub mod guest {
    //! The interpreter guest: [`Policy`] behind the interpreter ABI.
    //!
    //! - `init`'s request: `{"modules": [{"name": .., "text": ..}], "rule":
    //!   .., "rego_v0": bool}`; its reply: empty.
    //! - `evaluate`'s request: `{"input": .., "data": ..}` (`data`
    //!   optional); its reply: the rule's value as JSON, empty when the rule
    //!   is undefined.
    //! - An error's payload: `{"message": .., "location": {"file": ..,
    //!   "line": .., "column": ..} | null, "report": ..}`.

    use portcullis_interpreter_guest::Interpreter;
    use regorus::Value;
    use serde_json::json;

    use crate::{Error, Module, Policy};

    /// The Rego interpreter holding one [`Policy`].
    pub struct RegoGuest(Policy);

    impl Interpreter for RegoGuest {
        fn init(request: &[u8]) -> Result<Self, Vec<u8>> {
            let request: serde_json::Value = serde_json::from_slice(request)
                .map_err(|e| Error::plain(format!("the init request: {e}")).to_json())?;
            let modules = request["modules"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|module| Module {
                    name: module["name"].as_str().unwrap_or_default().to_owned(),
                    text: module["text"].as_str().unwrap_or_default().to_owned(),
                })
                .collect();
            let rule = request["rule"].as_str().unwrap_or_default();
            let rego_v0 = request["rego_v0"].as_bool().unwrap_or(false);
            Policy::new(modules, rule, rego_v0)
                .map(Self)
                .map_err(|e| e.to_json())
        }

        fn evaluate(&mut self, request: &[u8]) -> Result<Vec<u8>, Vec<u8>> {
            let request = std::str::from_utf8(request)
                .map_err(|e| e.to_string())
                .and_then(|text| Value::from_json_str(text).map_err(|e| e.to_string()))
                .map_err(|e| Error::plain(format!("the request: {e}")).to_json())?;
            let input = request["input"].clone();
            let data = match &request["data"] {
                Value::Undefined | Value::Null => None,
                data => Some(data.clone()),
            };
            match self.0.evaluate_once(input, data) {
                Ok(value) => Ok(value.map(String::into_bytes).unwrap_or_default()),
                Err(error) => Err(error.to_json()),
            }
        }
    }

    impl Error {
        fn to_json(&self) -> Vec<u8> {
            json!({
                "message": self.message,
                "location": self.location.as_ref().map(|at| json!({
                    "file": at.file,
                    "line": at.line,
                    "column": at.column,
                })),
                "report": self.report,
            })
            .to_string()
            .into_bytes()
        }
    }

    portcullis_interpreter_guest::export_interpreter!(RegoGuest);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: &str) -> Result<Policy, Error> {
        Policy::new(
            vec![Module {
                name: "demo.rego".into(),
                text: text.into(),
            }],
            "violation",
            true,
        )
    }

    const DEMO: &str = "package demo\n\nviolation[{\"msg\": msg}] {\n  input.kind == \"Pod\"\n  msg := sprintf(\"pod %v\", [input.name])\n}\n";

    #[test]
    fn the_rule_is_evaluated_per_input_and_undefined_is_none() {
        let mut demo = policy(DEMO).unwrap();
        assert_eq!(demo.rule(), "data.demo.violation");
        let found = demo
            .evaluate(r#"{"kind": "Pod", "name": "web"}"#, None)
            .unwrap();
        assert_eq!(found.as_deref(), Some(r#"[{"msg":"pod web"}]"#));
        // A partial set with no element is the empty set, not undefined.
        let found = demo.evaluate(r#"{"kind": "Service"}"#, None).unwrap();
        assert_eq!(found.as_deref(), Some("[]"));
        let mut complete = policy("package demo\nviolation = input.x").unwrap();
        assert_eq!(complete.evaluate("{}", None).unwrap(), None);
    }

    #[test]
    fn data_is_merged_for_one_evaluation_only() {
        let mut demo =
            policy("package demo\nviolation[name] { data.inventory.names[name] }").unwrap();
        let found = demo
            .evaluate("{}", Some(r#"{"inventory": {"names": {"a": true}}}"#))
            .unwrap();
        assert_eq!(found.as_deref(), Some(r#"["a"]"#));
        assert_eq!(demo.evaluate("{}", None).unwrap().as_deref(), Some("[]"));
        let error = demo.evaluate("{}", Some("[]")).unwrap_err();
        assert!(error.message.starts_with("data: "), "{error}");
    }

    #[test]
    fn a_syntax_error_names_file_line_and_column() {
        let error = policy("package demo\n\nviolation[{\"msg\": m}] {\n  m := @\n}\n")
            .err()
            .expect("a syntax error");
        let location = error.location.clone().expect("a location");
        assert_eq!(location.file, "demo.rego");
        assert_eq!((location.line, location.column), (4, 8), "{}", error.report);
        assert!(error.to_string().starts_with("demo.rego:4:8: "), "{error}");
        assert!(
            error.report.contains("--> demo.rego:4:8"),
            "{}",
            error.report
        );
    }

    #[test]
    fn a_missing_rule_and_missing_modules_are_errors() {
        let error = policy("package demo\nallow = true")
            .err()
            .expect("no violation rule");
        assert_eq!(
            error.to_string(),
            "demo.rego: no rule `violation` is defined"
        );
        let error = Policy::new(Vec::new(), "violation", true)
            .err()
            .expect("no module");
        assert_eq!(error.message, "no Rego module given");
    }

    #[test]
    fn an_error_raised_while_evaluating_carries_its_place() {
        let mut failing = policy(
            "package demo\nchoice = input.a\nchoice = input.b\nviolation[x] {\n  x := choice\n}\n",
        )
        .unwrap();
        assert_eq!(
            failing
                .evaluate(r#"{"a": 1, "b": 1}"#, None)
                .unwrap()
                .as_deref(),
            Some("[1]")
        );
        let error = failing.evaluate(r#"{"a": 1, "b": 2}"#, None).unwrap_err();
        assert!(error.location.is_some(), "{}", error.report);
    }

    #[test]
    fn a_builtin_error_is_undefined_as_in_gatekeeper() {
        let mut lenient = policy(
            "package demo\nviolation[x] {\n  x := to_number(input.n)\n}\nviolation[\"zero\"] {\n  1 / input.d\n}\n",
        )
        .unwrap();
        let found = lenient.evaluate(r#"{"n": "seven", "d": 0}"#, None).unwrap();
        assert_eq!(found.as_deref(), Some("[]"));
        let found = lenient.evaluate(r#"{"n": "7", "d": 1}"#, None).unwrap();
        assert_eq!(found.as_deref(), Some(r#"[7,"zero"]"#));
    }

    #[test]
    fn a_location_is_read_from_the_right_even_with_colons_in_the_name() {
        let at = parse_location("lib/a:b.rego:12:7").unwrap();
        assert_eq!(
            (at.file.as_str(), at.line, at.column),
            ("lib/a:b.rego", 12, 7)
        );
        assert_eq!(parse_location("no location"), None);
    }
}
