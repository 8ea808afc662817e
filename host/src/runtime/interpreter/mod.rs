//! Interpreter snapshots: how policies in an interpreted language (Rego,
//! and CEL next) run in the sandbox, each in a fresh instance per
//! evaluation, with the interpreter compiled once and each policy costing
//! only the memory its parsing wrote.
//!
//! An interpreter is a *guest*: a `wasm32-wasip1` core module the host
//! embeds (built by `host/build.rs`), speaking a small ABI of its own
//! (`portcullis-interpreter-guest`: `portcullis_alloc`, `portcullis_init`,
//! `portcullis_evaluate`, requests and replies as bytes in its memory).
//!
//! 1. **Once per process** (per [`Interpreter`]): the guest is [split]
//!    into its *code* — the same module with its memory imported instead
//!    of defined and its data segments taken out — and its *initial
//!    memory*. The code is compiled once (seconds for regorus) and kept in
//!    the compiled cache, so a warm start only loads it.
//! 2. **Once per policy** ([`Interpreter::prepare`]): an instance starts
//!    from the initial memory, `init` parses and prepares the policy
//!    ([`snapshot`]: deterministic randomness and clocks), and the memory
//!    it leaves becomes a *data module* ([`image`]): a module that only
//!    defines and exports a memory, its non-zero 4 KiB pages as data
//!    segments (the dead stack left out). Compiling it takes milliseconds;
//!    it is cached like every compiled policy, under a key made of the
//!    guest's digest and the policy's.
//! 3. **Per evaluation** ([`Snapshot::run`]): the data module is
//!    instantiated — wasmtime maps its memory copy-on-write from the image
//!    it built once (`memory_init_cow`: the segments are static and
//!    page-aligned), in a slot of the pooling allocator — then the code,
//!    linked to that memory; `evaluate` runs; the store drops both.
//!
//! What a policy adds is its image (held by its compiled data module and,
//! once, by the image wasmtime maps), not a copy of the interpreter's code.
//! The code keeps its globals: `init` must leave them as they start (a
//! Rust guest's only mutable global, `__stack_pointer`, is back at its
//! start when `init` returns), which the snapshot checks.
//!
//! Limits are every policy's: an evaluation runs in the evaluation's store
//! ([`Snapshot::run`]: the same limiter, deadline and WASI context granting
//! nothing), replies are held to the response limit. [`Snapshot::evaluate`]
//! makes such a store of its own for callers outside an evaluation
//! (`portcullis verify`, benches), its failures described in words.

pub mod image;
mod instance;
mod snapshot;
pub mod split;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use tokio::sync::OnceCell;
use wasmtime::{Module, Store};

use self::instance::{Code, Entry};
use self::split::Split;
use crate::cache::{CacheMiss, Compiled, CompiledCache};
use crate::digest::Digest;
use crate::limits::Limits;
use crate::runtime::CompileOrigin;
use crate::runtime::{Failure, GuestFault};
use crate::store::{EvaluationState, GuestIo, new_store_with};

pub use self::instance::Reply;
pub use self::split::SplitError;

/// Mixed into every cache key this module makes: changing how guests are
/// split or snapshots written changes it, so no older entry is taken.
const FORMAT: &str = "portcullis-interpreter-snapshot/1";

/// The tag of the compiled cache's entries this module makes (no policy's
/// kind: they are read back by their own keys only).
const CACHE_TAG: &str = "interpreter";

/// Why an interpreter cannot prepare a policy.
#[derive(Debug, thiserror::Error)]
pub enum InterpreterError {
    /// The guest refused the policy: its error, in the interpreter's format.
    #[error("the interpreter refused the policy")]
    Refused(Vec<u8>),
    /// `init` did not answer: a trap, a limit, a broken reply.
    #[error("`init` failed: {0}")]
    Init(String),
    /// The guest itself is unusable (cannot be split, compiled or linked).
    #[error("the interpreter guest: {0}")]
    Guest(String),
    /// wasmtime refused to compile a snapshot.
    #[error("cannot compile the snapshot: {0}")]
    Compile(String),
}

/// Where an interpreter's instances run: a wasmtime engine (with epoch
/// interruption, ticked by its owner) and the core-module linker holding
/// WASI preview 1 (granting nothing), which the guests' imports come from.
#[derive(Clone)]
pub struct Sandbox {
    /// The engine.
    pub engine: wasmtime::Engine,
    /// The core-module linker.
    pub linker: wasmtime::Linker<EvaluationState>,
}

/// One interpreter guest for one engine: its code compiled on first use
/// and shared by every policy it prepares.
pub struct Interpreter {
    engine: Sandbox,
    wasm: &'static [u8],
    digest: Digest,
    code: OnceCell<Arc<Code>>,
    split: OnceCell<Initial>,
}

/// The guest split, and its initial memory compiled: what snapshots start
/// from (made only when a snapshot is taken, never on a warm start).
struct Initial {
    split: Split,
    memory: Module,
}

impl fmt::Debug for Interpreter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Interpreter")
            .field("digest", &self.digest)
            .field("code", &self.code.initialized())
            .finish_non_exhaustive()
    }
}

impl Interpreter {
    /// The guest `wasm` (a core module speaking the interpreter ABI) in
    /// `engine`. Nothing is compiled until the first policy is prepared.
    pub fn new(engine: &Sandbox, wasm: &'static [u8]) -> Self {
        Self {
            engine: engine.clone(),
            wasm,
            digest: Digest::of(wasm),
            code: OnceCell::new(),
            split: OnceCell::new(),
        }
    }

    /// The guest's digest: part of every key its code and snapshots are
    /// cached under.
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// Prepares the policy whose digest is `policy` (which must cover
    /// everything in `request`) and whose `init` request is `request`:
    /// from `cache` when it holds its snapshot, otherwise snapshotted,
    /// compiled and stored.
    pub async fn prepare(
        &self,
        policy: &Digest,
        request: &[u8],
        cache: Option<&CompiledCache>,
    ) -> Result<Arc<Snapshot>, InterpreterError> {
        let started = Instant::now();
        let code = self.code(cache).await?;
        let key = self.key("snapshot", policy);
        let engine = &self.engine.engine;
        if let Some(Compiled::Module(data)) = load(cache, engine, &key) {
            return Ok(Arc::new(Snapshot {
                engine: self.engine.clone(),
                code,
                data,
                digest: key,
                origin: CompileOrigin::Cache,
                image_bytes: None,
                prepare_time: started.elapsed(),
            }));
        }
        let image = match self.take(&key, request).await? {
            Ok(image) => image,
            Err(refused) => return Err(InterpreterError::Refused(refused)),
        };
        let data = Module::new(engine, image::data_module(&image))
            .map_err(|e| InterpreterError::Compile(format!("{e:#}")))?;
        if let Some(cache) = cache
            && let Err(e) = cache.store(engine, &key, CACHE_TAG, &Compiled::Module(data.clone()))
        {
            tracing::warn!(digest = %key, dir = %cache.dir().display(), "compiled cache: cannot store: {e:#}");
        }
        Ok(Arc::new(Snapshot {
            engine: self.engine.clone(),
            code,
            data,
            digest: key,
            origin: CompileOrigin::Compiled,
            image_bytes: Some(image::image_bytes(&image)),
            prepare_time: started.elapsed(),
        }))
    }

    /// The compiled data module of the policy `policy` after `init` with
    /// `request` (the interpreter's code from `cache` when it holds it):
    /// what a kind of policy hands the compiled cache as its own entry.
    pub async fn snapshot_module(
        &self,
        policy: &Digest,
        request: &[u8],
        cache: Option<&CompiledCache>,
    ) -> Result<Result<Module, Vec<u8>>, InterpreterError> {
        self.code(cache).await?;
        let key = self.key("snapshot", policy);
        match self.take(&key, request).await? {
            Ok(image) => Module::new(&self.engine.engine, image::data_module(&image))
                .map(Ok)
                .map_err(|e| InterpreterError::Compile(format!("{e:#}"))),
            Err(refused) => Ok(Err(refused)),
        }
    }

    /// The snapshot whose compiled data module is `data` (from
    /// [`snapshot_module`](Self::snapshot_module), or the compiled cache),
    /// linked to the interpreter's code (from `cache` when it holds it).
    pub fn snapshot_from(
        &self,
        data: Module,
        cache: Option<&CompiledCache>,
    ) -> Result<Arc<Snapshot>, InterpreterError> {
        let started = Instant::now();
        let code = self.code_now(cache)?;
        Ok(Arc::new(Snapshot {
            engine: self.engine.clone(),
            code,
            digest: Digest::of(&[]),
            data,
            origin: CompileOrigin::Cache,
            image_bytes: None,
            prepare_time: started.elapsed(),
        }))
    }

    /// The data module of the policy `policy` after `init` with `request`
    /// (its wasm), or the guest's refusal: the same bytes every time, on
    /// every host with this guest.
    pub async fn snapshot_wasm(
        &self,
        policy: &Digest,
        request: &[u8],
    ) -> Result<Result<Vec<u8>, Vec<u8>>, InterpreterError> {
        self.code(None).await?;
        let key = self.key("snapshot", policy);
        Ok(self
            .take(&key, request)
            .await?
            .map(|image| image::data_module(&image)))
    }

    /// Runs `init` in a fresh instance and captures its memory; the
    /// randomness is seeded from `key`.
    async fn take(
        &self,
        key: &Digest,
        request: &[u8],
    ) -> Result<snapshot::Taken, InterpreterError> {
        let code = self.code.get().expect("the code is compiled first");
        let initial = self.initial().await?;
        let seed: [u8; 32] = Sha256::digest(key.hex()).into();
        snapshot::take(
            &self.engine,
            code,
            &initial.split,
            &initial.memory,
            request,
            seed,
        )
        .await
    }

    /// The guest split, its initial memory compiled: on first use.
    async fn initial(&self) -> Result<&Initial, InterpreterError> {
        self.split
            .get_or_try_init(|| async {
                let split =
                    split::split(self.wasm).map_err(|e| InterpreterError::Guest(e.to_string()))?;
                let memory = Module::new(&self.engine.engine, image::data_module(&split.initial))
                    .map_err(|e| {
                    InterpreterError::Guest(format!("its initial memory: {e:#}"))
                })?;
                Ok(Initial { split, memory })
            })
            .await
    }

    /// The code, compiled (or loaded from `cache`) and resolved on first use.
    async fn code(&self, cache: Option<&CompiledCache>) -> Result<Arc<Code>, InterpreterError> {
        let code = self
            .code
            .get_or_try_init(|| async { self.compile_code(cache).map(Arc::new) })
            .await?;
        Ok(code.clone())
    }

    /// [`code`](Self::code) for callers that cannot wait (a kind's
    /// `prepare`): compiled here if no one has yet.
    fn code_now(&self, cache: Option<&CompiledCache>) -> Result<Arc<Code>, InterpreterError> {
        if let Some(code) = self.code.get() {
            return Ok(code.clone());
        }
        let code = Arc::new(self.compile_code(cache)?);
        // Another caller may have won the race: theirs is as good.
        let _ = self.code.set(code.clone());
        Ok(self.code.get().cloned().unwrap_or(code))
    }

    /// Compiles the guest's code (or loads it from `cache`) and resolves it.
    fn compile_code(&self, cache: Option<&CompiledCache>) -> Result<Code, InterpreterError> {
        let key = self.key("code", &self.digest);
        let engine = &self.engine.engine;
        let module = match load(cache, engine, &key) {
            Some(Compiled::Module(module)) => module,
            _ => {
                let split =
                    split::split(self.wasm).map_err(|e| InterpreterError::Guest(e.to_string()))?;
                let module = Module::new(engine, &split.code)
                    .map_err(|e| InterpreterError::Guest(format!("compiling its code: {e:#}")))?;
                if let Some(cache) = cache
                    && let Err(e) =
                        cache.store(engine, &key, CACHE_TAG, &Compiled::Module(module.clone()))
                {
                    tracing::warn!(digest = %key, dir = %cache.dir().display(), "compiled cache: cannot store: {e:#}");
                }
                module
            }
        };
        Code::new(&self.engine, module)
            .map_err(|e| InterpreterError::Guest(format!("linking its code: {e}")))
    }

    /// A cache key for `what` of this guest and `digest`.
    fn key(&self, what: &str, digest: &Digest) -> Digest {
        let mut hasher = Sha256::new();
        for part in [FORMAT, what, &self.digest.hex(), &digest.hex()] {
            hasher.update(part);
            hasher.update([0]);
        }
        Digest::of(&hasher.finalize())
    }
}

/// The compiled form of `key` in `cache`, if it holds a sound one.
fn load(
    cache: Option<&CompiledCache>,
    engine: &wasmtime::Engine,
    key: &Digest,
) -> Option<Compiled> {
    match cache?.load(engine, key) {
        Ok(entry) if entry.tag == CACHE_TAG => Some(entry.compiled),
        Ok(_) => None,
        Err(CacheMiss::Absent) => None,
        Err(miss) => {
            tracing::warn!(digest = %key, "compiled cache: {miss}; preparing again");
            None
        }
    }
}

/// A policy prepared by an [`Interpreter`]: its snapshot's data module
/// compiled, and the interpreter's code to link to it.
pub struct Snapshot {
    engine: Sandbox,
    code: Arc<Code>,
    data: Module,
    digest: Digest,
    origin: CompileOrigin,
    image_bytes: Option<usize>,
    prepare_time: Duration,
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("digest", &self.digest)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl Snapshot {
    /// The key its data module is cached under (from the guest's digest
    /// and the policy's).
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// Whether it was snapshotted here or loaded from the cache.
    pub fn origin(&self) -> CompileOrigin {
        self.origin
    }

    /// How many bytes of memory its image holds, when it was taken here.
    pub fn image_bytes(&self) -> Option<usize> {
        self.image_bytes
    }

    /// How long preparing took (snapshot and compile, or the cache load;
    /// and the interpreter's code, for the first policy).
    pub fn prepare_time(&self) -> Duration {
        self.prepare_time
    }

    /// The compiled data module.
    pub fn module(&self) -> &Module {
        &self.data
    }

    /// Evaluates `request` in a fresh instance in `store` (an evaluation's,
    /// from `new_store`): the guest's reply, at most `reply_limit` bytes.
    pub(crate) async fn run(
        &self,
        store: &mut Store<EvaluationState>,
        request: &[u8],
        reply_limit: usize,
    ) -> Result<Reply, Failure> {
        let guest = self
            .code
            .instantiate(store, &self.engine.linker, &self.data)
            .await
            .map_err(Failure::Instantiate)?;
        guest
            .call(store, &self.code, Entry::Evaluate, request, reply_limit)
            .await
    }

    /// Evaluates `request` in a fresh instance under `limits` (a store of
    /// its own: limiter, deadline, output capture); a failure is described
    /// as the evaluation describes it (timeout, out of memory, trap, ...).
    pub async fn evaluate(&self, limits: &Limits, request: &[u8]) -> Result<Reply, String> {
        let deadline = Instant::now() + limits.timeout;
        let mut store = new_store_with(&self.engine.engine, limits, deadline, GuestIo::Log, |_| {});
        let outcome = self.run(&mut store, request, limits.response_bytes).await;
        outcome.map_err(|failure| describe(failure, store.data(), limits))
    }
}

/// What `failure` was, in words, for a store that ended in `state`: a
/// timeout, running out of memory, a reply too large, a trap.
pub(crate) fn describe(failure: Failure, state: &EvaluationState, limits: &Limits) -> String {
    let error = match failure {
        Failure::Instantiate(error) | Failure::Call(error) => error,
        Failure::Policy(message) | Failure::Protocol(message) => return message,
        Failure::Fault(fault) => return fault.to_string(),
    };
    if let Some(fault) = error.downcast_ref::<GuestFault>() {
        return fault.to_string();
    }
    if error.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt) {
        return format!("timed out after {:?}", limits.timeout);
    }
    if state.memory_refused() {
        return format!("out of memory (limit: {} bytes)", limits.memory_bytes);
    }
    format!("{error:#}")
}

/// A sandbox for the runtime's own tests, which may not use the engine
/// (a higher layer): epoch interruption ticked by a thread of its own,
/// copy-on-write memory images, the store's linkers.
#[cfg(test)]
pub(crate) mod testing {
    use super::Sandbox;
    use crate::limits::Limits;
    use crate::store::Linkers;

    /// A sandbox with its limits.
    pub(crate) struct TestEngine {
        sandbox: Sandbox,
        limits: Limits,
    }

    impl TestEngine {
        /// A fresh engine with the default limits.
        pub(crate) fn new() -> Self {
            let mut config = wasmtime::Config::new();
            config.memory_init_cow(true).epoch_interruption(true);
            let engine = wasmtime::Engine::new(&config).expect("a test engine");
            let weak = engine.weak();
            std::thread::spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            });
            let linker = Linkers::new(&engine).expect("the linkers").modules;
            Self {
                sandbox: Sandbox { engine, linker },
                limits: Limits::default(),
            }
        }

        /// Its sandbox.
        pub(crate) fn sandbox(&self) -> Sandbox {
            self.sandbox.clone()
        }

        /// Its limits.
        pub(crate) fn limits(&self) -> &Limits {
            &self.limits
        }
    }
}

#[cfg(test)]
mod tests;
