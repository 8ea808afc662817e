//! The Kubernetes capability: what context-aware policies read from the
//! cluster, for components (the typed `portcullis:policy/kubernetes` import,
//! [`component`]) and Kubewarden modules (the `kubernetes/*` host calls,
//! [`kubewarden`]) through one implementation.
//!
//! Reads are gated by the policy's grant (`contextAwareResources`, with
//! Kubewarden's denial message), answered by a [`Cluster`] — the real one
//! ([`live`]: watch-based caches for lists, a 5-second cache for `get`) or
//! a file of objects ([`offline`], `--resources`) — and trimmed by field
//! masks ([`select`]) before the JSON reaches the policy. A read that waits
//! for the API server suspends its evaluation (holding no worker) and gives
//! up with time left before the evaluation's deadline.

pub mod component;
mod kubewarden;
pub mod live;
pub mod objects;
pub mod offline;
pub mod select;

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::authorization::v1::{SubjectAccessReviewSpec, SubjectAccessReviewStatus};
use serde_json::Value;

use self::select::{FieldMasks, FieldSelector, LabelSelector};
use super::{
    CallContext, CallFuture, Capability, ContextAwareResource, Grants, PrepareFuture, Unserved,
};

/// Why a read gave no answer: the typed errors of the WIT interface, and
/// the host errors of Kubewarden's calls.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KubeError {
    /// The policy was not granted the resource or the operation.
    #[error("{0}")]
    NotGranted(String),
    /// No such object.
    #[error("{0}")]
    NotFound(String),
    /// The API server could not be reached or did not answer in time.
    #[error("{0}")]
    Unavailable(String),
    /// A malformed request: selector, mask, kind.
    #[error("{0}")]
    Invalid(String),
    /// The API server refused the host (its RBAC).
    #[error("{0}")]
    Forbidden(String),
}

/// A future of the cluster.
pub type ClusterFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, KubeError>> + Send + 'a>>;

/// Where objects come from: the API server, or a file.
pub trait Cluster: Send + Sync + 'static {
    /// The object `name` of `resource`, in `namespace` for a namespaced
    /// kind; from a short-lived cache unless `bypass_cache`. Gives up at
    /// `deadline`.
    fn get<'a>(
        &'a self,
        resource: &'a ContextAwareResource,
        namespace: Option<&'a str>,
        name: &'a str,
        bypass_cache: bool,
        deadline: Instant,
    ) -> ClusterFuture<'a, Arc<Value>>;

    /// The objects of `resource` (in `namespace`, or all) both selectors
    /// select, from the cache: never waits.
    fn list(
        &self,
        resource: &ContextAwareResource,
        namespace: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> Result<Vec<Arc<Value>>, KubeError>;

    /// A SubjectAccessReview's answer; cached 5 s unless `bypass_cache`.
    fn can_i<'a>(
        &'a self,
        review: SubjectAccessReviewSpec,
        bypass_cache: bool,
        deadline: Instant,
    ) -> ClusterFuture<'a, SubjectAccessReviewStatus>;

    /// Whether reads of `resource` (with its field masks) are answered as
    /// this cluster runs now; why not, if not. What a reload checks a new
    /// grant against.
    fn answers(&self, resource: &ContextAwareResource) -> Result<(), String> {
        let _ = resource;
        Ok(())
    }

    /// Gets ready to answer reads of `resources` (a reload's grants):
    /// starts what it needs and waits until it can answer; why not, if it
    /// cannot.
    fn prepare<'a>(
        &'a self,
        resources: &'a [ContextAwareResource],
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>> {
        let _ = resources;
        Box::pin(async { Ok(()) })
    }
}

/// One object to read.
#[derive(Debug, Clone)]
pub struct GetRequest {
    /// Its `apiVersion` and `kind`.
    pub api_version: String,
    /// `kind`.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Its namespace, for a namespaced kind.
    pub namespace: Option<String>,
    /// The fields wanted; empty for all.
    pub field_masks: Vec<String>,
    /// Ask the API server, not the 5-second cache.
    pub bypass_cache: bool,
}

/// Objects to list.
#[derive(Debug, Clone)]
pub struct ListRequest {
    /// `apiVersion`.
    pub api_version: String,
    /// `kind`.
    pub kind: String,
    /// One namespace, or all.
    pub namespace: Option<String>,
    /// A label selector.
    pub label_selector: Option<String>,
    /// A field selector.
    pub field_selector: Option<String>,
    /// The fields wanted; empty for all.
    pub field_masks: Vec<String>,
}

/// Why a server started without a cluster cannot take a context-aware
/// policy in a reload: the cluster's client is set up at start only.
const NO_CLUSTER_TO_RELOAD: &str = "this server started without a Kubernetes cluster (no policy \
                                    read the cluster then): restart it to add a context-aware policy";

/// The Kubernetes capability of the host, with the cluster it reads (none
/// when no policy is granted any resource: reads then say so).
#[derive(Clone, Default)]
pub struct Kubernetes {
    cluster: Option<Arc<dyn Cluster>>,
}

impl std::fmt::Debug for Kubernetes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kubernetes")
            .field("cluster", &self.cluster.is_some())
            .finish()
    }
}

/// The share of what is left before the evaluation's deadline that a call to
/// the API server may use: the rest is the policy's, to answer the error.
fn lookup_deadline(deadline: Instant) -> Instant {
    let left = deadline.saturating_duration_since(Instant::now());
    deadline - (left / 4).min(Duration::from_millis(500))
}

impl Kubernetes {
    /// Reads answered by `cluster`.
    pub fn new(cluster: Arc<dyn Cluster>) -> Self {
        Self {
            cluster: Some(cluster),
        }
    }

    /// Whether a policy granted `resource` can be served by this host as it
    /// runs; why not, if not (see [`Cluster::answers`]).
    fn answers(&self, resource: &ContextAwareResource) -> Result<(), String> {
        match &self.cluster {
            Some(cluster) => cluster.answers(resource),
            None => Err(NO_CLUSTER_TO_RELOAD.into()),
        }
    }

    /// Gets the cluster ready to answer `resources` (see
    /// [`Cluster::prepare`]): a reload's new grants get their caches.
    async fn start_caches(&self, resources: &[ContextAwareResource]) -> Result<(), String> {
        match &self.cluster {
            Some(cluster) => cluster.prepare(resources).await,
            None if resources.is_empty() => Ok(()),
            None => Err(NO_CLUSTER_TO_RELOAD.into()),
        }
    }

    fn cluster(&self) -> Result<&dyn Cluster, KubeError> {
        self.cluster.as_deref().ok_or_else(|| {
            KubeError::Unavailable(
                "no Kubernetes cluster is configured (in a cluster, --kubeconfig or \
                 --resources FILE)"
                    .into(),
            )
        })
    }

    /// One object, gated by `grants`, masked by the grant's and the call's
    /// field masks.
    pub async fn get(
        &self,
        policy_id: &str,
        grants: &Grants,
        deadline: Instant,
        request: &GetRequest,
    ) -> Result<Value, KubeError> {
        let grant = grants
            .kubernetes_grant(policy_id, &request.api_version, &request.kind)
            .map_err(KubeError::NotGranted)?;
        let masks = Masks::new(grant, &request.field_masks)?;
        let object = self
            .cluster()?
            .get(
                grant,
                request.namespace.as_deref().filter(|ns| !ns.is_empty()),
                &request.name,
                request.bypass_cache,
                lookup_deadline(deadline),
            )
            .await?;
        Ok(masks.apply(&object))
    }

    /// The JSON array of the objects selected, gated and masked as
    /// [`get`](Self::get).
    pub fn list(
        &self,
        policy_id: &str,
        grants: &Grants,
        request: &ListRequest,
    ) -> Result<String, KubeError> {
        let (objects, masks) = self.select(policy_id, grants, request)?;
        Ok(masks.to_json_array(&objects))
    }

    fn select(
        &self,
        policy_id: &str,
        grants: &Grants,
        request: &ListRequest,
    ) -> Result<(Vec<Arc<Value>>, Masks), KubeError> {
        let grant = grants
            .kubernetes_grant(policy_id, &request.api_version, &request.kind)
            .map_err(KubeError::NotGranted)?;
        let masks = Masks::new(grant, &request.field_masks)?;
        let labels = LabelSelector::parse(request.label_selector.as_deref().unwrap_or_default())
            .map_err(KubeError::Invalid)?;
        let fields = FieldSelector::parse(request.field_selector.as_deref().unwrap_or_default())
            .map_err(KubeError::Invalid)?;
        let objects = self.cluster()?.list(
            grant,
            request.namespace.as_deref().filter(|ns| !ns.is_empty()),
            &labels,
            &fields,
        )?;
        Ok((objects, masks))
    }

    /// A SubjectAccessReview's status. Gated as in Kubewarden: by the
    /// `kubernetes/can_i` host capability, not by resources.
    pub async fn can_i(
        &self,
        policy_id: &str,
        grants: &Grants,
        deadline: Instant,
        review: SubjectAccessReviewSpec,
        bypass_cache: bool,
    ) -> Result<SubjectAccessReviewStatus, KubeError> {
        if !grants.host_capabilities.allows("kubernetes/can_i") {
            tracing::warn!(
                policy = policy_id,
                "policy tried to use kubernetes/can_i, which it has not been granted"
            );
            return Err(KubeError::NotGranted(
                "Policy has not been granted access to the 'kubernetes/can_i' host \
                 capability. The violation has been reported."
                    .into(),
            ));
        }
        self.cluster()?
            .can_i(review, bypass_cache, lookup_deadline(deadline))
            .await
    }
}

/// The grant's masks, then the call's.
struct Masks(FieldMasks, FieldMasks);

impl Masks {
    fn new(grant: &ContextAwareResource, call: &[String]) -> Result<Self, KubeError> {
        Ok(Self(
            FieldMasks::new(&grant.field_masks).map_err(KubeError::Invalid)?,
            FieldMasks::new(call).map_err(KubeError::Invalid)?,
        ))
    }

    fn apply(&self, object: &Value) -> Value {
        match (self.0.is_empty(), self.1.is_empty()) {
            (true, true) => object.clone(),
            (false, true) => self.0.apply(object),
            (true, false) => self.1.apply(object),
            (false, false) => self.1.apply(&self.0.apply(object)),
        }
    }

    /// `objects`, masked, as a JSON array; unmasked objects are written from
    /// the cache's copy without cloning them.
    fn to_json_array(&self, objects: &[Arc<Value>]) -> String {
        let mut out = Vec::with_capacity(objects.len() * 256 + 2);
        out.push(b'[');
        for (i, object) in objects.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let written = if self.0.is_empty() && self.1.is_empty() {
                serde_json::to_writer(&mut out, object.as_ref())
            } else {
                serde_json::to_writer(&mut out, &self.apply(object))
            };
            written.expect("a JSON value serialises");
        }
        out.push(b']');
        String::from_utf8(out).expect("serde_json writes UTF-8")
    }
}

impl Capability for Kubernetes {
    fn namespace(&self) -> &'static str {
        "kubernetes"
    }

    fn operations(&self) -> &'static [&'static str] {
        kubewarden::OPERATIONS
    }

    fn call<'a>(
        &'a self,
        context: &'a CallContext<'a>,
        operation: &'a str,
        payload: &'a [u8],
    ) -> CallFuture<'a> {
        Box::pin(kubewarden::call(self, context, operation, payload))
    }

    fn add_to_linkers(&self, linkers: &mut crate::store::Linkers) -> wasmtime::Result<()> {
        component::add_to_linker(&mut linkers.components)
    }

    /// New grants get their caches first (the running configuration serves
    /// meanwhile); one the host cannot answer would only fail later, in the
    /// policy's reads: it is refused here.
    fn prepare<'a>(&'a self, grants: &'a [&'a Grants]) -> PrepareFuture<'a> {
        Box::pin(async move {
            let granted: Vec<ContextAwareResource> = grants
                .iter()
                .flat_map(|grants| grants.context_aware_resources.iter().cloned())
                .collect();
            let started = self.start_caches(&granted).await;
            for (policy, grants) in grants.iter().enumerate() {
                for resource in &grants.context_aware_resources {
                    if let Err(missing) = self.answers(resource) {
                        // Why the cache could not be started says more.
                        let reason = started.clone().err().unwrap_or(missing);
                        return Err(Unserved {
                            policy,
                            reason: format!("key `contextAwareResources`: {reason}"),
                        });
                    }
                }
            }
            Ok(())
        })
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
