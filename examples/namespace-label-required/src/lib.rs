//! A context-aware policy: pods are admitted only in namespaces that carry
//! a label named in the settings (`{"label": "team"}`), so every workload
//! can be traced to an owner. It reads the pod's `Namespace` from the
//! cluster with [`cluster::get`] — the operator grants it
//! `contextAwareResources: [{apiVersion: v1, kind: Namespace}]`.
//!
//! The namespace is read through the host's 5-second cache: a pod denied
//! because its namespace lacked the label is admitted a few seconds after
//! the label is added, without restarting anything (`"bypassCache": true`
//! asks the API server on every evaluation instead: admitted at once). When the cluster cannot
//! be read (the API server is down), the pod is rejected with the reason:
//! a policy that cannot check must not admit.

use portcullis_sdk::cluster::{self, Error, GetParams};
use portcullis_sdk::k8s_openapi::api::core::v1::Namespace;
use portcullis_sdk::prelude::*;
use serde::Deserialize;

/// Settings: the label every namespace running pods must carry.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelSettings {
    /// The label's key, e.g. `team`.
    pub label: String,
    /// Read the namespace from the API server on every evaluation rather
    /// than the host's 5-second cache.
    #[serde(default, rename = "bypassCache")]
    pub bypass_cache: bool,
}

impl Settings for LabelSettings {
    fn validate(&self) -> Result<(), String> {
        if self.label.is_empty() {
            return Err("`label` names the label namespaces must carry; it is missing".into());
        }
        Ok(())
    }
}

/// The namespace-label-required policy.
pub struct NamespaceLabelRequired;

impl Policy for NamespaceLabelRequired {
    type Settings = LabelSettings;

    fn metadata() -> Metadata {
        Metadata::new(
            "Admits pods only in namespaces that carry the label named in the settings \
             (a context-aware policy: it reads the pod's Namespace from the cluster).",
        )
        .rule(
            Rule::new()
                .api_groups([""])
                .api_versions(["v1"])
                .resources(["pods"])
                .operations([Operation::Create]),
        )
    }

    fn validate(request: &AdmissionRequest, settings: &LabelSettings) -> Verdict {
        let Some(name) = request.namespace.as_deref() else {
            return reject_with_code("a pod without a namespace", 400);
        };
        let mut read = GetParams::of::<Namespace>(name).masks(["metadata.labels"]);
        if settings.bypass_cache {
            read = read.bypass_cache();
        }
        match cluster::get_with::<Namespace>(&read) {
            Ok(namespace) => {
                let labelled = namespace
                    .metadata
                    .labels
                    .is_some_and(|labels| labels.contains_key(&settings.label));
                if labelled {
                    accept()
                } else {
                    reject(format!(
                        "namespace `{name}` does not carry the label `{}`",
                        settings.label
                    ))
                }
            }
            Err(Error::NotFound(_)) => reject(format!("namespace `{name}` does not exist")),
            Err(error) => reject_with_code(format!("cannot read namespace `{name}`: {error}"), 500),
        }
    }
}

portcullis_sdk::export_policy!(NamespaceLabelRequired);

#[cfg(test)]
mod tests;
