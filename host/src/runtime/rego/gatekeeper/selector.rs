//! Kubernetes label selectors (`matchLabels`, `matchExpressions`), as a
//! constraint's `labelSelector` and `namespaceSelector` hold them: checked
//! when the constraint is read, then matched against a label map.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// A label selector. Every part must hold; an empty selector selects
/// everything (Kubernetes' `LabelSelectorAsSelector`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    /// Labels that must be present with exactly these values.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    /// Requirements on labels, all of which must hold.
    #[serde(default)]
    pub match_expressions: Vec<Requirement>,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requirement {
    /// The label's key.
    pub key: String,
    /// How the label is compared with `values`.
    pub operator: Operator,
    /// The values `In` and `NotIn` compare with; empty for the others.
    #[serde(default)]
    pub values: Vec<String>,
}

/// A requirement's operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Operator {
    /// The label is present with one of the values.
    In,
    /// The label is absent, or present with none of the values.
    NotIn,
    /// The label is present, whatever its value.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

impl LabelSelector {
    /// Checks what Kubernetes' `ValidateLabelSelector` checks of the
    /// requirements: `In` and `NotIn` need values, `Exists` and
    /// `DoesNotExist` take none, and a key is never empty.
    pub fn validate(&self) -> Result<(), String> {
        for (index, requirement) in self.match_expressions.iter().enumerate() {
            let at = format!("matchExpressions[{index}]");
            if requirement.key.is_empty() {
                return Err(format!("{at}.key: must not be empty"));
            }
            match (requirement.operator, requirement.values.is_empty()) {
                (Operator::In | Operator::NotIn, true) => {
                    return Err(format!(
                        "{at}.values: must be specified when `operator` is 'In' or 'NotIn'"
                    ));
                }
                (Operator::Exists | Operator::DoesNotExist, false) => {
                    return Err(format!(
                        "{at}.values: may not be specified when `operator` is 'Exists' or 'DoesNotExist'"
                    ));
                }
                _ => {}
            }
        }
        if let Some(key) = self.match_labels.keys().find(|key| key.is_empty()) {
            return Err(format!("matchLabels: the key `{key}` must not be empty"));
        }
        Ok(())
    }

    /// Whether `labels` (an object's `metadata.labels`, absent or `null`
    /// meaning none) satisfy the selector.
    pub fn matches(&self, labels: Option<&Value>) -> bool {
        let label = |key: &str| {
            labels
                .and_then(|labels| labels.get(key))
                .and_then(Value::as_str)
        };
        let labels_hold = self
            .match_labels
            .iter()
            .all(|(key, value)| label(key) == Some(value.as_str()));
        labels_hold
            && self.match_expressions.iter().all(|requirement| {
                let value = label(&requirement.key);
                let listed =
                    value.is_some_and(|value| requirement.values.iter().any(|v| v == value));
                match requirement.operator {
                    Operator::In => listed,
                    Operator::NotIn => !listed,
                    Operator::Exists => value.is_some(),
                    Operator::DoesNotExist => value.is_none(),
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn selector(value: Value) -> LabelSelector {
        let selector: LabelSelector = serde_json::from_value(value).unwrap();
        selector.validate().unwrap();
        selector
    }

    #[test]
    fn an_empty_selector_selects_everything() {
        let any = selector(json!({}));
        assert!(any.matches(None));
        assert!(any.matches(Some(&json!({"a": "b"}))));
    }

    #[test]
    fn match_labels_need_every_pair() {
        let tier = selector(json!({"matchLabels": {"tier": "web", "env": "prod"}}));
        assert!(tier.matches(Some(&json!({"tier": "web", "env": "prod", "x": "y"}))));
        assert!(!tier.matches(Some(&json!({"tier": "web"}))));
        assert!(!tier.matches(Some(&json!({"tier": "web", "env": "dev"}))));
        assert!(!tier.matches(None));
    }

    #[test]
    fn each_operator_as_kubernetes_defines_it() {
        let labels = json!({"env": "prod", "team": "a"});
        let check = |operator: &str, key: &str, values: Value| {
            selector(
                json!({"matchExpressions": [{"key": key, "operator": operator, "values": values}]}),
            )
            .matches(Some(&labels))
        };
        assert!(check("In", "env", json!(["dev", "prod"])));
        assert!(!check("In", "env", json!(["dev"])));
        assert!(!check("In", "missing", json!(["dev"])));
        assert!(check("NotIn", "env", json!(["dev"])));
        assert!(!check("NotIn", "env", json!(["prod"])));
        assert!(
            check("NotIn", "missing", json!(["prod"])),
            "an absent label is not in any set"
        );
        assert!(check("Exists", "team", json!([])));
        assert!(!check("Exists", "missing", json!([])));
        assert!(check("DoesNotExist", "missing", json!([])));
        assert!(!check("DoesNotExist", "team", json!([])));
    }

    #[test]
    fn malformed_requirements_are_refused_with_their_place() {
        let invalid = |value: Value| {
            serde_json::from_value::<LabelSelector>(value)
                .map_err(|e| e.to_string())
                .and_then(|selector| selector.validate())
                .unwrap_err()
        };
        let error = invalid(json!({"matchExpressions": [{"key": "a", "operator": "In"}]}));
        assert!(
            error.starts_with("matchExpressions[0].values: must be specified"),
            "{error}"
        );
        let error = invalid(
            json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}),
        );
        assert!(error.contains("may not be specified"), "{error}");
        let error = invalid(json!({"matchExpressions": [{"key": "a", "operator": "Equals"}]}));
        assert!(error.contains("unknown variant `Equals`"), "{error}");
        let error = invalid(json!({"matchLabel": {"a": "b"}}));
        assert!(error.contains("unknown field `matchLabel`"), "{error}");
    }
}
