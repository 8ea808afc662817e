//! A policy's code from its file to something every evaluation can
//! instantiate, the same for every kind: read once, recognised from the
//! bytes, compiled once per digest (or loaded from the compiled cache, whose
//! entry says the kind), pre-linked once; and the facts every prepared
//! policy has.

use std::any::Any;
use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Kind, Runtime, Runtimes};
use crate::cache::{CacheMiss, Compiled, CompiledCache};
use crate::digest::Digest;
use crate::store::Linkers;

/// How a policy's code got compiled, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompileOrigin {
    /// Compiled in this process.
    Compiled,
    /// Loaded from the compiled cache.
    Cache,
}

/// What every prepared policy is, whatever its kind.
#[derive(Debug, Clone)]
pub struct CodeFacts {
    /// The digest of its file: its identity.
    pub digest: Digest,
    /// The file it was first read from.
    pub path: PathBuf,
    /// The file's size in bytes.
    pub size: usize,
    /// Whether it was compiled here or loaded from the cache.
    pub origin: CompileOrigin,
    /// How long compiling (or loading) and pre-linking took.
    pub compile_time: Duration,
}

/// A policy's code, compiled and pre-linked: shared by every policy that
/// uses it and every evaluation. Cheap to clone.
#[derive(Clone)]
pub struct PolicyCode(Arc<Prepared>);

struct Prepared {
    facts: CodeFacts,
    runtime: Box<dyn Runtime>,
}

impl fmt::Debug for PolicyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyCode")
            .field("kind", &self.kind())
            .field("facts", &self.0.facts)
            .finish_non_exhaustive()
    }
}

impl PolicyCode {
    /// Its digest, file, size, origin and compile time.
    pub fn facts(&self) -> &CodeFacts {
        &self.0.facts
    }

    /// What kind of code it is, as `inspect` and the logs name it
    /// (`component`, `kubewarden-wapc`, `kubewarden-wasi`).
    pub fn kind(&self) -> &'static str {
        self.0.runtime.kind()
    }

    /// The prepared code as its runtime's own type (e.g.
    /// [`PolicyComponent`](super::component::PolicyComponent)), if it is one.
    pub fn downcast_ref<T: Any>(&self) -> Option<&T> {
        (self.0.runtime.as_ref() as &dyn Any).downcast_ref()
    }

    /// Whether `self` and `other` are the very same prepared code (one
    /// `InstancePre`).
    pub fn ptr_eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// What the evaluation calls.
    pub(crate) fn runtime(&self) -> &dyn Runtime {
        self.0.runtime.as_ref()
    }
}

/// Why a file cannot be run as a policy.
#[derive(Debug, thiserror::Error)]
pub enum CodeError {
    /// The file could not be read (the message predates other kinds).
    #[error("cannot read the component: {0}")]
    Read(#[source] std::io::Error),
    /// The file's content changed between hashing it and compiling it.
    #[error("the file changed while it was being loaded")]
    Changed,
    /// Its runtime refused it (not a policy, malformed, cannot be linked);
    /// the runtime's own error.
    #[error(transparent)]
    Refused(Box<dyn std::error::Error + Send + Sync>),
}

/// What prepares code for one engine: its runtimes, and its linkers (WASI,
/// and every runtime's and capability's imports).
#[derive(Clone, Copy)]
pub(crate) struct Compiler<'a> {
    pub(crate) runtimes: &'a Runtimes,
    pub(crate) linkers: &'a Linkers,
    /// The compiled cache, for what a kind compiles once per engine beside
    /// its policies (an interpreter's code).
    pub(crate) cache: Option<&'a CompiledCache>,
}

impl Compiler<'_> {
    /// The wasmtime engine it compiles for.
    pub(crate) fn engine(&self) -> &wasmtime::Engine {
        self.linkers.engine()
    }
}

/// The file a policy's code is read from, when the bytes are needed: a
/// warm start of a component never reads its file (an 18 MB Python policy).
pub(crate) struct PolicyFile<'a> {
    path: &'a Path,
    digest: Digest,
    bytes: Option<&'a [u8]>,
}

impl<'a> PolicyFile<'a> {
    /// The file at `path`, whose digest is `digest`.
    pub(crate) fn new(path: &'a Path, digest: Digest) -> Self {
        Self {
            path,
            digest,
            bytes: None,
        }
    }

    /// The file at `path`, already read into `bytes`.
    pub(crate) fn read_into(path: &'a Path, digest: Digest, bytes: &'a [u8]) -> Self {
        Self {
            path,
            digest,
            bytes: Some(bytes),
        }
    }

    /// Its bytes, which must still have the digest the file was hashed with:
    /// cache entries are keyed by it.
    pub(crate) fn read(&self) -> Result<Cow<'a, [u8]>, CodeError> {
        if let Some(bytes) = self.bytes {
            return Ok(Cow::Borrowed(bytes));
        }
        let bytes = std::fs::read(self.path).map_err(CodeError::Read)?;
        if Digest::of(&bytes) != self.digest {
            return Err(CodeError::Changed);
        }
        Ok(Cow::Owned(bytes))
    }
}

/// Prepares the policy in `file` of `size` bytes: from `cache` when it holds
/// it, otherwise read, recognised, compiled and stored; then pre-linked.
pub(crate) async fn prepare(
    compiler: Compiler<'_>,
    file: PolicyFile<'_>,
    size: usize,
    cache: Option<&CompiledCache>,
) -> Result<PolicyCode, CodeError> {
    let started = Instant::now();
    let digest = file.digest;
    let read;
    let (kind, compiled, origin, file) = match cached(compiler, &digest, cache) {
        Some((kind, compiled)) => (kind, compiled, CompileOrigin::Cache, file),
        None => {
            read = file.read()?;
            let file = PolicyFile::read_into(file.path, digest, &read);
            let kind = compiler.runtimes.recognise(&read);
            let compiled = kind.compile(compiler, &read).await?;
            store(compiler, &digest, cache, kind, &compiled);
            (kind, compiled, CompileOrigin::Compiled, file)
        }
    };
    let runtime = kind.prepare(compiler, compiled, &file)?;
    Ok(PolicyCode(Arc::new(Prepared {
        facts: CodeFacts {
            digest,
            path: file.path.to_owned(),
            size,
            origin,
            compile_time: started.elapsed(),
        },
        runtime,
    })))
}

/// The compiled form of `digest` from `cache` and the kind it is of, if the
/// cache holds a sound one of a kind this host runs; a damaged entry is
/// logged (and will be replaced by the recompiled one).
fn cached<'a>(
    compiler: Compiler<'a>,
    digest: &Digest,
    cache: Option<&CompiledCache>,
) -> Option<(&'a dyn Kind, Compiled)> {
    match cache?.load(compiler.engine(), digest) {
        Ok(entry) => match compiler.runtimes.tagged(&entry.tag) {
            Some(kind) => Some((kind, entry.compiled)),
            None => {
                // Another build's kind: this one compiles its own.
                tracing::debug!(%digest, tag = entry.tag, "compiled cache: unknown kind; recompiling");
                None
            }
        },
        Err(CacheMiss::Absent) => None,
        Err(miss) => {
            tracing::warn!(%digest, "compiled cache: {miss}; recompiling");
            None
        }
    }
}

/// Keeps `compiled` in `cache`; a read-only or full cache directory costs
/// start-up time, not service.
fn store(
    compiler: Compiler<'_>,
    digest: &Digest,
    cache: Option<&CompiledCache>,
    kind: &dyn Kind,
    compiled: &Compiled,
) {
    if let Some(cache) = cache
        && let Err(e) = cache.store(compiler.engine(), digest, kind.cache_tag(), compiled)
    {
        tracing::warn!(%digest, dir = %cache.dir().display(), "compiled cache: cannot store: {e:#}");
    }
}
