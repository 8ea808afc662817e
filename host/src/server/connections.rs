//! The open connections of one listener: how many there may be, which to
//! let go when a new one needs room, and which requests make room when the
//! server's byte budget is spent.
//!
//! Every connection costs a file descriptor and some memory, and a client
//! can open them for free. The cap keeps both bounded. When it is reached, a
//! connection makes room for the new one, chosen by who has kept the server
//! waiting longest:
//!
//! 1. first the connections whose client owes the server part of a request
//!    — the rest of its body, or taking its answer —, the one that has made
//!    no progress for the longest first;
//! 2. then those that owe their first request (connected, and in the TLS
//!    handshake or sending a head), the oldest first;
//! 3. then idle connections between requests, the longest idle first.
//!
//! The first two are closed at once: their client owes, so nothing is lost
//! that it was about to finish. An idle one closes gracefully (HTTP/1 at
//! once, HTTP/2 with a GOAWAY).
//!
//! A connection with a request the server is working on is never shed;
//! only when every connection has one is a new connection refused. So a
//! flood of connections that each hold a request open (a body that never
//! comes, an answer never read) cannot lock anyone out: each new connection
//! takes the place of the most stalled one. While too many connections
//! asked to close are still going, the listener stops accepting for a
//! moment ([`Connections::over_slack`]) and new connections wait in the
//! kernel's backlog instead of being reset.
//!
//! The byte budget is shared the same way ([`Connections::grow`]): a request
//! that does not fit sheds requests that are *stalled* (no progress for
//! `stalled_after`), longest stalled first, if that frees enough.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::budget::{Budget, Exhausted};
use super::connection::{Clock, Connection, Owes};
use super::exchange::Exchange;

/// How long a request that shed others waits for them to let go of their
/// bytes (they do within milliseconds: their tasks are woken).
const LET_GO: Duration = Duration::from_millis(250);

/// What the accept loop does with a new connection.
#[derive(Debug)]
pub enum Admission {
    /// Serve it.
    Admitted(Registered),
    /// Serve it; another connection was shed to make room.
    Evicted(Registered, Eviction),
    /// Close it: every connection has a request the server is working on.
    Refused,
}

/// Which connection made room for a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// One whose client owed the server (closed at once).
    Stalled,
    /// An idle one (closed gracefully).
    Idle,
}

/// What [`Connections::grow`] shed to make room.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Shed {
    /// Requests whose body had stalled.
    pub bodies: usize,
    /// Connections whose client had stalled taking an answer.
    pub answers: usize,
}

impl Shed {
    fn is_empty(&self) -> bool {
        self.bodies + self.answers == 0
    }
}

/// The connections of one listener.
#[derive(Debug)]
pub struct Connections {
    limit: usize,
    body_budget: usize,
    server_budget: Budget,
    stalled_after: Duration,
    clock: Clock,
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Connection>>>,
    /// Signalled whenever a connection goes.
    released: Notify,
}

impl Connections {
    /// At most `limit` connections, each with `body_budget` bytes for its
    /// requests, all drawing on `server_budget`; a request that has made no
    /// progress for `stalled_after` is stalled.
    pub fn new(
        limit: usize,
        body_budget: usize,
        server_budget: Budget,
        stalled_after: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            limit: limit.max(1),
            body_budget,
            server_budget,
            stalled_after,
            clock: Clock::new(),
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
        let eviction = if open.len() >= self.limit {
            // The accept loop waits while over the slack; refusing here only
            // covers a caller that does not.
            if open.len() > self.limit + self.limit / 8 {
                return Admission::Refused;
            }
            let victim = open
                .values()
                .filter(|c| !c.closing() && c.serving() == 0)
                .min_by_key(|c| (c.owes(), c.progress_at()));
            match victim {
                Some(victim) if victim.owes() != Owes::Nothing => {
                    victim.abort();
                    Some(Eviction::Stalled)
                }
                Some(victim) => {
                    victim.close();
                    Some(Eviction::Idle)
                }
                None => return Admission::Refused,
            }
        } else {
            None
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let connection = Arc::new(Connection::new(
            self.clock,
            Budget::new(self.body_budget),
            self.server_budget.clone(),
        ));
        open.insert(id, Arc::clone(&connection));
        let registered = Registered {
            connections: Arc::clone(self),
            id,
            connection,
        };
        match eviction {
            Some(eviction) => Admission::Evicted(registered, eviction),
            None => Admission::Admitted(registered),
        }
    }

    /// Holds `bytes` more for `exchange`. If the server's budget lacks them,
    /// sheds stalled requests, longest stalled first, when that frees
    /// enough, and waits (briefly) for them to let go. Returns what was
    /// shed either way.
    pub async fn grow(&self, exchange: &Exchange, bytes: usize) -> (Result<(), Exhausted>, Shed) {
        match exchange.grow(bytes) {
            Err(Exhausted::Server) => {}
            other => return (other, Shed::default()),
        }
        let budget = exchange.connection().server_budget();
        let shortfall = budget.shortfall(bytes, exchange.held() + bytes);
        let shed = self.shed_stalled(shortfall, exchange);
        if shortfall > 0 && shed.is_empty() {
            return (Err(Exhausted::Server), shed);
        }
        // What the shed requests let go of is this request's.
        let claim = budget.claim(shortfall);
        let deadline = Instant::now() + LET_GO;
        let mut pause = Duration::from_millis(1);
        loop {
            match exchange.grow_claimed(bytes, Some(&claim)) {
                Err(Exhausted::Server) if Instant::now() < deadline => {}
                other => return (other, shed),
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(16));
        }
    }

    /// Sheds stalled requests holding at least `shortfall` bytes together,
    /// longest stalled first, or none if they hold less.
    fn shed_stalled(&self, shortfall: usize, exclude: &Exchange) -> Shed {
        enum Victim {
            Body(Arc<Exchange>),
            Answer(Arc<Connection>),
        }
        if shortfall == 0 {
            return Shed::default();
        }
        let open: Vec<Arc<Connection>> = self.lock().values().cloned().collect();
        let mut stalled = Vec::new();
        for connection in open.iter().filter(|c| !c.aborting()) {
            let unsent = connection.unsent();
            let blocked = connection.writes_stalled_for();
            if unsent > 0 && blocked >= self.stalled_after {
                stalled.push((blocked, unsent, Victim::Answer(Arc::clone(connection))));
            }
            for exchange in connection.lock_exchanges().iter() {
                let held = exchange.held();
                if held == 0 || exchange.is_shed() || std::ptr::eq(&**exchange, exclude) {
                    continue;
                }
                let Some(since) = exchange.stalled_for() else {
                    continue;
                };
                if since < self.stalled_after {
                    continue;
                }
                let victim = if exchange.is_sending() {
                    // An answer cannot be withdrawn from the HTTP layer, so
                    // the connection goes.
                    Victim::Answer(Arc::clone(connection))
                } else {
                    Victim::Body(Arc::clone(exchange))
                };
                stalled.push((since, held, victim));
            }
        }
        stalled.sort_by_key(|(since, _, _)| std::cmp::Reverse(*since));
        let mut freed = 0;
        let chosen = stalled
            .into_iter()
            .take_while(|(_, held, _)| {
                let take = freed < shortfall;
                freed += held;
                take
            })
            .collect::<Vec<_>>();
        let mut shed = Shed::default();
        if freed < shortfall {
            return shed;
        }
        for (_, _, victim) in chosen {
            match victim {
                Victim::Body(exchange) => {
                    if exchange.shed() {
                        shed.bodies += 1;
                    }
                }
                Victim::Answer(connection) => {
                    if !connection.aborting() {
                        connection.abort();
                        shed.answers += 1;
                    }
                }
            }
        }
        shed
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

#[cfg(test)]
mod tests {
    use super::*;

    fn connections(limit: usize) -> Arc<Connections> {
        Connections::new(limit, 1024, Budget::new(4096), Duration::ZERO)
    }

    fn admitted(admission: Admission) -> Registered {
        match admission {
            Admission::Admitted(registered) | Admission::Evicted(registered, _) => registered,
            Admission::Refused => panic!("refused"),
        }
    }

    #[test]
    fn at_the_cap_the_client_that_owes_longest_makes_room_then_the_longest_idle() {
        let connections = connections(3);
        let idle = admitted(connections.admit());
        let finished = idle.connection().exchange();
        drop(finished); // a request done: idle, with history
        let stalled = admitted(connections.admit());
        let body = stalled.connection().exchange();
        body.exchange().receiving();
        let busy = admitted(connections.admit());
        let _evaluating = busy.connection().exchange();
        // The stalled body goes first, though the idle one is older, and at
        // once (abort), not gracefully.
        let Admission::Evicted(fourth, Eviction::Stalled) = connections.admit() else {
            panic!("the stalled connection makes room")
        };
        assert!(stalled.connection().aborting());
        assert!(!idle.connection().closing());
        drop((body, stalled));
        let Admission::Evicted(fifth, Eviction::Stalled) = connections.admit() else {
            panic!("the fourth, which never sent a request, owes one")
        };
        assert!(fourth.connection().aborting());
        let _working_for_the_fifth = fifth.connection().exchange();
        drop(fourth);
        let Admission::Evicted(_sixth, Eviction::Idle) = connections.admit() else {
            panic!("then the idle one, gracefully")
        };
        assert!(idle.connection().closing() && !idle.connection().aborting());
    }

    #[test]
    fn only_when_the_server_works_for_every_connection_is_a_new_one_refused() {
        let connections = connections(2);
        let first = admitted(connections.admit());
        let _working = first.connection().exchange();
        let second = admitted(connections.admit());
        let _working_too = second.connection().exchange();
        assert!(matches!(connections.admit(), Admission::Refused));
    }

    #[tokio::test]
    async fn a_request_that_does_not_fit_sheds_the_stalled_ones() {
        let connections = Connections::new(8, 1 << 20, Budget::new(1000), Duration::ZERO);
        let hoarder = admitted(connections.admit());
        let hoarding = hoarder.connection().exchange();
        hoarding.exchange().receiving();
        hoarding.exchange().grow(900).unwrap();
        let working = admitted(connections.admit());
        let evaluating = working.connection().exchange();
        evaluating.exchange().grow(50).unwrap();

        let newcomer = admitted(connections.admit());
        let review = newcomer.connection().exchange();
        let shedding = tokio::spawn({
            let connections = Arc::clone(&connections);
            let review = Arc::clone(review.exchange());
            async move { connections.grow(&review, 500).await }
        });
        // The stalled body is told to give up; it lets go of its bytes.
        tokio::time::timeout(Duration::from_secs(5), hoarding.exchange().shed_signalled())
            .await
            .expect("the stalled body is shed");
        drop(hoarding);
        let (grown, shed) = shedding.await.unwrap();
        grown.unwrap();
        assert_eq!(
            shed,
            Shed {
                bodies: 1,
                answers: 0
            }
        );
        // A request the server works on is never shed; nothing else is
        // stalled, so there is no room for more.
        let (refused, shed) = connections.grow(review.exchange(), 500).await;
        assert_eq!(refused, Err(Exhausted::Server));
        assert!(shed.is_empty());
    }

    #[tokio::test]
    async fn past_the_slack_the_listener_waits_for_a_closing_connection() {
        let connections = connections(8);
        let mut held: Vec<_> = (0..10).map(|_| admitted(connections.admit())).collect();
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
