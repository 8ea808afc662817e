//! Write Kubernetes admission policies for [Portcullis] as WebAssembly
//! components.
//!
//! A policy is a type implementing [`Policy`]: it describes itself with
//! [`Metadata`], declares its [`Settings`], and turns an [`AdmissionRequest`]
//! into a [`Verdict`]. [`export_policy!`] makes the crate a component of the
//! `portcullis:policy` world (the contract in the repository's `wit/`
//! directory), and [`testing::Harness`] runs the same code natively in
//! `cargo test`.
//!
//! ```
//! use portcullis_sdk::prelude::*;
//! use serde::Deserialize;
//!
//! /// Settings: `{"exempt_namespaces": ["kube-system"]}`.
//! #[derive(Debug, Default, Deserialize)]
//! #[serde(default, deny_unknown_fields)]
//! pub struct HostNetworkSettings {
//!     exempt_namespaces: Vec<String>,
//! }
//!
//! impl Settings for HostNetworkSettings {}
//!
//! /// Rejects workloads that use the node's network namespace.
//! pub struct NoHostNetwork;
//!
//! impl Policy for NoHostNetwork {
//!     type Settings = HostNetworkSettings;
//!
//!     fn metadata() -> Metadata {
//!         Metadata::new("Rejects pods that use the host network.").rule(
//!             Rule::new()
//!                 .api_groups(["", "apps"])
//!                 .api_versions(["v1"])
//!                 .resources(["pods", "deployments"])
//!                 .operations([Operation::Create, Operation::Update]),
//!         )
//!     }
//!
//!     fn validate(request: &AdmissionRequest, settings: &HostNetworkSettings) -> Verdict {
//!         if let Some(namespace) = &request.namespace {
//!             if settings.exempt_namespaces.contains(namespace) {
//!                 return accept();
//!             }
//!         }
//!         match request.pod_spec() {
//!             Ok(Some(spec)) if spec.host_network == Some(true) => {
//!                 reject("host networking is not allowed")
//!             }
//!             Ok(_) => accept(),
//!             Err(error) => reject_with_code(error, 400),
//!         }
//!     }
//! }
//!
//! portcullis_sdk::export_policy!(NoHostNetwork);
//!
//! // A unit test, run natively through the same code as the component:
//! use portcullis_sdk::serde_json::json;
//! use portcullis_sdk::testing::Harness;
//!
//! let request = json!({
//!     "uid": "1",
//!     "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
//!     "namespace": "default",
//!     "operation": "CREATE",
//!     "object": {"spec": {"template": {"spec": {
//!         "hostNetwork": true,
//!         "containers": [{"name": "app", "image": "nginx"}]
//!     }}}}
//! });
//! let harness = Harness::<NoHostNetwork>::new();
//! harness.validate(request.clone()).assert_rejected("host networking is not allowed");
//! harness
//!     .settings_json(json!({"exempt_namespaces": ["default"]}))
//!     .validate(request)
//!     .assert_accepted();
//! ```
//!
//! A policy crate has `crate-type = ["cdylib", "rlib"]` (the `cdylib` is the
//! component, the `rlib` lets its tests and other crates use it), depends on
//! this crate and `serde`, and is built with
//! `cargo build --target wasm32-wasip2 --profile policy`.
//!
//! [Portcullis]: https://example.invalid/portcullis

#![deny(missing_docs)]

#[allow(missing_docs, clippy::all)]
pub mod bindings;
pub mod cluster;
mod fake_cluster;
pub mod glue;
pub mod json;
pub mod k8s;
pub mod metadata;
pub mod policy;
pub mod prelude;
pub mod request;
pub mod settings;
pub mod testing;
pub mod verdict;

pub use k8s_openapi;
pub use serde_json;

pub use json::RawJson;
pub use metadata::{Metadata, Rule};
pub use policy::Policy;
pub use request::{AdmissionRequest, GroupVersionKind, GroupVersionResource, Operation, UserInfo};
pub use settings::{NoSettings, Settings};
pub use verdict::{Verdict, accept, mutate, reject, reject_with_code};

/// Exports a [`Policy`] as the component's implementation of the
/// `portcullis:policy` world.
///
/// Use it once, at the top level of the policy crate:
///
/// ```
/// use portcullis_sdk::prelude::*;
///
/// pub struct AllowAll;
///
/// impl Policy for AllowAll {
///     type Settings = NoSettings;
///
///     fn metadata() -> Metadata {
///         Metadata::new("Admits everything.")
///     }
///
///     fn validate(_request: &AdmissionRequest, _settings: &NoSettings) -> Verdict {
///         accept()
///     }
/// }
///
/// portcullis_sdk::export_policy!(AllowAll);
/// ```
///
/// It implements the generated
/// [`Guest`](bindings::exports::portcullis::policy::admission::Guest) trait by calling the
/// functions in [`glue`] (the same ones the [test harness](testing) calls) and,
/// when compiling for WebAssembly, emits the component's exports. On native
/// targets nothing is exported, so policy crates build and test with plain
/// `cargo test`.
#[macro_export]
macro_rules! export_policy {
    ($policy:ty) => {
        const _: () = {
            #[allow(dead_code)]
            struct PortcullisPolicyExports;

            impl $crate::bindings::exports::portcullis::policy::admission::Guest
                for PortcullisPolicyExports
            {
                fn metadata() -> $crate::bindings::wit::PolicyMetadata {
                    $crate::glue::metadata::<$policy>()
                }

                fn validate_settings(
                    settings: ::std::string::String,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    $crate::glue::validate_settings::<$policy>(&settings)
                }

                fn validate(
                    request: $crate::bindings::wit::AdmissionRequest,
                    settings: ::std::string::String,
                ) -> $crate::bindings::wit::ValidationResponse {
                    $crate::glue::validate::<$policy>(request, &settings)
                }

                fn validate_raw(
                    document: ::std::string::String,
                    settings: ::std::string::String,
                ) -> $crate::bindings::wit::ValidationResponse {
                    $crate::glue::validate_raw::<$policy>(&document, &settings)
                }
            }

            #[cfg(target_arch = "wasm32")]
            $crate::bindings::__export_policy!(
                PortcullisPolicyExports with_types_in $crate::bindings
            );
        };
    };
}
