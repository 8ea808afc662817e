//! Host-side bindings of the `portcullis:policy` world, generated from `wit/`.
#![allow(missing_docs)] // generated code; the WIT file documents every item.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "policy",
    exports: { default: async },
});

// The contract's types live in the exported `admission` interface; the rest
// of the host names them from here.
pub use exports::portcullis::policy::admission::{
    AdmissionRequest, GroupVersionKind, GroupVersionResource, Operation, PolicyMetadata, Rule,
    UserInfo, ValidationResponse,
};

/// The version of the `portcullis:policy` package this host was built from.
pub const VERSION: &str = "0.1.0";

/// The world's fully qualified name, as a policy author would target it.
pub const WORLD: &str = "portcullis:policy/policy@0.1.0";

/// The interface a policy exports, fully qualified: what a component must
/// export (at a semver-compatible version) to implement [`WORLD`].
pub const INTERFACE: &str = "portcullis:policy/admission@0.1.0";

/// [`INTERFACE`] without its version: every export whose name starts with
/// this (then `@VERSION`) is some version of the policy interface.
pub const INTERFACE_UNVERSIONED: &str = "portcullis:policy/admission";

/// The functions [`INTERFACE`] must contain.
pub const REQUIRED_FUNCTIONS: [&str; 4] =
    ["metadata", "validate-settings", "validate", "validate-raw"];

#[cfg(test)]
mod tests {
    use super::*;

    /// The constants are written out (so they are usable in `const`
    /// contexts and error messages); this keeps them equal to the WIT source.
    #[test]
    fn the_constants_match_the_wit_source() {
        let wit = include_str!("../../wit/policy.wit");
        assert!(wit.contains(&format!("package portcullis:policy@{VERSION};")));
        assert_eq!(WORLD, format!("portcullis:policy/policy@{VERSION}"));
        assert_eq!(INTERFACE, format!("{INTERFACE_UNVERSIONED}@{VERSION}"));
        assert!(wit.contains("interface admission {"));
        assert!(wit.contains("world policy {\n    export admission;\n}"));
        for function in REQUIRED_FUNCTIONS {
            assert!(
                wit.contains(&format!("    {function}: func(")),
                "{function}"
            );
        }
    }
}
