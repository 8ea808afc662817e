//! `policies.yml`, in Kubewarden policy-server's format: a map from policy id
//! to its entry.
//!
//! ```yaml
//! privileged-pods:
//!   module: pod_privileged.wasm     # or registry://…, https://…, file://… (see `source::uri`)
//!   policyMode: protect             # or monitor
//!   allowedToMutate: false
//!   timeoutEvalSeconds: 2
//!   settings:
//!     skip_init_containers: true
//!   hostCapabilities: [oci/*]       # what it may ask the host for
//!   contextAwareResources:          # what it may read from the cluster
//!     - { apiVersion: v1, kind: Namespace }
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{MapAccess, Visitor};

use crate::capabilities::{ContextAwareResource, Grants, HostCapabilities};
use crate::limits::LimitOverrides;
use crate::policy::{PolicyMode, PolicySpec};
use crate::source::{Location, Source};

/// The example policies' configuration, compiled into the binary: what
/// `portcullis serve` runs when no `--policies` file is given. Its relative
/// module paths are resolved against the components directory.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../examples/policies.yml");

/// A `policies.yml` that cannot be used. The message names the file, the
/// policy and the key.
#[derive(Debug, thiserror::Error)]
#[error("{origin}: {}{message}", policy.as_ref().map(|p| format!("policy `{p}`: ")).unwrap_or_default())]
pub struct ConfigError {
    /// Where the configuration came from.
    pub origin: String,
    /// The policy at fault, if one is.
    pub policy: Option<String>,
    /// What is wrong.
    pub message: String,
}

/// One entry, with Kubewarden's keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Entry {
    module: Option<String>,
    url: Option<String>,
    #[serde(default)]
    policy_mode: PolicyMode,
    #[serde(default)]
    allowed_to_mutate: bool,
    #[serde(default)]
    settings: Option<serde_json::Value>,
    timeout_eval_seconds: Option<u64>,
    message: Option<String>,
    /// Portcullis' own per-policy limits (see `Limits`).
    memory_limit_bytes: Option<usize>,
    table_elements: Option<usize>,
    stack_bytes: Option<usize>,
    max_instances: Option<usize>,
    max_response_bytes: Option<usize>,
    max_log_bytes: Option<usize>,
    /// The Kubernetes resources the policy may read through host
    /// capabilities.
    #[serde(default)]
    context_aware_resources: Vec<ContextAwareResource>,
    /// The host capabilities the policy may call (Kubewarden's patterns).
    #[serde(default)]
    host_capabilities: Vec<String>,
}

/// Parses `text` (YAML) into policy specs, in file order. Relative module
/// paths are resolved against `base_dir`; `origin` names the source in errors.
pub fn parse(text: &str, base_dir: &Path, origin: &str) -> Result<Vec<PolicySpec>, ConfigError> {
    let error = |policy: Option<&str>, message: String| ConfigError {
        origin: origin.to_owned(),
        policy: policy.map(str::to_owned),
        message,
    };
    let entries: OrderedEntries = serde_saphyr::from_str(text).map_err(|e| {
        // The parser's duplicate-key error ends with advice for Rust
        // programmers, not for whoever edits the file.
        let message = e
            .to_string()
            .replace(", set DuplicateKeyPolicy in Options if acceptable", "");
        error(None, format!("not a valid policies file: {message}"))
    })?;
    let mut specs: Vec<PolicySpec> = Vec::with_capacity(entries.0.len());
    for (id, value) in entries.0 {
        let fail = |message: String| error(Some(&id), message);
        if id.is_empty() {
            return Err(fail("a policy id must not be empty".into()));
        }
        if specs.iter().any(|spec| spec.id == id) {
            return Err(fail("duplicate policy id".into()));
        }
        let entry: Entry = serde_path_to_error::deserialize(value).map_err(|e| {
            let key = e.path().to_string();
            match key.as_str() {
                "." => fail(e.into_inner().to_string()),
                _ => fail(format!("key `{key}`: {}", e.into_inner())),
            }
        })?;
        let source = match (&entry.module, &entry.url) {
            (Some(module), None) => {
                Source::parse(module, base_dir).map_err(|m| fail(format!("key `module`: {m}")))?
            }
            (None, Some(url)) => {
                Source::parse(url, base_dir).map_err(|m| fail(format!("key `url`: {m}")))?
            }
            (Some(_), Some(_)) => {
                return Err(fail("give either `module` or `url`, not both".into()));
            }
            (None, None) => return Err(fail("key `module` (or `url`) is required".into())),
        };
        if entry.timeout_eval_seconds == Some(0) {
            return Err(fail("key `timeoutEvalSeconds`: must be at least 1".into()));
        }
        let host_capabilities = HostCapabilities::new(&entry.host_capabilities)
            .map_err(|e| fail(format!("key `hostCapabilities`: {e}")))?;
        // A remote module's local file is known once it is fetched.
        let module = match source.location() {
            Location::File(path) => path.clone(),
            _ => PathBuf::new(),
        };
        specs.push(PolicySpec {
            id: id.clone(),
            module,
            source: Some(source),
            fetch: None,
            settings: match entry.settings {
                None | Some(serde_json::Value::Null) => serde_json::json!({}),
                Some(settings) => settings,
            },
            mode: entry.policy_mode,
            allowed_to_mutate: entry.allowed_to_mutate,
            limits: LimitOverrides {
                timeout: entry.timeout_eval_seconds.map(Duration::from_secs),
                memory_bytes: entry.memory_limit_bytes,
                table_elements: entry.table_elements,
                stack_bytes: entry.stack_bytes,
                instances: entry.max_instances,
                response_bytes: entry.max_response_bytes,
                log_bytes: entry.max_log_bytes,
            },
            message: entry.message,
            grants: Grants {
                host_capabilities,
                context_aware_resources: entry.context_aware_resources,
            },
        });
    }
    Ok(specs)
}

/// Reads and parses the file at `path`; relative modules resolve against its
/// directory.
pub fn load(path: &Path) -> Result<Vec<PolicySpec>, ConfigError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        origin: origin.clone(),
        policy: None,
        message: format!("cannot read: {e}"),
    })?;
    parse(&text, path.parent().unwrap_or(Path::new(".")), &origin)
}

/// The top-level map, in file order and with duplicates kept (so a duplicate
/// id is reported as such rather than silently overwritten).
struct OrderedEntries(Vec<(String, serde_json::Value)>);

impl<'de> Deserialize<'de> for OrderedEntries {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;
        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = OrderedEntries;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map from policy id to policy entry")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(OrderedEntries(entries))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(OrderedEntries(Vec::new()))
            }
        }
        deserializer.deserialize_map(EntriesVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Vec<PolicySpec>, ConfigError> {
        parse(text, Path::new("/etc/portcullis"), "policies.yml")
    }

    fn error(text: &str) -> String {
        parse_str(text).unwrap_err().to_string()
    }

    #[test]
    fn kubewarden_keys_are_read() {
        let specs = parse_str(
            "a:\n  module: a.wasm\n  policyMode: monitor\n  allowedToMutate: true\n  \
             timeoutEvalSeconds: 3\n  message: nope\n  settings:\n    x: [1, 2]\n\
             b:\n  url: file:///opt/b.wasm\n",
        )
        .unwrap();
        assert_eq!(specs.len(), 2);
        let a = &specs[0];
        assert_eq!(a.id, "a");
        assert_eq!(a.module, Path::new("/etc/portcullis/a.wasm"));
        assert_eq!(a.mode, PolicyMode::Monitor);
        assert!(a.allowed_to_mutate);
        assert_eq!(a.limits.timeout, Some(Duration::from_secs(3)));
        assert_eq!(a.message.as_deref(), Some("nope"));
        assert_eq!(a.settings, serde_json::json!({"x": [1, 2]}));
        let b = &specs[1];
        assert_eq!(b.module, Path::new("/opt/b.wasm"));
        assert_eq!(b.mode, PolicyMode::Protect);
        assert!(!b.allowed_to_mutate);
        assert_eq!(b.settings, serde_json::json!({}));
    }

    #[test]
    fn an_unknown_key_is_named() {
        let message = error("a:\n  module: a.wasm\n  policyMod: monitor\n");
        assert!(
            message.starts_with("policies.yml: policy `a`: "),
            "{message}"
        );
        assert!(message.contains("unknown field `policyMod`"), "{message}");
    }

    #[test]
    fn a_bad_value_names_the_key() {
        let message = error("a:\n  module: a.wasm\n  timeoutEvalSeconds: soon\n");
        assert!(
            message.starts_with("policies.yml: policy `a`: key `timeoutEvalSeconds`: "),
            "{message}"
        );
        let message = error("a:\n  module: a.wasm\n  policyMode: enforce\n");
        assert!(
            message.starts_with("policies.yml: policy `a`: key `policyMode`: "),
            "{message}"
        );
        let message = error("a:\n  module: a.wasm\n  timeoutEvalSeconds: 0\n");
        assert_eq!(
            message,
            "policies.yml: policy `a`: key `timeoutEvalSeconds`: must be at least 1"
        );
    }

    #[test]
    fn a_missing_module_is_named() {
        assert_eq!(
            error("a:\n  policyMode: monitor\n"),
            "policies.yml: policy `a`: key `module` (or `url`) is required"
        );
        let message = error("a:\n  url: registry://ghcr.io/X/y:v1\n");
        assert!(
            message.starts_with(
                "policies.yml: policy `a`: key `url`: `registry://ghcr.io/X/y:v1`: not an OCI reference"
            ),
            "{message}"
        );
    }

    #[test]
    fn remote_modules_are_kept_as_written() {
        let specs = parse_str(
            "a:\n  module: registry://127.0.0.1:5000/p:v1\n\
             b:\n  url: ghcr.io/kubewarden/policies/pod-privileged:v1.0.3\n\
             c:\n  module: https://example.com/p.wasm\n",
        )
        .unwrap();
        for spec in &specs {
            let source = spec.source.as_ref().unwrap();
            assert!(source.is_remote(), "{source}");
            assert_eq!(spec.module, PathBuf::new());
        }
        assert_eq!(
            specs[1].source.as_ref().unwrap().written(),
            "ghcr.io/kubewarden/policies/pod-privileged:v1.0.3"
        );
    }

    #[test]
    fn grants_are_read_and_checked() {
        let specs = parse_str(
            "a:\n  module: a.wasm\n  hostCapabilities: [\"oci/*\", kubernetes/get_resource]\n  \
             contextAwareResources:\n    - apiVersion: v1\n      kind: Namespace\n",
        )
        .unwrap();
        let grants = &specs[0].grants;
        assert!(grants.host_capabilities.allows("oci/v1/verify"));
        assert!(!grants.host_capabilities.allows("net/v1/dns_lookup_host"));
        assert_eq!(
            grants.context_aware_resources,
            [ContextAwareResource::new("v1", "Namespace")]
        );
        assert_eq!(
            error("a:\n  module: a.wasm\n  hostCapabilities: [oci/v1]\n"),
            "policies.yml: policy `a`: key `hostCapabilities`: `oci/v1` is a group of host \
             capabilities: write `oci/v1/*`"
        );
        let message = error("a:\n  module: a.wasm\n  contextAwareResources: [{kind: Pod}]\n");
        assert!(
            message.contains("key `contextAwareResources[0]`: missing field `apiVersion`"),
            "{message}"
        );
    }

    #[test]
    fn a_duplicate_id_is_named() {
        let message = error("a:\n  module: a.wasm\na:\n  module: b.wasm\n");
        assert!(message.contains("duplicate"), "{message}");
    }

    #[test]
    fn the_embedded_default_parses() {
        let specs = parse(EMBEDDED_DEFAULT, Path::new("/c"), "embedded").unwrap();
        assert!(specs.iter().any(|s| s.id == "privileged-pods"), "{specs:?}");
    }
}
