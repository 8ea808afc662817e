//! One request's passage through a connection, from its head to its answer
//! written: whom it waits for, how fast the client moves it, and the bytes
//! it holds from the budgets all along (its body, then the request parsed
//! from it, then its answer, resized).
//!
//! While a request waits on the client — for the rest of its body, or for
//! the client to take its answer — the client *owes* the server. It makes
//! *progress* each time another [`QUANTUM`] of bytes moves (or the rest of
//! the body or answer, if less); a request that has made none for a while
//! is *stalled*, and when the server runs out of room (connections, bytes)
//! the longest stalled make room first (see `connections`). Counting
//! progress in quanta, not bytes, is what makes a client that trickles a
//! byte at a time stalled too.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::budget::{Claim, Exhausted, Reservation};
use super::connection::{Connection, Millis, Waiting};

/// Bytes a body or an answer must move to count as progress.
pub const QUANTUM: usize = 16 << 10;

const SERVING: u8 = 0;
const RECEIVING: u8 = 1;
const SENDING: u8 = 2;
/// Its guard was dropped: no phase any more.
const FINISHED: u8 = 3;

fn waiting(phase: u8) -> Waiting {
    if phase == SERVING {
        Waiting::OnServer
    } else {
        Waiting::OnClient
    }
}

/// The state of one request in flight.
#[derive(Debug)]
pub struct Exchange {
    connection: Arc<Connection>,
    phase: AtomicU8,
    /// When the current phase began.
    phase_at: AtomicU64,
    /// Bytes moved in this phase, and how many had moved at the last
    /// progress, and when that was.
    moved: AtomicUsize,
    mark_bytes: AtomicUsize,
    mark_at: AtomicU64,
    reservation: Mutex<Reservation>,
    /// What `reservation` holds, readable without its lock.
    held: AtomicUsize,
    shed: AtomicBool,
    shed_signal: Notify,
}

impl Exchange {
    /// The connection it came on.
    pub fn connection(&self) -> &Arc<Connection> {
        &self.connection
    }

    /// Its body is being read: the client owes the rest.
    pub fn receiving(&self) {
        self.set_phase(RECEIVING);
    }

    /// Its body is complete: the server is working on it.
    pub fn serving(&self) {
        self.set_phase(SERVING);
    }

    /// Its answer is ready: the client owes taking it.
    pub(super) fn sending(&self) {
        self.set_phase(SENDING);
    }

    fn set_phase(&self, phase: u8) {
        let now = self.connection.clock.now();
        self.phase_at.store(now, Ordering::Release);
        self.mark_at.store(now, Ordering::Release);
        self.moved.store(0, Ordering::Release);
        self.mark_bytes.store(0, Ordering::Release);
        let before = self.phase.swap(phase, Ordering::AcqRel);
        if before == FINISHED {
            // A late call after the request ended: it counts nowhere.
            self.phase.store(FINISHED, Ordering::Release);
            return;
        }
        if before != phase {
            self.connection
                .count(Some(waiting(before)), Some(waiting(phase)));
        }
        self.connection.progressed(now);
    }

    /// The client moved `bytes` of its body or answer; `done`: all of it.
    pub fn moved(&self, bytes: usize, done: bool) {
        let moved = self.moved.fetch_add(bytes, Ordering::AcqRel) + bytes;
        if done || moved - self.mark_bytes.load(Ordering::Acquire) >= QUANTUM {
            self.mark_bytes.store(moved, Ordering::Release);
            let now = self.connection.clock.now();
            self.mark_at.store(now, Ordering::Release);
            self.connection.progressed(now);
        }
    }

    /// How long the client has made no progress on it (`None` while the
    /// server is working on it).
    pub fn stalled_for(&self) -> Option<Duration> {
        matches!(self.phase.load(Ordering::Acquire), RECEIVING | SENDING)
            .then(|| self.connection.clock.since(self.mark_at()))
    }

    fn mark_at(&self) -> Millis {
        self.mark_at.load(Ordering::Acquire)
    }

    /// How long its answer has waited for the client to take it (`None`
    /// before it is ready).
    pub fn sending_for(&self) -> Option<Duration> {
        (self.phase.load(Ordering::Acquire) == SENDING).then(|| {
            self.connection
                .clock
                .since(self.phase_at.load(Ordering::Acquire))
        })
    }

    /// Whether its answer is ready (and not yet all taken).
    pub fn is_sending(&self) -> bool {
        self.phase.load(Ordering::Acquire) == SENDING
    }

    /// Bytes it holds from the budgets.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }

    /// Holds `bytes` more, or nothing.
    pub fn grow(&self, bytes: usize) -> Result<(), Exhausted> {
        self.grow_claimed(bytes, None)
    }

    /// [`grow`](Self::grow), using `claim` too.
    pub fn grow_claimed(&self, bytes: usize, claim: Option<&Claim>) -> Result<(), Exhausted> {
        let mut reservation = self.lock();
        let grown = reservation.grow(bytes, claim);
        self.held.store(reservation.held(), Ordering::Release);
        grown
    }

    /// Gives back what it holds beyond `bytes`.
    pub fn shrink_to(&self, bytes: usize) {
        let mut reservation = self.lock();
        reservation.shrink_to(bytes);
        self.held.store(reservation.held(), Ordering::Release);
    }

    /// Hands `bytes` of what it holds to the connection, which holds them
    /// until the socket has taken as many (answer bytes now in the HTTP
    /// layer's buffers).
    pub(super) fn hand_off(&self, bytes: usize) {
        if self.held() == 0 {
            return;
        }
        let mut reservation = self.lock();
        self.connection.hand_off(&mut reservation, bytes);
        self.held.store(reservation.held(), Ordering::Release);
    }

    /// Tells whoever reads its body to give up (and give back what it
    /// holds); false if it was shed already.
    pub fn shed(&self) -> bool {
        if self.shed.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.shed_signal.notify_one();
        true
    }

    /// Whether it was shed.
    pub fn is_shed(&self) -> bool {
        self.shed.load(Ordering::Acquire)
    }

    /// Resolves once it is shed.
    pub async fn shed_signalled(&self) {
        self.shed_signal.notified().await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Reservation> {
        self.reservation.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A request in flight on its connection until dropped; dropping it gives
/// back what the request still holds.
#[derive(Debug)]
pub struct ExchangeGuard(Arc<Exchange>);

impl ExchangeGuard {
    pub(super) fn start(connection: Arc<Connection>) -> Self {
        let now = connection.clock.now();
        let reservation = Reservation::new(
            connection.server_budget().clone(),
            connection.body_budget().clone(),
        );
        let exchange = Arc::new(Exchange {
            connection: Arc::clone(&connection),
            phase: AtomicU8::new(SERVING),
            phase_at: AtomicU64::new(now),
            moved: AtomicUsize::new(0),
            mark_bytes: AtomicUsize::new(0),
            mark_at: AtomicU64::new(now),
            reservation: Mutex::new(reservation),
            held: AtomicUsize::new(0),
            shed: AtomicBool::new(false),
            shed_signal: Notify::new(),
        });
        connection.count(None, Some(Waiting::OnServer));
        connection.progressed(now);
        connection.lock_exchanges().push(Arc::clone(&exchange));
        Self(exchange)
    }

    /// The exchange, to share with the request's handler.
    pub fn exchange(&self) -> &Arc<Exchange> {
        &self.0
    }
}

impl Drop for ExchangeGuard {
    fn drop(&mut self) {
        let exchange = &self.0;
        exchange.shrink_to(0);
        let connection = &exchange.connection;
        connection
            .lock_exchanges()
            .retain(|other| !Arc::ptr_eq(other, exchange));
        let phase = exchange.phase.swap(FINISHED, Ordering::AcqRel);
        connection.count(Some(waiting(phase)), None);
        connection.progressed(connection.clock.now());
    }
}
