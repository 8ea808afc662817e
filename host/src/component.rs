//! Turning a component file into something every evaluation can instantiate:
//! read once, hash, compile (or load from the cache), check it implements the
//! world, pre-link it into an `InstancePre`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, ComponentExportIndex};

use crate::bindings::{INTERFACE, INTERFACE_UNVERSIONED, PolicyPre, REQUIRED_FUNCTIONS, WORLD};
use crate::cache::{CacheMiss, Compiled, CompiledCache};
use crate::digest::Digest;
use crate::engine::Engine;
use crate::store::EvaluationState;

/// Why a file cannot be used as a policy component.
#[derive(Debug, thiserror::Error)]
pub enum ComponentError {
    /// The file could not be read.
    #[error("cannot read the component: {0}")]
    Read(#[source] std::io::Error),
    /// The file's content changed between hashing it and compiling it.
    #[error("the file changed while it was being loaded")]
    Changed,
    /// The bytes are not WebAssembly at all.
    #[error("not a WebAssembly file (it does not start with the `\\0asm` magic bytes)")]
    NotWasm,
    /// A core module was given where a component is needed.
    #[error(
        "a core WebAssembly module, not a component: build the policy for `wasm32-wasip2`, \
         or wrap the module with `wasm-tools component new`"
    )]
    CoreModule,
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

/// How a component got compiled, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompileOrigin {
    /// Compiled from wasm in this process.
    Compiled,
    /// Loaded from the compiled cache.
    Cache,
}

/// A component compiled and pre-linked once, shared by every policy that uses
/// it and by every concurrent evaluation.
pub struct PolicyComponent {
    digest: Digest,
    path: PathBuf,
    size: usize,
    origin: CompileOrigin,
    compile_time: Duration,
    pre: PolicyPre<EvaluationState>,
}

impl fmt::Debug for PolicyComponent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyComponent")
            .field("digest", &self.digest)
            .field("path", &self.path)
            .field("size", &self.size)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl PolicyComponent {
    /// Compiles (or loads from `cache`) the component in `bytes`, read from
    /// `path`, and pre-links it.
    pub fn prepare(
        engine: &Engine,
        path: &Path,
        bytes: &[u8],
        digest: Digest,
        cache: Option<&CompiledCache>,
    ) -> Result<Arc<Self>, ComponentError> {
        let started = Instant::now();
        let (component, origin) = compile(engine, bytes, &digest, cache)?;
        let pre = link(engine, &component)?;
        Ok(Arc::new(Self {
            digest,
            path: path.to_owned(),
            size: bytes.len(),
            origin,
            compile_time: started.elapsed(),
            pre,
        }))
    }

    /// Prepares the component in the file at `path`, whose digest and size
    /// are known ([`Digest::of_file`]): from `cache` when it holds it — the
    /// file is then not read at all, which is most of a warm start for an
    /// 18 MB Python policy —, otherwise read, checked, compiled and stored.
    pub fn prepare_file(
        engine: &Engine,
        path: &Path,
        digest: Digest,
        size: usize,
        cache: Option<&CompiledCache>,
    ) -> Result<Arc<Self>, ComponentError> {
        let started = Instant::now();
        let compiled = match cached(engine, &digest, cache) {
            Some(component) => (component, CompileOrigin::Cache),
            None => {
                let bytes = std::fs::read(path).map_err(ComponentError::Read)?;
                // The cache entry is keyed by `digest`: it must hold these bytes.
                if Digest::of(&bytes) != digest {
                    return Err(ComponentError::Changed);
                }
                check_header(&bytes)?;
                let component = compile_and_store(engine, &bytes, &digest, cache)?;
                (component, CompileOrigin::Compiled)
            }
        };
        Self::from_compiled(engine, path, size, digest, compiled, started.elapsed())
    }

    /// Pre-links an already compiled `component` (from [`compile`]), for
    /// callers that looked at it first (`portcullis inspect`).
    pub fn from_compiled(
        engine: &Engine,
        path: &Path,
        size: usize,
        digest: Digest,
        compiled: (Component, CompileOrigin),
        compile_time: Duration,
    ) -> Result<Arc<Self>, ComponentError> {
        let (component, origin) = compiled;
        let started = Instant::now();
        let pre = link(engine, &component)?;
        Ok(Arc::new(Self {
            digest,
            path: path.to_owned(),
            size,
            origin,
            compile_time: compile_time + started.elapsed(),
            pre,
        }))
    }

    /// The component's digest.
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// The file it was first read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether it was compiled here or loaded from the cache.
    pub fn origin(&self) -> CompileOrigin {
        self.origin
    }

    /// How long compiling (or loading) and pre-linking took.
    pub fn compile_time(&self) -> Duration {
        self.compile_time
    }

    /// The compiled component.
    pub fn component(&self) -> &Component {
        self.pre.instance_pre().component()
    }

    pub(crate) fn pre(&self) -> &PolicyPre<EvaluationState> {
        &self.pre
    }
}

/// Checks the header, then loads the compiled form of `bytes` from `cache`
/// or compiles it (storing the result in `cache`).
pub fn compile(
    engine: &Engine,
    bytes: &[u8],
    digest: &Digest,
    cache: Option<&CompiledCache>,
) -> Result<(Component, CompileOrigin), ComponentError> {
    check_header(bytes)?;
    load_or_compile(engine, bytes, digest, cache)
}

/// Checks that `component` implements the world and pre-links it against the
/// engine's linker (standard WASI only).
fn link(
    engine: &Engine,
    component: &Component,
) -> Result<PolicyPre<EvaluationState>, ComponentError> {
    check_exports(engine, component)?;
    let instance_pre = engine
        .linkers()
        .components
        .instantiate_pre(component)
        .map_err(|e| ComponentError::Link(format!("{e:#}")))?;
    PolicyPre::new(instance_pre).map_err(|e| ComponentError::Link(format!("{e:#}")))
}

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
    pub fn of(engine: &Engine, component: &Component) -> Self {
        let engine = engine.wasmtime();
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

/// Tells a component from a core module from something else, so the error
/// says which instead of a parser message.
pub(crate) fn check_header(bytes: &[u8]) -> Result<(), ComponentError> {
    const MAGIC: &[u8] = b"\0asm";
    const CORE_VERSION: [u8; 4] = [1, 0, 0, 0];
    match bytes.get(..8) {
        Some(header) if header.starts_with(MAGIC) && header[4..] == CORE_VERSION => {
            Err(ComponentError::CoreModule)
        }
        Some(header) if header.starts_with(MAGIC) => Ok(()),
        _ => Err(ComponentError::NotWasm),
    }
}

fn load_or_compile(
    engine: &Engine,
    bytes: &[u8],
    digest: &Digest,
    cache: Option<&CompiledCache>,
) -> Result<(Component, CompileOrigin), ComponentError> {
    match cached(engine, digest, cache) {
        Some(component) => Ok((component, CompileOrigin::Cache)),
        None => Ok((
            compile_and_store(engine, bytes, digest, cache)?,
            CompileOrigin::Compiled,
        )),
    }
}

/// The compiled form of `digest` from `cache`, if it holds a sound one; a
/// damaged entry is logged (and will be replaced by the recompiled one).
fn cached(engine: &Engine, digest: &Digest, cache: Option<&CompiledCache>) -> Option<Component> {
    match cache?.load(engine.wasmtime(), digest) {
        Ok(Compiled::Component(component)) => Some(component),
        // The same bytes cannot be both; a foreign entry is replaced.
        Ok(Compiled::Module(_)) => None,
        Err(CacheMiss::Absent) => None,
        Err(miss) => {
            tracing::warn!(%digest, "compiled cache: {miss}; recompiling");
            None
        }
    }
}

/// Compiles `bytes` (checked to be a component: see
/// [`runtime`](crate::runtime)) and stores the result in `cache`.
pub(crate) fn compile_and_store(
    engine: &Engine,
    bytes: &[u8],
    digest: &Digest,
    cache: Option<&CompiledCache>,
) -> Result<Component, ComponentError> {
    let component = Component::new(engine.wasmtime(), bytes)
        .map_err(|e| ComponentError::Compile(format!("{e:#}")))?;
    if let Some(cache) = cache
        && let Err(e) = cache.store(
            engine.wasmtime(),
            digest,
            &Compiled::Component(component.clone()),
        )
    {
        // A read-only or full cache directory costs start-up time, not service.
        tracing::warn!(%digest, dir = %cache.dir().display(), "compiled cache: cannot store: {e:#}");
    }
    Ok(component)
}

/// Finds the policy interface (at any semver-compatible version: wasmtime's
/// export lookup accepts `@0.1.7` for `@0.1.0`) and its functions; their types
/// are checked when pre-linking.
fn check_exports(engine: &Engine, component: &Component) -> Result<(), ComponentError> {
    let Some(instance) = component.get_export_index(None, INTERFACE) else {
        let interface = ComponentInterface::of(engine, component);
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
