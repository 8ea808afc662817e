//! The Rego runtime: policies written in Rego (Gatekeeper's
//! ConstraintTemplates) evaluated by regorus inside a wasm sandbox, with a
//! fresh instance per evaluation like every other policy.
//!
//! The interpreter is a component of its own, the *guest* (`guest/`, world
//! `portcullis:rego-runtime`), which `host/build.rs` builds for
//! `wasm32-wasip2` and the host embeds ([`GUEST`]): nothing to install
//! beside the binary. A policy's Rego never becomes code; it becomes a
//! *snapshot* of the guest:
//!
//! 1. once per process, the guest is instrumented by wasmtime-wizer and
//!    compiled;
//! 2. once per unique policy ([`RegoSource::digest`]: the guest's digest,
//!    the modules, the rule, the syntax), an instance of it runs `init` —
//!    the Rego parsed, analysed and prepared — and wizer writes its state
//!    out as a new component, which is compiled and kept in the compiled
//!    cache under that digest (a warm start neither runs `init` nor
//!    compiles);
//! 3. every evaluation instantiates that component (its memory mapped
//!    copy-on-write from the snapshot) and calls `evaluate` with the input.

mod bindings;
mod snapshot;

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use wasmtime::component::Component;

use self::bindings::RegoRuntimePre;
use self::snapshot::Instrumented;
use crate::cache::{CacheMiss, Compiled, CompiledCache};
use crate::component::{CompileOrigin, Digest};
use crate::engine::Engine;
use crate::limits::Limits;
use crate::store::{EvaluationState, GuestIo, new_store};

/// The guest component (regorus for `wasm32-wasip2`), built by `host/build.rs`.
pub static GUEST: &[u8] = include_bytes!(env!("PORTCULLIS_REGO_GUEST"));

/// The digest of [`GUEST`]: part of every policy's digest, so a host with
/// another guest never takes an old snapshot from the cache.
pub fn guest_digest() -> Digest {
    static DIGEST: OnceLock<Digest> = OnceLock::new();
    *DIGEST.get_or_init(|| Digest::of(GUEST))
}

/// One Rego file of a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegoModule {
    /// The name errors cite (e.g. `template.yaml: spec.targets[0].rego`).
    pub name: String,
    /// The Rego text.
    pub text: String,
}

/// What a Rego policy is made of: its modules and the rule it evaluates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegoSource {
    /// The modules: first the one whose package holds `rule` (a template's
    /// `rego`), then the modules it imports (a template's `libs`).
    pub modules: Vec<RegoModule>,
    /// The rule evaluated, relative to the first module's package (e.g.
    /// `violation`).
    pub rule: String,
    /// Whether the modules are written in Rego v0 (Gatekeeper's default)
    /// rather than v1.
    pub rego_v0: bool,
}

impl RegoSource {
    /// The policy's identity: what its snapshot and compiled form are
    /// cached under. Covers the guest, the syntax, the rule and every
    /// module's name and text (names too: errors cite them).
    pub fn digest(&self) -> Digest {
        let mut hasher = Sha256::new();
        hasher.update(b"portcullis-rego-snapshot\0");
        hasher.update(guest_digest().hex());
        hasher.update([u8::from(self.rego_v0)]);
        for field in
            std::iter::once(&self.rule).chain(self.modules.iter().flat_map(|m| [&m.name, &m.text]))
        {
            hasher.update((field.len() as u64).to_le_bytes());
            hasher.update(field);
        }
        Digest::of(&hasher.finalize())
    }
}

/// Where in a Rego module something is, 1-based.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegoLocation {
    /// The module's name ([`RegoModule::name`]).
    pub file: String,
    /// Line, from 1.
    pub line: u32,
    /// Column, from 1.
    pub column: u32,
}

/// The interpreter's error about a policy: a syntax error, an unknown rule,
/// an error raised while evaluating.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegoDiagnostic {
    /// What is wrong, one line.
    pub message: String,
    /// Where, when known.
    pub location: Option<RegoLocation>,
    /// The interpreter's full report: location, the line with a caret, message.
    pub report: String,
}

impl From<bindings::Error> for RegoDiagnostic {
    fn from(error: bindings::Error) -> Self {
        Self {
            message: error.message,
            location: error.location.map(|at| RegoLocation {
                file: at.file,
                line: at.line,
                column: at.column,
            }),
            report: error.report,
        }
    }
}

impl fmt::Display for RegoDiagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(at) => write!(f, "{}:{}:{}: {}", at.file, at.line, at.column, self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Why a Rego policy cannot be prepared.
#[derive(Debug, thiserror::Error)]
pub enum RegoError {
    /// The Rego itself is wrong (the interpreter's diagnostic).
    #[error("{0}")]
    Policy(RegoDiagnostic),
    /// Running `init` or taking the snapshot failed (a trap, a limit).
    #[error("cannot pre-initialise the Rego guest: {0}")]
    Snapshot(String),
    /// wasmtime refused to compile the snapshot.
    #[error("cannot compile the Rego guest: {0}")]
    Compile(String),
}

/// Why one evaluation produced no value.
#[derive(Debug, thiserror::Error)]
pub enum RegoEvalError {
    /// The interpreter raised an error (a builtin's, a conflict).
    #[error("{0}")]
    Policy(RegoDiagnostic),
    /// Instantiating or calling the guest failed (a trap, a limit).
    #[error("{0}")]
    Guest(String),
}

/// The Rego runtime of one engine: the instrumented guest, made once on
/// first use and shared by every policy it prepares.
pub struct RegoRuntime {
    engine: Engine,
    instrumented: OnceLock<Arc<Instrumented>>,
}

impl fmt::Debug for RegoRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegoRuntime")
            .field("instrumented", &self.instrumented.get().is_some())
            .finish_non_exhaustive()
    }
}

impl RegoRuntime {
    /// The Rego runtime of `engine`.
    pub fn new(engine: &Engine) -> Self {
        Self {
            engine: engine.clone(),
            instrumented: OnceLock::new(),
        }
    }

    /// Prepares `source`: from `cache` when it holds its snapshot,
    /// otherwise snapshotted, compiled and stored.
    pub async fn prepare(
        &self,
        source: &RegoSource,
        cache: Option<&CompiledCache>,
    ) -> Result<Arc<PreparedRego>, RegoError> {
        let started = Instant::now();
        let digest = source.digest();
        let engine = self.engine.wasmtime();
        let cached = cache.and_then(|cache| match cache.load(engine, &digest) {
            Ok(Compiled::Component(component)) => Some(component),
            Ok(Compiled::Module(_)) | Err(CacheMiss::Absent) => None,
            Err(miss) => {
                tracing::warn!(%digest, "compiled cache: {miss}; snapshotting again");
                None
            }
        });
        let (component, origin, snapshot_bytes) = match cached {
            Some(component) => (component, CompileOrigin::Cache, None),
            None => {
                let snapshot = self.snapshot(source, &digest).await?;
                let component = Component::new(engine, &snapshot)
                    .map_err(|e| RegoError::Compile(format!("{e:#}")))?;
                if let Some(cache) = cache
                    && let Err(e) =
                        cache.store(engine, &digest, &Compiled::Component(component.clone()))
                {
                    tracing::warn!(%digest, dir = %cache.dir().display(), "compiled cache: cannot store: {e:#}");
                }
                (component, CompileOrigin::Compiled, Some(snapshot.len()))
            }
        };
        let pre = self
            .engine
            .linker()
            .instantiate_pre(&component)
            .and_then(RegoRuntimePre::new)
            .map_err(|e| RegoError::Compile(format!("linking the snapshot: {e:#}")))?;
        Ok(Arc::new(PreparedRego {
            digest,
            origin,
            snapshot_bytes,
            prepare_time: started.elapsed(),
            pre,
        }))
    }

    /// The snapshot of `source` (whose digest is `digest`): the same bytes
    /// every time, on every host with this guest.
    async fn snapshot(&self, source: &RegoSource, digest: &Digest) -> Result<Vec<u8>, RegoError> {
        // `init`'s randomness (hash-map keys) is derived from the digest.
        let seed: [u8; 32] = Sha256::digest(digest.hex()).into();
        self.instrumented()?
            .snapshot(source, seed, self.engine.limits().memory_bytes)
            .await
    }

    fn instrumented(&self) -> Result<&Instrumented, RegoError> {
        if let Some(instrumented) = self.instrumented.get() {
            return Ok(instrumented);
        }
        let made = Arc::new(Instrumented::new(&self.engine, GUEST)?);
        // Two first uses at once both instrument; one result is kept.
        Ok(self.instrumented.get_or_init(|| made))
    }
}

/// A Rego policy snapshotted, compiled and pre-linked: every evaluation
/// instantiates it afresh.
pub struct PreparedRego {
    digest: Digest,
    origin: CompileOrigin,
    snapshot_bytes: Option<usize>,
    prepare_time: Duration,
    pre: RegoRuntimePre<EvaluationState>,
}

impl fmt::Debug for PreparedRego {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreparedRego")
            .field("digest", &self.digest)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl PreparedRego {
    /// The policy's digest ([`RegoSource::digest`]).
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// Whether it was snapshotted and compiled here or loaded from the cache.
    pub fn origin(&self) -> CompileOrigin {
        self.origin
    }

    /// The snapshot's size in bytes, when it was taken here.
    pub fn snapshot_bytes(&self) -> Option<usize> {
        self.snapshot_bytes
    }

    /// How long preparing took (snapshot and compile, or the cache load).
    pub fn prepare_time(&self) -> Duration {
        self.prepare_time
    }

    /// The compiled snapshot.
    pub fn component(&self) -> &Component {
        self.pre.instance_pre().component()
    }

    /// Evaluates the policy's rule in a fresh instance under `limits` (the
    /// evaluation's store, limiter and deadline): `input` is the JSON input
    /// document, `data` a JSON object merged into the data document. Returns
    /// the rule's value as JSON, `None` when undefined.
    pub async fn evaluate(
        &self,
        engine: &Engine,
        limits: &Limits,
        input: &str,
        data: Option<&str>,
    ) -> Result<Option<String>, RegoEvalError> {
        let deadline = Instant::now() + limits.timeout;
        let mut store = new_store(engine, limits, deadline, GuestIo::Log);
        let guest = self
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| RegoEvalError::Guest(format!("{e:#}")))?;
        guest
            .portcullis_rego_runtime_evaluator()
            .call_evaluate(&mut store, input, data)
            .await
            .map_err(|e| RegoEvalError::Guest(format!("{e:#}")))?
            .map_err(|e| RegoEvalError::Policy(e.into()))
    }
}

#[cfg(test)]
mod tests;
