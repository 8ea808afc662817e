//! The objects of one resource held in memory: what a reflector keeps up
//! to date from a watch, and what a `--resources` file provides.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde_json::Value;

use super::select::{FieldMasks, FieldSelector, LabelSelector};

/// Objects of one kind, by namespace and name, each stored once (shared
/// with the answers that include it).
#[derive(Debug, Default)]
pub struct Objects {
    by_key: RwLock<BTreeMap<(String, String), Arc<Value>>>,
    /// Fields the store keeps (the grants' masks); empty: everything but
    /// `metadata.managedFields`.
    keep: FieldMasks,
}

/// Namespace (empty for cluster-scoped objects) and name of `object`.
pub fn key_of(object: &Value) -> Option<(String, String)> {
    let metadata = object.get("metadata")?;
    let name = metadata.get("name")?.as_str()?.to_owned();
    let namespace = metadata
        .get("namespace")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    Some((namespace, name))
}

impl Objects {
    /// An empty store that keeps the fields `keep` names.
    pub fn new(keep: FieldMasks) -> Self {
        Self {
            by_key: RwLock::default(),
            keep,
        }
    }

    /// What the store keeps of `object`: never `managedFields` (large,
    /// and no policy's business), and only the masked fields if it has masks.
    pub fn trim(&self, mut object: Value) -> Value {
        if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            metadata.remove("managedFields");
        }
        if self.keep.is_empty() {
            object
        } else {
            self.keep.apply(&object)
        }
    }

    /// Adds or replaces `object`.
    pub fn apply(&self, object: Value) {
        // The key is read before trimming: masks may drop the metadata.
        let Some(key) = key_of(&object) else {
            return;
        };
        let object = Arc::new(self.trim(object));
        self.write().insert(key, object);
    }

    /// Removes `object`.
    pub fn delete(&self, object: &Value) {
        if let Some(key) = key_of(object) {
            self.write().remove(&key);
        }
    }

    /// Replaces everything with `objects` (a watch's initial list).
    pub fn replace(&self, objects: Vec<Value>) {
        let fresh = objects
            .into_iter()
            .filter_map(|object| {
                let key = key_of(&object)?;
                Some((key, Arc::new(self.trim(object))))
            })
            .collect();
        *self.write() = fresh;
    }

    /// The object `name` in `namespace` (empty for cluster-scoped).
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<Value>> {
        self.read()
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// The objects in `namespace` (every one if `None`) that both
    /// selectors select, in namespace and name order.
    pub fn list(
        &self,
        namespace: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> Vec<Arc<Value>> {
        let objects = self.read();
        let selected = |object: &&Arc<Value>| labels.matches(object) && fields.matches(object);
        match namespace {
            Some(namespace) => objects
                .range((namespace.to_owned(), String::new())..)
                .take_while(|((ns, _), _)| ns == namespace)
                .map(|(_, object)| object)
                .filter(selected)
                .cloned()
                .collect(),
            None => objects.values().filter(selected).cloned().collect(),
        }
    }

    /// How many objects it holds.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<(String, String), Arc<Value>>> {
        self.by_key.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<(String, String), Arc<Value>>> {
        self.by_key.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(namespace: &str, name: &str, app: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": name, "namespace": namespace, "labels": {"app": app},
            "managedFields": [{"manager": "kubectl"}]
        }})
    }

    #[test]
    fn lists_by_namespace_and_selectors_and_drops_managed_fields() {
        let objects = Objects::default();
        objects.replace(vec![pod("a", "p1", "web"), pod("b", "p2", "web")]);
        objects.apply(pod("a", "p3", "db"));
        objects.apply(pod("ab", "p4", "web"));
        let names = |list: Vec<Arc<Value>>| -> Vec<String> {
            list.iter()
                .map(|o| o["metadata"]["name"].as_str().unwrap().to_owned())
                .collect()
        };
        let all = LabelSelector::default();
        let any = FieldSelector::default();
        assert_eq!(names(objects.list(Some("a"), &all, &any)), ["p1", "p3"]);
        assert_eq!(
            names(objects.list(None, &all, &any)),
            ["p1", "p3", "p4", "p2"]
        );
        let web = LabelSelector::parse("app=web").unwrap();
        assert_eq!(names(objects.list(None, &web, &any)), ["p1", "p4", "p2"]);
        objects.delete(&pod("a", "p1", "web"));
        assert_eq!(names(objects.list(Some("a"), &all, &any)), ["p3"]);
        let p3 = objects.get("a", "p3").unwrap();
        assert!(p3["metadata"].get("managedFields").is_none());
        assert_eq!(objects.len(), 3);
    }

    #[test]
    fn a_store_with_masks_keeps_only_those_fields() {
        let objects = Objects::new(FieldMasks::new(&["metadata.name"]).unwrap());
        objects.apply(pod("a", "p1", "web"));
        assert_eq!(
            *objects.get("a", "p1").unwrap(),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p1"}})
        );
    }
}
