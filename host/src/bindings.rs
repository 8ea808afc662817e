//! Host-side bindings of the `portcullis:policy` world, generated from `wit/`.
#![allow(missing_docs)] // generated code; the WIT file documents every item.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "policy",
    exports: { default: async },
});

/// The world's fully qualified name, as a policy author would target it.
pub const WORLD: &str = "portcullis:policy/policy@0.1.0";

/// The functions a component must export to implement [`WORLD`].
pub const REQUIRED_EXPORTS: [&str; 4] =
    ["metadata", "validate-settings", "validate", "validate-raw"];
