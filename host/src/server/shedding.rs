//! What a listener logs and counts when it sheds connections: once at the
//! start and once at the end of a burst over the cap, not per connection.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::connections::Eviction;
use super::metrics::Metrics;

/// Logs the start and the end of a burst of connections over the cap, once
/// each, and counts what was shed.
pub struct Shedding {
    listener: &'static str,
    limit: usize,
    since: Option<Instant>,
    evicted: u64,
    refused: u64,
}

impl Shedding {
    /// For `listener`, whose cap is `limit`.
    pub fn new(listener: &'static str, limit: usize) -> Self {
        Self {
            listener,
            limit,
            since: None,
            evicted: 0,
            refused: 0,
        }
    }

    fn begin(&mut self) {
        if self.since.is_none() {
            self.since = Some(Instant::now());
            tracing::warn!(
                listener = self.listener,
                limit = self.limit,
                "connection limit reached: closing the most stalled connections, then the \
                 longest idle, to make room; refusing new ones while the server works for \
                 every connection"
            );
        }
    }

    /// A connection was shed to make room for a new one.
    pub fn evicted(&mut self, metrics: &Metrics, eviction: Eviction) {
        self.begin();
        self.evicted += 1;
        let reason = match eviction {
            Eviction::Stalled => "stalled_closed",
            Eviction::Idle => "idle_closed",
        };
        metrics.connection_shed(self.listener, reason);
    }

    /// A new connection was refused.
    pub fn refused(&mut self, metrics: &Metrics, peer: SocketAddr) {
        self.begin();
        self.refused += 1;
        metrics.connection_shed(self.listener, "refused");
        tracing::debug!(listener = self.listener, %peer, "connection refused: every connection is busy");
    }

    /// A connection was admitted without shedding one, `open` are open now.
    /// The burst is over once an eighth of the cap is free again (so that a
    /// listener hovering at the cap does not log every other connection).
    pub fn admitted(&mut self, open: usize) {
        if open > self.limit - self.limit / 8 {
            return;
        }
        if let Some(since) = self.since.take() {
            tracing::info!(
                listener = self.listener,
                closed = self.evicted,
                refused = self.refused,
                seconds = since.elapsed().as_secs(),
                "below the connection limit again"
            );
            self.evicted = 0;
            self.refused = 0;
        }
    }
}

/// Lets something happen at most once per period.
pub struct RateLimited {
    period: Duration,
    last: Option<Instant>,
}

impl RateLimited {
    /// At most once per `period`.
    pub fn new(period: Duration) -> Self {
        Self { period, last: None }
    }

    /// Whether it may happen now (and then it did).
    pub fn ready(&mut self) -> bool {
        let now = Instant::now();
        if self.last.is_some_and(|last| now < last + self.period) {
            return false;
        }
        self.last = Some(now);
        true
    }
}
