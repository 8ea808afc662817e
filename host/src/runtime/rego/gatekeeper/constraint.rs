//! Constraints (`constraints.gatekeeper.sh`): one use of a template, with
//! its parameters, what it matches and what a violation does.

use serde::Deserialize;
use serde_json::Value;

use super::Document;

use super::matching::Match;
use super::parameters;
use super::template::ConstraintTemplate;

/// A constraint, as read from YAML or JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Constraint {
    /// Its kind: the kind its template defines.
    pub kind: String,
    /// `metadata.name`, which Gatekeeper's messages cite.
    pub name: String,
    /// What a violation does.
    pub enforcement_action: EnforcementAction,
    /// What it applies to (`spec.match`; empty: everything).
    pub selection: Match,
    /// `spec.parameters`, the template's `input.parameters` (default `{}`).
    pub parameters: Value,
}

/// `spec.enforcementAction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnforcementAction {
    /// The request is rejected (the default).
    Deny,
    /// The request is allowed; the violation is recorded and audited.
    Dryrun,
    /// The request is allowed with a warning.
    Warn,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Spec {
    #[serde(default)]
    enforcement_action: Option<String>,
    #[serde(default, rename = "match")]
    selection: Option<Value>,
    #[serde(default)]
    parameters: Option<Value>,
}

impl Constraint {
    /// Reads a constraint from one parsed YAML or JSON document. Errors
    /// name the constraint.
    pub fn from_value(document: Value) -> Result<Self, String> {
        let document: Document<Option<Spec>> =
            serde_json::from_value(document).map_err(|e| format!("not a constraint: {e}"))?;
        let name = document.metadata.name;
        let spec = document.spec.unwrap_or_default();
        if !document
            .api_version
            .starts_with("constraints.gatekeeper.sh/")
        {
            return Err(format!(
                "`{name}` is not a constraint: apiVersion `{}` (want constraints.gatekeeper.sh/v1beta1)",
                document.api_version
            ));
        }
        if name.is_empty() {
            return Err(format!(
                "a {} constraint without metadata.name",
                document.kind
            ));
        }
        let enforcement_action = match spec.enforcement_action.as_deref() {
            None | Some("") => EnforcementAction::Deny,
            Some(action) => serde_json::from_value(Value::from(action)).map_err(|_| {
                format!(
                    "constraint `{name}`: unknown enforcementAction `{action}` (deny, dryrun or warn)"
                )
            })?,
        };
        let selection: Match = match spec.selection {
            None | Some(Value::Null) => Match::default(),
            Some(selection) => serde_json::from_value(selection)
                .map_err(|e| format!("constraint `{name}`: spec.match: {e}"))?,
        };
        selection
            .validate()
            .map_err(|e| format!("constraint `{name}`: spec.match.{e}"))?;
        let parameters = match spec.parameters {
            None | Some(Value::Null) => Value::Object(Default::default()),
            Some(parameters) => parameters,
        };
        Ok(Self {
            kind: document.kind,
            name,
            enforcement_action,
            selection,
            parameters,
        })
    }

    /// Checks the constraint against its template: the kind it defines,
    /// and the schema of the parameters.
    pub fn check_against(&self, template: &ConstraintTemplate) -> Result<(), String> {
        if self.kind != template.kind {
            return Err(format!(
                "constraint `{}` is a {}, not a {} (template `{}`)",
                self.name, self.kind, template.kind, template.name
            ));
        }
        if let Some(schema) = &template.parameters_schema {
            parameters::check(schema, &self.parameters, "spec.parameters").map_err(|e| {
                format!(
                    "constraint `{}`: {e} (the schema of template `{}`)",
                    self.name, template.name
                )
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn constraint(spec: Value) -> Result<Constraint, String> {
        Constraint::from_value(json!({
            "apiVersion": "constraints.gatekeeper.sh/v1beta1",
            "kind": "PortcullisDemo",
            "metadata": {"name": "demo"},
            "spec": spec,
        }))
    }

    #[test]
    fn defaults_are_deny_everything_and_empty_parameters() {
        let parsed = constraint(json!({})).unwrap();
        assert_eq!(parsed.enforcement_action, EnforcementAction::Deny);
        assert_eq!(parsed.selection, Match::default());
        assert_eq!(parsed.parameters, json!({}));
        let parsed =
            constraint(json!({"enforcementAction": "warn", "parameters": {"a": 1}})).unwrap();
        assert_eq!(parsed.enforcement_action, EnforcementAction::Warn);
        assert_eq!(parsed.parameters, json!({"a": 1}));
        let parsed = constraint(json!({"enforcementAction": "dryrun"})).unwrap();
        assert_eq!(parsed.enforcement_action, EnforcementAction::Dryrun);
    }

    #[test]
    fn bad_fields_are_refused_with_the_constraint_name() {
        let error = constraint(json!({"enforcementAction": "Deny"})).unwrap_err();
        assert_eq!(
            error,
            "constraint `demo`: unknown enforcementAction `Deny` (deny, dryrun or warn)"
        );
        let error = constraint(json!({"match": {"kind": []}})).unwrap_err();
        assert!(
            error.starts_with("constraint `demo`: spec.match: unknown field `kind`"),
            "{error}"
        );
        let error = constraint(json!({"match": {"labelSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}})).unwrap_err();
        assert!(
            error.starts_with(
                "constraint `demo`: spec.match.labelSelector.matchExpressions[0].values"
            ),
            "{error}"
        );
    }

    #[test]
    fn a_constraint_must_fit_its_template() {
        let template = ConstraintTemplate {
            name: "portcullisdemo".into(),
            kind: "PortcullisDemo".into(),
            parameters_schema: Some(
                json!({"type": "object", "properties": {"limit": {"type": "integer"}}}),
            ),
            rego: String::new(),
            libs: Vec::new(),
            rego_v1: false,
        };
        constraint(json!({"parameters": {"limit": 3}}))
            .unwrap()
            .check_against(&template)
            .unwrap();
        let error = constraint(json!({"parameters": {"limit": "3"}}))
            .unwrap()
            .check_against(&template)
            .unwrap_err();
        assert_eq!(
            error,
            "constraint `demo`: spec.parameters.limit: \"3\" is not an integer (the schema of template `portcullisdemo`)"
        );
        let other = ConstraintTemplate {
            kind: "Other".into(),
            ..template
        };
        let error = constraint(json!({}))
            .unwrap()
            .check_against(&other)
            .unwrap_err();
        assert!(
            error.contains("is a PortcullisDemo, not a Other"),
            "{error}"
        );
    }
}
