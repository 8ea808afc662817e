//! Kubewarden's WASI mode: the policy is a WASI preview1 command. Each
//! evaluation runs its `_start` in a fresh instance with argv
//! `policy.wasm validate` (or `validate-settings`), the request on stdin;
//! the response is what it writes to stdout, and a non-zero exit status is
//! an error. Host capabilities come through the `host.call` import, whose
//! answer is appended to stdin for the policy to read to EOF.

use wasmtime::{Caller, Instance, Linker, Store};

use super::host_call::{self, RawHostCallArgs};
use super::{CallState, Failure, GuestFault};
use crate::store::EvaluationState;

/// The program name Kubewarden gives WASI-mode policies.
pub(super) const PROGRAM: &str = "policy.wasm";

/// Adds `host.call` (and the same function under the name Kubewarden's
/// JavaScript SDK imports it by) to `linker`.
pub(super) fn add_to_linker(linker: &mut Linker<EvaluationState>) -> wasmtime::Result<()> {
    for module in ["host", "kubewarden:javy/host"] {
        linker.func_wrap_async(
            module,
            "call",
            |mut caller: Caller<'_, EvaluationState>, args: RawHostCallArgs| {
                Box::new(async move {
                    let result = host_call::call(&mut caller, "host.call", args.into()).await?;
                    let stdin = caller
                        .data()
                        .get::<CallState>()
                        .and_then(|state| state.stdin.clone())
                        .ok_or_else(|| {
                            GuestFault::protocol("host.call is for WASI-mode policies only")
                        })?;
                    // WASI mode: 0 = success, 1 = error (waPC's opposite).
                    Ok(match result {
                        Ok(response) => {
                            stdin.append(&response);
                            0
                        }
                        Err(error) => {
                            stdin.append(error.as_bytes());
                            1
                        }
                    })
                })
            },
        )?;
    }
    Ok(())
}

/// Runs the command's `_start` to its end: the bytes it wrote to stdout.
pub(super) async fn run(
    instance: &Instance,
    store: &mut Store<EvaluationState>,
) -> Result<Vec<u8>, Failure> {
    let start = instance
        .get_typed_func::<(), ()>(&mut *store, "_start")
        .map_err(|_| {
            Failure::Policy("the module exports no `_start`: not a WASI command".into())
        })?;
    match start.call_async(&mut *store, ()).await {
        Ok(()) => {}
        Err(error) => match error.downcast_ref::<wasmtime_wasi::I32Exit>() {
            Some(exit) if exit.0 == 0 => {}
            Some(exit) => {
                return Err(Failure::Policy(format!("exited with status {}", exit.0)));
            }
            None => return Err(Failure::Call(error)),
        },
    }
    let state = store.data().get::<CallState>().expect("set by the runtime");
    let stdout = state
        .stdout
        .as_ref()
        .expect("a WASI-mode call captures stdout");
    let (bytes, truncated) = stdout.take();
    if truncated {
        return Err(Failure::Fault(GuestFault::TooLarge {
            size: stdout.written(),
            limit: state.response_limit,
        }));
    }
    Ok(bytes)
}
