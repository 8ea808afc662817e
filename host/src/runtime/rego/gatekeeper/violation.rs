//! What a template's `violation` rule yields, and the admission decision
//! Gatekeeper makes of the violations of every constraint: denied with the
//! message `[constraint-name] msg` per `deny` violation (one per line),
//! warnings in the same form for `warn`, `dryrun` ones only recorded.

use serde_json::Value;

use super::constraint::{Constraint, EnforcementAction};

/// One element of a template's `violation` set.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    /// `msg`.
    pub msg: String,
    /// `details`, `{}` when the template gives none.
    pub details: Value,
}

/// Reads the value of the `violation` rule (JSON, `None` when undefined,
/// which is no violation). Elements without a `msg` are not violations,
/// as in Gatekeeper's hook; a `msg` that is not a string is an error.
pub fn parse_violations(value: Option<&str>) -> Result<Vec<Violation>, String> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let value: Value =
        serde_json::from_str(value).map_err(|e| format!("the violations are not JSON: {e}"))?;
    let Value::Array(elements) = value else {
        return Err(format!("`violation` is not a set: {value}"));
    };
    let mut violations = Vec::with_capacity(elements.len());
    for element in elements {
        let Some(msg) = element.get("msg") else {
            continue;
        };
        let Some(msg) = msg.as_str() else {
            return Err(format!("a violation's msg is not a string: {msg}"));
        };
        violations.push(Violation {
            msg: msg.to_owned(),
            details: element
                .get("details")
                .cloned()
                .unwrap_or_else(|| Value::Object(Default::default())),
        });
    }
    Ok(violations)
}

/// A violation of one constraint.
#[derive(Debug, Clone, PartialEq)]
pub struct ConstraintViolation {
    /// The constraint's kind.
    pub kind: String,
    /// The constraint's name.
    pub name: String,
    /// Its enforcement action.
    pub action: EnforcementAction,
    /// The violation.
    pub violation: Violation,
}

impl ConstraintViolation {
    /// A violation of `constraint`.
    pub fn new(constraint: &Constraint, violation: Violation) -> Self {
        Self {
            kind: constraint.kind.clone(),
            name: constraint.name.clone(),
            action: constraint.enforcement_action,
            violation,
        }
    }

    /// `[name] msg`, as Gatekeeper's messages and warnings cite it.
    pub fn message(&self) -> String {
        format!("[{}] {}", self.name, self.violation.msg)
    }
}

/// The admission decision from every constraint's violations.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    /// The `deny` violations' messages: the request is rejected if any.
    pub denials: Vec<String>,
    /// The `warn` violations' messages: returned as warnings.
    pub warnings: Vec<String>,
    /// The `dryrun` violations: recorded (logs, audit), nothing else.
    pub dry_runs: Vec<ConstraintViolation>,
}

impl Decision {
    /// Decides on `violations`, ordered as Gatekeeper orders its results:
    /// by constraint kind, then name (each constraint's own in the order
    /// its template yielded them).
    pub fn new(mut violations: Vec<ConstraintViolation>) -> Self {
        violations.sort_by(|a, b| (&a.kind, &a.name).cmp(&(&b.kind, &b.name)));
        let mut decision = Self::default();
        for violation in violations {
            match violation.action {
                EnforcementAction::Deny => decision.denials.push(violation.message()),
                EnforcementAction::Warn => decision.warnings.push(violation.message()),
                EnforcementAction::Dryrun => decision.dry_runs.push(violation),
            }
        }
        decision
    }

    /// Whether the request is allowed.
    pub fn allowed(&self) -> bool {
        self.denials.is_empty()
    }

    /// The rejection's message, one violation per line; `None` if allowed.
    pub fn message(&self) -> Option<String> {
        (!self.allowed()).then(|| self.denials.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_rule_value_becomes_violations() {
        assert_eq!(parse_violations(None).unwrap(), []);
        let parsed = parse_violations(Some(
            r#"[{"msg": "a", "details": {"x": 1}}, {"msg": "b"}, {"details": {}}]"#,
        ))
        .unwrap();
        assert_eq!(
            parsed,
            [
                Violation {
                    msg: "a".into(),
                    details: json!({"x": 1})
                },
                Violation {
                    msg: "b".into(),
                    details: json!({})
                },
            ]
        );
        assert!(
            parse_violations(Some(r#"[{"msg": 1}]"#))
                .unwrap_err()
                .contains("msg is not a string")
        );
        assert!(
            parse_violations(Some("true"))
                .unwrap_err()
                .contains("not a set")
        );
    }

    fn violation(
        kind: &str,
        name: &str,
        action: EnforcementAction,
        msg: &str,
    ) -> ConstraintViolation {
        ConstraintViolation {
            kind: kind.into(),
            name: name.into(),
            action,
            violation: Violation {
                msg: msg.into(),
                details: json!({}),
            },
        }
    }

    #[test]
    fn each_action_has_its_effect_and_messages_name_the_constraint() {
        use EnforcementAction::*;
        let decision = Decision::new(vec![
            violation("B", "must-have-owner", Deny, "owner missing"),
            violation("A", "no-latest", Warn, "latest tag"),
            violation("A", "audit-only", Dryrun, "would deny"),
            violation("A", "host-network", Deny, "hostNetwork"),
        ]);
        assert!(!decision.allowed());
        assert_eq!(
            decision.message().unwrap(),
            "[host-network] hostNetwork\n[must-have-owner] owner missing"
        );
        assert_eq!(decision.warnings, ["[no-latest] latest tag"]);
        assert_eq!(decision.dry_runs.len(), 1);
        assert_eq!(decision.dry_runs[0].message(), "[audit-only] would deny");
        let lenient = Decision::new(vec![
            violation("A", "w", Warn, "m"),
            violation("A", "d", Dryrun, "m"),
        ]);
        assert!(lenient.allowed());
        assert_eq!(lenient.message(), None);
    }
}
