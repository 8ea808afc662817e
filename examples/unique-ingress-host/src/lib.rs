//! A context-aware policy: an Ingress may not claim a host another Ingress
//! already routes, in any namespace — two teams serving `shop.example`
//! would split its traffic at random. The operator grants it
//! `contextAwareResources: [{apiVersion: networking.k8s.io/v1, kind: Ingress}]`.
//!
//! Each host is looked up with [`cluster::list`] and a field selector on
//! `spec.rules.host`: the host answers from its watch-based cache of
//! Ingresses and sends back only the matches, masked to their names, so a
//! cluster of thousands of Ingresses costs the policy a few objects.

use portcullis_sdk::cluster::{self, ListParams};
use portcullis_sdk::k8s_openapi::api::networking::v1::Ingress;
use portcullis_sdk::prelude::*;

/// The unique-ingress-host policy.
pub struct UniqueIngressHost;

impl Policy for UniqueIngressHost {
    type Settings = NoSettings;

    fn metadata() -> Metadata {
        Metadata::new(
            "Rejects an Ingress whose host another Ingress already uses, in any namespace \
             (a context-aware policy: it lists Ingresses from the cluster).",
        )
        .rule(
            Rule::new()
                .api_groups(["networking.k8s.io"])
                .api_versions(["v1"])
                .resources(["ingresses"])
                .operations([Operation::Create, Operation::Update]),
        )
    }

    fn validate(request: &AdmissionRequest, _settings: &NoSettings) -> Verdict {
        let ingress: Ingress = match request.object_as() {
            Ok(Some(ingress)) => ingress,
            Ok(None) => return accept(),
            Err(error) => return reject_with_code(error, 400),
        };
        let own_name = ingress.metadata.name.as_deref().or(request.name.as_deref());
        let own_namespace = request.namespace.as_deref();
        let hosts = ingress
            .spec
            .iter()
            .flat_map(|spec| spec.rules.iter().flatten())
            .filter_map(|rule| rule.host.as_deref());
        for host in hosts {
            let params = ListParams::all_namespaces()
                .fields(format!("spec.rules.host={host}"))
                .masks(["metadata.name", "metadata.namespace"]);
            let others = match cluster::list::<Ingress>(&params) {
                Ok(others) => others,
                Err(error) => {
                    return reject_with_code(format!("cannot list Ingresses: {error}"), 500);
                }
            };
            // An update sees the Ingress itself among them.
            let taken = others.iter().find(|other| {
                other.metadata.name.as_deref() != own_name
                    || other.metadata.namespace.as_deref() != own_namespace
            });
            if let Some(other) = taken {
                return reject(format!(
                    "host `{host}` is already used by Ingress `{}/{}`",
                    other.metadata.namespace.as_deref().unwrap_or_default(),
                    other.metadata.name.as_deref().unwrap_or_default()
                ));
            }
        }
        accept()
    }
}

portcullis_sdk::export_policy!(UniqueIngressHost);

#[cfg(test)]
mod tests;
