//! The state of one evaluation's `Store`: a WASI context that grants nothing,
//! the resource limiter, and the captured guest output.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use std::time::Instant;
use tokio::io::AsyncWrite;

use wasmtime::component::ResourceTable;
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::engine::Engine;
use crate::limits::{EvaluationLimiter, Limits};

/// Data owned by the `Store` of a single evaluation. Dropped with it.
pub struct EvaluationState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: EvaluationLimiter,
    output: GuestOutput,
}

impl WasiView for EvaluationState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
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
}

/// Creates the store for one evaluation with `limits` applied.
///
/// The WASI context is the empty default: no preopened directories, no
/// environment, no arguments, no address the sockets API may reach, no stdin.
/// stdout and stderr go to one bounded in-memory buffer.
pub(crate) fn new_store(
    engine: &Engine,
    limits: &Limits,
    deadline: Instant,
) -> Store<EvaluationState> {
    let output = GuestOutput::new(limits.log_bytes);
    let wasi = WasiCtx::builder()
        .stdout(output.clone())
        .stderr(output.clone())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build();
    let state = EvaluationState {
        wasi,
        table: ResourceTable::new(),
        limiter: EvaluationLimiter::new(limits),
        output,
    };
    let mut store = Store::new(engine.wasmtime(), state);
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

/// A bounded capture of a guest's stdout and stderr.
///
/// Writes beyond the bound are accepted and dropped, so a chatty policy loses
/// log lines, not its verdict; [`GuestOutput::truncated`] says it happened.
#[derive(Clone)]
pub(crate) struct GuestOutput {
    inner: Arc<Mutex<Captured>>,
}

struct Captured {
    bytes: Vec<u8>,
    limit: usize,
    truncated: bool,
}

impl GuestOutput {
    fn new(limit: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Captured {
                bytes: Vec::new(),
                limit,
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

    /// Whether output was dropped because it exceeded the bound.
    pub(crate) fn truncated(&self) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .truncated
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
        captured.bytes.extend_from_slice(&buf[..kept]);
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
