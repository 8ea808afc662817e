//! The guest side of a Kubewarden host call, shared by waPC's `__host_call`
//! and WASI mode's `host.call`: read the call's strings and payload out of
//! the policy's memory (bounds- and UTF-8-checked), and hand it to the
//! [`Capabilities`](crate::capabilities::Capabilities) of the evaluation,
//! which gate and serve it.

use wasmtime::{Caller, Extern, Memory};

use super::GuestFault;
use crate::capabilities::{self, CallContext};
use crate::store::EvaluationState;

/// The eight `i32` arguments of a host call as its import receives them
/// (wasmtime hands an async host function its parameters as one tuple).
pub(super) type RawHostCallArgs = (i32, i32, i32, i32, i32, i32, i32, i32);

/// A host call's arguments: where its binding, namespace, operation and
/// payload are in the policy's memory.
pub(super) struct HostCallArgs {
    binding: Span,
    namespace: Span,
    operation: Span,
    payload: Span,
}

/// Bytes in the policy's memory, as it gives them.
#[derive(Clone, Copy)]
struct Span {
    ptr: i32,
    len: i32,
}

impl From<RawHostCallArgs> for HostCallArgs {
    fn from((bd_ptr, bd_len, ns_ptr, ns_len, op_ptr, op_len, ptr, len): RawHostCallArgs) -> Self {
        let span = |ptr, len| Span { ptr, len };
        Self {
            binding: span(bd_ptr, bd_len),
            namespace: span(ns_ptr, ns_len),
            operation: span(op_ptr, op_len),
            payload: span(ptr, len),
        }
    }
}

/// The policy's exported `memory`.
pub(super) fn memory(caller: &mut Caller<'_, EvaluationState>) -> wasmtime::Result<Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(memory)) => Ok(memory),
        _ => Err(GuestFault::protocol("the module exports no `memory`")),
    }
}

/// `len` bytes at `ptr` in the policy's memory, after checking they are
/// inside it (so a bogus length allocates nothing).
pub(super) fn read(
    caller: &mut Caller<'_, EvaluationState>,
    what: &str,
    ptr: i32,
    len: i32,
) -> wasmtime::Result<Vec<u8>> {
    let memory = memory(caller)?;
    let (start, len) = (ptr as u32 as usize, len as u32 as usize);
    let data = memory.data(&caller);
    match start.checked_add(len).and_then(|end| data.get(start..end)) {
        Some(bytes) => Ok(bytes.to_vec()),
        None => Err(out_of_bounds(what, start, len, data.len())),
    }
}

/// Writes `bytes` at `ptr` in the policy's memory, if they fit inside it.
pub(super) fn write(
    caller: &mut Caller<'_, EvaluationState>,
    what: &str,
    ptr: i32,
    bytes: &[u8],
) -> wasmtime::Result<()> {
    let memory = memory(caller)?;
    let start = ptr as u32 as usize;
    let size = memory.data_size(&caller);
    memory
        .write(caller, start, bytes)
        .map_err(|_| out_of_bounds(what, start, bytes.len(), size))
}

fn out_of_bounds(what: &str, start: usize, len: usize, size: usize) -> wasmtime::Error {
    GuestFault::protocol(format!(
        "{what}: {len} bytes at offset {start} are outside the policy's memory ({size} bytes)"
    ))
}

/// A UTF-8 string of the call.
fn text(
    caller: &mut Caller<'_, EvaluationState>,
    what: &str,
    span: Span,
) -> wasmtime::Result<String> {
    String::from_utf8(read(caller, what, span.ptr, span.len)?)
        .map_err(|_| GuestFault::protocol(format!("{what} is not valid UTF-8")))
}

/// Runs the host call described by `args`: the capability's answer, or
/// the host error the policy receives. A call the host cannot even read
/// (out of bounds, not UTF-8) is a fault of the policy and traps.
pub(super) async fn call(
    caller: &mut Caller<'_, EvaluationState>,
    import: &str,
    args: HostCallArgs,
) -> wasmtime::Result<Result<Vec<u8>, String>> {
    let HostCallArgs {
        binding,
        namespace,
        operation,
        payload,
    } = args;
    let binding = text(caller, &format!("{import}: the binding"), binding)?;
    let namespace = text(caller, &format!("{import}: the namespace"), namespace)?;
    let operation = text(caller, &format!("{import}: the operation"), operation)?;
    let payload = read(
        caller,
        &format!("{import}: the payload"),
        payload.ptr,
        payload.len,
    )?;
    let capabilities::Caller {
        policy_id,
        grants,
        capabilities,
        deadline,
    } = caller
        .data()
        .get::<capabilities::Caller>()
        .cloned()
        .ok_or_else(|| GuestFault::protocol(format!("{import} called outside an evaluation")))?;
    let output = caller.data().output().clone();
    let context = CallContext {
        policy_id: &policy_id,
        grants: &grants,
        output: &output,
        deadline,
    };
    Ok(capabilities
        .call(&context, &binding, &namespace, &operation, &payload)
        .await)
}
