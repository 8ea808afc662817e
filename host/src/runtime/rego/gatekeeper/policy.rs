//! A template prepared in the Rego runtime with its constraints: what
//! reviews an object as Gatekeeper does, for `serve` and for `verify`.

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use super::constraint::Constraint;
use super::inventory::Inventory;
use super::review::Review;
use super::template::ConstraintTemplate;
use super::violation::{ConstraintViolation, parse_violations};
use crate::cache::CompiledCache;
use crate::limits::Limits;
use crate::runtime::rego::{PreparedRego, RegoRuntime};

/// The annotation `policies.yml`'s loader gives each constraint it reads:
/// the file it came from, which errors about the constraint name.
pub const CONSTRAINT_FILE: &str = "portcullis.dev/file";

/// A ConstraintTemplate whose Rego is prepared (snapshotted and compiled).
#[derive(Debug, Clone)]
pub struct PreparedTemplate {
    /// The template.
    pub template: ConstraintTemplate,
    prepared: Arc<PreparedRego>,
}

/// Why a template cannot be loaded.
#[derive(Debug, thiserror::Error)]
#[error("{}", self.place())]
pub struct LoadError {
    /// The file it was read from.
    pub file: String,
    /// What is wrong (a Rego error names its line and column in `file`).
    pub message: String,
}

impl LoadError {
    /// `file: message`, the file once (a Rego error cites it already,
    /// with the line and column).
    fn place(&self) -> String {
        if self.message.starts_with(&format!("{}:", self.file)) {
            self.message.clone()
        } else {
            format!("{}: {}", self.file, self.message)
        }
    }
}

impl PreparedTemplate {
    /// Reads the one ConstraintTemplate in the file at `path` and prepares
    /// its Rego (`cache`: the compiled cache, when there is one).
    pub async fn load(
        rego: &RegoRuntime,
        path: &Path,
        cache: Option<&CompiledCache>,
    ) -> Result<Self, LoadError> {
        let file = path.display().to_string();
        let error = |message: String| LoadError {
            file: file.clone(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
        let documents = super::parse_documents(&text).map_err(&error)?;
        let [document] = <[Value; 1]>::try_from(documents).map_err(|documents| {
            error(format!(
                "a template file holds one ConstraintTemplate, this one {} documents",
                documents.len()
            ))
        })?;
        let template = ConstraintTemplate::from_value(document).map_err(&error)?;
        let source = template.rego_source_in(&file, &text);
        let prepared = rego
            .prepare(&source, cache)
            .await
            .map_err(|e| error(e.to_string()))?;
        Ok(Self { template, prepared })
    }

    /// The constraints of `documents` (from `file`), each checked against
    /// this template (kind, parameters' schema); errors name the file and
    /// the constraint.
    pub fn constraints(
        &self,
        file: &str,
        documents: Vec<Value>,
    ) -> Result<Vec<Constraint>, String> {
        documents
            .into_iter()
            .map(|document| {
                let constraint = Constraint::from_value(document)?;
                constraint.check_against(&self.template)?;
                Ok(constraint)
            })
            .collect::<Result<_, String>>()
            .map_err(|e| format!("{file}: {e}"))
    }

    /// Reviews `review` against each of `constraints` that matches it (the
    /// Namespace for `namespaceSelector` and the templates' `data.inventory`
    /// from `inventory`), in a fresh instance each, under `limits`.
    pub async fn review(
        &self,
        limits: &Limits,
        constraints: &[Constraint],
        review: &Review,
        inventory: &Inventory,
    ) -> Result<Vec<ConstraintViolation>, String> {
        let namespace = inventory.namespace(review.namespace());
        let data = self
            .template
            .reads_inventory()
            .then(|| inventory.to_data().to_string());
        let mut violations = Vec::new();
        for constraint in constraints {
            let matched = constraint
                .selection
                .matches(&review.candidate(namespace))
                .map_err(|e| format!("constraint `{}`: {e}", constraint.name))?;
            if !matched {
                continue;
            }
            let input = review.input(&constraint.parameters, namespace).to_string();
            let value = self
                .prepared
                .evaluate(limits, &input, data.as_deref())
                .await
                .map_err(|e| format!("template `{}`: {e}", self.template.name))?;
            let found = parse_violations(value.as_deref())
                .map_err(|e| format!("template `{}`: {e}", self.template.name))?;
            violations.extend(
                found
                    .into_iter()
                    .map(|violation| ConstraintViolation::new(constraint, violation)),
            );
        }
        Ok(violations)
    }
}

/// The constraints of a policy's settings (`{"constraints": [..]}`, as
/// `policies.yml`'s `constraints` key writes them), each checked
/// against `template`; an error names the constraint and the file
/// it came from. Constraint names are unique, as in a cluster.
pub fn constraints_from_settings(
    template: &ConstraintTemplate,
    settings: &Value,
) -> Result<Vec<Constraint>, String> {
    let Some(documents) = settings.get("constraints").and_then(Value::as_array) else {
        return Err(format!(
            "template `{}` needs its constraints (`constraints:` in policies.yml)",
            template.name
        ));
    };
    let mut constraints: Vec<Constraint> = Vec::with_capacity(documents.len());
    for document in documents {
        let file = document
            .pointer("/metadata/annotations")
            .and_then(|annotations| annotations.get(CONSTRAINT_FILE))
            .and_then(Value::as_str)
            .map(|file| format!("{file}: "))
            .unwrap_or_default();
        let constraint = Constraint::from_value(document.clone())
            .and_then(|constraint| {
                constraint.check_against(template)?;
                Ok(constraint)
            })
            .map_err(|e| format!("{file}{e}"))?;
        if constraints
            .iter()
            .any(|other| other.name == constraint.name)
        {
            return Err(format!(
                "{file}constraint `{}` is given twice",
                constraint.name
            ));
        }
        constraints.push(constraint);
    }
    Ok(constraints)
}
