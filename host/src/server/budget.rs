//! Byte budgets: how much memory the requests of the whole server, and of
//! one connection, may hold at once — bodies being read, the requests parsed
//! from them, and the answers not yet sent.
//!
//! A request reserves its body's bytes before reading them (a large one all
//! at once when it declares a `Content-Length`, others chunk by chunk as they
//! arrive) and keeps them,
//! resized to its answer, until the answer has been written to the socket
//! (see `exchange`). A reservation that does not fit is refused at once,
//! before more of the body is read, so a burst of large or never-finished
//! bodies costs a bounded amount of memory instead of all of it.
//!
//! Part of the server's budget, the *reserve*, is kept for small requests:
//! a holder of more than [`LARGE`] bytes may only bring the pool to its
//! capacity minus the reserve, so however many large bodies a few clients
//! start and never finish, a review (a few KiB) still gets in.
//!
//! A request that made others give up their bytes for it holds a [`Claim`]
//! on them while they let go: nobody else may take them meanwhile.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::gate::LARGE;

/// A pool of bytes, shared by everyone who reserves from it.
#[derive(Debug, Clone)]
pub struct Budget {
    pool: Arc<Pool>,
}

#[derive(Debug)]
struct Pool {
    capacity: usize,
    reserve: usize,
    used: AtomicUsize,
    /// Bytes claimed by requests that made room for themselves.
    claimed: AtomicUsize,
}

impl Budget {
    /// A budget of `capacity` bytes, without a reserve.
    pub fn new(capacity: usize) -> Self {
        Self::with_reserve(capacity, 0)
    }

    /// A budget of `capacity` bytes of which `reserve` only holders of at
    /// most [`LARGE`] bytes may use.
    pub fn with_reserve(capacity: usize, reserve: usize) -> Self {
        Self {
            pool: Arc::new(Pool {
                capacity,
                reserve: reserve.min(capacity),
                used: AtomicUsize::new(0),
                claimed: AtomicUsize::new(0),
            }),
        }
    }

    /// Its size in bytes.
    pub fn capacity(&self) -> usize {
        self.pool.capacity
    }

    /// The part only small holders may use.
    pub fn reserve(&self) -> usize {
        self.pool.reserve
    }

    /// Bytes reserved now.
    pub fn in_use(&self) -> usize {
        self.pool.used.load(Ordering::Acquire)
    }

    /// How far a holder that will then hold `total` bytes may fill the pool.
    pub fn ceiling(&self, total: usize) -> usize {
        if total > LARGE {
            self.pool.capacity - self.pool.reserve
        } else {
            self.pool.capacity
        }
    }

    /// Bytes that must be freed before a holder that will then hold `total`
    /// bytes can take `bytes` more (zero if they fit now).
    pub fn shortfall(&self, bytes: usize, total: usize) -> usize {
        (self.in_use() + bytes).saturating_sub(self.ceiling(total))
    }

    /// Keeps `bytes` for whoever holds the claim: until it is dropped,
    /// everyone else's ceiling is that much lower.
    pub fn claim(&self, bytes: usize) -> Claim {
        self.pool.claimed.fetch_add(bytes, Ordering::AcqRel);
        Claim {
            budget: self.clone(),
            bytes,
        }
    }

    /// Takes `bytes` for a holder that will then hold `total` (and holds a
    /// claim of `claimed` bytes), or nothing.
    fn try_take(&self, bytes: usize, total: usize, claimed: usize) -> bool {
        let others = self
            .pool
            .claimed
            .load(Ordering::Acquire)
            .saturating_sub(claimed);
        let ceiling = self.ceiling(total).saturating_sub(others);
        self.pool
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                let after = used.checked_add(bytes)?;
                (after <= ceiling).then_some(after)
            })
            .is_ok()
    }

    fn give_back(&self, bytes: usize) {
        if bytes > 0 {
            self.pool.used.fetch_sub(bytes, Ordering::AcqRel);
        }
    }
}

/// Bytes of a [`Budget`] kept for one holder; released when dropped.
#[derive(Debug)]
pub struct Claim {
    budget: Budget,
    bytes: usize,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.budget
            .pool
            .claimed
            .fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Which budget refused a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exhausted {
    /// Every connection's requests together are at the server's budget (or,
    /// for a large holder, at the budget less the reserve).
    Server,
    /// This connection's requests are at its own budget.
    Connection,
}

/// Bytes held from a server budget and a connection budget together; both
/// are given back when it is dropped.
#[derive(Debug)]
pub struct Reservation {
    held: usize,
    server: Budget,
    connection: Budget,
}

impl Reservation {
    /// Nothing yet, from these two budgets.
    pub fn new(server: Budget, connection: Budget) -> Self {
        Self {
            held: 0,
            server,
            connection,
        }
    }

    /// Bytes held.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Holds `bytes` more from both budgets (using `claim` on the server
    /// budget, if given), or nothing if either lacks them.
    pub fn grow(&mut self, bytes: usize, claim: Option<&Claim>) -> Result<(), Exhausted> {
        if bytes == 0 {
            return Ok(());
        }
        let total = self.held.saturating_add(bytes);
        let claimed = claim.map_or(0, |claim| claim.bytes);
        if !self.server.try_take(bytes, total, claimed) {
            return Err(Exhausted::Server);
        }
        if !self.connection.try_take(bytes, total, 0) {
            self.server.give_back(bytes);
            return Err(Exhausted::Connection);
        }
        self.held = total;
        Ok(())
    }

    /// Gives back what it holds beyond `bytes`.
    pub fn shrink_to(&mut self, bytes: usize) {
        let excess = self.held.saturating_sub(bytes);
        self.server.give_back(excess);
        self.connection.give_back(excess);
        self.held -= excess;
    }

    /// Moves up to `bytes` of what it holds into `other` (which must draw on
    /// the same budgets); returns how many moved.
    pub fn move_into(&mut self, other: &mut Reservation, bytes: usize) -> usize {
        let moved = bytes.min(self.held);
        self.held -= moved;
        other.held += moved;
        moved
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.shrink_to(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_budgets_must_have_room_and_get_it_back() {
        let server = Budget::new(100);
        let connection = Budget::new(60);
        let mut first = Reservation::new(server.clone(), connection.clone());
        first.grow(50, None).unwrap();
        assert_eq!(first.grow(20, None), Err(Exhausted::Connection));
        // A refused reservation takes nothing from either budget.
        assert_eq!(server.in_use(), 50);
        assert_eq!(connection.in_use(), 50);

        let mut second = Reservation::new(server.clone(), Budget::new(60));
        assert_eq!(second.grow(60, None), Err(Exhausted::Server));
        second.grow(50, None).unwrap();
        assert_eq!(server.in_use(), 100);

        drop(first);
        assert_eq!(server.in_use(), 50);
        assert_eq!(connection.in_use(), 0);
        assert_eq!(second.held(), 50);
        second.shrink_to(20);
        assert_eq!(server.in_use(), 20);
    }

    #[test]
    fn large_holders_leave_the_reserve_to_small_ones() {
        let server = Budget::with_reserve(4 * LARGE, LARGE);
        let connection = Budget::new(usize::MAX);
        let mut large = Reservation::new(server.clone(), connection.clone());
        large.grow(2 * LARGE, None).unwrap();
        let mut larger = Reservation::new(server.clone(), connection.clone());
        // Past capacity less the reserve: refused, though the pool has room.
        assert_eq!(larger.grow(2 * LARGE, None), Err(Exhausted::Server));
        assert_eq!(server.shortfall(2 * LARGE, 2 * LARGE), LARGE);
        larger.grow(LARGE / 2, None).unwrap();
        // Growing past LARGE makes a holder large.
        assert_eq!(larger.grow(LARGE, None), Err(Exhausted::Server));
        // Small ones may use the reserve, up to the capacity.
        let mut small = Reservation::new(server.clone(), connection.clone());
        small.grow(LARGE, None).unwrap();
        assert_eq!(small.grow(1, None), Err(Exhausted::Server));
        let mut pot = Reservation::new(server.clone(), connection);
        assert_eq!(small.move_into(&mut pot, 2 * LARGE), LARGE);
        drop(small);
        assert_eq!(server.in_use(), 3 * LARGE + LARGE / 2);
        drop(pot);
        assert_eq!(server.in_use(), 2 * LARGE + LARGE / 2);
    }

    #[test]
    fn claimed_bytes_are_only_for_the_claimant() {
        let server = Budget::new(100);
        let connection = Budget::new(usize::MAX);
        let mut held = Reservation::new(server.clone(), connection.clone());
        held.grow(60, None).unwrap();
        let claim = server.claim(50);
        drop(held);
        let mut other = Reservation::new(server.clone(), connection.clone());
        assert_eq!(other.grow(51, None), Err(Exhausted::Server));
        other.grow(50, None).unwrap();
        let mut claimant = Reservation::new(server.clone(), connection);
        assert_eq!(claimant.grow(51, None), Err(Exhausted::Server));
        claimant.grow(50, Some(&claim)).unwrap();
        drop((claim, other));
        claimant.grow(50, None).unwrap();
    }
}
