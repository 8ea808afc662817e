//! Host capabilities: what a policy may ask the host for during an
//! evaluation, and what it has been granted.
//!
//! A capability is a namespace of operations (`tracing/log`,
//! `kubernetes/get_resource`, `oci/v1/verify`, …), as in Kubewarden's host
//! capability tree. Each one is a [`Capability`] registered in
//! [`Capabilities`]; the runtimes route a policy's host calls here
//! ([`Capabilities::call`]), which applies the policy's [`Grants`] exactly as
//! Kubewarden does, with Kubewarden's denial messages, before the capability
//! sees the call. A capability Portcullis does not provide yet answers with a
//! host error that says so: the policy decides what that means, as it would
//! for any failed host call.
//!
//! [`kubernetes`] is the one capability components import by name (the
//! typed `portcullis:policy/kubernetes` interface) beside Kubewarden's host
//! calls. Its host functions are async: a call that waits on the network
//! suspends its evaluation, which holds no worker meanwhile (the server's
//! gate gives a worker only to evaluations being polled).

mod grants;
pub mod kubernetes;
mod tracing_log;

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

pub use self::grants::{ContextAwareResource, Grants, HostCapabilities, PatternError};
pub use self::kubernetes::Kubernetes;
use crate::store::{GuestOutput, Linkers};

/// Who is calling the host during one evaluation: kept once in its store
/// ([`EvaluationState::get`](crate::store::EvaluationState::get)), where
/// every host function of every runtime and capability finds it.
#[derive(Clone)]
pub struct Caller {
    /// The policy's id.
    pub policy_id: String,
    /// What it has been granted.
    pub grants: Arc<Grants>,
    /// The host's capabilities.
    pub capabilities: Arc<Capabilities>,
    /// When the evaluation's time is up: host calls give up before.
    pub deadline: Instant,
}

/// The binding every Kubewarden host call names.
pub const BINDING: &str = "kubewarden";

/// What a capability learns about the call it serves.
pub struct CallContext<'a> {
    /// The policy making the call.
    pub policy_id: &'a str,
    /// What that policy has been granted.
    pub grants: &'a Grants,
    /// Where the evaluation's log lines are kept (bounded).
    pub(crate) output: &'a GuestOutput,
    /// When the evaluation's time is up.
    pub deadline: Instant,
}

/// The future a capability's [`Capability::call`] returns.
pub type CallFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<u8>, String>> + Send + 'a>>;

/// The future a capability's [`Capability::prepare`] returns.
pub type PrepareFuture<'a> = Pin<Box<dyn Future<Output = Result<(), Unserved>> + Send + 'a>>;

/// A policy of a new configuration that a capability cannot serve, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unserved {
    /// Its place in the grants given to [`Capability::prepare`].
    pub policy: usize,
    /// Why, naming the policies.yml key of the grant.
    pub reason: String,
}

/// One namespace of host operations.
pub trait Capability: Send + Sync {
    /// Its namespace, e.g. `tracing` or `kubernetes`.
    fn namespace(&self) -> &'static str;

    /// Its operations, e.g. `log`, or `v1/verify` (the part after the namespace).
    fn operations(&self) -> &'static [&'static str];

    /// Runs `operation` with the JSON `payload`; the policy's grants have
    /// already been checked. `Err` is the host error the policy receives.
    fn call<'a>(
        &'a self,
        context: &'a CallContext<'a>,
        operation: &'a str,
        payload: &'a [u8],
    ) -> CallFuture<'a>;

    /// Adds what policies import to reach this capability directly, beside
    /// Kubewarden's host call: a WIT interface for components, functions for
    /// core modules. Kubewarden's host call alone needs nothing.
    fn add_to_linkers(&self, _linkers: &mut Linkers) -> wasmtime::Result<()> {
        Ok(())
    }

    /// Gets ready to serve policies with `grants` (one entry per policy of a
    /// reload's new configuration) before that configuration replaces the
    /// running one, which keeps serving meanwhile: the Kubernetes capability
    /// starts the caches of resources newly granted. `Err` names the first
    /// policy it cannot serve: a grant that would only fail later, in the
    /// policy's calls, is refused before the swap.
    fn prepare<'a>(&'a self, grants: &'a [&'a Grants]) -> PrepareFuture<'a> {
        let _ = grants;
        Box::pin(async { Ok(()) })
    }

    /// Itself, for [`Capabilities::find`].
    fn as_any(&self) -> &dyn Any;
}

/// Every capability the host knows, provided or not. Cheap to clone: the
/// capabilities themselves are shared.
#[derive(Clone)]
pub struct Capabilities {
    providers: Vec<Arc<dyn Capability>>,
}

impl std::fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.providers.iter().map(|p| p.namespace()))
            .finish()
    }
}

impl Default for Capabilities {
    /// Logging, Kubernetes without a cluster, plus Kubewarden's other
    /// namespaces answering that they are not provided yet.
    fn default() -> Self {
        Self {
            providers: vec![
                Arc::new(tracing_log::TracingLog),
                // No cluster: its reads answer that none is configured.
                Arc::new(Kubernetes::default()),
                Arc::new(NotProvided {
                    namespace: "oci",
                    operations: &[
                        "v1/verify",
                        "v1/manifest_digest",
                        "v1/oci_manifest",
                        "v1/oci_manifest_config",
                        "v2/verify",
                    ],
                }),
                Arc::new(NotProvided {
                    namespace: "net",
                    operations: &["v1/dns_lookup_host"],
                }),
                Arc::new(NotProvided {
                    namespace: "crypto",
                    operations: &["v1/is_certificate_trusted"],
                }),
            ],
        }
    }
}

impl Capabilities {
    /// These capabilities with `capability` added, replacing any other of
    /// its namespace: how a capability plugs itself in.
    pub fn with(mut self, capability: Arc<dyn Capability>) -> Self {
        self.providers
            .retain(|p| p.namespace() != capability.namespace());
        self.providers.push(capability);
        self
    }

    /// The capability of type `C`, if the host has one.
    pub fn find<C: Capability + 'static>(&self) -> Option<&C> {
        self.providers
            .iter()
            .find_map(|p| p.as_any().downcast_ref::<C>())
    }

    /// Lets every capability add its imports to the engine's linkers.
    pub(crate) fn add_to_linkers(&self, linkers: &mut Linkers) -> wasmtime::Result<()> {
        for provider in &self.providers {
            provider.add_to_linkers(linkers)?;
        }
        Ok(())
    }

    /// Lets every capability get ready for a new configuration
    /// ([`Capability::prepare`]), one after the other: the first policy one
    /// of them cannot serve, if any.
    pub async fn prepare(&self, grants: &[&Grants]) -> Result<(), Unserved> {
        for provider in &self.providers {
            provider.prepare(grants).await?;
        }
        Ok(())
    }

    /// Serves one host call, gated by the policy's grants as Kubewarden
    /// gates it: the binding must be `kubewarden`; `tracing` is never gated;
    /// every other call needs `namespace/operation` in the policy's
    /// `hostCapabilities`, and a Kubernetes read its resource in
    /// `contextAwareResources`.
    pub async fn call(
        &self,
        context: &CallContext<'_>,
        binding: &str,
        namespace: &str,
        operation: &str,
        payload: &[u8],
    ) -> Result<Vec<u8>, String> {
        if binding != BINDING {
            return Err(format!("unknown binding: {binding}"));
        }
        if namespace != "tracing" {
            let path = format!("{namespace}/{operation}");
            if !context.grants.host_capabilities.allows(&path) {
                tracing::warn!(
                    policy = context.policy_id,
                    capability = path,
                    allowed = %context.grants.host_capabilities,
                    "policy tried to use a host capability it has not been granted"
                );
                return Err(format!(
                    "Policy has not been granted access to the '{path}' host capability. \
                     The violation has been reported."
                ));
            }
            if namespace == "kubernetes" && operation != "can_i" {
                context
                    .grants
                    .check_kubernetes_read(context.policy_id, payload)?;
            }
        }
        let Some(provider) = self.providers.iter().find(|p| p.namespace() == namespace) else {
            return Err(format!("unknown namespace: {namespace}"));
        };
        if !provider.operations().contains(&operation) {
            return Err(format!("unknown operation: {operation}"));
        }
        provider.call(context, operation, payload).await
    }
}

/// A namespace Portcullis knows from Kubewarden but does not serve yet.
struct NotProvided {
    namespace: &'static str,
    operations: &'static [&'static str],
}

impl Capability for NotProvided {
    fn namespace(&self) -> &'static str {
        self.namespace
    }

    fn operations(&self) -> &'static [&'static str] {
        self.operations
    }

    fn call<'a>(
        &'a self,
        _: &'a CallContext<'a>,
        operation: &'a str,
        _: &'a [u8],
    ) -> CallFuture<'a> {
        let namespace = self.namespace;
        Box::pin(async move {
            Err(format!(
                "Callback evaluation failure: the '{namespace}/{operation}' host capability \
                 is not provided by Portcullis yet"
            ))
        })
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(grants: &Grants, binding: &str, path: &str, payload: &str) -> Result<Vec<u8>, String> {
        let output = GuestOutput::new(1 << 10);
        let context = CallContext {
            policy_id: "p",
            grants,
            output: &output,
            deadline: Instant::now() + std::time::Duration::from_secs(1),
        };
        let (namespace, operation) = path.split_once('/').unwrap();
        let capabilities = Capabilities::default();
        futures_lite_block_on(capabilities.call(
            &context,
            binding,
            namespace,
            operation,
            payload.as_bytes(),
        ))
    }

    fn futures_lite_block_on<F: Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    #[test]
    fn calls_are_gated_as_kubewarden_gates_them() {
        let none = Grants::default();
        assert_eq!(
            call(&none, "other", "tracing/log", "{}").unwrap_err(),
            "unknown binding: other"
        );
        assert_eq!(
            call(&none, "kubewarden", "net/v1/dns_lookup_host", "\"a\"").unwrap_err(),
            "Policy has not been granted access to the 'net/v1/dns_lookup_host' host \
             capability. The violation has been reported."
        );
        // Not granted wins over unknown, as in Kubewarden.
        assert!(
            call(&none, "kubewarden", "nope/x", "{}")
                .unwrap_err()
                .starts_with("Policy has not been granted access to the 'nope/x'")
        );
        let all = Grants {
            host_capabilities: HostCapabilities::new(["*"]).unwrap(),
            ..Grants::default()
        };
        assert_eq!(
            call(&all, "kubewarden", "nope/x", "{}").unwrap_err(),
            "unknown namespace: nope"
        );
        assert_eq!(
            call(&all, "kubewarden", "net/v9/x", "{}").unwrap_err(),
            "unknown operation: v9/x"
        );
        assert_eq!(
            call(&all, "kubewarden", "net/v1/dns_lookup_host", "\"a\"").unwrap_err(),
            "Callback evaluation failure: the 'net/v1/dns_lookup_host' host capability is \
             not provided by Portcullis yet"
        );
        // The resource allow-list applies to reads, not to can_i.
        let payload = r#"{"api_version":"v1","kind":"Secret","name":"s","disable_cache":false}"#;
        assert_eq!(
            call(&all, "kubewarden", "kubernetes/get_resource", payload).unwrap_err(),
            "Policy has not been granted access to Kubernetes v1/Secret resources. \
             The violation has been reported."
        );
        assert_eq!(
            call(&all, "kubewarden", "kubernetes/can_i", "{}").unwrap_err(),
            "Callback evaluation failure: invalid can_i request: missing field \
             `subject_access_review` at line 1 column 2"
        );
        let can_i = r#"{"subject_access_review":{"user":"u","resource_attributes":
            {"resource":"pods","verb":"get"}}}"#;
        assert_eq!(
            call(&all, "kubewarden", "kubernetes/can_i", can_i).unwrap_err(),
            "Callback evaluation failure: no Kubernetes cluster is configured (in a cluster, \
             --kubeconfig or --resources FILE)"
        );
        assert_eq!(
            call(
                &none,
                "kubewarden",
                "tracing/log",
                r#"{"level":"info","message":"m"}"#
            ),
            Ok(Vec::new())
        );
    }
}
