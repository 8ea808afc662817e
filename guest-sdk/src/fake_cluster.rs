//! A cluster for unit tests: the objects a test puts in it answer the
//! policy's [`cluster`](crate::cluster) reads when it runs natively through
//! the [test harness](crate::testing::Harness), with the host's semantics
//! (namespaces, label and field selectors, field masks, typed errors).

// On wasm the reads go to the host: the fake only answers native tests.
#![cfg_attr(target_arch = "wasm32", allow(dead_code))]

use std::cell::RefCell;

use k8s_openapi::Resource;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::cluster::{AccessReview, AccessReviewStatus, Error, GetParams, ListParams};

/// Objects a policy under test reads; give it to
/// [`Harness::cluster`](crate::testing::Harness::cluster).
///
/// ```
/// use portcullis_sdk::k8s_openapi::api::core::v1::Namespace;
/// use portcullis_sdk::serde_json::json;
/// use portcullis_sdk::testing::FakeCluster;
///
/// let cluster = FakeCluster::new().with(json!({
///     "apiVersion": "v1", "kind": "Namespace",
///     "metadata": {"name": "team-a", "labels": {"owner": "alice"}}
/// }));
/// let namespace: Namespace = cluster.run(|| portcullis_sdk::cluster::get("team-a")).unwrap();
/// assert_eq!(namespace.metadata.labels.unwrap()["owner"], "alice");
/// ```
#[derive(Debug, Clone, Default)]
pub struct FakeCluster {
    objects: Vec<Value>,
    not_granted: Vec<(String, String)>,
    unavailable: Option<String>,
    reviews: Vec<(AccessReview, AccessReviewStatus)>,
}

thread_local! {
    static CURRENT: RefCell<Option<FakeCluster>> = const { RefCell::new(None) };
}

impl FakeCluster {
    /// An empty cluster: every kind granted, no object.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `object`: a k8s-openapi object, or JSON with `apiVersion`,
    /// `kind` and `metadata.name`.
    ///
    /// # Panics
    ///
    /// When it is not such an object (a bug in the test).
    #[track_caller]
    pub fn with(mut self, object: impl Serialize) -> Self {
        let object = serde_json::to_value(object).expect("a serialisable object");
        for field in ["/apiVersion", "/kind", "/metadata/name"] {
            assert!(
                object.pointer(field).and_then(Value::as_str).is_some(),
                "a FakeCluster object needs {field}: {object}"
            );
        }
        self.objects.push(object);
        self
    }

    /// Reads of `K` answer `not-granted`, as when the operator did not list
    /// it in `contextAwareResources`.
    pub fn not_granted<K: Resource>(mut self) -> Self {
        self.not_granted
            .push((K::API_VERSION.to_owned(), K::KIND.to_owned()));
        self
    }

    /// Every read answers `unavailable` with `message`, as when the API
    /// server is down.
    pub fn unavailable(mut self, message: impl Into<String>) -> Self {
        self.unavailable = Some(message.into());
        self
    }

    /// `can_i(review)` answers `status`.
    pub fn review(mut self, review: AccessReview, status: AccessReviewStatus) -> Self {
        self.reviews.push((review, status));
        self
    }

    /// Runs `f` with this cluster answering its reads.
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> T {
        let previous = CURRENT.with(|current| current.replace(Some(self.clone())));
        // Restored even if `f` panics (a failed assertion inside).
        struct Restore(Option<FakeCluster>);
        impl Drop for Restore {
            fn drop(&mut self) {
                CURRENT.with(|current| *current.borrow_mut() = self.0.take());
            }
        }
        let _restore = Restore(previous);
        f()
    }

    pub(crate) fn with_current<T>(
        f: impl FnOnce(&FakeCluster) -> Result<T, Error>,
    ) -> Result<T, Error> {
        CURRENT.with(|current| match current.borrow().as_ref() {
            Some(cluster) => f(cluster),
            None => Err(Error::Unavailable(
                "no cluster in this test: give the harness one with `Harness::cluster`".into(),
            )),
        })
    }

    fn check(&self, api_version: &str, kind: &str) -> Result<(), Error> {
        if let Some(message) = &self.unavailable {
            return Err(Error::Unavailable(message.clone()));
        }
        if self
            .not_granted
            .iter()
            .any(|(v, k)| v == api_version && k == kind)
        {
            // The host's (Kubewarden's) message.
            return Err(Error::NotGranted(format!(
                "Policy has not been granted access to Kubernetes {api_version}/{kind} \
                 resources. The violation has been reported."
            )));
        }
        Ok(())
    }

    fn of_kind<'a>(
        &'a self,
        api_version: &'a str,
        kind: &'a str,
    ) -> impl Iterator<Item = &'a Value> {
        self.objects.iter().filter(move |o| {
            o["apiVersion"].as_str() == Some(api_version) && o["kind"].as_str() == Some(kind)
        })
    }

    pub(crate) fn get(&self, params: &GetParams) -> Result<String, Error> {
        self.check(&params.api_version, &params.kind)?;
        let namespace = params.namespace.as_deref().unwrap_or_default();
        let found = self.of_kind(&params.api_version, &params.kind).find(|o| {
            o["metadata"]["name"].as_str() == Some(params.name.as_str())
                && o["metadata"]["namespace"].as_str().unwrap_or_default() == namespace
        });
        match found {
            Some(object) => Ok(mask(object, &params.field_masks).to_string()),
            None => Err(Error::NotFound(match &params.namespace {
                Some(ns) => format!(
                    "{} `{}` not found in namespace `{ns}`",
                    params.kind, params.name
                ),
                None => format!("{} `{}` not found", params.kind, params.name),
            })),
        }
    }

    pub(crate) fn list(
        &self,
        api_version: &str,
        kind: &str,
        params: &ListParams,
    ) -> Result<String, Error> {
        self.check(api_version, kind)?;
        let labels = params.label_selector.as_deref().unwrap_or_default();
        let fields = params.field_selector.as_deref().unwrap_or_default();
        let mut selected = Vec::new();
        for object in self.of_kind(api_version, kind) {
            let in_namespace = params
                .namespace
                .as_deref()
                .is_none_or(|ns| object["metadata"]["namespace"].as_str() == Some(ns));
            if in_namespace && labels_match(object, labels)? && fields_match(object, fields)? {
                selected.push(mask(object, &params.field_masks));
            }
        }
        Ok(Value::Array(selected).to_string())
    }

    pub(crate) fn can_i(&self, review: &AccessReview) -> Result<AccessReviewStatus, Error> {
        if let Some(message) = &self.unavailable {
            return Err(Error::Unavailable(message.clone()));
        }
        let same = |a: &AccessReview| {
            a.user == review.user
                && a.groups == review.groups
                && format!("{:?}", a.resource) == format!("{:?}", review.resource)
        };
        self.reviews
            .iter()
            .find(|(r, _)| same(r))
            .map(|(_, status)| status.clone())
            .ok_or_else(|| {
                Error::Unavailable(format!("no review in the FakeCluster for {review:?}"))
            })
    }
}

/// Label selectors with equality terms: `k=v`, `k==v`, `k!=v`, `k`, `!k`.
fn labels_match(object: &Value, selector: &str) -> Result<bool, Error> {
    let labels = &object["metadata"]["labels"];
    for term in selector.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let label = |key: &str| labels[key.trim()].as_str();
        let holds = if let Some((key, value)) = term.split_once("!=") {
            label(key) != Some(value.trim())
        } else if let Some((key, value)) = term.split_once('=') {
            label(key) == Some(value.trim_start_matches('=').trim())
        } else if let Some(key) = term.strip_prefix('!') {
            label(key).is_none()
        } else if term.contains(' ') {
            return Err(Error::Invalid(format!(
                "the FakeCluster reads equality label selectors only, not `{term}`"
            )));
        } else {
            label(term).is_some()
        };
        if !holds {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Field selectors: `path=value`, `path!=value`; through lists, any element.
fn fields_match(object: &Value, selector: &str) -> Result<bool, Error> {
    for term in selector.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let (path, equal, value) = if let Some((p, v)) = term.split_once("!=") {
            (p, false, v)
        } else if let Some((p, v)) = term.split_once('=') {
            (p, true, v.trim_start_matches('='))
        } else {
            return Err(Error::Invalid(format!(
                "invalid field selector `{selector}`: `{term}` is not `path=value` or `path!=value`"
            )));
        };
        let path: Vec<&str> = path.trim().split('.').collect();
        if any_equals(object, &path, value.trim()) != equal {
            return Ok(false);
        }
    }
    Ok(true)
}

fn any_equals(value: &Value, path: &[&str], expected: &str) -> bool {
    match (value, path.split_first()) {
        (Value::Array(items), _) => items.iter().any(|i| any_equals(i, path, expected)),
        (Value::String(text), None) => text == expected,
        (Value::Object(_), None) => false,
        // As the host: compared as text (`spec.replicas=3`), null as empty.
        (Value::Null, None) => expected.is_empty(),
        (Value::Bool(flag), None) => flag.to_string() == expected,
        (Value::Number(number), None) => number.to_string() == expected,
        (_, Some((key, rest))) => value
            .get(*key)
            .is_some_and(|v| any_equals(v, rest, expected)),
    }
}

/// `object` with only the `masks` paths (and `apiVersion`, `kind`).
fn mask(object: &Value, masks: &[String]) -> Value {
    if masks.is_empty() {
        return object.clone();
    }
    let paths: Vec<Vec<&str>> = masks.iter().map(|m| m.split('.').collect()).collect();
    let mut kept = keep(object, &paths);
    if let Value::Object(kept) = &mut kept {
        for key in ["apiVersion", "kind"] {
            if let Some(value) = object.get(key) {
                kept.insert(key.to_owned(), value.clone());
            }
        }
    }
    kept
}

fn keep(value: &Value, paths: &[Vec<&str>]) -> Value {
    if paths.iter().any(|p| p.is_empty()) {
        return value.clone();
    }
    match value {
        Value::Array(items) => Value::Array(items.iter().map(|i| keep(i, paths)).collect()),
        Value::Object(fields) => {
            let mut kept = Map::new();
            for (key, inner) in fields {
                let deeper: Vec<Vec<&str>> = paths
                    .iter()
                    .filter(|p| p[0] == key)
                    .map(|p| p[1..].to_vec())
                    .collect();
                if !deeper.is_empty() {
                    kept.insert(key.clone(), keep(inner, &deeper));
                }
            }
            Value::Object(kept)
        }
        other => other.clone(),
    }
}
