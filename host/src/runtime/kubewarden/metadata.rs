//! Kubewarden's policy metadata: the JSON in a module's
//! `io.kubewarden.metadata` custom section (what `kwctl annotate` and
//! `portcullis annotate` write), read and checked.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::bindings::{Operation, PolicyMetadata, Rule as WitRule};
use crate::capabilities::ContextAwareResource;

/// The custom section that carries the metadata.
pub const SECTION: &str = "io.kubewarden.metadata";

/// The annotation Kubewarden reads a policy's description from.
const DESCRIPTION: &str = "io.kubewarden.policy.description";

/// A Kubewarden policy's metadata, with Kubewarden's field names. Unknown
/// keys are ignored, as Kubewarden ignores them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    /// The waPC protocol the policy speaks: `v1`, or `Unknown` (WASI and
    /// Rego modules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<String>,
    /// The admission rules the policy targets.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Free-form annotations (title, description, author, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Whether the policy may return a mutated object.
    #[serde(default)]
    pub mutating: bool,
    /// Whether the policy can audit existing objects.
    #[serde(default = "yes")]
    pub background_audit: bool,
    /// How the module is run.
    #[serde(default)]
    pub execution_mode: ExecutionMode,
    /// Whether it judges admission requests or raw documents.
    #[serde(default)]
    pub policy_type: PolicyType,
    /// The Kubernetes resources it reads through host capabilities.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context_aware_resources: Vec<ContextAwareResource>,
    /// The host capabilities it says it uses (informative: the operator's
    /// `hostCapabilities` in policies.yml is what grants them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_capabilities: Option<Vec<String>>,
    /// The oldest Kubewarden release the policy runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_kubewarden_version: Option<String>,
}

fn yes() -> bool {
    true
}

/// One admission rule, with Kubernetes' field names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// API groups (`""` is core, `*` all).
    #[serde(default)]
    pub api_groups: Vec<String>,
    /// API versions (`*` all).
    #[serde(default)]
    pub api_versions: Vec<String>,
    /// Resources (`pods`, `deployments/scale`, `*`).
    #[serde(default)]
    pub resources: Vec<String>,
    /// `CREATE`, `UPDATE`, `DELETE`, `CONNECT`, or `*`.
    #[serde(default)]
    pub operations: Vec<String>,
}

/// How a Kubewarden module is run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExecutionMode {
    /// A waPC guest (Kubewarden's Rust and TinyGo SDKs).
    #[default]
    #[serde(rename = "kubewarden-wapc")]
    Wapc,
    /// A WASI command reading its request on stdin (Go, JavaScript).
    #[serde(rename = "wasi")]
    Wasi,
    /// Rego compiled by `opa build -t wasm`.
    #[serde(rename = "opa")]
    Opa,
    /// Rego written for Gatekeeper.
    #[serde(rename = "gatekeeper")]
    Gatekeeper,
}

impl ExecutionMode {
    /// Kubewarden's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Wapc => "kubewarden-wapc",
            Self::Wasi => "wasi",
            Self::Opa => "opa",
            Self::Gatekeeper => "gatekeeper",
        }
    }
}

/// What a Kubewarden policy judges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyType {
    /// Kubernetes admission requests.
    #[default]
    Kubernetes,
    /// Arbitrary JSON documents (`/validate_raw`).
    Raw,
}

/// Metadata that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    /// No `io.kubewarden.metadata` section.
    #[error(
        "a core WebAssembly module without Kubewarden metadata (no `{SECTION}` custom \
         section): annotate a Kubewarden policy with `portcullis annotate MODULE.wasm \
         --metadata metadata.yml -o OUT.wasm`, or build a Portcullis policy as a component \
         for `wasm32-wasip2`"
    )]
    Missing,
    /// The section (or a metadata.yml) is not metadata.
    #[error("malformed Kubewarden metadata: {0}")]
    Malformed(String),
    /// The module is not valid wasm where the metadata was looked for.
    #[error("cannot read the module's sections: {0}")]
    Unreadable(String),
    /// A rule, annotation or resource that Kubewarden would refuse too.
    #[error("invalid Kubewarden metadata: {0}")]
    Invalid(String),
}

impl Metadata {
    /// Reads the metadata from the first `io.kubewarden.metadata` custom
    /// section of the module `bytes`, as Kubewarden does.
    pub fn from_module(bytes: &[u8]) -> Result<Self, MetadataError> {
        let section = custom_section(bytes)?.ok_or(MetadataError::Missing)?;
        serde_json::from_slice(section).map_err(|e| MetadataError::Malformed(e.to_string()))
    }

    /// Checks what Kubewarden checks when it annotates a module: every rule
    /// names at least one group, version, resource and operation, a `*`
    /// stands alone, operations are Kubernetes', annotations are non-empty.
    pub fn validate(&self) -> Result<(), MetadataError> {
        let invalid = |message: String| Err(MetadataError::Invalid(message));
        if let Some(version) = &self.protocol_version
            && version != "v1"
            && version != "Unknown"
        {
            return invalid(format!(
                "protocolVersion `{version}` is neither `v1` nor `Unknown`"
            ));
        }
        for (i, rule) in self.rules.iter().enumerate() {
            for (field, values) in [
                ("apiGroups", &rule.api_groups),
                ("apiVersions", &rule.api_versions),
                ("resources", &rule.resources),
                ("operations", &rule.operations),
            ] {
                if values.is_empty() {
                    return invalid(format!("rules[{i}].{field} is empty"));
                }
                if values.len() > 1 && values.iter().any(|v| v == "*") {
                    return invalid(format!("rules[{i}].{field}: `*` must be alone"));
                }
                if field != "apiGroups" && values.iter().any(String::is_empty) {
                    return invalid(format!("rules[{i}].{field} has an empty entry"));
                }
            }
            if let Some(op) = rule.operations.iter().find(|op| {
                !matches!(
                    op.as_str(),
                    "CREATE" | "UPDATE" | "DELETE" | "CONNECT" | "*"
                )
            }) {
                return invalid(format!(
                    "rules[{i}].operations: `{op}` is not CREATE, UPDATE, DELETE, CONNECT or *"
                ));
            }
        }
        if let Some((key, _)) = self
            .annotations
            .iter()
            .find(|(k, v)| k.is_empty() || v.is_empty())
        {
            return invalid(format!("annotation `{key}` has an empty key or value"));
        }
        if let Some(resource) = self
            .context_aware_resources
            .iter()
            .find(|r| r.api_version.is_empty() || r.kind.is_empty())
        {
            return invalid(format!(
                "contextAwareResources entry `{}/{}` needs both apiVersion and kind",
                resource.api_version, resource.kind
            ));
        }
        if self.policy_type == PolicyType::Raw && !self.rules.is_empty() {
            return invalid("a raw policy (policyType: raw) has no admission rules".to_owned());
        }
        Ok(())
    }

    /// The metadata in the host's terms (`inspect`, `webhook-config`).
    pub fn to_policy_metadata(&self) -> PolicyMetadata {
        PolicyMetadata {
            rules: self.rules.iter().map(Rule::to_wit).collect(),
            mutating: self.mutating,
            description: self
                .annotations
                .get(DESCRIPTION)
                .cloned()
                .unwrap_or_default(),
        }
    }
}

impl Rule {
    fn to_wit(&self) -> WitRule {
        let all = [
            Operation::Create,
            Operation::Update,
            Operation::Delete,
            Operation::Connect,
        ];
        let mut operations = Vec::new();
        for op in &self.operations {
            let add: &[Operation] = match op.as_str() {
                "CREATE" => &all[0..1],
                "UPDATE" => &all[1..2],
                "DELETE" => &all[2..3],
                "CONNECT" => &all[3..4],
                "*" => &all,
                _ => &[],
            };
            for op in add {
                if !operations.contains(op) {
                    operations.push(*op);
                }
            }
        }
        WitRule {
            api_groups: self.api_groups.clone(),
            api_versions: self.api_versions.clone(),
            resources: self.resources.clone(),
            operations,
        }
    }
}

/// The first `io.kubewarden.metadata` custom section of the module `bytes`.
fn custom_section(bytes: &[u8]) -> Result<Option<&[u8]>, MetadataError> {
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| MetadataError::Unreadable(e.to_string()))?;
        match payload {
            wasmparser::Payload::CustomSection(section) if section.name() == SECTION => {
                return Ok(Some(section.data()));
            }
            // Code bodies are skipped by size, never parsed.
            _ => {}
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Metadata {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn defaults_are_kubewardens() {
        let metadata = parse(r#"{"protocolVersion":"v1","mutating":false,"contextAware":false}"#);
        assert_eq!(metadata.execution_mode, ExecutionMode::Wapc);
        assert_eq!(metadata.policy_type, PolicyType::Kubernetes);
        assert!(metadata.background_audit);
        assert!(metadata.rules.is_empty());
        metadata.validate().unwrap();
    }

    #[test]
    fn a_star_operation_is_every_operation() {
        let metadata = parse(
            r#"{"rules":[{"apiGroups":[""],"apiVersions":["v1"],"resources":["pods"],
                "operations":["*"]}],"mutating":true,
                "annotations":{"io.kubewarden.policy.description":"d"}}"#,
        );
        let converted = metadata.to_policy_metadata();
        assert_eq!(converted.rules[0].operations.len(), 4);
        assert!(converted.mutating);
        assert_eq!(converted.description, "d");
    }

    #[test]
    fn invalid_rules_are_named() {
        let metadata = parse(
            r#"{"rules":[{"apiGroups":[""],"apiVersions":["v1","*"],"resources":["pods"],
                "operations":["CREATE"]}]}"#,
        );
        assert_eq!(
            metadata.validate().unwrap_err().to_string(),
            "invalid Kubewarden metadata: rules[0].apiVersions: `*` must be alone"
        );
        let metadata = parse(
            r#"{"rules":[{"apiGroups":[""],"apiVersions":["v1"],"resources":["pods"],
                "operations":["PATCH"]}]}"#,
        );
        assert!(
            metadata
                .validate()
                .unwrap_err()
                .to_string()
                .contains("`PATCH`")
        );
        let metadata = parse(
            r#"{"rules":[{"apiGroups":[""],"apiVersions":["v1"],"resources":[],"operations":["CREATE"]}]}"#,
        );
        assert!(
            metadata
                .validate()
                .unwrap_err()
                .to_string()
                .contains("resources is empty")
        );
    }
}
