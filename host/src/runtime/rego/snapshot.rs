//! Pre-initialisation: the guest instrumented once per process, then, per
//! policy, instantiated, given its Rego with `init`, and snapshotted with
//! wasmtime-wizer into a component whose memory already holds the parsed,
//! prepared policy.
//!
//! `init` runs with a WASI context of its own that makes the snapshot a
//! function of its inputs alone: randomness (std's hash-map keys, which the
//! parser's maps draw on first use and the snapshot then keeps) comes from a
//! seed derived from the policy's digest, the clocks are stopped at zero,
//! and there is no environment, argument, stdin or output. No resource
//! (a stream, a pollable) can outlive `init` in the snapshot: nothing in
//! `init` opens one, and a guest that printed would trap later on a stale
//! handle, which the tests would show.

use std::time::{Duration, Instant};

use wasmtime::component::{Component, Instance, InstancePre, Linker, ResourceTable, WasmList};
use wasmtime::{Store, StoreLimits, StoreLimitsBuilder, UpdateDeadline};
use wasmtime_wasi::{
    Deterministic, HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView,
};
use wasmtime_wizer::{ComponentContext, ComponentInstanceState, Wizer};

use super::bindings::{self, RegoRuntime};
use super::{RegoError, RegoSource};
use crate::engine::Engine;

/// The longest `init` may run: parsing and preparing the Rego. Generous —
/// it runs once per policy, at load — but bounded, like every guest call.
pub(super) const INIT_BUDGET: Duration = Duration::from_secs(10);

/// The guest, instrumented for snapshotting and compiled: the same for
/// every policy.
pub(super) struct Instrumented {
    context: ComponentContext<'static>,
    pre: InstancePre<InitState>,
}

impl Instrumented {
    /// Instruments `guest` and compiles the result for `engine`.
    pub(super) fn new(engine: &Engine, guest: &'static [u8]) -> Result<Self, RegoError> {
        let (context, wasm) = Wizer::new()
            .instrument_component(guest)
            .map_err(|e| RegoError::Snapshot(format!("instrumenting the guest: {e:#}")))?;
        let component = Component::new(engine.wasmtime(), &wasm)
            .map_err(|e| RegoError::Compile(format!("the instrumented guest: {e:#}")))?;
        let mut linker = Linker::new(engine.wasmtime());
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| RegoError::Snapshot(format!("{e:#}")))?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(|e| RegoError::Snapshot(format!("linking the guest: {e:#}")))?;
        Ok(Self { context, pre })
    }

    /// A fresh instance given `source` by `init`, snapshotted: the bytes
    /// of a component that starts where `init` left off.
    pub(super) async fn snapshot(
        &self,
        source: &RegoSource,
        seed: [u8; 32],
        memory_bytes: usize,
    ) -> Result<Vec<u8>, RegoError> {
        let engine = self.pre.engine();
        let mut store = Store::new(engine, InitState::new(seed, memory_bytes));
        store.limiter(|state| &mut state.limits);
        let deadline = Instant::now() + INIT_BUDGET;
        store.epoch_deadline_callback(move |_| {
            Ok(if Instant::now() >= deadline {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });
        store.set_epoch_deadline(1);
        let instance = self
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| RegoError::Snapshot(format!("instantiating the guest: {e:#}")))?;
        let guest = RegoRuntime::new(&mut store, &instance)
            .map_err(|e| RegoError::Snapshot(format!("{e:#}")))?;
        let modules: Vec<bindings::Module> = source
            .modules
            .iter()
            .map(|module| bindings::Module {
                name: module.name.clone(),
                text: module.text.clone(),
            })
            .collect();
        guest
            .portcullis_rego_runtime_evaluator()
            .call_init(&mut store, &modules, &source.rule, source.rego_v0)
            .await
            .map_err(|e| RegoError::Snapshot(format!("`init` failed: {e:#}")))?
            .map_err(|e| RegoError::Policy(e.into()))?;
        let mut access = Access {
            store: &mut store,
            instance,
            failure: None,
        };
        let snapshot = Wizer::new()
            .snapshot_component(&self.context, &mut access)
            .await
            .map_err(|e| RegoError::Snapshot(format!("{e:#}")))?;
        match access.failure {
            Some(failure) => Err(RegoError::Snapshot(failure)),
            None => Ok(snapshot),
        }
    }
}

/// The store of the instance that runs `init`.
pub(super) struct InitState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
}

impl InitState {
    fn new(seed: [u8; 32], memory_bytes: usize) -> Self {
        let mut wasi = WasiCtx::builder();
        wasi.secure_random(Deterministic::new(seed.to_vec()))
            .insecure_random(Deterministic::new(seed.iter().rev().copied().collect()))
            .insecure_random_seed(u128::from_le_bytes(
                seed[..16].try_into().expect("16 bytes"),
            ))
            .wall_clock(StoppedClock)
            .monotonic_clock(StoppedClock)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        Self {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new().memory_size(memory_bytes).build(),
        }
    }
}

impl WasiView for InitState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Both clocks of `init`: always zero, so reading one changes nothing in
/// the snapshot.
struct StoppedClock;

impl HostWallClock for StoppedClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for StoppedClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }

    fn now(&self) -> u64 {
        0
    }
}

/// What wizer reads the initialised instance's state through: the
/// accessor functions its instrumentation exported. A failed call is kept
/// (wizer's interface cannot return it) and fails the snapshot.
struct Access<'a> {
    store: &'a mut Store<InitState>,
    instance: Instance,
    failure: Option<String>,
}

impl Access<'_> {
    async fn call<R>(&mut self, instance: &str, func: &str) -> Option<R>
    where
        R: wasmtime::component::Lift + Send + Sync + 'static,
    {
        if self.failure.is_some() {
            return None;
        }
        let result = async {
            let (_, exported) = self
                .instance
                .get_export(&mut *self.store, None, instance)
                .ok_or_else(|| format!("no export `{instance}`"))?;
            let (_, index) = self
                .instance
                .get_export(&mut *self.store, Some(&exported), func)
                .ok_or_else(|| format!("no export `{instance}#{func}`"))?;
            let typed = self
                .instance
                .get_typed_func::<(), (R,)>(&mut *self.store, index)
                .map_err(|e| format!("`{instance}#{func}`: {e:#}"))?;
            typed
                .call_async(&mut *self.store, ())
                .await
                .map(|(value,)| value)
                .map_err(|e| format!("`{instance}#{func}`: {e:#}"))
        }
        .await;
        result
            .map_err(|e| self.failure = Some(format!("reading the initialised state: {e}")))
            .ok()
    }
}

impl ComponentInstanceState for Access<'_> {
    async fn call_func_ret_list_u8(
        &mut self,
        instance: &str,
        func: &str,
        contents: impl FnOnce(&[u8]) + Send,
    ) {
        match self.call::<WasmList<u8>>(instance, func).await {
            Some(list) => contents(list.as_le_slice(&*self.store)),
            None => contents(&[]),
        }
    }

    async fn call_func_ret_s32(&mut self, instance: &str, func: &str) -> i32 {
        self.call(instance, func).await.unwrap_or_default()
    }

    async fn call_func_ret_s64(&mut self, instance: &str, func: &str) -> i64 {
        self.call(instance, func).await.unwrap_or_default()
    }

    async fn call_func_ret_f32(&mut self, instance: &str, func: &str) -> u32 {
        self.call::<f32>(instance, func)
            .await
            .map_or(0, f32::to_bits)
    }

    async fn call_func_ret_f64(&mut self, instance: &str, func: &str) -> u64 {
        self.call::<f64>(instance, func)
            .await
            .map_or(0, f64::to_bits)
    }
}
