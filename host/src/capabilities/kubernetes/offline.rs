//! A cluster made of a file: `--resources FILE` answers context-aware
//! policies from the Kubernetes objects in it (YAML or JSON; one object,
//! several YAML documents, a `List`, or a JSON array), for authors, CI and
//! demos. `SubjectAccessReview`s in the file (with a `spec` and a `status`)
//! answer `can_i` for the same spec.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::authorization::v1::{SubjectAccessReviewSpec, SubjectAccessReviewStatus};
use serde_json::Value;

use super::objects::Objects;
use super::select::{FieldMasks, FieldSelector, LabelSelector};
use super::{Cluster, ClusterFuture, ContextAwareResource, KubeError};

/// A resources file that cannot be used: names the file and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ResourcesError(String);

/// The objects of a resources file, by `apiVersion` and `kind`.
#[derive(Debug, Default)]
pub struct ResourcesFile {
    objects: HashMap<(String, String), Objects>,
    reviews: Vec<(SubjectAccessReviewSpec, SubjectAccessReviewStatus)>,
}

impl ResourcesFile {
    /// Reads the file at `path`.
    pub fn read(path: &Path) -> Result<Self, ResourcesError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ResourcesError(format!(
                "cannot read resources file {}: {e}",
                path.display()
            ))
        })?;
        Self::parse(&text)
            .map_err(|e| ResourcesError(format!("resources file {}: {e}", path.display())))
    }

    /// The objects in `text` (YAML or JSON).
    pub fn parse(text: &str) -> Result<Self, String> {
        let documents: Vec<Value> = match text.trim_start().as_bytes().first() {
            Some(b'{' | b'[') => vec![serde_json::from_str(text).map_err(|e| e.to_string())?],
            _ => serde_saphyr::from_multiple(text).map_err(|e| e.to_string())?,
        };
        let mut file = Self::default();
        for document in documents {
            file.add(document)?;
        }
        Ok(file)
    }

    fn add(&mut self, document: Value) -> Result<(), String> {
        match document {
            Value::Null => Ok(()),
            Value::Array(items) => items.into_iter().try_for_each(|item| self.add(item)),
            Value::Object(ref fields) => {
                let text = |key: &str| fields.get(key).and_then(Value::as_str).map(str::to_owned);
                let (Some(api_version), Some(kind)) = (text("apiVersion"), text("kind")) else {
                    return Err(format!(
                        "an object without apiVersion and kind: {}",
                        abbreviate(&document)
                    ));
                };
                if kind.ends_with("List")
                    && let Some(Value::Array(items)) = fields.get("items")
                {
                    return items.iter().try_for_each(|item| self.add(item.clone()));
                }
                if kind == "SubjectAccessReview" {
                    let spec =
                        serde_json::from_value(fields.get("spec").cloned().unwrap_or_default())
                            .map_err(|e| format!("a SubjectAccessReview's spec: {e}"))?;
                    let status =
                        serde_json::from_value(fields.get("status").cloned().unwrap_or_default())
                            .map_err(|e| format!("a SubjectAccessReview's status: {e}"))?;
                    self.reviews.push((normalized(spec), status));
                    return Ok(());
                }
                if document
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .is_none()
                {
                    return Err(format!("a {kind} without metadata.name"));
                }
                self.objects
                    .entry((api_version, kind))
                    .or_insert_with(|| Objects::new(FieldMasks::default()))
                    .apply(document);
                Ok(())
            }
            other => Err(format!("not a Kubernetes object: {}", abbreviate(&other))),
        }
    }

    /// The kinds it holds objects of, as grants.
    pub fn resources(&self) -> Vec<ContextAwareResource> {
        let mut kinds: Vec<ContextAwareResource> = self
            .objects
            .keys()
            .map(|(api_version, kind)| ContextAwareResource::new(api_version, kind))
            .collect();
        kinds.sort();
        kinds
    }

    /// How many objects it holds.
    pub fn len(&self) -> usize {
        self.objects.values().map(Objects::len).sum::<usize>() + self.reviews.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// It, as the cluster context-aware policies read.
    pub fn into_cluster(self) -> Arc<dyn Cluster> {
        Arc::new(self)
    }
}

/// A review as the API server reads it: an empty attribute or list is an
/// absent one (`group: ""` is the core group either way), the groups a set,
/// so a file matches however a policy spells the same question.
fn normalized(mut spec: SubjectAccessReviewSpec) -> SubjectAccessReviewSpec {
    let absent_if_empty = |field: &mut Option<String>| {
        if field.as_deref() == Some("") {
            *field = None;
        }
    };
    if let Some(attributes) = &mut spec.resource_attributes {
        for field in [
            &mut attributes.group,
            &mut attributes.version,
            &mut attributes.subresource,
            &mut attributes.namespace,
            &mut attributes.name,
        ] {
            absent_if_empty(field);
        }
    }
    if let Some(groups) = &mut spec.groups {
        groups.sort();
        groups.dedup();
    }
    if spec.groups.as_ref().is_some_and(Vec::is_empty) {
        spec.groups = None;
    }
    spec
}

fn abbreviate(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(80) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text,
    }
}

/// The message of a missing object, as the API server words it.
pub(super) fn not_found(kind: &str, namespace: Option<&str>, name: &str) -> KubeError {
    KubeError::NotFound(match namespace {
        Some(namespace) => format!("{kind} `{name}` not found in namespace `{namespace}`"),
        None => format!("{kind} `{name}` not found"),
    })
}

impl Cluster for ResourcesFile {
    fn get<'a>(
        &'a self,
        resource: &'a ContextAwareResource,
        namespace: Option<&'a str>,
        name: &'a str,
        _bypass_cache: bool,
        _deadline: Instant,
    ) -> ClusterFuture<'a, Arc<Value>> {
        let found = self
            .objects
            .get(&(resource.api_version.clone(), resource.kind.clone()))
            .and_then(|objects| {
                // A namespace given for a cluster-scoped kind is ignored, as
                // the API server's client does.
                objects
                    .get(namespace.unwrap_or_default(), name)
                    .or_else(|| objects.get("", name))
            })
            .ok_or_else(|| not_found(&resource.kind, namespace, name));
        Box::pin(async move { found })
    }

    fn list(
        &self,
        resource: &ContextAwareResource,
        namespace: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> Result<Vec<Arc<Value>>, KubeError> {
        Ok(self
            .objects
            .get(&(resource.api_version.clone(), resource.kind.clone()))
            .map(|objects| objects.list(namespace, labels, fields))
            .unwrap_or_default())
    }

    fn can_i<'a>(
        &'a self,
        review: SubjectAccessReviewSpec,
        _bypass_cache: bool,
        _deadline: Instant,
    ) -> ClusterFuture<'a, SubjectAccessReviewStatus> {
        let review = normalized(review);
        let found = self
            .reviews
            .iter()
            .find(|(spec, _)| *spec == review)
            .map(|(_, status)| status.clone())
            .ok_or_else(|| {
                KubeError::Unavailable(format!(
                    "the resources file holds no SubjectAccessReview for {}",
                    serde_json::to_string(&review).unwrap_or_default()
                ))
            });
        Box::pin(async move { found })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: team-a
  labels: {owner: alice}
---
apiVersion: v1
kind: List
items:
  - apiVersion: networking.k8s.io/v1
    kind: Ingress
    metadata: {name: web, namespace: team-a}
    spec: {rules: [{host: web.example}]}
---
apiVersion: authorization.k8s.io/v1
kind: SubjectAccessReview
spec:
  user: alice
  resourceAttributes: {verb: delete, resource: pods}
status:
  allowed: true
"#;

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    #[test]
    fn answers_from_yaml_documents_and_lists() {
        let file = ResourcesFile::parse(FILE).unwrap();
        assert_eq!(file.len(), 3);
        let namespace = ContextAwareResource::new("v1", "Namespace");
        let soon = Instant::now();
        let team = block_on(file.get(&namespace, None, "team-a", false, soon)).unwrap();
        assert_eq!(team["metadata"]["labels"]["owner"], "alice");
        assert_eq!(
            block_on(file.get(&namespace, None, "nope", false, soon)).unwrap_err(),
            KubeError::NotFound("Namespace `nope` not found".into())
        );
        let ingress = ContextAwareResource::new("networking.k8s.io/v1", "Ingress");
        let all = LabelSelector::default();
        let by_host = FieldSelector::parse("spec.rules.host=web.example").unwrap();
        assert_eq!(file.list(&ingress, None, &all, &by_host).unwrap().len(), 1);
        assert!(
            file.list(&ingress, Some("team-b"), &all, &by_host)
                .unwrap()
                .is_empty()
        );
        let review: SubjectAccessReviewSpec = serde_json::from_value(serde_json::json!({
            "user": "alice", "resourceAttributes": {"verb": "delete", "resource": "pods"}
        }))
        .unwrap();
        assert!(block_on(file.can_i(review, false, soon)).unwrap().allowed);
        // The same question spelled with empty attributes and groups (a
        // component's `group: ""`, the core group) is the same review; another
        // user's is not.
        let spelled = |user: &str| -> SubjectAccessReviewSpec {
            serde_json::from_value(serde_json::json!({
                "user": user, "groups": [],
                "resourceAttributes": {"group": "", "version": "", "verb": "delete", "resource": "pods"}
            }))
            .unwrap()
        };
        assert!(
            block_on(file.can_i(spelled("alice"), false, soon))
                .unwrap()
                .allowed
        );
        assert!(block_on(file.can_i(spelled("bob"), false, soon)).is_err());
    }

    #[test]
    fn json_files_and_bad_input() {
        let file = ResourcesFile::parse(
            r#"[{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"a"}}]"#,
        )
        .unwrap();
        assert_eq!(file.len(), 1);
        assert!(
            ResourcesFile::parse("kind: Namespace\n")
                .unwrap_err()
                .starts_with("an object without apiVersion and kind")
        );
        assert_eq!(
            ResourcesFile::parse("apiVersion: v1\nkind: Namespace\n").unwrap_err(),
            "a Namespace without metadata.name"
        );
        assert!(ResourcesFile::parse("{").is_err());
    }
}
