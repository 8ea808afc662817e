//! What a component imports and exports, read from its type (what stock
//! tools show, without instantiating anything), and the check that it
//! exports the policy interface.

use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, ComponentExportIndex};

use super::ComponentError;
use crate::bindings::{INTERFACE, INTERFACE_UNVERSIONED, REQUIRED_FUNCTIONS};

/// What a component imports and exports, read from its type: what stock
/// tools (`wasm-tools component wit`) show, without instantiating anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentInterface {
    /// Names of its imports, in declaration order (e.g. `wasi:cli/stderr@0.2.6`).
    pub imports: Vec<String>,
    /// Its exports, in declaration order.
    pub exports: Vec<ExportedItem>,
}

/// One export of a component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedItem {
    /// Its name, e.g. `portcullis:policy/admission@0.1.0`.
    pub name: String,
    /// `instance`, `function`, `module`, `component`, `type` or `resource`.
    pub kind: &'static str,
    /// For an instance, the names of its functions.
    pub functions: Vec<String>,
}

impl ComponentInterface {
    /// Reads the imports and exports of `component`.
    pub fn of(component: &Component) -> Self {
        let engine = component.engine();
        let ty = component.component_type();
        let imports = ty
            .imports(engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        let exports = ty
            .exports(engine)
            .map(|(name, item)| {
                let functions = match &item.ty {
                    ComponentItem::ComponentInstance(instance) => instance
                        .exports(engine)
                        .filter(|(_, item)| matches!(item.ty, ComponentItem::ComponentFunc(_)))
                        .map(|(name, _)| name.to_owned())
                        .collect(),
                    _ => Vec::new(),
                };
                ExportedItem {
                    name: name.to_owned(),
                    kind: kind(&item.ty),
                    functions,
                }
            })
            .collect();
        Self { imports, exports }
    }

    /// The version of the policy interface the component exports (the
    /// version of `portcullis:policy` it was built against), if it exports one.
    pub fn policy_version(&self) -> Option<&str> {
        self.exports.iter().find_map(|export| {
            export
                .name
                .strip_prefix(INTERFACE_UNVERSIONED)?
                .strip_prefix('@')
        })
    }

    /// The exported policy interface, fully qualified, if any.
    pub fn policy_interface(&self) -> Option<&ExportedItem> {
        self.exports.iter().find(|export| {
            export
                .name
                .starts_with(&format!("{INTERFACE_UNVERSIONED}@"))
        })
    }
}

fn kind(item: &ComponentItem) -> &'static str {
    match item {
        ComponentItem::ComponentFunc(_) | ComponentItem::CoreFunc(_) => "function",
        ComponentItem::Module(_) => "module",
        ComponentItem::Component(_) => "component",
        ComponentItem::ComponentInstance(_) => "instance",
        ComponentItem::Type(_) => "type",
        ComponentItem::Resource(_) => "resource",
    }
}

/// Finds the policy interface (at any semver-compatible version: wasmtime's
/// export lookup accepts `@0.1.7` for `@0.1.0`) and its functions; their types
/// are checked when pre-linking.
pub(super) fn check_exports(component: &Component) -> Result<(), ComponentError> {
    let Some(instance) = component.get_export_index(None, INTERFACE) else {
        let interface = ComponentInterface::of(component);
        return Err(match interface.policy_interface() {
            Some(other) => ComponentError::IncompatibleVersion(other.name.clone()),
            None => ComponentError::MissingExports(vec![INTERFACE.to_owned()]),
        });
    };
    let missing: Vec<String> = REQUIRED_FUNCTIONS
        .iter()
        .filter(|name| !exports_function(component, &instance, name))
        .map(|name| format!("{INTERFACE}#{name}"))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ComponentError::MissingExports(missing))
    }
}

fn exports_function(component: &Component, instance: &ComponentExportIndex, name: &str) -> bool {
    component.get_export_index(Some(instance), name).is_some()
}
