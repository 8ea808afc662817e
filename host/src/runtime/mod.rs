//! The code behind a policy, one runtime per kind, behind the one
//! evaluation seam ([`evaluate`](crate::evaluation::evaluate)).
//!
//! A policy is either a component of the `portcullis:policy` world (the
//! typed contract, [`component`](crate::component)) or a Kubewarden core
//! module ([`kubewarden`]). The kind is read from the bytes — the wasm
//! header says component or core module, and a core module must carry
//! Kubewarden's metadata — never from the file name. Both are compiled once
//! per digest (and cached), pre-linked once, and instantiated afresh for
//! every evaluation; [`PolicyCode`] is what the environment holds either way.

pub mod call;
pub mod kubewarden;

pub use self::call::{Call, PolicyContext, Returned};
pub(crate) use self::call::{Failure, GuestFault};

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use self::kubewarden::{KubewardenError, KubewardenModule};
use crate::cache::{CacheMiss, Compiled, CompiledCache};
use crate::component::{self, CompileOrigin, ComponentError, PolicyComponent};
use crate::digest::Digest;
use crate::engine::Engine;

/// A policy's code, compiled and pre-linked: shared by every policy that
/// uses it and every evaluation.
#[derive(Debug, Clone)]
pub enum PolicyCode {
    /// A component of the `portcullis:policy` world.
    Component(Arc<PolicyComponent>),
    /// A Kubewarden module (waPC or WASI command).
    Kubewarden(Arc<KubewardenModule>),
}

/// What kind of code a policy is, as `inspect` and the logs name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    /// A `portcullis:policy` component.
    Component,
    /// A Kubewarden waPC module.
    KubewardenWapc,
    /// A Kubewarden WASI command.
    KubewardenWasi,
}

impl PolicyKind {
    /// Its name in logs and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Component => "component",
            Self::KubewardenWapc => "kubewarden-wapc",
            Self::KubewardenWasi => "kubewarden-wasi",
        }
    }
}

/// Why a file cannot be run as a policy.
#[derive(Debug, thiserror::Error)]
pub enum CodeError {
    /// As a component.
    #[error(transparent)]
    Component(#[from] ComponentError),
    /// As a Kubewarden module.
    #[error(transparent)]
    Kubewarden(#[from] KubewardenError),
}

impl PolicyCode {
    /// Prepares the policy in the file at `path`, whose digest and size are
    /// known ([`Digest::of_file`]): from `cache` when it holds it (a
    /// component's file is then not read at all), otherwise read,
    /// recognised, checked, compiled and stored.
    pub fn prepare_file(
        engine: &Engine,
        path: &Path,
        digest: Digest,
        size: usize,
        cache: Option<&CompiledCache>,
    ) -> Result<Self, CodeError> {
        Self::prepare_with(engine, path, size, digest, cache, || {
            Ok(Cow::Owned(read_checked(path, &digest)?))
        })
    }

    /// Prepares the policy in `bytes`, read from `path`: from `cache` when
    /// it holds it, otherwise compiled and stored.
    pub fn prepare(
        engine: &Engine,
        path: &Path,
        bytes: &[u8],
        digest: Digest,
        cache: Option<&CompiledCache>,
    ) -> Result<Self, CodeError> {
        Self::prepare_with(engine, path, bytes.len(), digest, cache, || {
            Ok(Cow::Borrowed(bytes))
        })
    }

    /// Prepares from `cache`, or from the bytes `read` gives.
    fn prepare_with<'a>(
        engine: &Engine,
        path: &Path,
        size: usize,
        digest: Digest,
        cache: Option<&CompiledCache>,
        read: impl FnOnce() -> Result<Cow<'a, [u8]>, CodeError>,
    ) -> Result<Self, CodeError> {
        let started = Instant::now();
        match cached(engine, &digest, cache) {
            Some(Compiled::Component(component)) => {
                Ok(Self::Component(PolicyComponent::from_compiled(
                    engine,
                    path,
                    size,
                    digest,
                    (component, CompileOrigin::Cache),
                    started.elapsed(),
                )?))
            }
            Some(Compiled::Module(module)) => {
                // The metadata lives in the wasm, not in the compiled form.
                let accepted = kubewarden::accept(&read()?)?;
                Ok(Self::Kubewarden(KubewardenModule::link(
                    engine,
                    path,
                    size,
                    digest,
                    (module, CompileOrigin::Cache),
                    accepted,
                    started,
                )?))
            }
            None => Self::compile(engine, path, &read()?, digest, cache, started),
        }
    }

    fn compile(
        engine: &Engine,
        path: &Path,
        bytes: &[u8],
        digest: Digest,
        cache: Option<&CompiledCache>,
        started: Instant,
    ) -> Result<Self, CodeError> {
        let size = bytes.len();
        if !is_core_module(bytes) {
            component::check_header(bytes)?;
            let component = component::compile_and_store(engine, bytes, &digest, cache)?;
            return Ok(Self::Component(PolicyComponent::from_compiled(
                engine,
                path,
                size,
                digest,
                (component, CompileOrigin::Compiled),
                started.elapsed(),
            )?));
        }
        // Refused before compiling: a module without usable metadata.
        let accepted = kubewarden::accept(bytes)?;
        let module = kubewarden::compile(engine, bytes)?;
        if let Some(cache) = cache
            && let Err(e) = cache.store(
                engine.wasmtime(),
                &digest,
                &Compiled::Module(module.clone()),
            )
        {
            tracing::warn!(%digest, dir = %cache.dir().display(), "compiled cache: cannot store: {e:#}");
        }
        Ok(Self::Kubewarden(KubewardenModule::link(
            engine,
            path,
            size,
            digest,
            (module, CompileOrigin::Compiled),
            accepted,
            started,
        )?))
    }

    /// Its digest.
    pub fn digest(&self) -> Digest {
        match self {
            Self::Component(c) => c.digest(),
            Self::Kubewarden(m) => m.digest(),
        }
    }

    /// The file it was first read from.
    pub fn path(&self) -> &Path {
        match self {
            Self::Component(c) => c.path(),
            Self::Kubewarden(m) => m.path(),
        }
    }

    /// Its size in bytes.
    pub fn size(&self) -> usize {
        match self {
            Self::Component(c) => c.size(),
            Self::Kubewarden(m) => m.size(),
        }
    }

    /// Whether it was compiled here or loaded from the cache.
    pub fn origin(&self) -> CompileOrigin {
        match self {
            Self::Component(c) => c.origin(),
            Self::Kubewarden(m) => m.origin(),
        }
    }

    /// How long compiling (or loading) and pre-linking took.
    pub fn compile_time(&self) -> Duration {
        match self {
            Self::Component(c) => c.compile_time(),
            Self::Kubewarden(m) => m.compile_time(),
        }
    }

    /// What kind of code it is.
    pub fn kind(&self) -> PolicyKind {
        match self {
            Self::Component(_) => PolicyKind::Component,
            Self::Kubewarden(m) => match m.metadata().execution_mode {
                kubewarden::metadata::ExecutionMode::Wasi => PolicyKind::KubewardenWasi,
                _ => PolicyKind::KubewardenWapc,
            },
        }
    }

    /// Whether `self` and `other` are the very same prepared code (one
    /// `InstancePre`).
    pub fn ptr_eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Component(a), Self::Component(b)) => Arc::ptr_eq(a, b),
            (Self::Kubewarden(a), Self::Kubewarden(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// Whether `bytes` start like a core wasm module (version 1), not a
/// component (layer 1).
pub fn is_core_module(bytes: &[u8]) -> bool {
    bytes.get(..8) == Some(b"\0asm\x01\0\0\0")
}

/// The file at `path`, which must still have the digest it was hashed
/// with: cache entries are keyed by it.
fn read_checked(path: &Path, digest: &Digest) -> Result<Vec<u8>, ComponentError> {
    let bytes = std::fs::read(path).map_err(ComponentError::Read)?;
    if Digest::of(&bytes) != *digest {
        return Err(ComponentError::Changed);
    }
    Ok(bytes)
}

/// The compiled form of `digest` from `cache`, if it holds a sound one; a
/// damaged entry is logged (and will be replaced by the recompiled one).
fn cached(engine: &Engine, digest: &Digest, cache: Option<&CompiledCache>) -> Option<Compiled> {
    match cache?.load(engine.wasmtime(), digest) {
        Ok(compiled) => Some(compiled),
        Err(CacheMiss::Absent) => None,
        Err(miss) => {
            tracing::warn!(%digest, "compiled cache: {miss}; recompiling");
            None
        }
    }
}
