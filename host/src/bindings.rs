//! Host-side bindings of the `portcullis:policy` package, generated from `wit/`.
//!
//! They are generated for `context-aware-policy`, the `policy` world plus the
//! imported `kubernetes` interface: its exports are the same interface, so
//! one pre-linked form serves a component of either world (one that imports
//! nothing but WASI simply never calls the kubernetes functions).
#![allow(missing_docs)] // generated code; the WIT file documents every item.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "context-aware-policy",
    imports: { default: async },
    exports: { default: async },
});

/// The pre-instantiated form of a policy component (of either world).
pub type PolicyPre<T> = ContextAwarePolicyPre<T>;

/// The `kubernetes` interface's types and host trait.
pub use self::portcullis::policy::kubernetes;

// The contract's types live in the exported `admission` interface; the rest
// of the host names them from here.
pub use self::exports::portcullis::policy::admission::{
    AdmissionRequest, GroupVersionKind, GroupVersionResource, Operation, PolicyMetadata, Rule,
    UserInfo, ValidationResponse,
};

/// The version of the `portcullis:policy` package this host was built from.
pub const VERSION: &str = "0.1.1";

/// The world's fully qualified name, as a policy author would target it.
pub const WORLD: &str = "portcullis:policy/policy@0.1.1";

/// The interface a policy exports, fully qualified: what a component must
/// export (at a semver-compatible version) to implement [`WORLD`].
pub const INTERFACE: &str = "portcullis:policy/admission@0.1.1";

/// The Kubernetes interface, without its version: a component importing it
/// (at any version) reads the cluster and needs a grant.
pub const KUBERNETES_UNVERSIONED: &str = "portcullis:policy/kubernetes";

/// The world of policies that read the cluster.
pub const CONTEXT_AWARE_WORLD: &str = "portcullis:policy/context-aware-policy@0.1.1";

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
        assert!(wit.contains(
            "world context-aware-policy {\n    import kubernetes;\n    export admission;\n}"
        ));
        assert!(wit.contains("interface kubernetes {"));
        assert_eq!(
            CONTEXT_AWARE_WORLD,
            format!("portcullis:policy/context-aware-policy@{VERSION}")
        );
        for function in REQUIRED_FUNCTIONS {
            assert!(
                wit.contains(&format!("    {function}: func(")),
                "{function}"
            );
        }
    }
}
