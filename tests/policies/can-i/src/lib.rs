//! A test policy for the typed `can-i` import of the `context-aware-policy`
//! world: a pod is admitted only if the user creating it may also do what
//! the settings name (`{"verb": "delete", "resource": "pods"}`) in the
//! pod's namespace. The host answers with a SubjectAccessReview (or from a
//! `--resources` file); the answer's `reason` is quoted in the verdict, so
//! tests see that every field crossed the boundary.

use portcullis_sdk::cluster::{self, AccessReview, ResourceAttributes};
use portcullis_sdk::prelude::*;
use serde::Deserialize;

/// What the creator of a pod must also be allowed to do.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Required {
    /// The verb, e.g. `delete`.
    pub verb: String,
    /// The resource, e.g. `pods`.
    pub resource: String,
    /// Its API group; empty for the core group.
    #[serde(default)]
    pub group: String,
    /// Ask only for pods in these namespaces (admit the others); empty:
    /// everywhere.
    #[serde(default)]
    pub namespaces: Vec<String>,
}

impl Settings for Required {
    fn validate(&self) -> Result<(), String> {
        if self.verb.is_empty() || self.resource.is_empty() {
            return Err("`verb` and `resource` name what the pod's creator must be allowed".into());
        }
        Ok(())
    }
}

/// The can-i test policy.
pub struct CanI;

impl Policy for CanI {
    type Settings = Required;

    fn metadata() -> Metadata {
        Metadata::new("Admits a pod only if its creator may also do what the settings name.").rule(
            Rule::new()
                .api_groups([""])
                .api_versions(["v1"])
                .resources(["pods"])
                .operations([Operation::Create]),
        )
    }

    fn validate(request: &AdmissionRequest, settings: &Required) -> Verdict {
        let namespace = request.namespace.clone().unwrap_or_default();
        if !settings.namespaces.is_empty() && !settings.namespaces.contains(&namespace) {
            return accept();
        }
        let review = AccessReview {
            user: request.user_info.username.clone(),
            groups: request.user_info.groups.clone(),
            resource: ResourceAttributes {
                group: settings.group.clone(),
                version: String::new(),
                resource: settings.resource.clone(),
                subresource: String::new(),
                verb: settings.verb.clone(),
                namespace,
                name: String::new(),
            },
            bypass_cache: false,
        };
        let user = &request.user_info.username;
        let what = format!("{} {}", settings.verb, settings.resource);
        match cluster::can_i(&review) {
            Ok(status) if status.allowed => accept().with_warning(format!(
                "`{user}` may {what}: {}",
                status.reason.as_deref().unwrap_or("no reason given")
            )),
            Ok(status) => reject(format!(
                "`{user}` may not {what}{}: {}",
                if status.denied { " (denied)" } else { "" },
                status.reason.as_deref().unwrap_or("no reason given")
            )),
            Err(error) => reject_with_code(
                format!("cannot ask whether `{user}` may {what}: {error}"),
                500,
            ),
        }
    }
}

portcullis_sdk::export_policy!(CanI);
