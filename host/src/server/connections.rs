//! The open connections of one listener: how many there may be, which are
//! idle, and which to let go when a new one needs room.
//!
//! Every connection costs a file descriptor and some memory, and a client can
//! open them for free. The cap keeps both bounded. When it is reached, the
//! connection that has been idle (no request in flight) the longest is asked
//! to close — an HTTP/1 connection between requests closes at once, an
//! HTTP/2 one gets a GOAWAY — and the new one takes its place, so a flood of
//! idle or half-open connections cannot lock out the API server. Only when
//! every connection is busy with a request is a new one refused. While too
//! many connections asked to close are still going, the listener stops
//! accepting for a moment ([`Connections::over_slack`]) and new connections
//! wait in the kernel's backlog instead of being reset.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::budget::Budget;

/// What the accept loop does with a new connection.
#[derive(Debug)]
pub enum Admission {
    /// Serve it.
    Admitted(Registered),
    /// Serve it; an idle connection was asked to close to make room.
    Evicted(Registered),
    /// Close it: every connection is busy.
    Refused,
}

/// The connections of one listener.
#[derive(Debug)]
pub struct Connections {
    limit: usize,
    body_budget: usize,
    epoch: Instant,
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Connection>>>,
    /// Signalled whenever a connection goes.
    released: Notify,
}

impl Connections {
    /// At most `limit` connections, each with `body_budget` bytes for the
    /// bodies of its requests.
    pub fn new(limit: usize, body_budget: usize) -> Arc<Self> {
        Arc::new(Self {
            limit: limit.max(1),
            body_budget,
            epoch: Instant::now(),
            next_id: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
            released: Notify::new(),
        })
    }

    /// Connections open now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether so many connections asked to close are still going that a
    /// new one must wait for them (each still holds its socket).
    pub fn over_slack(&self) -> bool {
        self.lock().len() > self.limit + self.limit / 8
    }

    /// Resolves after a connection has gone (or at once if one went since
    /// the last call): the moment to look at [`over_slack`](Self::over_slack) again.
    pub async fn released(&self) {
        self.released.notified().await;
    }

    /// Registers a new connection, making room for it if needed.
    pub fn admit(self: &Arc<Self>) -> Admission {
        let mut open = self.lock();
        let evicted = if open.len() >= self.limit {
            // The accept loop waits while over the slack; refusing here only
            // covers a caller that does not.
            if open.len() > self.limit + self.limit / 8 {
                return Admission::Refused;
            }
            // The longest idle one that has not been asked to close already.
            let victim = open
                .values()
                .filter(|c| c.in_flight() == 0 && !c.closing.load(Ordering::Acquire))
                .min_by_key(|c| c.idle_since.load(Ordering::Acquire));
            match victim {
                Some(victim) => {
                    victim.close();
                    true
                }
                None => return Admission::Refused,
            }
        } else {
            false
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let connection = Arc::new(Connection {
            epoch: self.epoch,
            requests: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(self.now()),
            closing: AtomicBool::new(false),
            close: Notify::new(),
            body_budget: Budget::new(self.body_budget),
        });
        open.insert(id, Arc::clone(&connection));
        let registered = Registered {
            connections: Arc::clone(self),
            id,
            connection,
        };
        if evicted {
            Admission::Evicted(registered)
        } else {
            Admission::Admitted(registered)
        }
    }

    fn now(&self) -> u64 {
        millis(self.epoch.elapsed())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Connection>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A connection's place in [`Connections`], given back when dropped.
#[derive(Debug)]
pub struct Registered {
    connections: Arc<Connections>,
    id: u64,
    connection: Arc<Connection>,
}

impl Registered {
    /// The connection's shared state.
    pub fn connection(&self) -> &Arc<Connection> {
        &self.connection
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.connections.lock().remove(&self.id);
        // One stored permit is enough: the waiter re-checks the count.
        self.connections.released.notify_one();
    }
}

/// The state of one connection that its requests and the listener share.
#[derive(Debug)]
pub struct Connection {
    epoch: Instant,
    /// Requests started on it so far.
    requests: AtomicU64,
    in_flight: AtomicUsize,
    /// Milliseconds since `epoch` when the last request finished (or the
    /// connection opened).
    idle_since: AtomicU64,
    closing: AtomicBool,
    close: Notify,
    body_budget: Budget,
}

impl Connection {
    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Whether a request has started on it yet.
    pub fn has_had_requests(&self) -> bool {
        self.requests.load(Ordering::Acquire) > 0
    }

    /// How long it has been without a request in flight (zero while one is).
    pub fn idle_for(&self) -> Duration {
        if self.in_flight() > 0 {
            return Duration::ZERO;
        }
        let since = Duration::from_millis(self.idle_since.load(Ordering::Acquire));
        self.epoch.elapsed().saturating_sub(since)
    }

    /// Marks a request in flight until the guard is dropped.
    pub fn request(self: &Arc<Self>) -> InFlight {
        self.requests.fetch_add(1, Ordering::AcqRel);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(Arc::clone(self))
    }

    /// The budget for the bodies of this connection's requests.
    pub fn body_budget(&self) -> &Budget {
        &self.body_budget
    }

    /// Asks the connection to close (gracefully).
    pub fn close(&self) {
        self.closing.store(true, Ordering::Release);
        self.close.notify_one();
    }

    /// Resolves when [`close`](Self::close) was called.
    pub async fn closed(&self) {
        self.close.notified().await;
    }
}

/// A request in flight on a connection.
#[derive(Debug)]
pub struct InFlight(Arc<Connection>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let connection = &self.0;
        connection
            .idle_since
            .store(millis(connection.epoch.elapsed()), Ordering::Release);
        connection.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_cap_the_longest_idle_connection_makes_room() {
        let connections = Connections::new(2, 1024);
        let Admission::Admitted(first) = connections.admit() else {
            panic!("room for the first")
        };
        let Admission::Admitted(second) = connections.admit() else {
            panic!("room for the second")
        };
        let busy = second.connection().request();
        let Admission::Evicted(third) = connections.admit() else {
            panic!("the idle first connection makes room")
        };
        assert!(first.connection().closing.load(Ordering::Acquire));
        // The first is still open until its task ends; asked once only.
        let _busy_third = third.connection().request();
        assert!(matches!(connections.admit(), Admission::Refused));
        drop(first);
        assert_eq!(connections.len(), 2);
        drop(busy);
        assert!(matches!(connections.admit(), Admission::Evicted(_)));
    }

    #[tokio::test]
    async fn past_the_slack_the_listener_waits_for_a_closing_connection() {
        let connections = Connections::new(8, 1024);
        let mut held: Vec<_> = (0..10)
            .map(|_| match connections.admit() {
                Admission::Admitted(r) | Admission::Evicted(r) => r,
                Admission::Refused => panic!("room while idle ones can close"),
            })
            .collect();
        assert!(connections.over_slack());
        let waiting = tokio::spawn({
            let connections = Arc::clone(&connections);
            async move {
                while connections.over_slack() {
                    connections.released().await;
                }
            }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        held.pop();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken when a connection goes")
            .unwrap();
    }
}
