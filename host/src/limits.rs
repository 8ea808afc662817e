//! Resource limits: what one evaluation may use, and how many may run at once.
//!
//! The numbers here bound a policy's memory, stack, output and time. The pool
//! sizes bound how many instances can exist at the same time; they are the
//! back-pressure point of the whole host.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use wasmtime::ResourceLimiter;

/// Per-evaluation limits and pool sizing for an [`Engine`](crate::Engine).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Wall-clock budget of one evaluation: wasm execution *and* time blocked
    /// in host calls. A policy may override it with a shorter or longer value.
    pub timeout: Duration,
    /// Largest linear memory one instance may grow to, in bytes.
    pub memory_bytes: usize,
    /// Largest table one instance may grow to, in elements.
    pub table_elements: usize,
    /// Native stack wasm code may use, in bytes; deeper recursion traps.
    pub stack_bytes: usize,
    /// Core instances one evaluation may create (a Rust policy needs 1-4, a
    /// componentize-py one 14); more fails the instantiation.
    pub instances: usize,
    /// Bytes of guest output (stderr and stdout) kept per evaluation for the
    /// log; the rest is dropped.
    pub log_bytes: usize,
    /// Lines of guest output (and log calls) kept per evaluation for the
    /// log; the rest is dropped.
    pub log_lines: usize,
    /// Largest response a policy may return (message, warnings, annotations
    /// and mutated object together), in bytes; more is an evaluation error.
    pub response_bytes: usize,
    /// Instances that may be alive at once across the whole process.
    /// Instantiating beyond this fails fast instead of allocating more.
    pub max_instances: u32,
    /// Per linear memory, how many bytes of the pages an evaluation dirtied a
    /// pool slot restores in place and keeps resident, instead of `madvise`-ing
    /// them away (the rest, past this budget, still is): an evaluation that
    /// dirties less costs no `madvise` and leaves no page faults for the next
    /// one in the slot. Faster evaluations (BENCHMARKS.md §3: 64 KiB, the
    /// default, covers the example Rust policies) for memory that grows with
    /// the number of slots in use, i.e. with the workers; 0 keeps memory flat
    /// in the workers.
    pub keep_resident_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(2),
            memory_bytes: 256 << 20,
            table_elements: 100_000,
            stack_bytes: 1 << 20,
            instances: 32,
            log_bytes: 64 << 10,
            log_lines: 100,
            response_bytes: 8 << 20,
            max_instances: 256,
            keep_resident_bytes: 64 << 10,
        }
    }
}

impl Limits {
    /// These limits with a policy's `overrides` applied. A policy may lower
    /// any limit, and raise all but memory and table size beyond the engine's,
    /// which are ceilings of the instance pool.
    pub fn with_overrides(&self, overrides: &LimitOverrides) -> Result<Limits, String> {
        let mut limits = self.clone();
        if let Some(timeout) = overrides.timeout {
            limits.timeout = timeout;
        }
        if let Some(memory) = overrides.memory_bytes {
            if memory > self.memory_bytes {
                return Err(format!(
                    "memoryLimitBytes {memory} is above the server's limit of {} bytes",
                    self.memory_bytes
                ));
            }
            limits.memory_bytes = memory;
        }
        if let Some(elements) = overrides.table_elements {
            if elements > self.table_elements {
                return Err(format!(
                    "tableElements {elements} is above the server's limit of {}",
                    self.table_elements
                ));
            }
            limits.table_elements = elements;
        }
        if let Some(stack) = overrides.stack_bytes {
            if !(64 << 10..=64 << 20).contains(&stack) {
                return Err(format!(
                    "stackBytes {stack} is outside 65536..=67108864 (64 KiB to 64 MiB)"
                ));
            }
            limits.stack_bytes = stack;
        }
        if let Some(instances) = overrides.instances {
            if instances > self.instances {
                return Err(format!(
                    "maxInstances {instances} is above the server's limit of {}",
                    self.instances
                ));
            }
            limits.instances = instances;
        }
        if let Some(bytes) = overrides.response_bytes {
            limits.response_bytes = bytes;
        }
        if let Some(bytes) = overrides.log_bytes {
            limits.log_bytes = bytes;
        }
        Ok(limits)
    }
}

/// Per-policy replacements for some [`Limits`]; `None` keeps the engine's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimitOverrides {
    /// Replaces [`Limits::timeout`].
    pub timeout: Option<Duration>,
    /// Replaces [`Limits::memory_bytes`] (at most the engine's).
    pub memory_bytes: Option<usize>,
    /// Replaces [`Limits::table_elements`] (at most the engine's).
    pub table_elements: Option<usize>,
    /// Replaces [`Limits::stack_bytes`] (the policy then runs on an engine
    /// of its own, see [`Engine::with_stack`](crate::Engine::with_stack)).
    pub stack_bytes: Option<usize>,
    /// Replaces [`Limits::instances`] (at most the engine's).
    pub instances: Option<usize>,
    /// Replaces [`Limits::response_bytes`].
    pub response_bytes: Option<usize>,
    /// Replaces [`Limits::log_bytes`].
    pub log_bytes: Option<usize>,
}

tokio::task_local! {
    /// Where the evaluation being polled records its memory (see [`metered`]).
    static MEMORY: Arc<AtomicUsize>;
}

/// Runs `poll`, one poll of an evaluation, recording in `peak` the most
/// linear memory (all its instances' together) the evaluation has held:
/// what whoever schedules evaluations needs to budget memory. Outside of
/// it, nothing is recorded.
pub fn metered<R>(peak: &Arc<AtomicUsize>, poll: impl FnOnce() -> R) -> R {
    MEMORY.sync_scope(Arc::clone(peak), poll)
}

/// The [`ResourceLimiter`] of one evaluation's store.
///
/// Unlike `wasmtime::StoreLimits`, it remembers that it refused to grow a
/// memory, so a trap that follows (a Rust guest aborts when allocation fails)
/// can be reported as "out of memory" instead of a bare `unreachable`.
#[derive(Debug)]
pub(crate) struct EvaluationLimiter {
    memory_bytes: usize,
    table_elements: usize,
    instances: usize,
    memory_refused: bool,
    /// Bytes of linear memory, all the store's memories together.
    memory_held: usize,
}

impl EvaluationLimiter {
    pub(crate) fn new(limits: &Limits) -> Self {
        Self {
            memory_bytes: limits.memory_bytes,
            table_elements: limits.table_elements,
            instances: limits.instances,
            memory_refused: false,
            memory_held: 0,
        }
    }

    /// Whether a `memory.grow` was refused during this evaluation.
    pub(crate) fn memory_refused(&self) -> bool {
        self.memory_refused
    }
}

impl ResourceLimiter for EvaluationLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = desired <= self.memory_bytes && maximum.is_none_or(|max| desired <= max);
        self.memory_refused |= !allowed;
        if allowed {
            // Called for a memory's creation too (from 0).
            self.memory_held += desired.saturating_sub(current);
            let _ = MEMORY.try_with(|peak| peak.fetch_max(self.memory_held, Ordering::Relaxed));
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.table_elements && maximum.is_none_or(|max| desired <= max))
    }

    fn instances(&self) -> usize {
        self.instances
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_metered_poll_records_the_most_memory_held() {
        let mut limiter = EvaluationLimiter::new(&Limits::default());
        let peak = Arc::new(AtomicUsize::new(0));
        metered(&peak, || {
            // Two memories created, then one grown.
            limiter.memory_growing(0, 1 << 20, None).unwrap();
            limiter.memory_growing(0, 2 << 20, None).unwrap();
            limiter.memory_growing(1 << 20, 4 << 20, None).unwrap();
            // Refused: nothing recorded.
            limiter.memory_growing(4 << 20, 1 << 40, None).unwrap();
        });
        assert_eq!(peak.load(Ordering::Relaxed), 6 << 20);
        // Outside a metered poll, nothing is.
        limiter.memory_growing(2 << 20, 3 << 20, None).unwrap();
        assert_eq!(peak.load(Ordering::Relaxed), 6 << 20);
    }
}
