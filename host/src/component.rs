//! Turning a component file into something every evaluation can instantiate:
//! read once, hash, compile (or load from the cache), check it implements the
//! world, pre-link it into an `InstancePre`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use wasmtime::component::Component;

use crate::bindings::{PolicyPre, REQUIRED_EXPORTS, WORLD};
use crate::cache::{CacheMiss, CompiledCache};
use crate::engine::Engine;
use crate::store::EvaluationState;

/// The sha256 digest of a component's bytes: its identity.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// Lower-case hex, as `sha256sum` prints it.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a file cannot be used as a policy component.
#[derive(Debug, thiserror::Error)]
pub enum ComponentError {
    /// The file could not be read.
    #[error("cannot read the component: {0}")]
    Read(#[source] std::io::Error),
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
        check_header(bytes)?;
        let started = Instant::now();
        let (component, origin) = load_or_compile(engine, bytes, &digest, cache)?;
        check_exports(engine, &component)?;
        let instance_pre = engine
            .linker()
            .instantiate_pre(&component)
            .map_err(|e| ComponentError::Link(format!("{e:#}")))?;
        let pre =
            PolicyPre::new(instance_pre).map_err(|e| ComponentError::Link(format!("{e:#}")))?;
        Ok(Arc::new(Self {
            digest,
            path: path.to_owned(),
            size: bytes.len(),
            origin,
            compile_time: started.elapsed(),
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

    pub(crate) fn pre(&self) -> &PolicyPre<EvaluationState> {
        &self.pre
    }
}

/// Tells a component from a core module from something else, so the error
/// says which instead of a parser message.
fn check_header(bytes: &[u8]) -> Result<(), ComponentError> {
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
    if let Some(cache) = cache {
        match cache.load(engine.wasmtime(), digest) {
            Ok(component) => return Ok((component, CompileOrigin::Cache)),
            Err(CacheMiss::Absent) => {}
            Err(miss) => tracing::warn!(%digest, "compiled cache: {miss}; recompiling"),
        }
    }
    let component = Component::new(engine.wasmtime(), bytes)
        .map_err(|e| ComponentError::Compile(format!("{e:#}")))?;
    if let Some(cache) = cache
        && let Err(e) = cache.store(engine.wasmtime(), digest, &component)
    {
        // A read-only or full cache directory costs start-up time, not service.
        tracing::warn!(%digest, dir = %cache.dir().display(), "compiled cache: cannot store: {e:#}");
    }
    Ok((component, CompileOrigin::Compiled))
}

fn check_exports(engine: &Engine, component: &Component) -> Result<(), ComponentError> {
    let ty = component.component_type();
    let exported: Vec<&str> = ty
        .exports(engine.wasmtime())
        .map(|(name, _)| name)
        .collect();
    let missing: Vec<String> = REQUIRED_EXPORTS
        .iter()
        .filter(|name| !exported.contains(name))
        .map(|name| name.to_string())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ComponentError::MissingExports(missing))
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
