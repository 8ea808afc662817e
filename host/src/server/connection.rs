//! One connection's state, shared by its task, its requests ([`Exchange`]s)
//! and the listener: what it is waiting for, when it last made progress,
//! what it still has to write, and the signals that end it.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::budget::{Budget, Reservation};
use super::exchange::{Exchange, ExchangeGuard};

/// Milliseconds on a listener's clock (since its start), plus one: zero
/// means "never" in the fields that may be unset.
pub(super) type Millis = u64;

/// A listener's clock.
#[derive(Debug, Clone, Copy)]
pub(super) struct Clock(Instant);

impl Clock {
    pub(super) fn new() -> Self {
        Self(Instant::now())
    }

    /// Now, in [`Millis`] (never zero).
    pub(super) fn now(&self) -> Millis {
        u64::try_from(self.0.elapsed().as_millis())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }

    /// How long ago `then` was (zero for "never").
    pub(super) fn since(&self, then: Millis) -> Duration {
        if then == 0 {
            return Duration::ZERO;
        }
        Duration::from_millis(self.now().saturating_sub(then))
    }
}

/// The state of one connection that its requests and the listener share.
#[derive(Debug)]
pub struct Connection {
    pub(super) clock: Clock,
    /// Requests started on it so far.
    requests: AtomicU64,
    /// Requests finished (answered, refused or shed).
    completed: AtomicU64,
    /// Requests the server is working on: parsing, queued, evaluating.
    serving: AtomicUsize,
    /// Requests waiting on the client: for the rest of a body, or for it to
    /// take an answer.
    owing: AtomicUsize,
    /// When the client last moved a request forward (or the connection
    /// opened, or a request ended).
    progress_at: AtomicU64,
    closing: AtomicBool,
    close: Notify,
    aborting: AtomicBool,
    abort: Notify,
    body_budget: Budget,
    server_budget: Budget,
    pub(super) exchanges: Mutex<Vec<Arc<Exchange>>>,
    /// Bytes of answers handed to the HTTP layer and not yet written to the
    /// socket (`unsent` mirrors what `pot` holds, readable without a lock).
    unsent: AtomicUsize,
    pot: Mutex<Reservation>,
    /// Since when writing to the socket has been blocked (the client does
    /// not read), or zero.
    write_blocked_at: AtomicU64,
}

impl Connection {
    pub(super) fn new(clock: Clock, body_budget: Budget, server_budget: Budget) -> Self {
        let pot = Reservation::new(server_budget.clone(), body_budget.clone());
        Self {
            clock,
            requests: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            serving: AtomicUsize::new(0),
            owing: AtomicUsize::new(0),
            progress_at: AtomicU64::new(clock.now()),
            closing: AtomicBool::new(false),
            close: Notify::new(),
            aborting: AtomicBool::new(false),
            abort: Notify::new(),
            body_budget,
            server_budget,
            exchanges: Mutex::new(Vec::new()),
            unsent: AtomicUsize::new(0),
            pot: Mutex::new(pot),
            write_blocked_at: AtomicU64::new(0),
        }
    }

    /// Requests in flight now (from their head to their answer written).
    pub fn in_flight(&self) -> usize {
        self.serving.load(Ordering::Acquire) + self.owing.load(Ordering::Acquire)
    }

    /// Requests the server is working on now.
    pub fn serving(&self) -> usize {
        self.serving.load(Ordering::Acquire)
    }

    /// Whether a request has started on it yet.
    pub fn has_had_requests(&self) -> bool {
        self.requests.load(Ordering::Acquire) > 0
    }

    /// What its client owes the server, most shed-worthy first: part of a
    /// request (the rest of a body, taking an answer), then its first
    /// request (never having finished one), then nothing (idle between
    /// requests, or the server is working for it).
    pub fn owes(&self) -> Owes {
        if self.owing.load(Ordering::Acquire) > 0 || self.unsent.load(Ordering::Acquire) > 0 {
            Owes::Request
        } else if self.completed.load(Ordering::Acquire) == 0 && self.serving() == 0 {
            Owes::FirstRequest
        } else {
            Owes::Nothing
        }
    }

    /// When the client last made progress.
    pub(super) fn progress_at(&self) -> Millis {
        self.progress_at.load(Ordering::Acquire)
    }

    pub(super) fn progressed(&self, at: Millis) {
        self.progress_at.fetch_max(at, Ordering::AcqRel);
    }

    /// How long it has been without a request in flight (zero while one is).
    pub fn idle_for(&self) -> Duration {
        if self.in_flight() > 0 {
            return Duration::ZERO;
        }
        self.clock.since(self.progress_at())
    }

    /// Starts a request: in flight until the guard is dropped.
    pub fn exchange(self: &Arc<Self>) -> ExchangeGuard {
        self.requests.fetch_add(1, Ordering::AcqRel);
        ExchangeGuard::start(Arc::clone(self))
    }

    /// Moves the count of requests in one phase to another.
    pub(super) fn count(&self, from: Option<Waiting>, to: Option<Waiting>) {
        let counter = |waiting| match waiting {
            Waiting::OnServer => &self.serving,
            Waiting::OnClient => &self.owing,
        };
        if let Some(to) = to {
            counter(to).fetch_add(1, Ordering::AcqRel);
        }
        if let Some(from) = from {
            counter(from).fetch_sub(1, Ordering::AcqRel);
        }
        if to.is_none() {
            self.completed.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// The budget for the requests of this connection.
    pub fn body_budget(&self) -> &Budget {
        &self.body_budget
    }

    /// The server's budget, which its requests draw on too.
    pub fn server_budget(&self) -> &Budget {
        &self.server_budget
    }

    /// Takes over `bytes` of `reservation`: answer bytes handed to the HTTP
    /// layer, held until the socket has taken as many.
    pub(super) fn hand_off(&self, reservation: &mut Reservation, bytes: usize) {
        let mut pot = self.lock_pot();
        let moved = reservation.move_into(&mut pot, bytes);
        self.unsent.fetch_add(moved, Ordering::AcqRel);
    }

    /// `bytes` were written to the socket.
    pub(super) fn wrote(&self, bytes: usize) {
        if self.write_blocked_at.load(Ordering::Relaxed) != 0 {
            self.write_blocked_at.store(0, Ordering::Release);
        }
        if bytes == 0 || self.unsent.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut pot = self.lock_pot();
        let left = pot.held().saturating_sub(bytes);
        pot.shrink_to(left);
        self.unsent.store(left, Ordering::Release);
        self.progressed(self.clock.now());
    }

    /// Writing to the socket would block.
    pub(super) fn write_blocked(&self) {
        let _ = self.write_blocked_at.compare_exchange(
            0,
            self.clock.now(),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// Bytes handed to the HTTP layer not yet written.
    pub(super) fn unsent(&self) -> usize {
        self.unsent.load(Ordering::Acquire)
    }

    /// How long writes have been blocked with answer bytes waiting (zero if
    /// they are not).
    pub(super) fn writes_stalled_for(&self) -> Duration {
        if self.unsent() == 0 {
            return Duration::ZERO;
        }
        self.clock
            .since(self.write_blocked_at.load(Ordering::Acquire))
    }

    /// Its answers waiting for the client to take them.
    pub(super) fn answers_waiting(&self) -> usize {
        self.lock_exchanges()
            .iter()
            .filter(|exchange| exchange.is_sending())
            .count()
    }

    /// The longest any of its answers has waited for the client to take it.
    pub(super) fn oldest_answer(&self) -> Duration {
        self.lock_exchanges()
            .iter()
            .filter_map(|exchange| exchange.sending_for())
            .max()
            .unwrap_or_default()
    }

    /// Asks the connection to close gracefully: requests in flight finish.
    pub fn close(&self) {
        self.closing.store(true, Ordering::Release);
        self.close.notify_one();
    }

    /// Whether it was asked to close or abort.
    pub fn closing(&self) -> bool {
        self.closing.load(Ordering::Acquire) || self.aborting()
    }

    /// Resolves when [`close`](Self::close) was called.
    pub async fn closed(&self) {
        self.close.notified().await;
    }

    /// Ends the connection at once, without finishing its requests: what a
    /// client that stalls gets.
    pub fn abort(&self) {
        self.aborting.store(true, Ordering::Release);
        self.abort.notify_one();
    }

    /// Whether it was asked to abort.
    pub fn aborting(&self) -> bool {
        self.aborting.load(Ordering::Acquire)
    }

    /// Resolves when [`abort`](Self::abort) was called.
    pub async fn aborted(&self) {
        self.abort.notified().await;
    }

    pub(super) fn lock_exchanges(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Exchange>>> {
        self.exchanges.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_pot(&self) -> std::sync::MutexGuard<'_, Reservation> {
        self.pot.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a client owes the server ([`Connection::owes`]), in the order
/// connections are shed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Owes {
    /// Part of a request in flight: the rest of its body, or taking its
    /// answer.
    Request,
    /// Its first request: it has not finished one yet.
    FirstRequest,
    /// Nothing.
    Nothing,
}

/// Whom a request in flight is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Waiting {
    /// The server: parsing, queueing, evaluating.
    OnServer,
    /// The client: the rest of its body, or taking its answer.
    OnClient,
}
