//! Reading the cluster: typed helpers over the `portcullis:policy/kubernetes`
//! import, for context-aware policies.
//!
//! ```no_run
//! use portcullis_sdk::cluster::{self, ListParams};
//! use portcullis_sdk::k8s_openapi::api::core::v1::Namespace;
//! use portcullis_sdk::k8s_openapi::api::networking::v1::Ingress;
//!
//! let namespace: Namespace = cluster::get("team-a")?;
//! let same_host: Vec<Ingress> = cluster::list(
//!     &ListParams::all_namespaces().fields("spec.rules.host=shop.example"),
//! )?;
//! # Ok::<(), cluster::Error>(())
//! ```
//!
//! A policy that calls any of these imports the interface, and the operator
//! must grant it the kinds it reads (`contextAwareResources` in
//! `policies.yml`): the host refuses to load it otherwise. Natively (in
//! `cargo test`), the calls are answered by the
//! [`FakeCluster`](crate::testing::FakeCluster) the test harness was given.

use k8s_openapi::{Resource, serde::de::DeserializeOwned};

/// Why a read gave no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The operator did not grant this policy the kind (or `can-i`).
    NotGranted(String),
    /// No such object.
    NotFound(String),
    /// The API server could not be reached, or did not answer in time.
    Unavailable(String),
    /// The request is malformed (a selector, a mask, a kind).
    Invalid(String),
    /// The API server refused the host (its RBAC).
    Forbidden(String),
    /// The answer is not a valid object of the type asked for.
    Decode(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::NotGranted(m) => write!(f, "not granted: {m}"),
            Error::NotFound(m) => write!(f, "not found: {m}"),
            Error::Unavailable(m) => write!(f, "Kubernetes API unavailable: {m}"),
            Error::Invalid(m) => write!(f, "invalid request: {m}"),
            Error::Forbidden(m) => write!(f, "forbidden: {m}"),
            Error::Decode(m) => write!(f, "cannot read the answer: {m}"),
        }
    }
}

impl std::error::Error for Error {}

/// Which objects [`list`] returns, and which of their fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListParams {
    /// One namespace; `None` for every namespace.
    pub namespace: Option<String>,
    /// A label selector (`app=web,tier!=db`).
    pub label_selector: Option<String>,
    /// A field selector: `path=value` or `path!=value` terms, any dotted
    /// path; through a list, any element (`spec.rules.host=a.example`).
    pub field_selector: Option<String>,
    /// The fields to keep (`metadata.name`, `spec.rules.host`); empty: all.
    pub field_masks: Vec<String>,
}

impl ListParams {
    /// Objects of every namespace (or cluster-scoped ones).
    pub fn all_namespaces() -> Self {
        Self::default()
    }

    /// Objects in `namespace`.
    pub fn namespace(namespace: impl Into<String>) -> Self {
        Self {
            namespace: Some(namespace.into()),
            ..Self::default()
        }
    }

    /// Only objects whose labels `selector` selects.
    pub fn labels(mut self, selector: impl Into<String>) -> Self {
        self.label_selector = Some(selector.into());
        self
    }

    /// Only objects whose fields `selector` selects.
    pub fn fields(mut self, selector: impl Into<String>) -> Self {
        self.field_selector = Some(selector.into());
        self
    }

    /// Only these fields of each object (the rest never reaches the policy).
    pub fn masks<S: Into<String>>(mut self, masks: impl IntoIterator<Item = S>) -> Self {
        self.field_masks = masks.into_iter().map(Into::into).collect();
        self
    }
}

/// One object, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GetParams {
    /// `apiVersion`, e.g. `v1`.
    pub api_version: String,
    /// `kind`, e.g. `Namespace`.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Its namespace, for a namespaced kind.
    pub namespace: Option<String>,
    /// The fields to keep; empty: all.
    pub field_masks: Vec<String>,
    /// Ask the API server now, not the host's 5-second cache.
    pub bypass_cache: bool,
}

impl GetParams {
    /// The object `name` of type `K`, whole, through the cache.
    pub fn of<K: Resource>(name: impl Into<String>) -> Self {
        Self {
            api_version: K::API_VERSION.to_owned(),
            kind: K::KIND.to_owned(),
            name: name.into(),
            ..Self::default()
        }
    }

    /// In `namespace` (for a namespaced kind).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Only these fields (dotted paths).
    pub fn masks<S: Into<String>>(mut self, masks: impl IntoIterator<Item = S>) -> Self {
        self.field_masks = masks.into_iter().map(Into::into).collect();
        self
    }

    /// Asks the API server now, not the host's 5-second cache: for a
    /// decision that must see a change the moment it is made (at the cost
    /// of one API call per evaluation).
    pub fn bypass_cache(mut self) -> Self {
        self.bypass_cache = true;
        self
    }
}

pub use crate::bindings::portcullis::policy::kubernetes::{
    AccessReview, AccessReviewStatus, ResourceAttributes,
};

/// The cluster-scoped object `name` of type `K` (a `Namespace`, a
/// `ClusterRole`, ...).
pub fn get<K: Resource + DeserializeOwned>(name: &str) -> Result<K, Error> {
    decode(&get_json(&GetParams {
        api_version: K::API_VERSION.to_owned(),
        kind: K::KIND.to_owned(),
        name: name.to_owned(),
        ..GetParams::default()
    })?)
}

/// The object `name` of type `K` in `namespace`.
pub fn get_namespaced<K: Resource + DeserializeOwned>(
    namespace: &str,
    name: &str,
) -> Result<K, Error> {
    decode(&get_json(&GetParams {
        api_version: K::API_VERSION.to_owned(),
        kind: K::KIND.to_owned(),
        name: name.to_owned(),
        namespace: Some(namespace.to_owned()),
        ..GetParams::default()
    })?)
}

/// The object of type `K` that `params` name (see [`GetParams::of`]):
/// for masks, or to bypass the cache.
///
/// ```no_run
/// use portcullis_sdk::cluster::{self, GetParams};
/// use portcullis_sdk::k8s_openapi::api::core::v1::Namespace;
///
/// let fresh: Namespace = cluster::get_with(&GetParams::of::<Namespace>("team-a").bypass_cache())?;
/// # Ok::<(), cluster::Error>(())
/// ```
pub fn get_with<K: Resource + DeserializeOwned>(params: &GetParams) -> Result<K, Error> {
    decode(&get_json(params)?)
}

/// The objects of type `K` that `params` select.
pub fn list<K: Resource + DeserializeOwned>(params: &ListParams) -> Result<Vec<K>, Error> {
    decode(&list_json(K::API_VERSION, K::KIND, params)?)
}

fn decode<T: DeserializeOwned>(json: &str) -> Result<T, Error> {
    serde_json::from_str(json).map_err(|e| Error::Decode(e.to_string()))
}

/// One object as JSON text, for kinds without a Rust type (custom
/// resources) or with masks.
pub fn get_json(params: &GetParams) -> Result<String, Error> {
    backend::get(params)
}

/// The JSON text of an array of the objects of `api_version`/`kind` that
/// `params` select.
pub fn list_json(api_version: &str, kind: &str, params: &ListParams) -> Result<String, Error> {
    backend::list(api_version, kind, params)
}

/// Whether `review.user` may do what `review.resource` says
/// (a SubjectAccessReview; needs `hostCapabilities: [kubernetes/can_i]`).
pub fn can_i(review: &AccessReview) -> Result<AccessReviewStatus, Error> {
    backend::can_i(review)
}

#[cfg(target_arch = "wasm32")]
mod backend {
    use super::{AccessReview, AccessReviewStatus, Error, GetParams, ListParams};
    use crate::bindings::portcullis::policy::kubernetes as wit;

    impl From<wit::Error> for Error {
        fn from(error: wit::Error) -> Self {
            match error {
                wit::Error::NotGranted(m) => Error::NotGranted(m),
                wit::Error::NotFound(m) => Error::NotFound(m),
                wit::Error::Unavailable(m) => Error::Unavailable(m),
                wit::Error::Invalid(m) => Error::Invalid(m),
                wit::Error::Forbidden(m) => Error::Forbidden(m),
            }
        }
    }

    pub(super) fn get(params: &GetParams) -> Result<String, Error> {
        Ok(wit::get(&wit::GetRequest {
            api_version: params.api_version.clone(),
            kind: params.kind.clone(),
            name: params.name.clone(),
            namespace: params.namespace.clone(),
            field_masks: params.field_masks.clone(),
            bypass_cache: params.bypass_cache,
        })?)
    }

    pub(super) fn list(
        api_version: &str,
        kind: &str,
        params: &ListParams,
    ) -> Result<String, Error> {
        Ok(wit::list(&wit::ListRequest {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
            namespace: params.namespace.clone(),
            label_selector: params.label_selector.clone(),
            field_selector: params.field_selector.clone(),
            field_masks: params.field_masks.clone(),
        })?)
    }

    pub(super) fn can_i(review: &AccessReview) -> Result<AccessReviewStatus, Error> {
        Ok(wit::can_i(review)?)
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod backend {
    use super::{AccessReview, AccessReviewStatus, Error, GetParams, ListParams};
    use crate::testing::FakeCluster;

    pub(super) fn get(params: &GetParams) -> Result<String, Error> {
        FakeCluster::with_current(|cluster| cluster.get(params))
    }

    pub(super) fn list(
        api_version: &str,
        kind: &str,
        params: &ListParams,
    ) -> Result<String, Error> {
        FakeCluster::with_current(|cluster| cluster.list(api_version, kind, params))
    }

    pub(super) fn can_i(review: &AccessReview) -> Result<AccessReviewStatus, Error> {
        FakeCluster::with_current(|cluster| cluster.can_i(review))
    }
}
