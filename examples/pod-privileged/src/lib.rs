//! Rejects privileged containers: a Portcullis port of Kubewarden's
//! [pod-privileged](https://github.com/kubewarden/pod-privileged-policy)
//! policy, built with `portcullis-sdk`.
//!
//! A workload (Pod, Deployment, ReplicaSet, StatefulSet, DaemonSet,
//! ReplicationController, Job or CronJob) is rejected when one of its
//! containers, init containers or ephemeral containers sets
//! `securityContext.privileged: true`. Init and ephemeral containers can be
//! exempted with the `skip_init_containers` and `skip_ephemeral_containers`
//! settings. Objects without a pod spec are accepted.

use portcullis_sdk::k8s_openapi::api::core::v1::{Container, EphemeralContainer, SecurityContext};
use portcullis_sdk::prelude::*;
use serde::Deserialize;

/// The message for a privileged (regular) container.
pub const PRIVILEGED_CONTAINER: &str = "Privileged container is not allowed";
/// The message for a privileged init container.
pub const PRIVILEGED_INIT_CONTAINER: &str = "Privileged init container is not allowed";
/// The message for a privileged ephemeral container.
pub const PRIVILEGED_EPHEMERAL_CONTAINER: &str = "Privileged ephemeral container is not allowed";

/// The policy's settings, e.g. `{"skip_init_containers": true}`.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PodPrivilegedSettings {
    /// Do not check init containers.
    pub skip_init_containers: bool,
    /// Do not check ephemeral containers.
    pub skip_ephemeral_containers: bool,
}

impl portcullis_sdk::Settings for PodPrivilegedSettings {}

/// The pod-privileged policy.
pub struct PodPrivileged;

impl Policy for PodPrivileged {
    type Settings = PodPrivilegedSettings;

    fn metadata() -> Metadata {
        let operations = [Operation::Create, Operation::Update];
        let rule = |group: &str, resources: &[&str]| {
            Rule::new()
                .api_groups([group])
                .api_versions(["v1"])
                .resources(resources.iter().copied())
                .operations(operations)
        };
        Metadata::new(
            "Rejects workloads (pods, deployments, replica sets, stateful sets, daemon sets, \
             replication controllers, jobs and cron jobs) that run privileged containers, \
             init containers or ephemeral containers. Init and ephemeral containers can be \
             exempted with the `skip_init_containers` and `skip_ephemeral_containers` settings.",
        )
        .rule(rule("", &["pods", "replicationcontrollers"]))
        .rule(rule(
            "apps",
            &["deployments", "replicasets", "statefulsets", "daemonsets"],
        ))
        .rule(rule("batch", &["jobs", "cronjobs"]))
    }

    fn validate(request: &AdmissionRequest, settings: &PodPrivilegedSettings) -> Verdict {
        let spec = match request.pod_spec() {
            Ok(Some(spec)) => spec,
            Ok(None) => return accept(),
            Err(error) => return reject_with_code(error, 400),
        };
        if spec.containers.iter().any(is_privileged_container) {
            return reject(PRIVILEGED_CONTAINER);
        }
        if !settings.skip_init_containers
            && spec
                .init_containers
                .iter()
                .flatten()
                .any(is_privileged_container)
        {
            return reject(PRIVILEGED_INIT_CONTAINER);
        }
        if !settings.skip_ephemeral_containers
            && spec
                .ephemeral_containers
                .iter()
                .flatten()
                .any(is_privileged_ephemeral_container)
        {
            return reject(PRIVILEGED_EPHEMERAL_CONTAINER);
        }
        accept()
    }
}

fn is_privileged(security_context: Option<&SecurityContext>) -> bool {
    security_context.and_then(|context| context.privileged) == Some(true)
}

fn is_privileged_container(container: &Container) -> bool {
    is_privileged(container.security_context.as_ref())
}

fn is_privileged_ephemeral_container(container: &EphemeralContainer) -> bool {
    is_privileged(container.security_context.as_ref())
}

portcullis_sdk::export_policy!(PodPrivileged);

#[cfg(test)]
mod tests;
