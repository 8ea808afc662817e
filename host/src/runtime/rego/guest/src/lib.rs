//! The Rego interpreter of Portcullis's Rego runtime: one policy (a
//! Gatekeeper template's Rego and its libraries) parsed and prepared once,
//! then evaluated against one input at a time.
//!
//! Built for `wasm32-wasip2` this crate is the component the host embeds
//! (world `portcullis:rego-runtime`, `wit/rego.wit`): the host calls `init`
//! once and snapshots the instance, so every evaluation starts from a fresh
//! instance with the policy already parsed. Built natively it is the same
//! code as a library ([`Policy`]), which the host's bench runs beside the
//! component.

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
    /// as JSON, or `None` when it is undefined for this input.
    pub fn evaluate(&mut self, input: &str, data: Option<&str>) -> Result<Option<String>, Error> {
        let input = Value::from_json_str(input).map_err(|e| Error::plain(format!("input: {e}")))?;
        let value = match data {
            // Data changes the engine's preparation: do that on a copy, so the
            // prepared policy stays as it was for the next evaluation.
            Some(data) => {
                let data =
                    Value::from_json_str(data).map_err(|e| Error::plain(format!("data: {e}")))?;
                let mut engine = self.engine.clone();
                engine
                    .add_data(data)
                    .map_err(|e| Error::plain(format!("data: {e}")))?;
                engine.set_input(input);
                engine.eval_rule(self.rule.clone())
            }
            None => {
                self.engine.set_input(input);
                self.engine.eval_rule(self.rule.clone())
            }
        }
        .map_err(|e| Error::from_report(&e))?;
        if value == Value::Undefined {
            return Ok(None);
        }
        serde_json::to_string(&value)
            .map(Some)
            .map_err(|e| Error::plain(format!("the result is not JSON: {e}")))
    }
}

#[cfg(target_arch = "wasm32")]
mod component {
    //! The component's exports: `init` keeps the policy in the instance,
    //! `evaluate` runs it.

    use std::cell::RefCell;

    use crate::Policy;

    wit_bindgen::generate!({ path: "wit", world: "rego-runtime" });

    use exports::portcullis::rego_runtime::evaluator::{self as wit, Guest};

    thread_local! {
        /// The policy `init` prepared: part of the snapshot the host takes.
        static POLICY: RefCell<Option<Policy>> = const { RefCell::new(None) };
    }

    struct Component;

    impl Guest for Component {
        fn init(
            modules: Vec<wit::Module>,
            rule: String,
            rego_v0: bool,
        ) -> Result<String, wit::Error> {
            POLICY.with_borrow_mut(|slot| {
                if slot.is_some() {
                    return Err(crate::Error::plain("the policy is already initialised").into());
                }
                let modules = modules
                    .into_iter()
                    .map(|m| crate::Module {
                        name: m.name,
                        text: m.text,
                    })
                    .collect();
                let policy = Policy::new(modules, &rule, rego_v0)?;
                let rule = policy.rule().to_owned();
                *slot = Some(policy);
                Ok(rule)
            })
        }

        fn evaluate(input: String, data: Option<String>) -> Result<Option<String>, wit::Error> {
            POLICY.with_borrow_mut(|slot| {
                let policy = slot
                    .as_mut()
                    .ok_or_else(|| crate::Error::plain("no policy: `init` was not called"))?;
                Ok(policy.evaluate(&input, data.as_deref())?)
            })
        }
    }

    impl From<crate::Error> for wit::Error {
        fn from(error: crate::Error) -> Self {
            Self {
                message: error.message,
                location: error.location.map(|at| wit::Location {
                    file: at.file,
                    line: at.line,
                    column: at.column,
                }),
                report: error.report,
            }
        }
    }

    export!(Component);
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
        let mut failing =
            policy("package demo\nviolation[x] {\n  x := 1 / input.zero\n}\n").unwrap();
        let error = failing.evaluate(r#"{"zero": 0}"#, None).unwrap_err();
        assert_eq!(
            error.location.as_ref().map(|at| at.line),
            Some(3),
            "{}",
            error.report
        );
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
