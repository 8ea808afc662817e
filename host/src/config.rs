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
//!   backgroundAudit: true           # whether `portcullis audit` evaluates it
//!
//! required-labels:                  # a Gatekeeper ConstraintTemplate
//!   module: template.yaml
//!   constraints: [owner.yaml, team.yaml]   # files; one may hold several
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{MapAccess, Visitor};

use crate::capabilities::{ContextAwareResource, Grants, HostCapabilities};
use crate::group::{Expression, is_member_name};
use crate::limits::LimitOverrides;
use crate::policy::{Configuration, GroupSpec, MemberSpec, PolicyMode, PolicySpec};
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
    /// Whether `portcullis audit` evaluates existing objects with it.
    #[serde(default = "yes")]
    background_audit: bool,
    /// Gatekeeper constraints of the template `module` names: files (each
    /// may hold several documents), read into the policy's settings.
    #[serde(default)]
    constraints: Vec<String>,
}

fn yes() -> bool {
    true
}

/// A group's entry, with Kubewarden's keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct GroupEntry {
    #[serde(default)]
    policy_mode: PolicyMode,
    policies: OrderedEntries,
    expression: String,
    message: String,
    #[serde(default = "yes")]
    background_audit: bool,
}

/// A group member's entry: Kubewarden allows these keys only (a member has
/// no mode, message or permission to mutate of its own).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct MemberEntry {
    module: Option<String>,
    url: Option<String>,
    #[serde(default)]
    settings: Option<serde_json::Value>,
    timeout_eval_seconds: Option<u64>,
    #[serde(default)]
    context_aware_resources: Vec<ContextAwareResource>,
    #[serde(default)]
    host_capabilities: Vec<String>,
}

impl From<MemberEntry> for Entry {
    fn from(member: MemberEntry) -> Self {
        Self {
            module: member.module,
            url: member.url,
            policy_mode: PolicyMode::Protect,
            allowed_to_mutate: false,
            settings: member.settings,
            timeout_eval_seconds: member.timeout_eval_seconds,
            message: None,
            memory_limit_bytes: None,
            table_elements: None,
            stack_bytes: None,
            max_instances: None,
            max_response_bytes: None,
            max_log_bytes: None,
            context_aware_resources: member.context_aware_resources,
            host_capabilities: member.host_capabilities,
            // The group's own key decides.
            background_audit: true,
            constraints: Vec::new(),
        }
    }
}

/// Parses `text` (YAML) into policies and groups, each in file order.
/// Relative module paths are resolved against `base_dir`; `origin` names the
/// source in errors.
pub fn parse(text: &str, base_dir: &Path, origin: &str) -> Result<Configuration, ConfigError> {
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
    let mut configuration = Configuration::default();
    let mut ids: Vec<String> = Vec::with_capacity(entries.0.len());
    for (id, value) in entries.0 {
        let fail = |message: String| error(Some(&id), message);
        if id.is_empty() {
            return Err(fail("a policy id must not be empty".into()));
        }
        if id.contains('/') {
            // As Kubewarden; and `group/member` names a group's member.
            return Err(fail("a policy id must not contain `/`".into()));
        }
        if ids.contains(&id) {
            return Err(fail("duplicate policy id".into()));
        }
        ids.push(id.clone());
        let is_group = value
            .as_object()
            .is_some_and(|map| map.contains_key("policies") || map.contains_key("expression"));
        if is_group {
            let group = group_spec(&id, value, base_dir).map_err(fail)?;
            configuration.groups.push(group);
        } else {
            let entry: Entry = read_entry(value).map_err(fail)?;
            configuration
                .policies
                .push(policy_spec(id.clone(), entry, base_dir).map_err(fail)?);
        }
    }
    Ok(configuration)
}

/// Deserializes an entry; an error names the key at fault.
fn read_entry<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let key = e.path().to_string();
        match key.as_str() {
            "." => e.into_inner().to_string(),
            _ => format!("key `{key}`: {}", e.into_inner()),
        }
    })
}

/// A group's entry: its members (each a policy entry of its own), the
/// expression over them (parsed, every name a member) and its message.
fn group_spec(id: &str, value: serde_json::Value, base_dir: &Path) -> Result<GroupSpec, String> {
    let group: GroupEntry = read_entry(value)?;
    if group.policies.0.is_empty() {
        return Err("key `policies`: a group needs at least one member".into());
    }
    if group.message.trim().is_empty() {
        return Err("key `message`: must not be empty".into());
    }
    let mut members: Vec<MemberSpec> = Vec::with_capacity(group.policies.0.len());
    for (name, value) in group.policies.0 {
        let fail = |message: String| format!("member `{name}`: {message}");
        if !is_member_name(&name) {
            return Err(fail(
                "a member's name is called in the expression, so it must be an identifier \
                 ([_a-zA-Z][_a-zA-Z0-9]*, not a reserved word)"
                    .into(),
            ));
        }
        if members.iter().any(|m| m.name == name) {
            return Err(fail("duplicate member".into()));
        }
        let member: MemberEntry = read_entry(value).map_err(fail)?;
        let spec = policy_spec(MemberSpec::id(id, &name), member.into(), base_dir).map_err(fail)?;
        members.push(MemberSpec { name, spec });
    }
    let expression = Expression::parse(&group.expression, members.iter().map(|m| m.name.as_str()))
        .map_err(|e| format!("key `expression`: {e}"))?;
    Ok(GroupSpec {
        id: id.to_owned(),
        mode: group.policy_mode,
        expression,
        message: group.message,
        members,
        background_audit: group.background_audit,
    })
}

/// A policy's entry as a spec; an error names the key at fault.
fn policy_spec(id: String, entry: Entry, base_dir: &Path) -> Result<PolicySpec, String> {
    let source = match (&entry.module, &entry.url) {
        (Some(module), None) => {
            Source::parse(module, base_dir).map_err(|m| format!("key `module`: {m}"))?
        }
        (None, Some(url)) => Source::parse(url, base_dir).map_err(|m| format!("key `url`: {m}"))?,
        (Some(_), Some(_)) => return Err("give either `module` or `url`, not both".into()),
        (None, None) => return Err("key `module` (or `url`) is required".into()),
    };
    if entry.timeout_eval_seconds == Some(0) {
        return Err("key `timeoutEvalSeconds`: must be at least 1".into());
    }
    let host_capabilities = HostCapabilities::new(&entry.host_capabilities)
        .map_err(|e| format!("key `hostCapabilities`: {e}"))?;
    // A remote module's local file is known once it is fetched.
    let module = match source.location() {
        Location::File(path) => path.clone(),
        _ => PathBuf::new(),
    };
    Ok(PolicySpec {
        id,
        module,
        source: Some(source),
        fetch: None,
        settings: match (entry.settings, entry.constraints.is_empty()) {
            (Some(_), false) => {
                return Err(
                    "give `constraints` (a Gatekeeper template's) or `settings`, not both".into(),
                );
            }
            (None, false) => constraint_settings(&entry.constraints, base_dir)?,
            (None | Some(serde_json::Value::Null), true) => serde_json::json!({}),
            (Some(settings), true) => settings,
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
        background_audit: entry.background_audit,
        grants: Grants {
            host_capabilities,
            context_aware_resources: entry.context_aware_resources,
        },
    })
}

/// The settings of a Gatekeeper template's policy: `{"constraints": [..]}`,
/// every document of every file in `files` (relative to `base_dir`), each
/// with the file it came from as `portcullis.dev/file` (errors about a
/// constraint name it). A file that cannot be read or parsed is named, with
/// the line and column for YAML errors.
fn constraint_settings(files: &[String], base_dir: &Path) -> Result<serde_json::Value, String> {
    let mut constraints = Vec::new();
    for file in files {
        let path = base_dir.join(file);
        let fail = |e: String| format!("key `constraints`: {e}");
        let documents = crate::runtime::rego::gatekeeper::read_documents(&path).map_err(fail)?;
        if documents.is_empty() {
            return Err(fail(format!("{}: holds no constraint", path.display())));
        }
        for mut document in documents {
            if let Some(annotations) = document
                .as_object_mut()
                .map(|object| {
                    object
                        .entry("metadata")
                        .or_insert_with(|| serde_json::json!({}))
                })
                .and_then(serde_json::Value::as_object_mut)
                .map(|metadata| {
                    metadata
                        .entry("annotations")
                        .or_insert_with(|| serde_json::json!({}))
                })
                .and_then(serde_json::Value::as_object_mut)
            {
                annotations.insert(
                    crate::runtime::rego::gatekeeper::policy::CONSTRAINT_FILE.into(),
                    serde_json::Value::from(path.display().to_string()),
                );
            }
            constraints.push(document);
        }
    }
    Ok(serde_json::json!({ "constraints": constraints }))
}

/// Reads and parses the file at `path`; relative modules resolve against its
/// directory.
pub fn load(path: &Path) -> Result<Configuration, ConfigError> {
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
#[derive(Debug)]
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
        parse_all(text).map(|configuration| configuration.policies)
    }

    fn parse_all(text: &str) -> Result<Configuration, ConfigError> {
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
    fn constraints_are_read_into_the_settings_with_their_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("two.yaml"),
            "apiVersion: constraints.gatekeeper.sh/v1beta1\nkind: K\nmetadata:\n  name: a\n---\n\
             apiVersion: constraints.gatekeeper.sh/v1beta1\nkind: K\nmetadata:\n  name: b\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("bad.yaml"),
            "metadata:\n  name: [unclosed\n",
        )
        .unwrap();
        let parse_in = |text: &str| parse(text, dir.path(), "policies.yml");
        let specs = parse_in("t:\n  module: template.yaml\n  constraints: [two.yaml]\n")
            .unwrap()
            .policies;
        let constraints = specs[0].settings["constraints"].as_array().unwrap();
        assert_eq!(constraints.len(), 2);
        assert_eq!(constraints[1]["metadata"]["name"], "b");
        assert_eq!(
            constraints[0]["metadata"]["annotations"]["portcullis.dev/file"],
            dir.path().join("two.yaml").display().to_string()
        );
        let error = parse_in("t:\n  module: template.yaml\n  constraints: [bad.yaml]\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("policies.yml: policy `t`: key `constraints`: "),
            "{error}"
        );
        assert!(error.contains("bad.yaml"), "{error}");
        assert!(error.contains("line 2"), "{error}");
        let error = parse_in("t:\n  module: template.yaml\n  constraints: [missing.yaml]\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("missing.yaml"), "{error}");
        let error = parse_in(
            "t:\n  module: template.yaml\n  constraints: [two.yaml]\n  settings: {a: 1}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("not both"), "{error}");
    }

    #[test]
    fn background_audit_is_on_unless_a_policy_or_group_opts_out() {
        let configuration = parse_all(
            "a:\n  module: a.wasm\n\
             b:\n  module: b.wasm\n  backgroundAudit: false\n\
             g:\n  backgroundAudit: false\n  expression: m()\n  message: denied\n  \
             policies:\n    m:\n      module: m.wasm\n",
        )
        .unwrap();
        let audited: Vec<bool> = configuration
            .policies
            .iter()
            .map(|p| p.background_audit)
            .collect();
        assert_eq!(audited, [true, false]);
        assert!(!configuration.groups[0].background_audit);
        // A member has no such key of its own: the group decides.
        let message = parse_all(
            "g:\n  expression: m()\n  message: denied\n  policies:\n    m:\n      \
             module: m.wasm\n      backgroundAudit: false\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            message.contains("unknown field `backgroundAudit`"),
            "{message}"
        );
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
        assert!(
            specs.policies.iter().any(|s| s.id == "privileged-pods"),
            "{specs:?}"
        );
    }

    const GROUP: &str = "\
signed:
  policyMode: monitor
  expression: \"trusted() || (registry() && !latest())\"
  message: the image is not trusted
  policies:
    trusted:
      module: trusted.wasm
      settings: {registries: [a.io]}
      timeoutEvalSeconds: 3
    registry:
      module: registry://127.0.0.1:5000/r:v1
      hostCapabilities: [\"oci/*\"]
    latest:
      module: latest.wasm
plain:
  module: plain.wasm
";

    #[test]
    fn groups_are_read_beside_policies() {
        let configuration = parse_all(GROUP).unwrap();
        assert_eq!(configuration.policies.len(), 1);
        let [group] = &configuration.groups[..] else {
            panic!("one group: {configuration:?}")
        };
        assert_eq!(group.id, "signed");
        assert_eq!(group.mode, PolicyMode::Monitor);
        assert_eq!(group.message, "the image is not trusted");
        assert_eq!(
            group.expression.to_string(),
            "(trusted() || (registry() && !latest()))"
        );
        let names: Vec<&str> = group.members.iter().map(|m| m.name.as_str()).collect();
        // By name: the expression, not the file, orders their runs.
        assert_eq!(names, ["latest", "registry", "trusted"]);
        let trusted = &group.members[2].spec;
        assert_eq!(trusted.id, "signed/trusted");
        assert_eq!(trusted.module, Path::new("/etc/portcullis/trusted.wasm"));
        assert_eq!(
            trusted.settings,
            serde_json::json!({"registries": ["a.io"]})
        );
        assert_eq!(trusted.limits.timeout, Some(Duration::from_secs(3)));
        assert!(!trusted.allowed_to_mutate);
        assert!(
            group.members[1]
                .spec
                .grants
                .host_capabilities
                .allows("oci/v1/verify")
        );
        // Members are loaded like policies.
        assert_eq!(configuration.specs().count(), 4);
    }

    #[test]
    fn a_group_s_errors_name_the_group_the_member_and_the_place() {
        let with = |expression: &str| {
            GROUP.replace(
                "\"trusted() || (registry() && !latest())\"",
                &format!("\"{expression}\""),
            )
        };
        assert_eq!(
            error(&with("trusted() && signed()")),
            "policies.yml: policy `signed`: key `expression`: expression `trusted() && \
             signed()`, column 14: `signed` is not a member of the group (members: latest, \
             registry, trusted)"
        );
        assert_eq!(
            error(&with("trusted() ||")),
            "policies.yml: policy `signed`: key `expression`: expression `trusted() ||`, \
             column 13: the expression ends too early"
        );
        let message = error(&GROUP.replace("      timeoutEvalSeconds: 3", "      mode: x"));
        assert!(
            message.starts_with(
                "policies.yml: policy `signed`: member `trusted`: key `mode`: unknown field `mode`"
            ),
            "{message}"
        );
        let message = error(&GROUP.replace("    latest:\n", "    not-an-identifier:\n"));
        assert!(
            message.starts_with("policies.yml: policy `signed`: member `not-an-identifier`: "),
            "{message}"
        );
        assert_eq!(
            error(&GROUP.replace(
                "  message: the image is not trusted\n",
                "  message: \" \"\n"
            )),
            "policies.yml: policy `signed`: key `message`: must not be empty"
        );
        let message = error(&GROUP.replace("  message: the image is not trusted\n", ""));
        assert!(message.contains("missing field `message`"), "{message}");
        assert_eq!(
            error("a/b:\n  module: a.wasm\n"),
            "policies.yml: policy `a/b`: a policy id must not contain `/`"
        );
    }
}
