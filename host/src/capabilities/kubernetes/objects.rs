//! The objects of one resource held in memory: what a reflector keeps up
//! to date from a watch, and what a `--resources` file provides.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use serde_json::Value;

use super::select::{FieldMasks, FieldSelector, LabelSelector};

type Key = (String, String);

/// Objects of one kind, by namespace and name, each stored once (shared
/// with the answers that include it).
#[derive(Debug, Default)]
pub struct Objects {
    store: RwLock<Store>,
    /// Fields the store keeps (the grants' masks); empty: everything but
    /// `metadata.managedFields`.
    keep: FieldMasks,
    /// Per field path a field selector asked for with `=`: each value there
    /// → the objects holding it, built on the first such list and used
    /// while the store is at the generation it was built from. A policy
    /// asking "which Ingresses use this host?" then reads a few objects,
    /// not all of them.
    indexes: Mutex<HashMap<Vec<String>, Generational<Index>>>,
}

#[derive(Debug, Default)]
struct Store {
    by_key: BTreeMap<Key, Arc<Value>>,
    /// Bumped by every change: an index of another generation is stale.
    generation: u64,
}

/// A value (as a field selector compares it: text) → the objects, in key order.
type Index = HashMap<String, Vec<Key>>;

/// Something built from the store at a generation.
type Generational<T> = (u64, Arc<T>);

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
            keep,
            ..Self::default()
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
        let mut store = self.write();
        store.by_key.insert(key, object);
        store.generation += 1;
    }

    /// Removes `object`.
    pub fn delete(&self, object: &Value) {
        if let Some(key) = key_of(object) {
            let mut store = self.write();
            store.by_key.remove(&key);
            store.generation += 1;
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
        let mut store = self.write();
        store.by_key = fresh;
        store.generation += 1;
    }

    /// The object `name` in `namespace` (empty for cluster-scoped).
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<Value>> {
        self.read()
            .by_key
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
        let store = self.read();
        let objects = &store.by_key;
        let selected = |object: &&Arc<Value>| labels.matches(object) && fields.matches(object);
        if let Some((path, value)) = fields.first_equality() {
            let index = self.index(&store, path);
            return index
                .get(value)
                .into_iter()
                .flatten()
                .filter(|(ns, _)| namespace.is_none_or(|namespace| namespace == ns))
                .filter_map(|key| objects.get(key))
                .filter(selected)
                .cloned()
                .collect();
        }
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
        self.read().by_key.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The index of `path` for `store` (read-locked, so its generation
    /// holds), built now if there is none of this generation.
    fn index(&self, store: &Store, path: &[String]) -> Arc<Index> {
        let mut indexes = self.indexes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((generation, index)) = indexes.get(path)
            && *generation == store.generation
        {
            return index.clone();
        }
        let mut index = Index::new();
        let mut values = Vec::new();
        for (key, object) in &store.by_key {
            values.clear();
            super::select::values_at(object, path, &mut values);
            values.sort_unstable();
            values.dedup();
            for value in values.drain(..) {
                index.entry(value).or_default().push(key.clone());
            }
        }
        let index = Arc::new(index);
        indexes.insert(path.to_vec(), (store.generation, index.clone()));
        index
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Store> {
        self.store.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Store> {
        self.store.write().unwrap_or_else(|e| e.into_inner())
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
    fn an_equality_field_selector_is_answered_by_an_index_that_follows_changes() {
        let ingress = |namespace: &str, name: &str, hosts: &[&str]| {
            let rules: Vec<Value> = hosts.iter().map(|h| json!({"host": h})).collect();
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                   "metadata": {"name": name, "namespace": namespace},
                   "spec": {"rules": rules, "replicas": 3}})
        };
        let objects = Objects::default();
        objects.replace(vec![
            ingress("a", "i1", &["shop.example", "api.example"]),
            ingress("b", "i2", &["shop.example"]),
            ingress("b", "i3", &["blog.example"]),
        ]);
        let all = LabelSelector::default();
        let names = |selector: &str, namespace: Option<&str>| -> Vec<String> {
            let fields = FieldSelector::parse(selector).unwrap();
            let listed = objects.list(namespace, &all, &fields);
            // What the index answers is what scanning every object answers.
            let scanned: Vec<Arc<Value>> = objects
                .read()
                .by_key
                .iter()
                .filter(|((ns, _), _)| namespace.is_none_or(|n| n == ns))
                .map(|(_, o)| o)
                .filter(|o| fields.matches(o))
                .cloned()
                .collect();
            assert_eq!(listed, scanned, "{selector}");
            listed
                .iter()
                .map(|o| o["metadata"]["name"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(names("spec.rules.host=shop.example", None), ["i1", "i2"]);
        assert_eq!(names("spec.rules.host=shop.example", Some("b")), ["i2"]);
        assert_eq!(names("spec.rules.host=api.example", None), ["i1"]);
        assert_eq!(names("spec.replicas=3", None), ["i1", "i2", "i3"]);
        assert_eq!(
            names("spec.rules.host=shop.example,metadata.name!=i1", None),
            ["i2"]
        );
        assert!(names("spec.rules.host=none.example", None).is_empty());
        // A change makes the next list rebuild the index.
        objects.apply(ingress("c", "i4", &["shop.example"]));
        objects.delete(&ingress("a", "i1", &[]));
        assert_eq!(names("spec.rules.host=shop.example", None), ["i2", "i4"]);
        assert!(names("spec.rules.host=api.example", None).is_empty());
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
