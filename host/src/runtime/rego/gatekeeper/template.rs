//! ConstraintTemplates (`templates.gatekeeper.sh`): the kind of constraint
//! a template defines, the schema of its parameters, and its Rego.

use serde::Deserialize;
use serde_json::Value;

use super::Document;

use crate::runtime::rego::{RegoModule, RegoSource, TextOrigin};

/// The one target Gatekeeper's templates are written for.
pub const TARGET: &str = "admission.k8s.gatekeeper.sh";

/// The rule a template must define, evaluated for every review.
pub const RULE: &str = "violation";

/// A ConstraintTemplate, as read from YAML or JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct ConstraintTemplate {
    /// `metadata.name` (the kind, lower-cased).
    pub name: String,
    /// The kind of the constraints it defines (`spec.crd.spec.names.kind`).
    pub kind: String,
    /// The OpenAPI v3 schema of the constraints' `spec.parameters`, if any.
    pub parameters_schema: Option<Value>,
    /// The Rego entry module (with the `violation` rule).
    pub rego: String,
    /// The library modules the entry module imports.
    pub libs: Vec<String>,
    /// Whether the Rego is written in v1 syntax (`source.version: v1`);
    /// otherwise v0, Gatekeeper's default.
    pub rego_v1: bool,
}

#[derive(Deserialize)]
struct Spec {
    crd: Crd,
    #[serde(default)]
    targets: Vec<Target>,
}

#[derive(Deserialize)]
struct Crd {
    spec: CrdSpec,
}

#[derive(Deserialize)]
struct CrdSpec {
    names: Names,
    #[serde(default)]
    validation: Option<Validation>,
}

#[derive(Deserialize)]
struct Names {
    kind: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Validation {
    #[serde(default, rename = "openAPIV3Schema")]
    open_api_v3_schema: Option<Value>,
}

#[derive(Deserialize)]
struct Target {
    target: String,
    #[serde(default)]
    rego: Option<String>,
    #[serde(default)]
    libs: Vec<String>,
    #[serde(default)]
    code: Vec<Code>,
}

#[derive(Deserialize)]
struct Code {
    engine: String,
    #[serde(default)]
    source: Value,
}

impl ConstraintTemplate {
    /// Reads a template from one parsed YAML or JSON document.
    pub fn from_value(document: Value) -> Result<Self, String> {
        let document: Document<Spec> = serde_json::from_value(document)
            .map_err(|e| format!("not a ConstraintTemplate: {e}"))?;
        if !document.api_version.starts_with("templates.gatekeeper.sh/")
            || document.kind != "ConstraintTemplate"
        {
            return Err(format!(
                "not a ConstraintTemplate: apiVersion `{}`, kind `{}` (want templates.gatekeeper.sh/v1, ConstraintTemplate)",
                document.api_version, document.kind
            ));
        }
        let name = document.metadata.name;
        let kind = document.spec.crd.spec.names.kind;
        if kind.is_empty() {
            return Err(format!(
                "template `{name}`: spec.crd.spec.names.kind is empty"
            ));
        }
        // Gatekeeper's rule: the template is named after its kind.
        if name != kind.to_lowercase() {
            return Err(format!(
                "template `{name}`: metadata.name must be the kind in lower case, `{}`",
                kind.to_lowercase()
            ));
        }
        let [target] = <[Target; 1]>::try_from(document.spec.targets).map_err(|targets| {
            format!(
                "template `{name}`: exactly one target is supported, `{TARGET}` (found {})",
                targets.len()
            )
        })?;
        if target.target != TARGET {
            return Err(format!(
                "template `{name}`: unknown target `{}` (want `{TARGET}`)",
                target.target
            ));
        }
        let (rego, libs, rego_v1) = rego_of(&name, target)?;
        Ok(Self {
            name,
            kind,
            parameters_schema: document
                .spec
                .crd
                .spec
                .validation
                .and_then(|validation| validation.open_api_v3_schema),
            rego,
            libs,
            rego_v1,
        })
    }

    /// The Rego to evaluate, its modules named after `origin` (where the
    /// template was read from) so errors say `origin#rego:LINE:COLUMN` or
    /// `origin#libs[N]:LINE:COLUMN`.
    pub fn rego_source(&self, origin: &str) -> RegoSource {
        self.source(origin, None)
    }

    /// [`rego_source`](Self::rego_source), for a template read from
    /// `file_text` (the file `origin`): errors cite the file's own lines
    /// and columns where each module's text is found in it.
    pub fn rego_source_in(&self, origin: &str, file_text: &str) -> RegoSource {
        self.source(origin, Some(file_text))
    }

    fn source(&self, origin: &str, file_text: Option<&str>) -> RegoSource {
        let place = |text: &str| file_text.and_then(|file| locate(origin, file, text));
        let entry = RegoModule {
            name: format!("{origin}#rego"),
            text: self.rego.clone(),
            origin: place(&self.rego),
        };
        let libs = self
            .libs
            .iter()
            .enumerate()
            .map(|(index, text)| RegoModule {
                name: format!("{origin}#libs[{index}]"),
                text: text.clone(),
                origin: place(text),
            });
        RegoSource {
            modules: std::iter::once(entry).chain(libs).collect(),
            rule: RULE.to_owned(),
            rego_v0: !self.rego_v1,
        }
    }

    /// Whether the Rego reads `data.inventory` (a referential template):
    /// only these are given the inventory.
    pub fn reads_inventory(&self) -> bool {
        std::iter::once(&self.rego)
            .chain(&self.libs)
            .any(|module| module.contains("data.inventory"))
    }
}

/// Where `text` (a YAML block scalar's value) sits in `file`: the line
/// of its first line and the indentation every line has there. `None`
/// when it is not found line by line (e.g. a quoted or folded scalar).
fn locate(origin: &str, file: &str, text: &str) -> Option<TextOrigin> {
    let lines: Vec<&str> = text.lines().collect();
    let first = lines.iter().position(|line| !line.trim().is_empty())?;
    let file_lines: Vec<&str> = file.lines().collect();
    (0..file_lines.len()).find_map(|at| {
        let candidate = file_lines[at];
        let indent = candidate.strip_suffix(lines[first])?.len();
        if candidate[..indent].chars().any(|c| c != ' ') {
            return None;
        }
        let start = at.checked_sub(first)?;
        let fits = lines.iter().enumerate().all(|(n, line)| {
            let in_file = file_lines.get(start + n).copied().unwrap_or("");
            line.is_empty() && in_file.trim().is_empty()
                || in_file.get(indent..) == Some(line) && in_file[..indent].trim().is_empty()
        });
        fits.then(|| TextOrigin {
            file: origin.to_owned(),
            line: start as u32 + 1,
            indent: indent as u32,
        })
    })
}

/// The Rego of a target: its `code` entry for the `Rego` engine, else its
/// `rego` and `libs` (the older form, which Gatekeeper converts to the first).
fn rego_of(name: &str, target: Target) -> Result<(String, Vec<String>, bool), String> {
    if let Some(code) = target.code.into_iter().find(|code| code.engine == "Rego") {
        let source = code.source;
        let rego = source
            .get("rego")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("template `{name}`: the Rego code has no `source.rego`"))?;
        let libs = match source.get("libs") {
            None | Some(Value::Null) => Vec::new(),
            Some(libs) => serde_json::from_value(libs.clone())
                .map_err(|e| format!("template `{name}`: `source.libs`: {e}"))?,
        };
        let rego_v1 = source.get("version").and_then(Value::as_str) == Some("v1");
        return Ok((rego.to_owned(), libs, rego_v1));
    }
    match target.rego {
        Some(rego) if !rego.trim().is_empty() => Ok((rego, target.libs, false)),
        _ => Err(format!(
            "template `{name}` has no Rego (a CEL-only template, engine K8sNativeValidation, does not run here)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template(targets: Value) -> Value {
        json!({
            "apiVersion": "templates.gatekeeper.sh/v1",
            "kind": "ConstraintTemplate",
            "metadata": {"name": "portcullisdemo"},
            "spec": {
                "crd": {"spec": {
                    "names": {"kind": "PortcullisDemo"},
                    "validation": {"openAPIV3Schema": {"type": "object", "properties": {"limit": {"type": "integer"}}}},
                }},
                "targets": targets,
            },
        })
    }

    #[test]
    fn modules_read_from_a_file_cite_its_lines_and_columns() {
        let file = "spec:\n  targets:\n  - rego: |\n      package demo\n\n      violation[x] { x := 1 }\n    libs:\n    - |\n      package lib.demo\n";
        let parsed = ConstraintTemplate::from_value(template(json!([{
            "target": TARGET,
            "rego": "package demo\n\nviolation[x] { x := 1 }\n",
            "libs": ["package lib.demo\n"],
        }])))
        .unwrap();
        let source = parsed.rego_source_in("t.yaml", file);
        let place = |n: usize| source.modules[n].origin.clone().unwrap();
        assert_eq!(
            (place(0).file.as_str(), place(0).line, place(0).indent),
            ("t.yaml", 4, 6)
        );
        assert_eq!((place(1).line, place(1).indent), (9, 6));
        // Text that is not in the file line by line has no place.
        assert_eq!(
            parsed
                .rego_source_in("t.yaml", "rego: \"package demo\"")
                .modules[0]
                .origin,
            None
        );
    }

    #[test]
    fn rego_and_libs_become_named_modules() {
        let parsed = ConstraintTemplate::from_value(template(json!([{
            "target": TARGET,
            "rego": "package demo\nviolation[{\"msg\": \"m\"}] { data.lib.demo.bad }",
            "libs": ["package lib.demo\nbad { true }"],
        }])))
        .unwrap();
        assert_eq!(parsed.kind, "PortcullisDemo");
        assert_eq!(
            parsed.parameters_schema.as_ref().unwrap()["properties"]["limit"]["type"],
            "integer"
        );
        let source = parsed.rego_source("demo.yaml");
        assert_eq!(source.rule, "violation");
        assert!(source.rego_v0);
        let names: Vec<&str> = source.modules.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["demo.yaml#rego", "demo.yaml#libs[0]"]);
        assert!(!parsed.reads_inventory());
    }

    #[test]
    fn the_code_form_wins_and_says_its_version() {
        let parsed = ConstraintTemplate::from_value(template(json!([{
            "target": TARGET,
            "rego": "package old",
            "code": [
                {"engine": "K8sNativeValidation", "source": {"validations": []}},
                {"engine": "Rego", "source": {"rego": "package new\nviolation contains {\"msg\": \"m\"} if data.inventory", "version": "v1"}},
            ],
        }])))
        .unwrap();
        assert!(parsed.rego.starts_with("package new"));
        assert!(parsed.rego_v1);
        assert!(!parsed.rego_source("t").rego_v0);
        assert!(parsed.reads_inventory());
    }

    #[test]
    fn what_cannot_run_is_refused_with_the_reason() {
        let error = |targets: Value| ConstraintTemplate::from_value(template(targets)).unwrap_err();
        assert!(error(json!([])).contains("exactly one target"));
        assert!(
            error(json!([{"target": "other.target", "rego": "package a"}]))
                .contains("unknown target `other.target`")
        );
        let cel_only =
            json!([{"target": TARGET, "code": [{"engine": "K8sNativeValidation", "source": {}}]}]);
        assert!(error(cel_only).contains("has no Rego"));
        let mut misnamed = template(json!([{"target": TARGET, "rego": "package a"}]));
        misnamed["metadata"]["name"] = json!("demo");
        let error = ConstraintTemplate::from_value(misnamed).unwrap_err();
        assert!(
            error.contains("must be the kind in lower case, `portcullisdemo`"),
            "{error}"
        );
        let error = ConstraintTemplate::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap", "spec": {"crd": {"spec": {"names": {"kind": "X"}}}}})).unwrap_err();
        assert!(error.contains("not a ConstraintTemplate"), "{error}");
    }
}
