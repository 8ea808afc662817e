//! Host-side bindings of the guest's world, `portcullis:rego-runtime`
//! (`guest/wit/rego.wit`).
#![allow(missing_docs)] // generated code; the WIT file documents every item.

wasmtime::component::bindgen!({
    path: "src/runtime/rego/guest/wit",
    world: "rego-runtime",
    exports: { default: async },
});

pub use self::exports::portcullis::rego_runtime::evaluator::{Error, Module};
