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

use portcullis_sdk::k8s::json_type;
use portcullis_sdk::prelude::*;
use portcullis_sdk::serde_json::Value;

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
            Ok(Some("LoadBalancer")) => reject(LOAD_BALANCER_NOT_ALLOWED),
            Ok(_) => accept(),
            Err(error) => reject_with_code(error, 400),
        }
    }
}

portcullis_sdk::export_policy!(DisallowServiceLoadBalancer);

/// The Service's `spec.type`, `None` when `spec` or `type` is absent or null
/// (Kubernetes then defaults the type to `ClusterIP`); an error when the
/// object does not have the shape of a Service.
fn service_type(object: &Value) -> Result<Option<&str>, String> {
    let Value::Object(fields) = object else {
        return Err(format!(
            "the Service is not a JSON object (found {})",
            json_type(object)
        ));
    };
    let spec = match fields.get("spec") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(spec)) => spec,
        Some(other) => {
            return Err(format!(
                "the Service's `spec` is not an object (found {})",
                json_type(other)
            ));
        }
    };
    match spec.get("type") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(service_type)) => Ok(Some(service_type)),
        Some(other) => Err(format!(
            "the Service's `spec.type` is not a string (found {})",
            json_type(other)
        )),
    }
}

#[cfg(test)]
mod tests;
