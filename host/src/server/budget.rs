//! Byte budgets for request bodies: how much memory bodies being read or
//! waiting for a worker may take, in the whole server and per connection.
//!
//! A request reserves its body's bytes before reading them (all at once when
//! it declares a `Content-Length`, chunk by chunk otherwise) and keeps the
//! reservation until it is answered: the parsed request, which holds a copy
//! of the object, lives that long too. A reservation that does not fit is
//! refused at once, before more of the body is read, so a burst of large or
//! never-finished bodies costs a bounded amount of memory instead of all of it.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A pool of bytes, shared by everyone who reserves from it.
#[derive(Debug, Clone)]
pub struct Budget {
    bytes: Arc<Semaphore>,
    capacity: usize,
}

impl Budget {
    /// A budget of `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.min(Semaphore::MAX_PERMITS);
        Self {
            bytes: Arc::new(Semaphore::new(capacity)),
            capacity,
        }
    }

    /// Its size in bytes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes reserved now.
    pub fn in_use(&self) -> usize {
        self.capacity - self.bytes.available_permits()
    }

    /// Takes `bytes` now, or fails without waiting.
    fn try_take(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        let bytes = u32::try_from(bytes).ok()?;
        self.bytes.clone().try_acquire_many_owned(bytes).ok()
    }
}

/// Which budget refused a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exhausted {
    /// Every connection's bodies together are at the server's budget.
    Server,
    /// This connection's bodies are at its own budget.
    Connection,
}

/// Bytes held from a server budget and a connection budget together; both
/// are given back when it is dropped.
#[derive(Debug, Default)]
pub struct Reservation {
    held: usize,
    server: Option<OwnedSemaphorePermit>,
    connection: Option<OwnedSemaphorePermit>,
}

impl Reservation {
    /// Bytes held.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Holds `bytes` more from both budgets, or nothing if either lacks them.
    pub fn grow(
        &mut self,
        bytes: usize,
        server: &Budget,
        connection: &Budget,
    ) -> Result<(), Exhausted> {
        if bytes == 0 {
            return Ok(());
        }
        let more_server = server.try_take(bytes).ok_or(Exhausted::Server)?;
        let more_connection = connection.try_take(bytes).ok_or(Exhausted::Connection)?;
        merge(&mut self.server, more_server);
        merge(&mut self.connection, more_connection);
        self.held += bytes;
        Ok(())
    }
}

fn merge(slot: &mut Option<OwnedSemaphorePermit>, more: OwnedSemaphorePermit) {
    match slot {
        Some(permit) => permit.merge(more),
        None => *slot = Some(more),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_budgets_must_have_room_and_get_it_back() {
        let server = Budget::new(100);
        let connection = Budget::new(60);
        let mut first = Reservation::default();
        first.grow(50, &server, &connection).unwrap();
        assert_eq!(
            first.grow(20, &server, &connection),
            Err(Exhausted::Connection)
        );
        // A refused reservation takes nothing from either budget.
        assert_eq!(server.in_use(), 50);
        assert_eq!(connection.in_use(), 50);

        let other_connection = Budget::new(60);
        let mut second = Reservation::default();
        assert_eq!(
            second.grow(60, &server, &other_connection),
            Err(Exhausted::Server)
        );
        second.grow(50, &server, &other_connection).unwrap();
        assert_eq!(server.in_use(), 100);

        drop(first);
        assert_eq!(server.in_use(), 50);
        assert_eq!(connection.in_use(), 0);
        assert_eq!(second.held(), 50);
    }
}
