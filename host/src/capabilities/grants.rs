//! What a policy has been granted: Kubewarden's `hostCapabilities` and
//! `contextAwareResources` keys of `policies.yml`.

use std::collections::BTreeSet;
use std::fmt;

/// Every host capability path Kubewarden defines (its capability tree):
/// what `hostCapabilities` patterns are checked against.
const KNOWN_PATHS: &[&str] = &[
    "oci/v1/verify",
    "oci/v1/manifest_digest",
    "oci/v1/oci_manifest",
    "oci/v1/oci_manifest_config",
    "oci/v2/verify",
    "net/v1/dns_lookup_host",
    "crypto/v1/is_certificate_trusted",
    "kubernetes/list_resources_by_namespace",
    "kubernetes/list_resources_all",
    "kubernetes/get_resource",
    "kubernetes/can_i",
];

/// A policy's allow-list of host capabilities (`hostCapabilities`).
///
/// Patterns, as in Kubewarden: `*` allows everything; `oci/*` or `oci/v2/*`
/// allow everything under a prefix; `oci/v1/verify` allows one capability.
/// An empty or absent list denies every capability but logging.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum HostCapabilities {
    /// Nothing but logging.
    #[default]
    DenyAll,
    /// Everything (`*`).
    AllowAll,
    /// What the patterns match.
    Patterns {
        /// Prefixes, with their trailing `/` (from `oci/*`, `oci/v2/*`).
        prefixes: BTreeSet<String>,
        /// Exact paths (`oci/v1/verify`).
        exact: BTreeSet<String>,
    },
}

/// A `hostCapabilities` pattern that is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// An empty string.
    #[error("an empty host capability pattern")]
    Empty,
    /// A `*` that is not a whole last segment.
    #[error("`{0}`: a wildcard must be a whole last segment, as in `oci/*`")]
    Wildcard(String),
    /// A path that names no capability of the tree.
    #[error("`{0}` names no host capability (known: {known})", known = KNOWN_PATHS.join(", "))]
    Unknown(String),
    /// A path that stops at a group of capabilities.
    #[error("`{0}` is a group of host capabilities: write `{0}/*`")]
    Incomplete(String),
}

impl HostCapabilities {
    /// The allow-list of `patterns`, each checked against Kubewarden's
    /// capability tree.
    pub fn new(patterns: impl IntoIterator<Item = impl AsRef<str>>) -> Result<Self, PatternError> {
        let mut prefixes = BTreeSet::new();
        let mut exact = BTreeSet::new();
        for pattern in patterns {
            let pattern = pattern.as_ref().trim();
            if pattern.is_empty() {
                return Err(PatternError::Empty);
            }
            if pattern == "*" {
                return Ok(Self::AllowAll);
            }
            match pattern.find('*') {
                Some(at) => {
                    let prefix = &pattern[..at];
                    if at != pattern.len() - 1 || !prefix.ends_with('/') {
                        return Err(PatternError::Wildcard(pattern.to_owned()));
                    }
                    if !KNOWN_PATHS.iter().any(|path| path.starts_with(prefix)) {
                        return Err(PatternError::Unknown(pattern.to_owned()));
                    }
                    prefixes.insert(prefix.to_owned());
                }
                None if KNOWN_PATHS.contains(&pattern) => {
                    exact.insert(pattern.to_owned());
                }
                None if KNOWN_PATHS
                    .iter()
                    .any(|path| path.starts_with(&format!("{pattern}/"))) =>
                {
                    return Err(PatternError::Incomplete(pattern.to_owned()));
                }
                None => return Err(PatternError::Unknown(pattern.to_owned())),
            }
        }
        Ok(if prefixes.is_empty() && exact.is_empty() {
            Self::DenyAll
        } else {
            Self::Patterns { prefixes, exact }
        })
    }

    /// Whether the capability `path` (`namespace/operation`) is allowed.
    pub fn allows(&self, path: &str) -> bool {
        match self {
            Self::AllowAll => true,
            Self::DenyAll => false,
            Self::Patterns { prefixes, exact } => {
                exact.contains(path) || prefixes.iter().any(|p| path.starts_with(p.as_str()))
            }
        }
    }

    /// The patterns, as written in `policies.yml` (normalised).
    pub fn patterns(&self) -> Vec<String> {
        match self {
            Self::AllowAll => vec!["*".to_owned()],
            Self::DenyAll => Vec::new(),
            Self::Patterns { prefixes, exact } => prefixes
                .iter()
                .map(|p| format!("{p}*"))
                .chain(exact.iter().cloned())
                .collect(),
        }
    }
}

impl fmt::Display for HostCapabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}]", self.patterns().join(", "))
    }
}

/// A Kubernetes resource type a context-aware policy may read
/// (`contextAwareResources` entry).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContextAwareResource {
    /// e.g. `v1` or `apps/v1`.
    pub api_version: String,
    /// e.g. `Namespace`.
    pub kind: String,
    /// Portcullis' addition to Kubewarden's key: the only fields of these
    /// objects the policy sees (dotted paths, as a call's field masks). When
    /// every policy granted the resource has masks, the host's cache keeps
    /// only their union. Empty: whole objects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub field_masks: Vec<String>,
}

impl ContextAwareResource {
    /// The resource `api_version`/`kind`, whole objects.
    pub fn new(api_version: impl Into<String>, kind: impl Into<String>) -> Self {
        Self {
            api_version: api_version.into(),
            kind: kind.into(),
            field_masks: Vec::new(),
        }
    }

    /// Whether it is the resource `api_version`/`kind`.
    pub fn is(&self, api_version: &str, kind: &str) -> bool {
        self.api_version == api_version && self.kind == kind
    }
}

impl fmt::Display for ContextAwareResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.api_version, self.kind)
    }
}

/// What one policy may ask the host for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// `hostCapabilities`.
    pub host_capabilities: HostCapabilities,
    /// `contextAwareResources`.
    pub context_aware_resources: Vec<ContextAwareResource>,
}

impl Grants {
    /// Kubewarden's second check, for `kubernetes` reads (`get_resource`,
    /// `list_resources_*`): the requested `api_version`/`kind` must be one of
    /// the policy's `contextAwareResources`.
    pub(crate) fn check_kubernetes_read(
        &self,
        policy_id: &str,
        payload: &[u8],
    ) -> Result<(), String> {
        #[derive(serde::Deserialize)]
        struct Requested {
            api_version: String,
            kind: String,
        }
        let requested: Requested = serde_json::from_slice(payload)
            .map_err(|e| format!("Callback evaluation failure: invalid request: {e}"))?;
        self.kubernetes_grant(policy_id, &requested.api_version, &requested.kind)
            .map(drop)
    }

    /// The grant of `api_version`/`kind` in `contextAwareResources`, or
    /// Kubewarden's denial (logged as a violation).
    pub fn kubernetes_grant(
        &self,
        policy_id: &str,
        api_version: &str,
        kind: &str,
    ) -> Result<&ContextAwareResource, String> {
        if let Some(grant) = self
            .context_aware_resources
            .iter()
            .find(|r| r.is(api_version, kind))
        {
            return Ok(grant);
        }
        tracing::warn!(
            policy = policy_id,
            resource = format!("{api_version}/{kind}"),
            "policy tried to read a Kubernetes resource it has not been granted"
        );
        Err(format!(
            "Policy has not been granted access to Kubernetes {api_version}/{kind} resources. \
             The violation has been reported."
        ))
    }

    /// Whether any Kubernetes read or check is granted: a resource, or the
    /// `kubernetes/can_i` host capability.
    pub fn reads_kubernetes(&self) -> bool {
        !self.context_aware_resources.is_empty()
            || self.host_capabilities.allows("kubernetes/can_i")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_as_in_kubewarden() {
        let cases: &[(&[&str], &str, bool)] = &[
            (&[], "oci/v1/verify", false),
            (&["*"], "kubernetes/can_i", true),
            (&["oci/v1/verify"], "oci/v1/verify", true),
            (&["oci/v1/verify"], "oci/v2/verify", false),
            (&["oci/*"], "oci/v2/verify", true),
            (&["oci/*"], "net/v1/dns_lookup_host", false),
            (&["oci/v2/*"], "oci/v1/verify", false),
            (&["oci/*", "kubernetes/can_i"], "kubernetes/can_i", true),
        ];
        for (patterns, path, allowed) in cases {
            let list = HostCapabilities::new(patterns.iter()).unwrap();
            assert_eq!(list.allows(path), *allowed, "{patterns:?} {path}");
        }
    }

    #[test]
    fn bad_patterns_are_refused_with_the_reason() {
        for (pattern, error) in [
            ("", PatternError::Empty),
            ("oci*", PatternError::Wildcard("oci*".into())),
            (
                "oci/v1/oci_*",
                PatternError::Wildcard("oci/v1/oci_*".into()),
            ),
            ("*/oci", PatternError::Wildcard("*/oci".into())),
            (
                "unknown/v1/op",
                PatternError::Unknown("unknown/v1/op".into()),
            ),
            ("oci/v99/*", PatternError::Unknown("oci/v99/*".into())),
            ("oci/v1", PatternError::Incomplete("oci/v1".into())),
            ("kubernetes", PatternError::Incomplete("kubernetes".into())),
        ] {
            assert_eq!(HostCapabilities::new([pattern]), Err(error), "{pattern}");
        }
        assert_eq!(
            HostCapabilities::new(["oci/*", "*"]).unwrap(),
            HostCapabilities::AllowAll
        );
        assert_eq!(
            HostCapabilities::new(["net/*", "oci/v1/verify"])
                .unwrap()
                .to_string(),
            "[net/*, oci/v1/verify]"
        );
    }
}
