//! The one `wasmtime::Engine` of the process, configured for admission control
//! (many short evaluations of a few policies, each in a fresh instance), and
//! the composition root: it links every runtime and every capability into
//! the linkers policies' imports are satisfied from, naming each only by its
//! one entry point, and prepares policies' code against them.

use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use wasmtime::{Config, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::cache::CompiledCache;
use crate::capabilities::Capabilities;
use crate::digest::Digest;
use crate::limits::Limits;
use crate::runtime::{self, CodeError, Compiler, PolicyCode, PolicyFile, Runtimes};
use crate::store::Linkers;

/// How often the epoch advances. Running wasm yields to the async executor at
/// every tick, which is what lets a wall-clock timeout interrupt a loop, and
/// the server hand the CPU to a fresh request within a tick of its arrival
/// (`server::gate`). At 1 ms the yields cost no CPU measurable beside a
/// 5 ms tick; at 0.5 ms the ticker's wakeups start to show (docs/reliability.md).
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// A configured engine plus the linkers every policy is pre-linked with.
///
/// Cheap to clone; every clone shares the same compiled code and pools.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}

struct EngineInner {
    wasmtime: wasmtime::Engine,
    runtimes: Runtimes,
    linkers: Linkers,
    capabilities: Arc<Capabilities>,
    limits: Limits,
}

impl Engine {
    /// Builds the engine with `limits`, and starts its epoch ticker.
    pub fn new(limits: Limits) -> wasmtime::Result<Self> {
        Self::with_capabilities(limits, Capabilities::default())
    }

    /// Builds the engine with `limits` and the host `capabilities` policies
    /// may call; each capability adds what it needs to the linkers.
    pub fn with_capabilities(limits: Limits, capabilities: Capabilities) -> wasmtime::Result<Self> {
        let wasmtime = wasmtime::Engine::new(&config(&limits))?;
        // WASI, each runtime's imports and each capability's: a policy that
        // imports anything else is refused at load time, naming the missing
        // import.
        let mut linkers = Linkers::new(&wasmtime)?;
        let runtimes = Runtimes::new();
        runtimes.add_to_linkers(&mut linkers)?;
        capabilities.add_to_linkers(&mut linkers)?;
        spawn_epoch_ticker(&wasmtime);
        Ok(Self {
            inner: Arc::new(EngineInner {
                wasmtime,
                runtimes,
                linkers,
                capabilities: Arc::new(capabilities),
                limits,
            }),
        })
    }

    /// The underlying wasmtime engine.
    pub fn wasmtime(&self) -> &wasmtime::Engine {
        &self.inner.wasmtime
    }

    /// The linkers that satisfy policies' imports: WASI (granting nothing),
    /// each runtime's and each capability's.
    pub fn linkers(&self) -> &Linkers {
        &self.inner.linkers
    }

    /// Prepares the policy in the file at `path`, whose digest and size are
    /// known ([`Digest::of_file`]): from `cache` when it holds it (a
    /// component's file is then not read at all), otherwise read, recognised,
    /// checked, compiled and stored; then pre-linked.
    pub async fn prepare_file(
        &self,
        path: &Path,
        digest: Digest,
        size: usize,
        cache: Option<&CompiledCache>,
    ) -> Result<PolicyCode, CodeError> {
        let file = PolicyFile::new(path, digest);
        runtime::prepare(self.compiler(cache), file, size, cache).await
    }

    /// Prepares the policy in `bytes`, read from `path`, as
    /// [`prepare_file`](Self::prepare_file) does.
    pub async fn prepare(
        &self,
        path: &Path,
        bytes: &[u8],
        digest: Digest,
        cache: Option<&CompiledCache>,
    ) -> Result<PolicyCode, CodeError> {
        let file = PolicyFile::read_into(path, digest, bytes);
        runtime::prepare(self.compiler(cache), file, bytes.len(), cache).await
    }

    fn compiler<'a>(&'a self, cache: Option<&'a CompiledCache>) -> Compiler<'a> {
        Compiler {
            runtimes: &self.inner.runtimes,
            linkers: &self.inner.linkers,
            cache,
        }
    }

    /// Where interpreter guests (the Rego runtime's) run in this engine.
    pub fn sandbox(&self) -> crate::runtime::interpreter::Sandbox {
        crate::runtime::interpreter::Sandbox {
            engine: self.wasmtime().clone(),
            linker: self.linkers().modules.clone(),
        }
    }

    /// The host capabilities policies may call (as their grants allow).
    pub fn capabilities(&self) -> &Arc<Capabilities> {
        &self.inner.capabilities
    }

    /// The limits this engine was built with.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// An engine like this one whose wasm stack is `stack_bytes`.
    ///
    /// wasmtime fixes the stack limit per engine, so a policy with a stack
    /// limit of its own runs on an engine of its own (with its own pool).
    pub fn with_stack(&self, stack_bytes: usize) -> wasmtime::Result<Self> {
        Self::with_capabilities(
            Limits {
                stack_bytes,
                ..self.inner.limits.clone()
            },
            self.inner.capabilities.as_ref().clone(),
        )
    }
}

fn config(limits: &Limits) -> Config {
    let mut pool = PoolingAllocationConfig::new();
    // One evaluation = one component instance (or, for a Kubewarden module,
    // one core instance). Its core instances, memories and tables are what a
    // Rust policy (1 each) or a componentize-py policy (a handful) needs; the
    // totals bound how many evaluations can be alive.
    let max_instances = limits.max_instances;
    pool.total_component_instances(max_instances);
    pool.max_core_instances_per_component(32);
    pool.max_memories_per_component(8);
    pool.max_tables_per_component(16);
    // A componentize-py 0.25 policy (examples/deny-labels-py) instantiates 14
    // core modules per evaluation (CPython, libc and its other shared
    // libraries, the WASI adapter, shims); with 8 per evaluation only
    // max_instances * 8 / 14 of them could be alive at once, the rest failing
    // as overloaded. This is a count, not a reservation: wasmtime allocates
    // instance metadata on demand.
    pool.total_core_instances(max_instances * 16);
    pool.total_memories(max_instances * 2);
    pool.total_tables(max_instances * 4);
    pool.total_stacks(max_instances);
    // Hard ceiling of any linear memory; the per-evaluation limiter enforces
    // the (possibly smaller) configured limit below it.
    pool.max_memory_size(limits.memory_bytes);
    pool.table_elements(limits.table_elements);
    // Keep a few warm slots per component so reuse hits the CoW image.
    pool.max_unused_warm_slots(max_instances / 4);
    if limits.keep_resident_bytes > 0 {
        keep_resident(&mut pool, limits.keep_resident_bytes);
    }

    let mut config = Config::new();
    config
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        // Instantiation maps the initial heap copy-on-write instead of copying it.
        .memory_init_cow(true)
        // Timeouts: wasm yields at every epoch tick so the caller's deadline
        // can drop the evaluation, wherever it is.
        .epoch_interruption(true)
        .max_wasm_stack(limits.stack_bytes)
        // The fiber stack must hold the wasm stack plus host frames below it.
        .async_stack_size(limits.stack_bytes + (1 << 20))
        .wasm_component_model(true);
    // For profiling only (BENCHMARKS.md §3): names policies' compiled code
    // for `perf` in /tmp/perf-PID.map.
    if std::env::var_os("PORTCULLIS_PERF_MAP").is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    config
}

/// Makes the pool reset a used slot by rewriting in place up to `bytes` of
/// the pages the evaluation dirtied in each memory (found with Linux's
/// `PAGEMAP_SCAN`, kernel 6.7+) instead of `madvise`-ing them away; only
/// dirty pages past that budget are still released. When the budget covers
/// an evaluation, the next one in that slot starts without page faults, and
/// no IPIs or mmap-lock traffic cross the workers. The cost is that memory stays
/// resident per slot in use (see [`Limits::keep_resident_bytes`]). Public for
/// the benchmarks' baseline.
pub fn keep_resident(pool: &mut PoolingAllocationConfig, bytes: usize) {
    pool.linear_memory_keep_resident(bytes);
    pool.table_keep_resident(bytes / 16);
    pool.pagemap_scan(wasmtime::Enabled::Auto);
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until the engine is dropped.
///
/// The thread holds only a weak handle, so it never keeps an engine alive.
fn spawn_epoch_ticker(engine: &wasmtime::Engine) {
    let weak = engine.weak();
    thread::Builder::new()
        .name("portcullis-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawning the epoch ticker thread");
}
