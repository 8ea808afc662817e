//! Components of the `portcullis:policy` world, the typed contract: compiled
//! from the component's bytes, checked to export the policy interface
//! (`interface`), pre-linked once into a [`PolicyPre`], and called through
//! the generated bindings in a fresh instance per evaluation.

mod interface;

use std::time::Instant;

use futures::future::BoxFuture;
use wasmtime::Store;
use wasmtime::component::Component;

pub use self::interface::{ComponentInterface, ExportedItem};
use super::{
    Call, CodeError, Compiler, Completed, Failure, Kind, PolicyFile, Returned, Runtime, StoreSetup,
};
use crate::bindings::{INTERFACE, KUBERNETES_UNVERSIONED, PolicyPre, WORLD};
use crate::cache::Compiled;
use crate::capabilities::Grants;
use crate::limits::Limits;
use crate::store::{EvaluationState, Linkers};

/// Why a file cannot be used as a policy component.
#[derive(Debug, thiserror::Error)]
pub enum ComponentError {
    /// The bytes are not WebAssembly at all.
    #[error("not a WebAssembly file (it does not start with the `\\0asm` magic bytes)")]
    NotWasm,
    /// wasmtime refused to compile it (malformed, or uses unsupported features).
    #[error("cannot compile the component: {0}")]
    Compile(String),
    /// It is a component, but not a policy.
    #[error("does not implement `{WORLD}`: missing export{} {}", plural(.0.len()), quoted(.0))]
    MissingExports(Vec<String>),
    /// It exports a version of the policy interface this host cannot call.
    #[error(
        "exports `{0}`, which is not semver-compatible with `{INTERFACE}`: \
         rebuild it against a `{WORLD}`-compatible SDK, or run it on a host of its version"
    )]
    IncompatibleVersion(String),
    /// It imports something the host does not provide, or its exports have the
    /// wrong types.
    #[error("cannot be linked against `{WORLD}`: {0}")]
    Link(String),
}

impl From<ComponentError> for CodeError {
    fn from(error: ComponentError) -> Self {
        CodeError::Refused(Box::new(error))
    }
}

/// The kind: components of the `portcullis:policy` world.
pub(crate) struct ComponentKind;

impl Kind for ComponentKind {
    fn cache_tag(&self) -> &str {
        // Component entries were the cache's only ones before kinds had tags.
        ""
    }

    fn compile<'a>(
        &'a self,
        compiler: Compiler<'a>,
        source: &'a [u8],
    ) -> BoxFuture<'a, Result<Compiled, CodeError>> {
        Box::pin(async move { Ok(Compiled::Component(compile(compiler.engine(), source)?)) })
    }

    fn prepare(
        &self,
        compiler: Compiler<'_>,
        compiled: Compiled,
        _file: &PolicyFile<'_>,
    ) -> Result<Box<dyn Runtime>, CodeError> {
        let Compiled::Component(component) = compiled else {
            return Err(ComponentError::Compile(
                "the compiled cache's entry for it holds a core module".into(),
            )
            .into());
        };
        Ok(Box::new(PolicyComponent::link(
            compiler.linkers,
            &component,
        )?))
    }
}

/// Checks that `bytes` are wasm, then compiles them as a component.
pub fn compile(engine: &wasmtime::Engine, bytes: &[u8]) -> Result<Component, ComponentError> {
    if !bytes
        .get(..8)
        .is_some_and(|header| header.starts_with(b"\0asm"))
    {
        return Err(ComponentError::NotWasm);
    }
    Component::new(engine, bytes).map_err(|e| ComponentError::Compile(format!("{e:#}")))
}

/// A component checked to implement the world and pre-linked once, shared
/// by every policy that uses it and by every concurrent evaluation.
pub struct PolicyComponent {
    pre: PolicyPre<EvaluationState>,
}

impl PolicyComponent {
    /// Checks that `component` implements the world and pre-links it
    /// against `linkers` (WASI and the capabilities' imports).
    fn link(linkers: &Linkers, component: &Component) -> Result<Self, ComponentError> {
        interface::check_exports(component)?;
        let instance_pre = linkers
            .components
            .instantiate_pre(component)
            .map_err(|e| ComponentError::Link(format!("{e:#}")))?;
        let pre =
            PolicyPre::new(instance_pre).map_err(|e| ComponentError::Link(format!("{e:#}")))?;
        Ok(Self { pre })
    }

    /// The compiled component.
    pub fn component(&self) -> &Component {
        self.pre.instance_pre().component()
    }
}

impl Runtime for PolicyComponent {
    fn kind(&self) -> &'static str {
        "component"
    }

    fn setup(&self, _call: Call<'_>, _limits: &Limits) -> StoreSetup {
        StoreSetup::plain()
    }

    fn run<'a>(
        &'a self,
        store: &'a mut Store<EvaluationState>,
        call: Call<'a>,
        started: Instant,
    ) -> BoxFuture<'a, Result<Completed, Failure>> {
        Box::pin(self.call(store, call, started))
    }

    /// A component that imports the Kubernetes capability needs a grant;
    /// one granted resources it cannot read (it does not import the
    /// capability) is worth a warning.
    fn check_grants(&self, policy_id: &str, grants: &Grants) -> Result<(), String> {
        let interface = ComponentInterface::of(self.component());
        let import = interface
            .imports
            .iter()
            .find(|name| name.starts_with(KUBERNETES_UNVERSIONED));
        match import {
            Some(import) if !grants.reads_kubernetes() => Err(import.clone()),
            None if !grants.context_aware_resources.is_empty() => {
                tracing::warn!(
                    policy = policy_id,
                    "policy is granted contextAwareResources but does not import \
                     portcullis:policy/kubernetes: it cannot read them"
                );
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

impl PolicyComponent {
    /// One call of the `admission` interface in a fresh instance.
    async fn call(
        &self,
        store: &mut Store<EvaluationState>,
        call: Call<'_>,
        started: Instant,
    ) -> Result<Completed, Failure> {
        let policy = self
            .pre
            .instantiate_async(&mut *store)
            .await
            .map_err(Failure::Instantiate)?;
        let instantiation = started.elapsed();
        let policy = policy.portcullis_policy_admission();
        let returned = match call {
            Call::Metadata => policy
                .call_metadata(&mut *store)
                .await
                .map(Returned::Metadata),
            Call::ValidateSettings { settings } => policy
                .call_validate_settings(&mut *store, settings)
                .await
                .map(Returned::Settings),
            Call::Validate { request, settings } => policy
                .call_validate(&mut *store, request, settings)
                .await
                .map(Returned::Verdict),
            Call::ValidateRaw { document, settings } => policy
                .call_validate_raw(&mut *store, document, settings)
                .await
                .map(Returned::Verdict),
        }
        .map_err(Failure::Call)?;
        Ok(Completed {
            returned,
            instantiation,
        })
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|name| format!("`{name}`"))
        .collect::<Vec<_>>()
        .join(", ")
}
