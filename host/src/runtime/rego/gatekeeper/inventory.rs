//! `data.inventory`: the cluster's objects a referential template reads,
//! laid out as Gatekeeper's sync writes them —
//! `cluster[apiVersion][kind][name]` for cluster-scoped objects,
//! `namespace[namespace][apiVersion][kind][name]` for the others — and the
//! Namespaces among them, which a `namespaceSelector` reads.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

/// The objects of an inventory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inventory {
    cluster: Map<String, Value>,
    namespaced: Map<String, Value>,
    namespaces: BTreeMap<String, Value>,
}

impl Inventory {
    /// Adds `object`; a later object at the same place replaces an earlier
    /// one. Refused, as by Gatekeeper, without an `apiVersion` or `kind`.
    pub fn add(&mut self, object: Value) -> Result<(), String> {
        let text = |pointer: &str| {
            object
                .pointer(pointer)
                .and_then(Value::as_str)
                .unwrap_or("")
        };
        let (api_version, kind, name) =
            (text("/apiVersion"), text("/kind"), text("/metadata/name"));
        let version = api_version.rsplit('/').next().unwrap_or("");
        if version.is_empty() {
            return Err(format!("inventory object `{name}` has no version"));
        }
        if kind.is_empty() {
            return Err(format!("inventory object `{name}` has no kind"));
        }
        let (api_version, kind, name) = (api_version.to_owned(), kind.to_owned(), name.to_owned());
        let namespace = text("/metadata/namespace").to_owned();
        if kind == "Namespace" && !api_version.contains('/') {
            self.namespaces.insert(name.clone(), object.clone());
        }
        let root = if namespace.is_empty() {
            &mut self.cluster
        } else {
            entry(&mut self.namespaced, namespace)
        };
        entry(entry(root, api_version), kind).insert(name, object);
        Ok(())
    }

    /// The Namespace object named `name`, if the inventory holds it.
    pub fn namespace(&self, name: &str) -> Option<&Value> {
        self.namespaces.get(name)
    }

    /// The data document a template is given: `{"inventory": {"cluster":
    /// ..., "namespace": ...}}`. As in Gatekeeper, `inventory` is always
    /// there, `cluster` and `namespace` only once an object is.
    pub fn to_data(&self) -> Value {
        let mut inventory = Map::new();
        for (key, objects) in [("cluster", &self.cluster), ("namespace", &self.namespaced)] {
            if !objects.is_empty() {
                inventory.insert(key.into(), Value::Object(objects.clone()));
            }
        }
        json!({ "inventory": inventory })
    }
}

/// The object under `key` in `map`, created empty if absent.
fn entry(map: &mut Map<String, Value>, key: String) -> &mut Map<String, Value> {
    let value = map.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if !value.is_object() {
        *value = Value::Object(Map::new());
    }
    value.as_object_mut().expect("made an object above")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_placed_as_gatekeeper_syncs_them() {
        let mut inventory = Inventory::default();
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": {"env": "prod"}}});
        let ingress = json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "web", "namespace": "shop"}});
        inventory.add(ns.clone()).unwrap();
        inventory.add(ingress.clone()).unwrap();
        assert_eq!(
            inventory.to_data(),
            json!({"inventory": {
                "cluster": {"v1": {"Namespace": {"shop": ns}}},
                "namespace": {"shop": {"networking.k8s.io/v1": {"Ingress": {"web": ingress}}}},
            }})
        );
        assert_eq!(inventory.namespace("shop"), Some(&ns));
        assert_eq!(inventory.namespace("web"), None);
        assert_eq!(Inventory::default().to_data(), json!({"inventory": {}}));
    }

    #[test]
    fn an_object_without_version_or_kind_is_refused() {
        let mut inventory = Inventory::default();
        let error = inventory
            .add(json!({"kind": "Pod", "metadata": {"name": "a"}}))
            .unwrap_err();
        assert_eq!(error, "inventory object `a` has no version");
        let error = inventory
            .add(json!({"apiVersion": "apps/v1", "metadata": {"name": "a"}}))
            .unwrap_err();
        assert_eq!(error, "inventory object `a` has no kind");
    }
}
