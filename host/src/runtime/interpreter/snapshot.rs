//! Taking a snapshot: a fresh instance of the guest started from its own
//! initial memory, its constructors run, `init` given the policy, and what
//! its memory then holds captured as an image.
//!
//! `init` runs in a store like an evaluation's (`new_store`: the same
//! limiter, deadline and sandbox) whose WASI context makes the snapshot a
//! function of its inputs alone: randomness (std's hash-map keys, which the
//! guest draws once and the snapshot then keeps) comes from a seed derived
//! from the policy's digest, both clocks are stopped at zero, and there is
//! no environment, argument, stdin, preopened directory or socket. WASI
//! preview 1 leaves no handle in the guest's memory that an evaluation's
//! context would lack (its descriptors are the same three standard
//! streams), so nothing in a snapshot goes stale.

use std::time::{Duration, Instant};

use wasmtime::{Store, Val};
use wasmtime_wasi::{Deterministic, HostMonotonicClock, HostWallClock, WasiCtxBuilder};

use super::image::capture;
use super::instance::{Code, Entry, Guest, Reply};
use super::split::{GLOBAL_EXPORT, MemoryImage, Split};
use super::{InterpreterError, Sandbox, describe};
use crate::limits::Limits;
use crate::runtime::Failure;
use crate::store::{EvaluationState, GuestIo, new_store_with};

/// The longest `init` may run: parsing and preparing the policy. Generous —
/// it runs once per policy, at load — but bounded, like every guest call.
pub(super) const INIT_BUDGET: Duration = Duration::from_secs(10);

/// What `init` answered: the image of the memory it left, or the guest's
/// refusal of the policy (its error payload).
pub(super) type Taken = Result<MemoryImage, Vec<u8>>;

/// Runs `init` with `request` in a fresh instance of `code` started from
/// `split`'s initial memory (`initial`, its data module) and captures the
/// memory it leaves.
pub(super) async fn take(
    engine: &Sandbox,
    code: &Code,
    split: &Split,
    initial: &wasmtime::Module,
    request: &[u8],
    seed: [u8; 32],
) -> Result<Taken, InterpreterError> {
    let limits = Limits {
        timeout: INIT_BUDGET,
        ..Limits::default()
    };
    let deadline = Instant::now() + limits.timeout;
    let mut store = new_store_with(&engine.engine, &limits, deadline, GuestIo::Log, |wasi| {
        deterministic(wasi, seed)
    });
    let reply = run_init(&mut store, engine, code, initial, request, &limits)
        .await
        .map_err(|failure| InterpreterError::Init(describe(failure, store.data(), &limits)))?;
    let (guest, reply) = reply;
    if let Err(refused) = reply {
        return Ok(Err(refused));
    }
    // The code keeps its globals (each instance starts them afresh), so
    // `init` must have left them as they start.
    for global in &split.globals {
        let name = format!("{GLOBAL_EXPORT}{}", global.index);
        let value = guest
            .instance
            .get_global(&mut store, &name)
            .map(|exported| exported.get(&mut store));
        let bits = match value {
            Some(Val::I32(value)) => value as u32 as u64,
            Some(Val::I64(value)) => value as u64,
            Some(Val::F32(bits)) => u64::from(bits),
            Some(Val::F64(bits)) => bits,
            _ => {
                return Err(InterpreterError::Init(format!(
                    "global {} cannot be read back",
                    global.index
                )));
            }
        };
        if bits != global.initial {
            return Err(InterpreterError::Init(format!(
                "`init` left global {} at {bits:#x} (it starts at {:#x}): a snapshot keeps \
                 only memory",
                global.index, global.initial
            )));
        }
    }
    let memory = guest.memory.data(&store);
    Ok(Ok(capture(
        memory,
        split.initial.maximum,
        split.stack.clone(),
    )))
}

async fn run_init(
    store: &mut Store<EvaluationState>,
    engine: &Sandbox,
    code: &Code,
    initial: &wasmtime::Module,
    request: &[u8],
    limits: &Limits,
) -> Result<(Guest, Reply), Failure> {
    let guest = code
        .instantiate(store, &engine.linker, initial)
        .await
        .map_err(Failure::Instantiate)?;
    guest.initialize(store, code).await?;
    let reply = guest
        .call(store, code, Entry::Init, request, limits.response_bytes)
        .await?;
    Ok((guest, reply))
}

/// Makes `wasi` deterministic: randomness from `seed`, clocks stopped.
fn deterministic(wasi: &mut WasiCtxBuilder, seed: [u8; 32]) {
    wasi.secure_random(Deterministic::new(seed.to_vec()))
        .insecure_random(Deterministic::new(seed.iter().rev().copied().collect()))
        .insecure_random_seed(u128::from_le_bytes(
            seed[..16].try_into().expect("16 bytes"),
        ))
        .wall_clock(StoppedClock)
        .monotonic_clock(StoppedClock);
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
