//! Rejects Services of type `LoadBalancer`: a Portcullis port of Kubewarden's
//! [disallow-service-loadbalancer](https://github.com/kubewarden/disallow-service-loadbalancer-policy)
//! policy (a Rego policy there), built with `portcullis-sdk`.
//!
//! A `LoadBalancer` Service makes the cloud provider allocate an external
//! load balancer, often with a public address and a bill; clusters that
//! expose workloads through an ingress controller or gateway use this policy
//! to keep teams from creating them. Services of every other type
//! (`ClusterIP`, `NodePort`, `ExternalName`, or none, which means
//! `ClusterIP`) and objects of other kinds are accepted.

use portcullis_sdk::json::{self, RawJson};
use portcullis_sdk::prelude::*;
use portcullis_sdk::serde_json;

/// The message of a rejection, as Kubewarden's policy words it.
pub const LOAD_BALANCER_NOT_ALLOWED: &str = "Service of type LoadBalancer are not allowed";

/// The disallow-service-loadbalancer policy.
pub struct DisallowServiceLoadBalancer;

impl Policy for DisallowServiceLoadBalancer {
    type Settings = NoSettings;

    fn metadata() -> Metadata {
        Metadata::new(
            "Rejects Services of type LoadBalancer, which make the cloud provider allocate \
             an external load balancer. Services of other types are accepted.",
        )
        .rule(
            Rule::new()
                .api_groups([""])
                .api_versions(["v1"])
                .resources(["services"])
                .operations([Operation::Create, Operation::Update]),
        )
    }

    fn validate(request: &AdmissionRequest, _settings: &NoSettings) -> Verdict {
        // Only core Services have a `spec.type`; custom resources that happen
        // to be called Service (Knative's `serving.knative.dev` one, ...) are
        // none of this policy's business.
        if !request.kind.group.is_empty() || request.kind.kind != "Service" {
            return accept();
        }
        let Some(object) = &request.object else {
            // A deletion: removing a load balancer is always fine.
            return accept();
        };
        match service_type(object) {
            Ok(Some(service_type)) if service_type == "LoadBalancer" => {
                reject(LOAD_BALANCER_NOT_ALLOWED)
            }
            Ok(_) => accept(),
            Err(error) => reject_with_code(error, 400),
        }
    }
}

portcullis_sdk::export_policy!(DisallowServiceLoadBalancer);

/// The Service's `spec.type`, `None` when `spec` or `type` is absent or null
/// (Kubernetes then defaults the type to `ClusterIP`); an error when the
/// object does not have the shape of a Service.
///
/// Reads the two members it needs from the JSON text and skips the rest of
/// the object instead of parsing all of it.
fn service_type(object: &RawJson) -> Result<Option<String>, String> {
    let [spec] = object
        .fields(["spec"])
        .map_err(|found| format!("the Service is not a JSON object (found {found})"))?;
    let Some(spec) = spec else {
        return Ok(None);
    };
    let [service_type] = json::fields(spec, ["type"])
        .map_err(|found| format!("the Service's `spec` is not an object (found {found})"))?;
    service_type
        .map(|service_type| {
            serde_json::from_str(service_type.get()).map_err(|_| {
                format!(
                    "the Service's `spec.type` is not a string (found {})",
                    json::raw_json_type(service_type)
                )
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests;
