//! waPC, host side: the `wapc` imports a Kubewarden guest calls, and one
//! guest call (`_start` and `wapc_init` when exported, then
//! `__guest_call`) in a fresh instance.
//!
//! The exchange follows waPC's protocol: the host holds the operation and
//! payload, the guest fetches them with `__guest_request`, answers with
//! `__guest_response` (or `__guest_error`) and returns 1 (or 0) from
//! `__guest_call`. Portcullis is stricter than waPC where waPC would go on
//! with something undefined: a second response, a response over the limit,
//! a pointer outside the guest's memory each end the evaluation with an
//! error that says so.

use wasmtime::{Caller, Instance, Linker, Store};

use super::host_call::{self, RawHostCallArgs};
use super::{CallState, Failure, GuestFault};
use crate::store::EvaluationState;

/// waPC's import module.
const WAPC: &str = "wapc";

/// Adds waPC's host functions to `linker`.
pub(super) fn add_to_linker(linker: &mut Linker<EvaluationState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        WAPC,
        "__guest_request",
        |mut caller: Caller<'_, EvaluationState>, op_ptr: i32, ptr: i32| {
            let exchange = state(&mut caller, "__guest_request")?;
            let (operation, payload) = (exchange.operation, std::mem::take(&mut exchange.payload));
            host_call::write(
                &mut caller,
                "__guest_request: the operation",
                op_ptr,
                operation.as_bytes(),
            )?;
            host_call::write(&mut caller, "__guest_request: the payload", ptr, &payload)?;
            state(&mut caller, "__guest_request")?.payload = payload;
            Ok(())
        },
    )?;
    linker.func_wrap(
        WAPC,
        "__guest_response",
        |mut caller: Caller<'_, EvaluationState>, ptr: i32, len: i32| {
            let limit = state(&mut caller, "__guest_response")?.response_limit;
            let size = len as u32 as usize;
            if size > limit {
                return Err(GuestFault::TooLarge { size, limit }.into());
            }
            let response = host_call::read(&mut caller, "__guest_response", ptr, len)?;
            let state = state(&mut caller, "__guest_response")?;
            if state.guest_response.is_some() {
                return Err(GuestFault::protocol(
                    "the policy called __guest_response twice in one call",
                ));
            }
            state.guest_response = Some(response);
            Ok(())
        },
    )?;
    linker.func_wrap(
        WAPC,
        "__guest_error",
        |mut caller: Caller<'_, EvaluationState>, ptr: i32, len: i32| {
            let limit = state(&mut caller, "__guest_error")?.response_limit;
            let size = len as u32 as usize;
            if size > limit {
                return Err(GuestFault::TooLarge { size, limit }.into());
            }
            let error = host_call::read(&mut caller, "__guest_error", ptr, len)?;
            state(&mut caller, "__guest_error")?.guest_error =
                Some(String::from_utf8_lossy(&error).into_owned());
            Ok(())
        },
    )?;
    linker.func_wrap_async(
        WAPC,
        "__host_call",
        |mut caller: Caller<'_, EvaluationState>, args: RawHostCallArgs| {
            Box::new(async move {
                let result = host_call::call(&mut caller, "__host_call", args.into()).await?;
                let state = state(&mut caller, "__host_call")?;
                // waPC: 1 = success, 0 = error; the guest then reads one of the two.
                Ok(match result {
                    Ok(response) => {
                        state.host_response = Some(response);
                        state.host_error = None;
                        1
                    }
                    Err(error) => {
                        state.host_response = None;
                        state.host_error = Some(error);
                        0
                    }
                })
            })
        },
    )?;
    linker.func_wrap(
        WAPC,
        "__host_response_len",
        |mut caller: Caller<'_, EvaluationState>| {
            let state = state(&mut caller, "__host_response_len")?;
            Ok(state.host_response.as_ref().map_or(0, |r| r.len() as i32))
        },
    )?;
    linker.func_wrap(
        WAPC,
        "__host_response",
        |mut caller: Caller<'_, EvaluationState>, ptr: i32| {
            let response = state(&mut caller, "__host_response")?
                .host_response
                .clone()
                .unwrap_or_default();
            host_call::write(&mut caller, "__host_response", ptr, &response)
        },
    )?;
    linker.func_wrap(
        WAPC,
        "__host_error_len",
        |mut caller: Caller<'_, EvaluationState>| {
            let state = state(&mut caller, "__host_error_len")?;
            Ok(state.host_error.as_ref().map_or(0, |e| e.len() as i32))
        },
    )?;
    linker.func_wrap(
        WAPC,
        "__host_error",
        |mut caller: Caller<'_, EvaluationState>, ptr: i32| {
            let error = state(&mut caller, "__host_error")?
                .host_error
                .clone()
                .unwrap_or_default();
            host_call::write(&mut caller, "__host_error", ptr, error.as_bytes())
        },
    )?;
    linker.func_wrap(
        WAPC,
        "__console_log",
        |mut caller: Caller<'_, EvaluationState>, ptr: i32, len: i32| {
            let line = host_call::read(&mut caller, "__console_log", ptr, len)?;
            caller.data().output().push_event(
                tracing::Level::INFO,
                String::from_utf8_lossy(&line).into_owned(),
            );
            Ok(())
        },
    )?;
    Ok(())
}

/// The waPC exchange of the running evaluation.
fn state<'a>(
    caller: &'a mut Caller<'_, EvaluationState>,
    import: &str,
) -> wasmtime::Result<&'a mut CallState> {
    caller
        .data_mut()
        .get_mut::<CallState>()
        .ok_or_else(|| GuestFault::protocol(format!("{import} called outside an evaluation")))
}

/// Runs the module's initialisers: `_start` (a TinyGo or WASI command's),
/// then `wapc_init` (where the Rust SDK registers its handlers), each only
/// if exported. A WASI `proc_exit(0)` in them is a normal end.
pub(super) async fn initialize(
    instance: &Instance,
    store: &mut Store<EvaluationState>,
) -> Result<(), Failure> {
    for name in ["_start", "wapc_init"] {
        let Ok(init) = instance.get_typed_func::<(), ()>(&mut *store, name) else {
            continue;
        };
        match init.call_async(&mut *store, ()).await {
            Ok(()) => {}
            Err(error) => match error.downcast_ref::<wasmtime_wasi::I32Exit>() {
                Some(exit) if exit.0 == 0 => {}
                Some(exit) => {
                    return Err(Failure::Policy(format!(
                        "`{name}` exited with status {}",
                        exit.0
                    )));
                }
                None => return Err(Failure::Call(error)),
            },
        }
    }
    Ok(())
}

/// One `__guest_call` of the operation and payload held in the store's
/// [`CallState`]: the guest's response, or why there is none.
pub(super) async fn guest_call(
    instance: &Instance,
    store: &mut Store<EvaluationState>,
) -> Result<Vec<u8>, Failure> {
    let call = instance
        .get_typed_func::<(i32, i32), i32>(&mut *store, "__guest_call")
        .map_err(|_| {
            Failure::Policy(
                "the module exports no `__guest_call(i32, i32) -> i32`: not a waPC module".into(),
            )
        })?;
    let (op_len, payload_len) = {
        let state = store.data().get::<CallState>().expect("set by the runtime");
        (state.operation.len() as i32, state.payload.len() as i32)
    };
    let succeeded = call
        .call_async(&mut *store, (op_len, payload_len))
        .await
        .map_err(Failure::Call)?;
    let state = store
        .data_mut()
        .get_mut::<CallState>()
        .expect("set by the runtime");
    match (
        succeeded,
        state.guest_response.take(),
        state.guest_error.take(),
    ) {
        (1, Some(response), _) => Ok(response),
        (1, None, _) => Err(Failure::Protocol(
            "__guest_call returned success without a response (__guest_response was never called)"
                .into(),
        )),
        (0, _, Some(error)) => Err(Failure::Policy(error)),
        (0, _, None) => Err(Failure::Policy(
            "__guest_call failed without an error message".into(),
        )),
        (other, _, _) => Err(Failure::Protocol(format!(
            "__guest_call returned {other}, neither 1 (success) nor 0 (failure)"
        ))),
    }
}
