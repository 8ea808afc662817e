//! Admits only container images from trusted registries, optionally pinned
//! by digest: a Portcullis policy built with `portcullis-sdk`.
//!
//! Every container, init container and ephemeral container of a workload
//! (Pod, Deployment, ReplicaSet, StatefulSet, DaemonSet,
//! ReplicationController, Job or CronJob) must use an image whose registry is
//! in the `allowedRegistries` setting and, with `requireDigest`, that is
//! pinned by a digest (`@sha256:` and 64 hex digits), so that what runs is
//! exactly what was reviewed rather than whatever a tag points to today.
//!
//! Image references are parsed the way Docker and containerd parse them
//! ([`crate::reference`]), so the registry the policy checks is the registry the
//! image is pulled from: `nginx` and `library/nginx` come from `docker.io`,
//! `localhost:5000/app` from `localhost:5000`. A reference that does not
//! parse is rejected with code 400, a trust violation with code 403; the
//! message names every offending container, its image and the reason.

pub mod reference;

use portcullis_sdk::k8s::{self, PodSpec};
use portcullis_sdk::prelude::*;
use portcullis_sdk::serde_json::Value;
use serde::Deserialize;

use crate::reference::{DEFAULT_REGISTRY, LEGACY_DEFAULT_REGISTRY, Reference, quote};

/// The policy's settings, e.g.
/// `{"allowedRegistries": ["registry.example.com", "docker.io"], "requireDigest": true}`.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct TrustedImagesSettings {
    /// The registries images may come from: hosts, optionally with a port
    /// (`registry.example.com`, `localhost:5000`). `docker.io` also covers
    /// images named without a registry (`nginx`, `bitnami/redis`).
    pub allowed_registries: Vec<String>,
    /// Whether every image must be pinned by a digest.
    pub require_digest: bool,
}

impl portcullis_sdk::Settings for TrustedImagesSettings {
    fn validate(&self) -> Result<(), String> {
        if self.allowed_registries.is_empty() {
            return Err("allowedRegistries must list at least one registry, \
                 e.g. {\"allowedRegistries\": [\"registry.example.com\"]}"
                .into());
        }
        for registry in &self.allowed_registries {
            // Catch the likely mistakes with a precise message: a URL, or a
            // repository rather than a registry.
            if registry.contains("://") {
                return Err(format!(
                    "allowedRegistries: {} must be a registry host without a scheme, \
                     e.g. \"registry.example.com\"",
                    quote(registry)
                ));
            }
            if registry.contains('/') {
                return Err(format!(
                    "allowedRegistries: {} must be a registry host, optionally with a port, \
                     not a repository path",
                    quote(registry)
                ));
            }
            reference::validate_registry(registry)
                .map_err(|error| format!("allowedRegistries: {error}"))?;
        }
        Ok(())
    }
}

impl TrustedImagesSettings {
    fn allows_registry(&self, registry: &str) -> bool {
        let registry = normalize_registry(registry);
        self.allowed_registries
            .iter()
            .any(|allowed| normalize_registry(allowed) == registry)
    }
}

/// Registry names compare case-insensitively (they are DNS names), and
/// `index.docker.io` is `docker.io`.
fn normalize_registry(registry: &str) -> String {
    let registry = registry.to_ascii_lowercase();
    if registry == LEGACY_DEFAULT_REGISTRY {
        DEFAULT_REGISTRY.to_owned()
    } else {
        registry
    }
}

/// The trusted-images policy.
pub struct TrustedImages;

impl Policy for TrustedImages {
    type Settings = TrustedImagesSettings;

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
            "Admits workloads (pods, deployments, replica sets, stateful sets, daemon sets, \
             replication controllers, jobs and cron jobs) only when every container, init \
             container and ephemeral container uses an image from a registry in the \
             `allowedRegistries` setting and, with `requireDigest`, pinned by a digest. \
             Invalid image references are rejected.",
        )
        // Ephemeral containers are added through the `pods/ephemeralcontainers`
        // subresource (`kubectl debug`), which a rule on `pods` does not match.
        .rule(rule(
            "",
            &["pods", "pods/ephemeralcontainers", "replicationcontrollers"],
        ))
        .rule(rule(
            "apps",
            &["deployments", "replicasets", "statefulsets", "daemonsets"],
        ))
        .rule(rule("batch", &["jobs", "cronjobs"]))
    }

    fn validate(request: &AdmissionRequest, settings: &TrustedImagesSettings) -> Verdict {
        check(request.pod_spec(), settings)
    }

    /// A raw document is a Kubernetes manifest (it must say its `kind`);
    /// workloads are checked as in an admission request, anything else has
    /// no images to check and is accepted.
    fn validate_raw(document: &Value, settings: &TrustedImagesSettings) -> Verdict {
        check(k8s::pod_spec(document), settings)
    }
}

portcullis_sdk::export_policy!(TrustedImages);

fn check(spec: Result<Option<PodSpec>, String>, settings: &TrustedImagesSettings) -> Verdict {
    let spec = match spec {
        Ok(Some(spec)) => spec,
        Ok(None) => return accept(),
        Err(error) => return reject_with_code(error, 400),
    };
    let mut problems = Vec::new();
    let mut invalid = false;
    for (role, name, image) in images(&spec) {
        match Reference::parse(image) {
            Err(error) => {
                invalid = true;
                problems.push(format!(
                    "{role} {}: invalid image reference {}: {error}",
                    quote(name),
                    quote(image)
                ));
            }
            Ok(reference) => {
                let reasons = violations(&reference, settings);
                if !reasons.is_empty() {
                    problems.push(format!(
                        "{role} {}: image {} {}",
                        quote(name),
                        quote(image),
                        reasons.join(", and ")
                    ));
                }
            }
        }
    }
    if problems.is_empty() {
        return accept();
    }
    // A reference that does not parse makes the object malformed (400),
    // which takes precedence over a policy violation (403).
    reject_with_code(problems.join("; "), if invalid { 400 } else { 403 })
}

/// Why a valid reference is not trusted; empty when it is.
fn violations(reference: &Reference, settings: &TrustedImagesSettings) -> Vec<String> {
    let mut reasons = Vec::new();
    if !settings.allows_registry(reference.registry()) {
        let allowed: Vec<String> = settings
            .allowed_registries
            .iter()
            .map(|registry| quote(registry))
            .collect();
        reasons.push(format!(
            "comes from registry {}, which is not allowed (allowed registries: {})",
            quote(reference.registry()),
            allowed.join(", ")
        ));
    }
    if settings.require_digest && reference.digest().is_none() {
        reasons.push("is not pinned by digest (`@sha256:` and 64 hex digits)".to_owned());
    }
    reasons
}

/// Every container of the pod spec that names an image, as (role, name,
/// image): containers, then init containers, then ephemeral containers.
/// A container without an image pulls nothing (the API server refuses the
/// pod until something fills it in, and that update is checked again).
fn images(spec: &PodSpec) -> Vec<(&'static str, &str, &str)> {
    let containers = spec
        .containers
        .iter()
        .map(|c| ("container", &c.name, &c.image));
    let init_containers = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| ("init container", &c.name, &c.image));
    let ephemeral_containers = spec
        .ephemeral_containers
        .iter()
        .flatten()
        .map(|c| ("ephemeral container", &c.name, &c.image));
    containers
        .chain(init_containers)
        .chain(ephemeral_containers)
        .filter_map(|(role, name, image)| match image.as_deref() {
            None | Some("") => None,
            Some(image) => Some((role, name.as_str(), image)),
        })
        .collect()
}

#[cfg(test)]
mod tests;
