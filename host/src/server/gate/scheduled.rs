//! An evaluation run under its permit: polled only while it holds a CPU
//! slot (or once past its deadline, to end), and measured on the way — the
//! CPU it used, the time it spent blocked (on a timer, on the network), the
//! linear memory it held — so that its policy's share of the live
//! evaluations follows what its evaluations use.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use futures::task::AtomicWaker;

use super::Permit;
use super::cpu::{Cpu, LONG, Turn};

/// What an evaluation used, reported to its permit when it ends.
#[derive(Debug, Clone, Copy)]
pub(super) struct Usage {
    /// Time being polled.
    pub(super) cpu: Duration,
    /// Time it could not have run: waiting on a timer or the network (not
    /// for a slot, nor in the runtime's queue).
    pub(super) blocked: Duration,
    /// The most linear memory it held, in bytes.
    pub(super) memory: usize,
}

/// An evaluation future run under its [`Permit`]: it computes only while
/// holding a CPU slot, and its permit (its place among the live
/// evaluations) is let go when it ends or is dropped.
#[must_use = "futures do nothing unless polled"]
pub struct Scheduled<F: Future> {
    // Boxed so that the wrapper is Unpin; one allocation per evaluation,
    // beside the store's many.
    evaluation: Pin<Box<F>>,
    permit: Option<Permit>,
    cpu: Arc<Cpu>,
    turn: Turn,
    timeout: Duration,
    /// Set at the first poll.
    deadline: Option<Instant>,
    meter: Meter,
}

impl<F: Future> Scheduled<F> {
    /// Queues `evaluation` for its first slot now, before it reaches the
    /// runtime: unpolled, it goes before every evaluation that has run.
    pub(super) fn new(permit: Permit, cpu: Arc<Cpu>, timeout: Duration, evaluation: F) -> Self {
        let turn = cpu.take_or_queue(Duration::ZERO, None);
        Self {
            evaluation: Box::pin(evaluation),
            permit: Some(permit),
            cpu,
            turn,
            timeout,
            deadline: None,
            meter: Meter::new(),
        }
    }

    /// Whether the evaluation may compute now: holding a slot, or past its
    /// deadline (polled without a slot, it ends at once: at its next epoch
    /// check, or its timeout drops the host call it waits in).
    fn ready(&mut self, waker: &Waker, now: Instant) -> bool {
        let overdue = self.deadline.is_some_and(|deadline| now >= deadline);
        match self.turn {
            Turn::Holding { .. } => true,
            Turn::Queued(key) => {
                if self.cpu.granted(key, waker) {
                    self.turn = Turn::Holding {
                        long: key.0 >= LONG,
                    };
                } else if overdue {
                    self.cpu.leave(key);
                    self.turn = Turn::Idle;
                } else {
                    return false;
                }
                true
            }
            Turn::Idle if overdue => true,
            Turn::Idle => {
                self.turn = self.cpu.take_or_queue(self.meter.cpu, Some(waker));
                matches!(self.turn, Turn::Holding { .. })
            }
        }
    }
}

impl<F: Future> Future for Scheduled<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        // Whatever wakes the evaluation wakes this task, queued or not: at
        // its deadline, a queued evaluation must get to end.
        this.meter.wakeup.task.register(cx.waker());
        let now = Instant::now();
        if !this.ready(cx.waker(), now) {
            return Poll::Pending;
        }
        this.deadline.get_or_insert(now + this.timeout);
        let polled = this.meter.poll(now, this.evaluation.as_mut());
        if let Turn::Holding { long } = this.turn {
            this.turn = Turn::Idle;
            this.cpu.release(long);
        }
        if polled.is_ready()
            && let Some(permit) = this.permit.take()
        {
            permit.finished(this.meter.usage());
        }
        polled
    }
}

impl<F: Future> Drop for Scheduled<F> {
    fn drop(&mut self) {
        match self.turn {
            Turn::Idle => {}
            Turn::Queued(key) => self.cpu.leave(key),
            Turn::Holding { long } => self.cpu.release(long),
        }
    }
}

/// Measures an evaluation's polls.
struct Meter {
    wakeup: Arc<Wakeup>,
    /// Wakes `wakeup`: what the evaluation is polled with.
    waker: Waker,
    memory: Arc<AtomicUsize>,
    cpu: Duration,
    blocked: Duration,
    /// When its last poll ended.
    last: Option<Instant>,
}

impl Meter {
    fn new() -> Self {
        let wakeup = Arc::new(Wakeup {
            task: AtomicWaker::new(),
            woken: AtomicU64::new(0),
            since: Instant::now(),
        });
        Self {
            waker: Waker::from(Arc::clone(&wakeup)),
            wakeup,
            memory: Arc::new(AtomicUsize::new(0)),
            cpu: Duration::ZERO,
            blocked: Duration::ZERO,
            last: None,
        }
    }

    /// Polls `evaluation`, which may run since `now`.
    fn poll<F: Future>(&mut self, now: Instant, evaluation: Pin<&mut F>) -> Poll<F::Output> {
        // Blocked from the end of the last poll until it was woken; woken
        // during that poll (wasm yielding at a tick), it was never blocked.
        let woken = self.wakeup.woken.swap(0, Ordering::Relaxed);
        if let Some(last) = self.last {
            let runnable = match woken {
                0 => now,
                at => (self.wakeup.since + Duration::from_nanos(at - 1)).clamp(last, now),
            };
            self.blocked += runnable - last;
        }
        let polled = crate::limits::metered(&self.memory, || {
            evaluation.poll(&mut Context::from_waker(&self.waker))
        });
        let end = Instant::now();
        self.cpu += end - now;
        self.last = Some(end);
        polled
    }

    fn usage(&self) -> Usage {
        Usage {
            cpu: self.cpu,
            blocked: self.blocked,
            memory: self.memory.load(Ordering::Relaxed),
        }
    }
}

/// The waker an evaluation is polled with: notes when it is woken, then
/// wakes its task.
struct Wakeup {
    task: AtomicWaker,
    /// Nanoseconds from `since` to the first wake since the last poll, plus
    /// one; 0: not woken since.
    woken: AtomicU64,
    since: Instant,
}

impl Wake for Wakeup {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let at = u64::try_from(self.since.elapsed().as_nanos()).unwrap_or(u64::MAX - 1) + 1;
        let _ = self
            .woken
            .compare_exchange(0, at, Ordering::Relaxed, Ordering::Relaxed);
        self.task.wake();
    }
}
