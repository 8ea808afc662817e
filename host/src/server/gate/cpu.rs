//! CPU slots: which of the admitted evaluations computes now.
//!
//! There is one slot per evaluation thread. An evaluation holds one only
//! while its future is being polled: running wasm returns to the executor at
//! every epoch tick ([`EPOCH_TICK`](crate::engine::EPOCH_TICK)), and a guest
//! sleeping, or a host call waiting on the network, returns `Pending`; each
//! time, [`Scheduled`](super::Scheduled) gives the slot back and queues for
//! one again before it is polled next. A slot freed goes to the waiting evaluation that has
//! used the least CPU so far (least attained service, the oldest first among
//! equals): a fresh request runs within one tick, however many long
//! evaluations are under way, and long evaluations share what is left.
//!
//! Long evaluations (over [`LONG`] of CPU) hold at most all slots but one
//! (with two or more): like the worker the gate used to keep for other
//! policies, the last slot waits for short work, so a fresh request
//! usually starts at once, and the threads serving HTTP keep a core while
//! policies spin on the others. The cost falls on evaluations that compute
//! for long, which admission policies do not: several of them at once share
//! one slot fewer.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::task::Waker;
use std::time::Duration;

/// The CPU slots of the evaluation runtime.
#[derive(Debug)]
pub(super) struct Cpu {
    state: Mutex<State>,
}

/// A place in line: CPU used so far, then arrival.
pub(super) type Key = (Duration, u64);

/// An evaluation that has computed this long is a long one. Admission
/// policies compute for well under a millisecond (a Python one, ~2 ms).
pub(super) const LONG: Duration = Duration::from_millis(10);

#[derive(Debug, Default)]
struct State {
    slots: usize,
    /// Slots held by long evaluations.
    long: usize,
    free: usize,
    /// Evaluations waiting for a slot, in the order they get one; the
    /// waker is absent until the evaluation was first polled.
    waiting: BTreeMap<Key, Option<Waker>>,
    /// Places in line that were given a slot they have not taken yet.
    granted: Vec<u64>,
    next: u64,
}

impl Cpu {
    /// `slots` evaluations computing at once.
    pub(super) fn new(slots: usize) -> Self {
        Self {
            state: Mutex::new(State {
                free: slots.max(1),
                slots: slots.max(1),
                ..State::default()
            }),
        }
    }

    /// Takes a free slot, or queues for one with `used` CPU time behind it.
    pub(super) fn take_or_queue(&self, used: Duration, waker: Option<&Waker>) -> Turn {
        let mut state = self.lock();
        let long = used >= LONG;
        if state.free > 0 && state.may_take(long) {
            state.free -= 1;
            state.long += usize::from(long);
            return Turn::Holding { long };
        }
        let key = (used, state.next);
        state.next += 1;
        state.waiting.insert(key, waker.cloned());
        Turn::Queued(key)
    }

    /// Whether the evaluation in line at `key` was given a slot; if not,
    /// `waker` is woken when it is.
    pub(super) fn granted(&self, key: Key, waker: &Waker) -> bool {
        let mut state = self.lock();
        if let Some(at) = state.granted.iter().position(|id| *id == key.1) {
            state.granted.swap_remove(at);
            return true;
        }
        if let Some(slot) = state.waiting.get_mut(&key)
            && !slot.as_ref().is_some_and(|w| w.will_wake(waker))
        {
            *slot = Some(waker.clone());
        }
        false
    }

    /// Gives a slot back: to the first in line, or to the free ones.
    pub(super) fn release(&self, was_long: bool) {
        let waker = {
            let mut state = self.lock();
            state.long -= usize::from(was_long);
            let first = state
                .waiting
                .first_key_value()
                .map(|(key, _)| key.0 >= LONG);
            match first {
                Some(long) if state.may_take(long) => {
                    let ((_, id), waker) = state.waiting.pop_first().expect("seen above");
                    state.granted.push(id);
                    state.long += usize::from(long);
                    waker
                }
                _ => {
                    state.free += 1;
                    None
                }
            }
        };
        // Woken from the thread that let go, the evaluation runs next there.
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Leaves the line at `key`; a slot given to it meanwhile is handed on.
    pub(super) fn leave(&self, key: Key) {
        let granted = {
            let mut state = self.lock();
            if state.waiting.remove(&key).is_some() {
                return;
            }
            match state.granted.iter().position(|id| *id == key.1) {
                Some(at) => {
                    state.granted.swap_remove(at);
                    true
                }
                None => false,
            }
        };
        if granted {
            self.release(key.0 >= LONG);
        }
    }

    /// Slots free now (for tests).
    #[cfg(test)]
    pub(super) fn free(&self) -> usize {
        self.lock().free
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    /// Whether an evaluation, `long` or not, may take a slot (if one is
    /// free): long ones hold all but one, so that a fresh request finds one
    /// at once rather than at the next tick, and the threads serving HTTP
    /// are not squeezed by spinning evaluations on every core.
    fn may_take(&self, long: bool) -> bool {
        !long || self.long + 1 < self.slots || self.slots == 1
    }
}

/// Where an evaluation stands with the CPU.
#[derive(Debug, Clone, Copy)]
pub(super) enum Turn {
    /// Neither holding a slot nor in line (between polls, or waiting on a
    /// timer or the network).
    Idle,
    /// In line.
    Queued(Key),
    /// Holding a slot; a long evaluation's counts against the long ones'.
    Holding { long: bool },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_evaluations_leave_one_slot_to_short_ones() {
        let cpu = Cpu::new(2);
        let long = || cpu.take_or_queue(LONG, None);
        assert!(matches!(long(), Turn::Holding { long: true }));
        let Turn::Queued(waiting) = long() else {
            panic!("a second long evaluation took the last slot");
        };
        assert_eq!(cpu.free(), 1, "kept for short work");
        assert!(matches!(
            cpu.take_or_queue(Duration::ZERO, None),
            Turn::Holding { long: false }
        ));
        // The short one ends: its slot is kept again, not given to the long one...
        cpu.release(false);
        assert_eq!(cpu.free(), 1);
        // ...which gets the slot of the long one that ends.
        cpu.release(true);
        assert_eq!(cpu.free(), 1);
        assert!(cpu.lock().granted.contains(&waiting.1));
    }

    #[test]
    fn with_one_slot_long_evaluations_take_it() {
        let cpu = Cpu::new(1);
        assert!(matches!(
            cpu.take_or_queue(LONG, None),
            Turn::Holding { long: true }
        ));
    }
}
