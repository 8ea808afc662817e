//! The code behind a policy: one room per kind of policy, every room behind
//! the same two interfaces, so nothing above this module knows which kind it
//! holds.
//!
//! A kind is a folder here: [`component`] (components of the
//! `portcullis:policy` world, the typed contract) and [`kubewarden`]
//! (Kubewarden's core modules, waPC guests or WASI commands, run unchanged).
//! Each implements `Kind` — how its code is compiled (so cached) and
//! pre-linked, and what its policies import — and `Runtime` for the code
//! it prepares — what it is, how a fresh store is set up for a call, how the
//! call runs. Everything else is shared: the path from a file to a
//! [`PolicyCode`] (read, recognised from the bytes, compiled once per digest
//! or loaded from the compiled cache, pre-linked once) and the facts every
//! prepared policy has ([`CodeFacts`]) are `code`'s; the call and its
//! failures are [`call`]'s; limits, deadline, output capture and the
//! classification of failures are the evaluation's, above.
//!
//! A new kind is a folder implementing both traits, an arm in
//! `Runtimes::recognise` and a line in `Runtimes::new`
//! (docs/architecture.md has the recipe).

pub mod call;
mod code;
pub mod component;
pub mod interpreter;
pub mod kubewarden;
pub mod rego;

use std::any::Any;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use wasmtime::Store;

use crate::cache::Compiled;
use crate::capabilities::Grants;
use crate::limits::Limits;
use crate::store::{EvaluationState, GuestIo, Linkers};

pub use self::call::{Call, PolicyContext, Returned};
pub(crate) use self::call::{Failure, GuestFault};
pub use self::code::{CodeError, CodeFacts, CompileOrigin, PolicyCode};
pub(crate) use self::code::{Compiler, PolicyFile, prepare};

/// A kind of policy: how its code becomes something every evaluation can
/// instantiate. One value per engine ([`Runtimes`]), so a kind may keep
/// what it makes once per engine (an interpreter compiled for it).
pub(crate) trait Kind: Any + Send + Sync {
    /// What the compiled cache's entries of this kind are tagged with, so a
    /// warm start knows the kind without reading the policy's file: a short
    /// lower-case word (`module`), or nothing for components, whose entries
    /// predate tags. A kind whose compiled form depends on more than the
    /// policy's bytes (an embedded interpreter) puts that in its tag, so an
    /// entry made by another build is not taken.
    fn cache_tag(&self) -> &str;

    /// Adds what its policies import beside WASI and the capabilities'
    /// imports to `linkers` (once per engine).
    fn add_to_linkers(&self, linkers: &mut Linkers) -> wasmtime::Result<()> {
        let _ = linkers;
        Ok(())
    }

    /// Compiles the policy whose code is `source` (recognised as this kind):
    /// what the compiled cache keeps. May refuse it before compiling (a
    /// Kubewarden module without usable metadata). A future: a kind may run
    /// wasm to compile (an interpreter snapshotted with the policy loaded).
    fn compile<'a>(
        &'a self,
        compiler: Compiler<'a>,
        source: &'a [u8],
    ) -> BoxFuture<'a, Result<Compiled, CodeError>>;

    /// Pre-links `compiled` (compiled now, or loaded from the cache) into
    /// the code evaluations instantiate. `file` gives the policy's bytes to
    /// a kind that needs them after compiling (a Kubewarden module's
    /// metadata); one that does not never reads the file on a warm start.
    fn prepare(
        &self,
        compiler: Compiler<'_>,
        compiled: Compiled,
        file: &PolicyFile<'_>,
    ) -> Result<Box<dyn Runtime>, CodeError>;
}

/// A policy's code, prepared by its [`Kind`]: what the evaluation calls.
pub(crate) trait Runtime: Any + Send + Sync {
    /// What it is: its kind's name in logs and `inspect` (`component`,
    /// `kubewarden-wapc`, `kubewarden-wasi`).
    fn kind(&self) -> &'static str;

    /// How a fresh store is set up for `call`: its standard streams, and the
    /// runtime's own state of the call, which the evaluation keeps in the
    /// store for the runtime's host functions.
    fn setup(&self, call: Call<'_>, limits: &Limits) -> StoreSetup;

    /// Runs `call` in a fresh instance in `store` (set up as
    /// [`setup`](Self::setup) said, the caller in it); `started` is when the
    /// evaluation began.
    fn run<'a>(
        &'a self,
        store: &'a mut Store<EvaluationState>,
        call: Call<'a>,
        started: Instant,
    ) -> BoxFuture<'a, Result<Completed, Failure>>;

    /// Whether the code lets the background audit evaluate it (Kubewarden's
    /// `backgroundAudit`).
    fn background_audit(&self) -> bool {
        true
    }

    /// An annotation the code carries about itself (Kubewarden's metadata:
    /// `io.kubewarden.policy.severity`, …).
    fn annotation(&self, key: &str) -> Option<&str> {
        let _ = key;
        None
    }

    /// Checks at load that `grants` allow what the code imports by name (a
    /// component's `portcullis:policy/kubernetes`; host calls are gated per
    /// call instead): `Err` is the import they do not allow.
    fn check_grants(&self, policy_id: &str, grants: &Grants) -> Result<(), String> {
        let _ = (policy_id, grants);
        Ok(())
    }
}

/// How a fresh store is set up for one call ([`Runtime::setup`]).
pub(crate) struct StoreSetup {
    /// The policy's standard streams and arguments.
    pub(crate) io: GuestIo,
    /// The runtime's state of the call, if it keeps one.
    pub(crate) state: Option<Box<dyn Any + Send>>,
}

impl StoreSetup {
    /// No arguments, no stdin, output captured for the log, no state.
    pub(crate) fn plain() -> Self {
        Self {
            io: GuestIo::Log,
            state: None,
        }
    }
}

/// A call that returned ([`Runtime::run`]).
pub(crate) struct Completed {
    /// What the policy returned.
    pub(crate) returned: Returned,
    /// From the start of the evaluation until the instance was ready.
    pub(crate) instantiation: Duration,
}

/// One engine's runtimes: one of each kind of policy this host runs.
pub(crate) struct Runtimes {
    kinds: Vec<Box<dyn Kind>>,
}

impl Runtimes {
    /// Every kind of policy this host runs.
    pub(crate) fn new() -> Self {
        Self {
            kinds: vec![
                Box::new(component::ComponentKind),
                Box::new(kubewarden::KubewardenKind),
                Box::new(rego::RegoKind::new()),
            ],
        }
    }

    /// Adds every kind's imports to `linkers`: the one call the engine makes.
    pub(crate) fn add_to_linkers(&self, linkers: &mut Linkers) -> wasmtime::Result<()> {
        self.kinds
            .iter()
            .try_for_each(|kind| kind.add_to_linkers(linkers))
    }

    /// The kind of the policy whose code is `bytes`, read from the bytes
    /// alone, never from the file name.
    pub(crate) fn recognise(&self, bytes: &[u8]) -> &dyn Kind {
        match bytes {
            // A core module: Kubewarden's, which refuses one without its
            // metadata, naming what is missing.
            _ if is_core_module(bytes) => self.kind::<kubewarden::KubewardenKind>(),
            // A Gatekeeper ConstraintTemplate (YAML or JSON text).
            _ if rego::is_constraint_template(bytes) => self.kind::<rego::RegoKind>(),
            // A component, or not wasm at all: the component runtime says which.
            _ => self.kind::<component::ComponentKind>(),
        }
    }

    /// The kind whose compiled cache entries carry `tag`.
    fn tagged(&self, tag: &str) -> Option<&dyn Kind> {
        self.kinds
            .iter()
            .map(Box::as_ref)
            .find(|kind| kind.cache_tag() == tag)
    }

    fn kind<K: Kind>(&self) -> &dyn Kind {
        self.kinds
            .iter()
            .map(Box::as_ref)
            .find(|kind| (*kind as &dyn Any).is::<K>())
            .expect("every kind is one of Runtimes::new")
    }
}

/// Whether `bytes` start like a core wasm module (version 1), not a
/// component (layer 1).
pub fn is_core_module(bytes: &[u8]) -> bool {
    bytes.get(..8) == Some(b"\0asm\x01\0\0\0")
}
