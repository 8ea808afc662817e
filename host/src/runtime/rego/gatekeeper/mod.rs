//! Gatekeeper's policies: ConstraintTemplates (Rego) and the constraints
//! that instantiate them, with Gatekeeper's semantics — what a constraint
//! matches, the `input` a template sees, `data.inventory`, the violations
//! and the admission decision made of them — and `gator verify`'s suites.
//!
//! This module is the language-independent half: it reads documents and
//! decides; the Rego runs in the [Rego runtime](crate::runtime::rego), where a
//! template's [`RegoSource`](crate::runtime::rego::RegoSource) becomes a snapshot.
//!
//! A review, in Gatekeeper's order: each constraint's `match`
//! ([`Match::matches`]) decides whether its template runs; the template is
//! evaluated with [`Review::input`] (and, if it reads it, the
//! [`Inventory`]'s data); its `violation` set ([`parse_violations`]) becomes
//! [`ConstraintViolation`]s, and all of them one [`Decision`].

pub mod constraint;
pub mod inventory;
pub mod matching;
pub mod parameters;
pub mod policy;
pub mod review;
pub mod selector;
pub mod suite;
pub mod template;
pub mod verify;
pub mod violation;

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

pub use self::constraint::{Constraint, EnforcementAction};
pub use self::inventory::Inventory;
pub use self::matching::{Candidate, Match, MatchError};
pub use self::policy::{LoadError, PreparedTemplate, constraints_from_settings};
pub use self::review::{Review, ReviewError};
pub use self::suite::{Assertion, Case, Suite, Test};
pub use self::template::ConstraintTemplate;
pub use self::violation::{ConstraintViolation, Decision, Violation, parse_violations};

/// The fields every Gatekeeper object is read by: its type, its name and
/// its `spec` (the rest is ignored, as Gatekeeper ignores it).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Document<S> {
    api_version: String,
    kind: String,
    #[serde(default)]
    metadata: Metadata,
    spec: S,
}

#[derive(Deserialize, Default)]
struct Metadata {
    #[serde(default)]
    name: String,
}

/// The documents of a YAML (several, `---`-separated) or JSON file; a
/// `kind: List` stands for its items, empty documents for nothing.
pub fn parse_documents(text: &str) -> Result<Vec<Value>, String> {
    let documents: Vec<Value> = match text.trim_start().as_bytes().first() {
        Some(b'{' | b'[') => vec![serde_json::from_str(text).map_err(|e| e.to_string())?],
        _ => serde_saphyr::from_multiple(text).map_err(|e| e.to_string())?,
    };
    let mut flat = Vec::with_capacity(documents.len());
    for document in documents {
        match document {
            Value::Null => {}
            Value::Array(items) => flat.extend(items),
            Value::Object(ref fields)
                if fields
                    .get("kind")
                    .and_then(Value::as_str)
                    .is_some_and(|kind| kind.ends_with("List"))
                    && fields.get("items").is_some_and(Value::is_array) =>
            {
                if let Some(Value::Array(items)) = document.get("items") {
                    flat.extend(items.iter().cloned());
                }
            }
            other => flat.push(other),
        }
    }
    Ok(flat)
}

/// The documents of the file at `path`; errors name it.
pub fn read_documents(path: &Path) -> Result<Vec<Value>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_documents(&text).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_file_may_hold_several_documents_and_lists() {
        let text = "a: 1\n---\n---\nkind: List\napiVersion: v1\nitems:\n- b: 2\n- c: 3\n";
        assert_eq!(
            parse_documents(text).unwrap(),
            [json!({"a": 1}), json!({"b": 2}), json!({"c": 3})]
        );
        assert_eq!(parse_documents("{\"a\": 1}").unwrap(), [json!({"a": 1})]);
        assert!(parse_documents("a: [").is_err());
    }
}
