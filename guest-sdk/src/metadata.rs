//! What a policy tells the host about itself: [`Metadata`] and [`Rule`].
//!
//! ```
//! use portcullis_sdk::{Metadata, Operation, Rule};
//!
//! let metadata = Metadata::new("Rejects privileged containers.").rule(
//!     Rule::new()
//!         .api_groups(["", "apps"])
//!         .api_versions(["v1"])
//!         .resources(["pods", "deployments"])
//!         .operations([Operation::Create, Operation::Update]),
//! );
//! assert!(!metadata.mutating);
//! assert_eq!(metadata.rules[0].resources, ["pods", "deployments"]);
//! ```

use crate::bindings::wit;
use crate::request::Operation;

/// What the host and operators can learn about a policy without sending it
/// a request. Must not depend on settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Metadata {
    /// The admission rules the policy targets.
    pub rules: Vec<Rule>,
    /// Whether the policy may return a mutated object (see [`mutate`](crate::mutate)).
    pub mutating: bool,
    /// A one-paragraph description for operators.
    pub description: String,
}

impl Metadata {
    /// Metadata for a validating (non-mutating) policy with no rules yet.
    pub fn new(description: impl Into<String>) -> Self {
        Metadata {
            rules: Vec::new(),
            mutating: false,
            description: description.into(),
        }
    }

    /// Adds an admission rule.
    pub fn rule(mut self, rule: Rule) -> Self {
        self.rules.push(rule);
        self
    }

    /// Declares whether the policy may return a mutated object.
    pub fn mutating(mut self, mutating: bool) -> Self {
        self.mutating = mutating;
        self
    }
}

/// One Kubernetes admission rule: the operations on the resources a policy
/// wants to see, as in a `ValidatingWebhookConfiguration`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rule {
    /// API groups; `""` is the core group and `"*"` means all groups.
    pub api_groups: Vec<String>,
    /// API versions; `"*"` means all versions.
    pub api_versions: Vec<String>,
    /// Resources, e.g. `pods`, `deployments`, `pods/exec`; `"*"` means all.
    pub resources: Vec<String>,
    /// The operations on those resources.
    pub operations: Vec<Operation>,
}

impl Rule {
    /// An empty rule; fill it with the builder methods below.
    pub fn new() -> Self {
        Rule::default()
    }

    /// Sets the API groups (`""` is the core group, `"*"` all groups).
    pub fn api_groups<S: Into<String>>(mut self, groups: impl IntoIterator<Item = S>) -> Self {
        self.api_groups = groups.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the API versions (`"*"` means all versions).
    pub fn api_versions<S: Into<String>>(mut self, versions: impl IntoIterator<Item = S>) -> Self {
        self.api_versions = versions.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the resources (plural, lower case; `"*"` means all).
    pub fn resources<S: Into<String>>(mut self, resources: impl IntoIterator<Item = S>) -> Self {
        self.resources = resources.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the operations.
    pub fn operations(mut self, operations: impl IntoIterator<Item = Operation>) -> Self {
        self.operations = operations.into_iter().collect();
        self
    }
}

impl From<Rule> for wit::Rule {
    fn from(rule: Rule) -> Self {
        wit::Rule {
            api_groups: rule.api_groups,
            api_versions: rule.api_versions,
            resources: rule.resources,
            operations: rule.operations.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<wit::Rule> for Rule {
    fn from(rule: wit::Rule) -> Self {
        Rule {
            api_groups: rule.api_groups,
            api_versions: rule.api_versions,
            resources: rule.resources,
            operations: rule.operations.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<Metadata> for wit::PolicyMetadata {
    fn from(metadata: Metadata) -> Self {
        wit::PolicyMetadata {
            rules: metadata.rules.into_iter().map(Into::into).collect(),
            mutating: metadata.mutating,
            description: metadata.description,
        }
    }
}

impl From<wit::PolicyMetadata> for Metadata {
    fn from(metadata: wit::PolicyMetadata) -> Self {
        Metadata {
            rules: metadata.rules.into_iter().map(Into::into).collect(),
            mutating: metadata.mutating,
            description: metadata.description,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_the_wit_types() {
        let metadata = Metadata::new("d")
            .mutating(true)
            .rule(
                Rule::new()
                    .api_groups([""])
                    .api_versions(["v1"])
                    .resources(["pods"])
                    .operations([Operation::Create, Operation::Delete]),
            )
            .rule(Rule::new().api_groups(["*"]).resources(["*"]));
        let wit = wit::PolicyMetadata::from(metadata.clone());
        assert!(wit.mutating);
        assert_eq!(wit.rules.len(), 2);
        assert_eq!(
            wit.rules[0].operations,
            [wit::Operation::Create, wit::Operation::Delete]
        );
        assert_eq!(Metadata::from(wit), metadata);
    }
}
