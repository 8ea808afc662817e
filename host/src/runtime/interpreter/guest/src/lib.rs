//! The guest side of Portcullis's interpreter ABI (the host side and the
//! whole mechanism are described in `host/src/runtime/interpreter/mod.rs`).
//!
//! An interpreter guest (Rego, CEL) is a `wasm32-wasip1` core module that
//! holds one policy: the host calls `init` once with the policy's sources,
//! snapshots the instance's memory, and then evaluates each request in a
//! fresh instance started from that snapshot. A guest implements
//! [`Interpreter`] and exports it with [`export_interpreter!`], which
//! defines the three functions the host calls:
//!
//! - `portcullis_alloc(len: i32) -> i32`: a buffer of `len` bytes the host
//!   writes a request into (valid until the next call);
//! - `portcullis_init(ptr: i32, len: i32) -> i64`: [`Interpreter::init`] on
//!   the request at `ptr`, keeping the interpreter in the instance;
//! - `portcullis_evaluate(ptr: i32, len: i32) -> i64`:
//!   [`Interpreter::evaluate`] on the request at `ptr`.
//!
//! Both calls return their reply as `len << 32 | ptr`: a buffer the guest
//! owns (until the next call) whose first byte is [`OK`] or [`ERROR`],
//! followed by the payload. What requests and payloads mean is the
//! interpreter's business; the host's runtime for it reads them.

#![deny(missing_docs)]

/// The reply's status byte: the call succeeded, the payload is its result.
pub const OK: u8 = 0;
/// The reply's status byte: the call failed, the payload says why.
pub const ERROR: u8 = 1;

/// An interpreter holding one policy.
pub trait Interpreter: Sized + 'static {
    /// Prepares the policy described by `request` (parsing, analysis):
    /// everything that does not depend on what is evaluated. The error is
    /// the payload of the failed reply.
    fn init(request: &[u8]) -> Result<Self, Vec<u8>>;

    /// Evaluates the policy on `request`. The instance is thrown away
    /// afterwards, so this may consume what `init` prepared.
    fn evaluate(&mut self, request: &[u8]) -> Result<Vec<u8>, Vec<u8>>;
}

/// What [`export_interpreter!`] expands to; not for direct use.
#[doc(hidden)]
pub mod __private {
    use std::cell::RefCell;

    use super::{ERROR, Interpreter, OK};

    /// An instance's state: the interpreter `init` made, the request
    /// buffer, the last reply.
    pub struct State<T> {
        interpreter: Option<T>,
        request: Vec<u8>,
        reply: Vec<u8>,
    }

    impl<T: Interpreter> Default for State<T> {
        fn default() -> Self {
            Self::new()
        }
    }

    impl<T: Interpreter> State<T> {
        /// No interpreter yet.
        pub const fn new() -> Self {
            Self {
                interpreter: None,
                request: Vec::new(),
                reply: Vec::new(),
            }
        }

        /// `portcullis_alloc`.
        pub fn alloc(state: &RefCell<Self>, len: u32) -> u32 {
            let mut state = state.borrow_mut();
            state.request.clear();
            state.request.resize(len as usize, 0);
            state.request.as_mut_ptr() as usize as u32
        }

        /// `portcullis_init`.
        pub fn init(state: &RefCell<Self>, ptr: u32, len: u32) -> u64 {
            let mut state = state.borrow_mut();
            let outcome = match state.request(ptr, len) {
                Err(error) => Err(error),
                Ok(_) if state.interpreter.is_some() => {
                    Err(b"the interpreter is already initialised".to_vec())
                }
                Ok(request) => T::init(request).map(|interpreter| {
                    state.interpreter = Some(interpreter);
                    Vec::new()
                }),
            };
            // The request (the policy's sources) is not kept in the
            // snapshot: the interpreter keeps what it needs.
            state.request = Vec::new();
            state.reply(outcome)
        }

        /// `portcullis_evaluate`.
        pub fn evaluate(state: &RefCell<Self>, ptr: u32, len: u32) -> u64 {
            let mut state = state.borrow_mut();
            let state = &mut *state;
            let outcome = match (&mut state.interpreter, state.request.get(..len as usize)) {
                (None, _) => Err(b"the interpreter is not initialised".to_vec()),
                (Some(interpreter), Some(request)) if request.as_ptr() as usize as u32 == ptr => {
                    interpreter.evaluate(request)
                }
                _ => Err(b"the request is not in the buffer portcullis_alloc gave".to_vec()),
            };
            state.reply(outcome)
        }

        fn request(&self, ptr: u32, len: u32) -> Result<&[u8], Vec<u8>> {
            match self.request.get(..len as usize) {
                Some(request) if request.as_ptr() as usize as u32 == ptr => Ok(request),
                _ => Err(b"the request is not in the buffer portcullis_alloc gave".to_vec()),
            }
        }

        fn reply(&mut self, outcome: Result<Vec<u8>, Vec<u8>>) -> u64 {
            let (status, payload) = match outcome {
                Ok(payload) => (OK, payload),
                Err(payload) => (ERROR, payload),
            };
            self.reply.clear();
            self.reply.reserve_exact(payload.len() + 1);
            self.reply.push(status);
            self.reply.extend_from_slice(&payload);
            let ptr = self.reply.as_ptr() as usize as u64;
            (self.reply.len() as u64) << 32 | ptr
        }
    }
}

/// Exports `$interpreter` (a type implementing [`Interpreter`]) through the
/// ABI's three functions, on wasm targets only (a native build of the same
/// crate, e.g. for a benchmark, exports nothing).
#[macro_export]
macro_rules! export_interpreter {
    ($interpreter:ty) => {
        #[cfg(target_family = "wasm")]
        const _: () = {
            use ::std::cell::RefCell;

            use $crate::__private::State;

            ::std::thread_local! {
                static STATE: RefCell<State<$interpreter>> = const { RefCell::new(State::new()) };
            }

            #[unsafe(no_mangle)]
            extern "C" fn portcullis_alloc(len: u32) -> u32 {
                STATE.with(|state| State::alloc(state, len))
            }

            #[unsafe(no_mangle)]
            extern "C" fn portcullis_init(ptr: u32, len: u32) -> u64 {
                STATE.with(|state| State::init(state, ptr, len))
            }

            #[unsafe(no_mangle)]
            extern "C" fn portcullis_evaluate(ptr: u32, len: u32) -> u64 {
                STATE.with(|state| State::evaluate(state, ptr, len))
            }
        };
    };
}
