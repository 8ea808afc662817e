//! The state of one evaluation's `Store`: a WASI context that grants nothing,
//! the resource limiter, the captured guest output, and a slot for what the
//! layers above keep there (who is calling the host, a runtime's own state
//! of the call), typed by their own types so the store names none of them.
//! Beside it, the [`Linkers`] every policy is pre-linked with, over this
//! state.
//!
//! Every kind of policy shares this state: the WASI context is a preview1
//! one (`WasiP1Ctx`), which also serves preview2 to components through
//! [`WasiView`], so all of them get the same sandbox, limiter and capture.

use std::any::Any;
use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::cli::{IsTerminal, StdinStream, StdoutStream};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::{InputStream, Pollable, StreamError, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::limits::{EvaluationLimiter, Limits};

/// Data owned by the `Store` of a single evaluation. Dropped with it.
pub struct EvaluationState {
    wasi: WasiP1Ctx,
    limiter: EvaluationLimiter,
    output: GuestOutput,
    extensions: Extensions,
}

impl WasiView for EvaluationState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        self.wasi.ctx()
    }
}

impl EvaluationState {
    /// Whether the limiter refused to grow a memory in this evaluation.
    pub(crate) fn memory_refused(&self) -> bool {
        self.limiter.memory_refused()
    }

    /// What the guest wrote to stdout and stderr, bounded.
    pub(crate) fn output(&self) -> &GuestOutput {
        &self.output
    }

    /// The value of type `T` kept in this evaluation, if any (see
    /// [`insert`](Self::insert)).
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.extensions.get()
    }

    /// The value of type `T` kept in this evaluation, mutably.
    pub fn get_mut<T: Any>(&mut self) -> Option<&mut T> {
        self.extensions.get_mut()
    }

    /// Keeps `value` in this evaluation, replacing any other of its type:
    /// who is calling the host (the evaluation puts it here once), a
    /// runtime's state of the call (a Kubewarden module's waPC exchange).
    /// Host functions reach it through their `Caller`.
    pub fn insert(&mut self, value: Box<dyn Any + Send>) {
        self.extensions.insert(value);
    }
}

/// Values of any type, at most one of each: what the layers above keep in an
/// evaluation's store. One or two per evaluation, so a list searched by type
/// beats a map.
#[derive(Default)]
struct Extensions(Vec<Box<dyn Any + Send>>);

impl Extensions {
    fn get<T: Any>(&self) -> Option<&T> {
        self.0.iter().find_map(|value| value.downcast_ref())
    }

    fn get_mut<T: Any>(&mut self) -> Option<&mut T> {
        self.0.iter_mut().find_map(|value| value.downcast_mut())
    }

    fn insert(&mut self, value: Box<dyn Any + Send>) {
        // `type_id` of the value inside the box, not of the box.
        let id = (*value).type_id();
        self.0.retain(|kept| (**kept).type_id() != id);
        self.0.push(value);
    }
}

/// The linkers one engine's policies are pre-linked with: components'
/// imports, and core modules' imports. Made with the WASI of the store's
/// context (preview 2 for components; all of preview 1 for core modules, as
/// Kubewarden links it, so any preview1 import resolves), which grants
/// nothing (`new_store`); the engine then adds each runtime's and each
/// capability's own imports.
pub struct Linkers {
    /// What components import.
    pub components: wasmtime::component::Linker<EvaluationState>,
    /// What core modules import.
    pub modules: wasmtime::Linker<EvaluationState>,
}

impl Linkers {
    /// Linkers for `engine`, with WASI.
    pub fn new(engine: &wasmtime::Engine) -> wasmtime::Result<Self> {
        let mut components = wasmtime::component::Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut components)?;
        let mut modules = wasmtime::Linker::new(engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut modules, |state: &mut EvaluationState| {
            &mut state.wasi
        })?;
        Ok(Self {
            components,
            modules,
        })
    }

    /// The engine they link for.
    pub fn engine(&self) -> &wasmtime::Engine {
        self.components.engine()
    }
}

/// What a policy's standard streams and arguments are.
pub(crate) enum GuestIo {
    /// No stdin, no arguments; stdout and stderr are captured for the log.
    Log,
    /// A command (a Kubewarden WASI-mode policy): arguments, a stdin the
    /// host can append to, stdout captured apart (it holds the response),
    /// stderr captured for the log.
    Command {
        /// `argv`, program name first.
        args: Vec<String>,
        /// The policy's stdin.
        stdin: StdinPipe,
        /// Where its stdout goes.
        stdout: GuestOutput,
    },
}

/// Creates the store for one evaluation with `limits` applied.
///
/// The WASI context grants nothing: no preopened directories, no
/// environment, no address the sockets API may reach, and (unless `io` is a
/// command's) no arguments and no stdin. Output goes to bounded in-memory
/// buffers.
pub(crate) fn new_store(
    engine: &wasmtime::Engine,
    limits: &Limits,
    deadline: Instant,
    io: GuestIo,
) -> Store<EvaluationState> {
    new_store_with(engine, limits, deadline, io, |_| {})
}

/// [`new_store`], with `configure` given the WASI context's builder last: an
/// interpreter's `init` gets deterministic randomness and stopped clocks
/// there, so the snapshot taken after it is a function of its inputs.
pub(crate) fn new_store_with(
    engine: &wasmtime::Engine,
    limits: &Limits,
    deadline: Instant,
    io: GuestIo,
    configure: impl FnOnce(&mut WasiCtxBuilder),
) -> Store<EvaluationState> {
    let output = GuestOutput::for_log(limits.log_bytes, limits.log_lines);
    let mut builder = WasiCtx::builder();
    builder
        .stderr(output.clone())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    match io {
        GuestIo::Log => {
            builder.stdout(output.clone());
        }
        GuestIo::Command {
            args,
            stdin,
            stdout,
        } => {
            builder.args(&args).stdin(stdin).stdout(stdout);
        }
    }
    configure(&mut builder);
    let state = EvaluationState {
        wasi: builder.build_p1(),
        limiter: EvaluationLimiter::new(limits),
        output,
        extensions: Extensions::default(),
    };
    let mut store = Store::new(engine, state);
    store.limiter(|state| &mut state.limiter);
    // At every epoch tick running wasm checks the deadline itself (so a
    // spinning policy stops on time even on a busy executor), then yields so
    // other tasks run. Time blocked in host calls is bounded by the caller's
    // tokio timeout, which drops the evaluation.
    store.epoch_deadline_callback(move |_| {
        Ok(if Instant::now() >= deadline {
            UpdateDeadline::Interrupt
        } else {
            UpdateDeadline::Yield(1)
        })
    });
    store.set_epoch_deadline(1);
    store
}

/// A bounded capture of a guest's stdout and stderr: in bytes, and for the
/// log in lines too (each becomes a log record, which costs far more than
/// its bytes).
///
/// Writes beyond the bound are accepted and dropped, so a chatty policy loses
/// log lines, not its verdict; [`GuestOutput::truncated`] says it happened.
#[derive(Clone)]
pub(crate) struct GuestOutput {
    inner: Arc<Mutex<Captured>>,
}

struct Captured {
    bytes: Vec<u8>,
    events: Vec<(tracing::Level, String)>,
    limit: usize,
    /// Lines that may still be kept (each ends at a newline, or is a log
    /// call's line).
    lines_left: usize,
    written: usize,
    truncated: bool,
}

impl GuestOutput {
    /// A capture that keeps at most `limit` bytes.
    pub(crate) fn new(limit: usize) -> Self {
        Self::for_log(limit, usize::MAX)
    }

    /// A capture for the log: at most `limit` bytes in at most `lines` lines.
    pub(crate) fn for_log(limit: usize, lines: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Captured {
                bytes: Vec::new(),
                events: Vec::new(),
                limit,
                lines_left: lines,
                written: 0,
                truncated: false,
            })),
        }
    }

    /// The captured lines, lossily decoded as UTF-8.
    pub(crate) fn lines(&self) -> Vec<String> {
        let captured = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&captured.bytes)
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Everything captured, and whether more was written than kept.
    pub(crate) fn take(&self) -> (Vec<u8>, bool) {
        let mut captured = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        (std::mem::take(&mut captured.bytes), captured.truncated)
    }

    /// Bytes written, kept or not.
    pub(crate) fn written(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).written
    }

    /// Keeps one log line the policy sent through a host call (Kubewarden's
    /// `tracing/log`), under the same bound as its stdout and stderr.
    pub(crate) fn push_event(&self, level: tracing::Level, line: String) {
        let mut captured = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if captured.bytes.len() + line.len() > captured.limit || captured.lines_left == 0 {
            captured.truncated = true;
            return;
        }
        captured.lines_left -= 1;
        // Counted against the bound with the stream bytes, kept apart so
        // each line is re-emitted at its own level.
        captured.limit -= line.len();
        captured.events.push((level, line));
    }

    /// The log lines sent through host calls, with their levels.
    pub(crate) fn events(&self) -> Vec<(tracing::Level, String)> {
        let captured = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        captured.events.clone()
    }

    /// Whether output was dropped because it exceeded the bound.
    pub(crate) fn truncated(&self) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .truncated
    }
}

impl Captured {
    /// How much of `bytes` fits in the lines left, counting them off: up to
    /// and including the newline that ends the last line allowed.
    fn take_lines(&mut self, bytes: &[u8]) -> usize {
        if self.lines_left == 0 {
            return 0;
        }
        for (at, _) in bytes.iter().enumerate().filter(|(_, b)| **b == b'\n') {
            self.lines_left -= 1;
            if self.lines_left == 0 {
                return at + 1;
            }
        }
        bytes.len()
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut captured = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let room = captured.limit.saturating_sub(captured.bytes.len());
        let kept = buf.len().min(room);
        let kept = captured.take_lines(&buf[..kept]);
        captured.bytes.extend_from_slice(&buf[..kept]);
        captured.written = captured.written.saturating_add(buf.len());
        captured.truncated |= kept < buf.len();
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt as _;

    use super::{Extensions, GuestOutput};

    #[test]
    fn one_value_of_each_type_is_kept_and_found_by_its_type() {
        let mut extensions = Extensions::default();
        assert_eq!(extensions.get::<u32>(), None);
        extensions.insert(Box::new(1u32));
        extensions.insert(Box::new("caller"));
        extensions.insert(Box::new(2u32));
        assert_eq!(extensions.get::<u32>(), Some(&2));
        assert_eq!(extensions.get::<&str>(), Some(&"caller"));
        *extensions.get_mut::<u32>().unwrap() += 1;
        assert_eq!(extensions.get::<u32>(), Some(&3));
        assert_eq!(extensions.0.len(), 2);
        assert_eq!(extensions.get::<u64>(), None);
    }

    #[tokio::test]
    async fn the_log_capture_keeps_whole_lines_up_to_its_count() {
        let output = GuestOutput::for_log(1 << 10, 3);
        let mut writer = output.clone();
        writer.write_all(b"one\ntwo\nthr").await.unwrap();
        writer.write_all(b"ee\nfour\nfive\n").await.unwrap();
        output.push_event(tracing::Level::INFO, "six".into());
        assert_eq!(output.lines(), ["one", "two", "three"]);
        assert!(output.events().is_empty());
        assert!(output.truncated());
        assert_eq!(output.written(), 24);
    }
}

/// A policy's stdin: bytes the host put there and the policy has not read.
///
/// Reading it when it is empty is end-of-file, but not for good: a
/// Kubewarden WASI-mode policy reads its request to EOF, then each host
/// call's answer is appended and read to EOF in turn. (wasmtime's
/// `MemoryInputPipe` cannot be appended to.)
#[derive(Clone, Default)]
pub(crate) struct StdinPipe {
    buffer: Arc<Mutex<VecDeque<u8>>>,
}

impl StdinPipe {
    /// A pipe holding `bytes` (taken over, not copied).
    pub(crate) fn new(bytes: Vec<u8>) -> Self {
        Self {
            buffer: Arc::new(Mutex::new(VecDeque::from(bytes))),
        }
    }

    /// Appends `bytes` for the policy to read.
    pub(crate) fn append(&self, bytes: &[u8]) {
        self.buffer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(bytes);
    }

    fn take(&self, size: usize) -> Vec<u8> {
        let mut buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        let size = size.min(buffer.len());
        buffer.drain(..size).collect()
    }
}

impl IsTerminal for StdinPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdinStream for StdinPipe {
    fn p2_stream(&self) -> Box<dyn InputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncRead + Send + Sync> {
        Box::new(self.clone())
    }
}

impl InputStream for StdinPipe {
    fn read(&mut self, size: usize) -> StreamResult<bytes::Bytes> {
        let read = self.take(size);
        if read.is_empty() && size > 0 {
            // preview1's fd_read turns this into a 0-byte read: end of file.
            return Err(StreamError::Closed);
        }
        Ok(read.into())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for StdinPipe {
    async fn ready(&mut self) {}
}

impl AsyncRead for StdinPipe {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let read = self.take(buf.remaining());
        buf.put_slice(&read);
        Poll::Ready(Ok(()))
    }
}
