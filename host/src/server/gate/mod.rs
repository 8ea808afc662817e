//! Admission of requests into the worker pool: at most `--workers`
//! evaluations at once, a bounded queue in front of them, shared fairly
//! between policies.
//!
//! - **Round robin between lanes.** Requests wait in lanes, one per policy
//!   and size class (requests over [`LARGE`] bytes apart); a freed worker
//!   goes to the next lane in turn, so a burst for one policy, or of huge
//!   reviews, does not stand in front of everyone else's requests.
//! - **A worker kept for the others.** A lane that already runs an
//!   evaluation may take the last free worker only if its evaluations are
//!   known to be fast. A policy whose evaluations take seconds (a slow or
//!   stuck policy, a flood aimed at one, multi-MB reviews) therefore never
//!   holds every worker: the other lanes always find one.
//! - **The longest lane gives way.** When the queue is full, a request of a
//!   policy with a shorter lane pushes out the newest request of the longest
//!   one, instead of being refused.
//! - **Nobody is evaluated for nobody.** A request that has waited past its
//!   deadline (the API server's webhook timeout) is answered at once instead
//!   of being evaluated after the API server gave up on it.
//!
//! - **A waiting evaluation lends its worker.** An evaluation parked in a
//!   host call that waits on the network (a Kubernetes read missing the
//!   cache) computes nothing: its [`Permit`] [parks](crate::capabilities::waiting),
//!   the worker goes to the next request, and when the wait ends the
//!   evaluation runs again at once — the gate owes a worker, paid back by
//!   the next evaluation to finish. At most [`Gate::max_parked`] wait at
//!   once (each holds an instance); past that a waiting evaluation keeps its
//!   worker, as before.
//!
//! Every refusal is immediate: an overloaded webhook that answers fast lets
//! the API server apply its failure policy, one that queues without limit
//! only times out later and holds memory meanwhile.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::capabilities::waiting::Parking;

/// Evaluations faster than this (on a moving average) may take the last
/// free worker while their lane already runs one. Admission policies
/// answer in well under a millisecond; one that needs this long is slow.
const FAST: Duration = Duration::from_millis(50);

/// Requests with bodies larger than this wait in a lane of their own: an
/// evaluation costs about in proportion to its input, and a pod's review is
/// a few KiB while the largest are MiBs.
pub const LARGE: usize = 256 << 10;

/// The lane a request waits in: its policy and its size class.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Lane {
    policy: String,
    large: bool,
}

impl Lane {
    /// The lane of a request for `policy` with a body of `bytes`.
    pub fn new(policy: &str, bytes: usize) -> Self {
        Self {
            policy: policy.to_owned(),
            large: bytes > LARGE,
        }
    }
}

impl std::fmt::Display for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.policy)?;
        if self.large {
            write!(f, " (requests over {LARGE} bytes)")?;
        }
        Ok(())
    }
}

/// The admission gate of evaluations.
#[derive(Debug)]
pub struct Gate {
    state: Mutex<State>,
    workers: usize,
    queue_capacity: usize,
}

/// Why a request is not evaluated.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Overloaded {
    /// Every worker is busy and the queue is full.
    #[error("server overloaded: {workers} evaluations running and {queued} queued; retry later")]
    QueueFull {
        /// Workers, all busy.
        workers: usize,
        /// Requests waiting.
        queued: usize,
    },
    /// A request of a lane with a shorter queue took this one's place.
    #[error(
        "server overloaded: the queue is full and policy `{lane}` holds the largest share \
         of it; retry later"
    )]
    PushedOut {
        /// The lane whose queued request gave way.
        lane: String,
    },
    /// The request waited past its deadline.
    #[error(
        "server overloaded: the request waited {}ms for a worker, past the webhook timeout; \
         not evaluated",
        .waited.as_millis()
    )]
    Deadline {
        /// How long it had waited (since it arrived).
        waited: Duration,
    },
}

impl Overloaded {
    /// A short name for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::QueueFull { .. } => "queue_full",
            Self::PushedOut { .. } => "pushed_out",
            Self::Deadline { .. } => "deadline",
        }
    }
}

#[derive(Debug, Default)]
struct State {
    free: usize,
    /// Evaluations parked in a wait, each having lent its worker.
    parked: usize,
    /// Workers taken back by evaluations whose wait ended while none was
    /// free: the next ones to finish pay them back instead of freeing.
    owed: usize,
    queued: usize,
    lanes: HashMap<Lane, LaneState>,
    /// Lanes with waiting requests, in the order their turn comes.
    turns: VecDeque<Lane>,
    next_waiter: u64,
}

#[derive(Debug, Default)]
struct LaneState {
    running: usize,
    waiting: VecDeque<Waiter>,
    /// Moving average of this lane's recent evaluation times.
    recent: Option<Duration>,
}

#[derive(Debug)]
struct Waiter {
    id: u64,
    grant: oneshot::Sender<()>,
}

impl Gate {
    /// `workers` evaluations at once, and at most `queue_capacity` waiting.
    pub fn new(workers: usize, queue_capacity: usize) -> Arc<Self> {
        let workers = workers.max(1);
        Arc::new(Self {
            state: Mutex::new(State {
                free: workers,
                ..State::default()
            }),
            workers,
            queue_capacity,
        })
    }

    /// Waits for a worker for an evaluation in `lane`, until `deadline`.
    /// The permit is owned, so it can travel with the evaluation it admits.
    pub async fn enter(
        self: &Arc<Self>,
        lane: Lane,
        arrived: Instant,
        deadline: Instant,
    ) -> Result<Permit, Overloaded> {
        if Instant::now() >= deadline {
            return Err(Overloaded::Deadline {
                waited: arrived.elapsed(),
            });
        }
        let (id, receiver) = {
            let mut state = self.lock();
            let idle_lane = state
                .lanes
                .entry(lane.clone())
                .or_default()
                .waiting
                .is_empty();
            if idle_lane && state.may_start(&lane, self.workers) {
                state.start(&lane);
                return Ok(self.permit(lane));
            }
            if state.queued >= self.queue_capacity {
                self.push_out_for(&mut state, &lane)?;
            }
            let id = state.next_waiter;
            state.next_waiter += 1;
            let (grant, receiver) = oneshot::channel();
            let waiting = &mut state.lanes.get_mut(&lane).expect("created above").waiting;
            waiting.push_back(Waiter { id, grant });
            if waiting.len() == 1 {
                state.turns.push_back(lane.clone());
            }
            state.queued += 1;
            // A worker may be free that no other lane could take.
            state.dispatch(self.workers);
            (id, receiver)
        };
        let mut waiting = Waiting {
            gate: self,
            lane: &lane,
            id,
            receiver: Some(receiver),
        };
        let receiver = waiting.receiver.as_mut().expect("set above");
        match tokio::time::timeout_at(deadline.into(), receiver).await {
            Ok(Ok(())) => {
                waiting.receiver = None;
                drop(waiting);
                Ok(self.permit(lane))
            }
            // The sender was dropped: pushed out by a shorter lane.
            Ok(Err(_)) => Err(Overloaded::PushedOut {
                lane: lane.to_string(),
            }),
            Err(_elapsed) => Err(Overloaded::Deadline {
                waited: arrived.elapsed(),
            }),
        }
    }

    /// Requests waiting now.
    pub fn queued(&self) -> usize {
        self.lock().queued
    }

    /// How many evaluations may be parked (waiting on the network, their
    /// worker lent to others) at once: each still holds an instance.
    pub fn max_parked(workers: usize) -> usize {
        workers.max(1) * 32
    }

    /// Evaluations parked now.
    pub fn parked(&self) -> usize {
        self.lock().parked
    }

    /// Makes room in a full queue for a request in `lane` by dropping the
    /// newest waiter of the longest lane, if that lane is longer than
    /// `lane` would be with the new request.
    fn push_out_for(&self, state: &mut State, lane: &Lane) -> Result<(), Overloaded> {
        let own = state.lanes.get(lane).map_or(0, |l| l.waiting.len());
        let longest = state
            .lanes
            .iter()
            .max_by_key(|(_, lane)| lane.waiting.len())
            .filter(|(_, lane)| lane.waiting.len() > own + 1)
            .map(|(id, _)| id.clone());
        let Some(longest) = longest else {
            return Err(Overloaded::QueueFull {
                workers: self.workers,
                queued: state.queued,
            });
        };
        let lane = state.lanes.get_mut(&longest).expect("found above");
        // Dropping the sender tells the waiter it was pushed out.
        drop(lane.waiting.pop_back());
        if lane.waiting.is_empty() {
            state.turns.retain(|id| *id != longest);
        }
        state.queued -= 1;
        Ok(())
    }

    fn permit(self: &Arc<Self>, lane: Lane) -> Permit {
        Permit {
            gate: Arc::clone(self),
            lane,
            started: Instant::now(),
            parked: Mutex::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    /// Whether `lane` may take a free worker now.
    fn may_start(&self, lane: &Lane, workers: usize) -> bool {
        if self.free == 0 {
            return false;
        }
        if self.free > 1 || workers == 1 {
            return true;
        }
        // The last free worker: for lanes not running yet, or fast ones.
        self.lanes
            .get(lane)
            .is_none_or(|lane| lane.running == 0 || lane.recent.is_some_and(|t| t < FAST))
    }

    fn start(&mut self, lane: &Lane) {
        self.free -= 1;
        self.lanes
            .get_mut(lane)
            .expect("a lane exists for every request that asks")
            .running += 1;
    }

    fn finish(&mut self, lane: &Lane, took: Option<Duration>) {
        if self.owed > 0 {
            self.owed -= 1;
        } else {
            self.free += 1;
        }
        let lane = self.lanes.get_mut(lane).expect("a running lane exists");
        lane.running -= 1;
        if let Some(took) = took {
            lane.recent = Some(match lane.recent {
                None => took,
                Some(recent) => (recent * 3 + took) / 4,
            });
        }
    }

    /// Hands free workers to waiting requests, one lane at a time in turn.
    fn dispatch(&mut self, workers: usize) {
        while self.free > 0 {
            let Some(turn) =
                (0..self.turns.len()).find(|&i| self.may_start(&self.turns[i], workers))
            else {
                return;
            };
            let lane = self.turns.remove(turn).expect("index found above");
            let state = self.lanes.get_mut(&lane).expect("a waiting lane exists");
            let waiter = state
                .waiting
                .pop_front()
                .expect("a lane in turn has a waiter");
            if !state.waiting.is_empty() {
                self.turns.push_back(lane.clone());
            }
            self.queued -= 1;
            self.start(&lane);
            if waiter.grant.send(()).is_err() {
                // Its request is gone (the client hung up): next one.
                self.finish(&lane, None);
            }
        }
    }

    /// Removes a waiter that gave up; false if it is no longer queued.
    fn remove(&mut self, lane: &Lane, id: u64) -> bool {
        let Some(state) = self.lanes.get_mut(lane) else {
            return false;
        };
        let Some(at) = state.waiting.iter().position(|w| w.id == id) else {
            return false;
        };
        state.waiting.remove(at);
        if state.waiting.is_empty() {
            self.turns.retain(|l| l != lane);
        }
        self.queued -= 1;
        true
    }
}

/// A request waiting for a worker; cleans up if it stops waiting.
struct Waiting<'a> {
    gate: &'a Arc<Gate>,
    lane: &'a Lane,
    id: u64,
    receiver: Option<oneshot::Receiver<()>>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let Some(mut receiver) = self.receiver.take() else {
            return;
        };
        let mut state = self.gate.lock();
        if state.remove(self.lane, self.id) {
            return;
        }
        // Dispatched already: a worker may be granted to nobody. Give it on.
        receiver.close();
        if receiver.try_recv().is_ok() {
            state.finish(self.lane, None);
            state.dispatch(self.gate.workers);
        }
    }
}

/// A worker, held for one evaluation.
#[derive(Debug)]
pub struct Permit {
    gate: Arc<Gate>,
    lane: Lane,
    started: Instant,
    /// Whether the evaluation is parked (its worker lent).
    parked: Mutex<bool>,
}

impl Parking for Permit {
    fn park(&self) {
        let mut parked = self.parked.lock().unwrap_or_else(|e| e.into_inner());
        let mut state = self.gate.lock();
        if *parked || state.parked >= Gate::max_parked(self.gate.workers) {
            return;
        }
        *parked = true;
        state.parked += 1;
        // Lent like a finished evaluation's worker, without its timing.
        state.finish(&self.lane, None);
        state.dispatch(self.gate.workers);
    }

    fn unpark(&self) {
        let mut parked = self.parked.lock().unwrap_or_else(|e| e.into_inner());
        if !*parked {
            return;
        }
        *parked = false;
        let mut state = self.gate.lock();
        state.parked -= 1;
        // Runs again at once: a free worker if there is one, else owed.
        if state.free > 0 {
            state.free -= 1;
        } else {
            state.owed += 1;
        }
        state
            .lanes
            .get_mut(&self.lane)
            .expect("a running lane exists")
            .running += 1;
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.unpark();
        let mut state = self.gate.lock();
        state.finish(&self.lane, Some(self.started.elapsed()));
        state.dispatch(self.gate.workers);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    async fn enter(gate: &Arc<Gate>, policy: &str) -> Result<Permit, Overloaded> {
        gate.enter(Lane::new(policy, 1000), Instant::now(), far())
            .await
    }

    /// Polls `future` briefly: `None` if it is still waiting.
    async fn poll_briefly<F: std::future::Future + Unpin>(future: &mut F) -> Option<F::Output> {
        tokio::time::timeout(Duration::from_millis(20), future)
            .await
            .ok()
    }

    #[tokio::test]
    async fn refuses_past_workers_plus_queue() {
        let gate = Gate::new(1, 1);
        let running = enter(&gate, "a").await.unwrap();
        let mut queued = Box::pin(enter(&gate, "a"));
        assert!(poll_briefly(&mut queued).await.is_none());
        let refused = enter(&gate, "a").await.unwrap_err();
        assert!(
            matches!(refused, Overloaded::QueueFull { queued: 1, .. }),
            "{refused}"
        );
        drop(running);
        assert!(queued.await.is_ok());
        assert!(enter(&gate, "a").await.is_ok());
    }

    #[tokio::test]
    async fn a_policy_already_running_leaves_the_last_worker_to_others() {
        let gate = Gate::new(2, 8);
        let slow = enter(&gate, "slow").await.unwrap();
        // Not known to be fast: it waits rather than take the last worker...
        let mut slow_again = Box::pin(enter(&gate, "slow"));
        assert!(poll_briefly(&mut slow_again).await.is_none());
        // ...which another policy gets at once.
        let other = enter(&gate, "other").await.unwrap();
        drop(other);
        // The slow lane is served again when its running evaluation ends.
        drop(slow);
        assert!(poll_briefly(&mut slow_again).await.is_some());
    }

    #[tokio::test]
    async fn large_requests_wait_apart_and_leave_a_worker_to_small_ones() {
        let gate = Gate::new(2, 8);
        let huge = || gate.enter(Lane::new("a", LARGE + 1), Instant::now(), far());
        let _large = huge().await.unwrap();
        let mut large_again = Box::pin(huge());
        assert!(poll_briefly(&mut large_again).await.is_none());
        // The same policy, a small request: its own lane, the kept worker.
        assert!(
            poll_briefly(&mut Box::pin(enter(&gate, "a")))
                .await
                .is_some()
        );
    }

    #[tokio::test]
    async fn a_fast_policy_may_use_every_worker() {
        let gate = Gate::new(2, 8);
        drop(enter(&gate, "fast").await.unwrap());
        let _first = enter(&gate, "fast").await.unwrap();
        let _second = enter(&gate, "fast").await.unwrap();
    }

    #[tokio::test]
    async fn freed_workers_go_to_policies_in_turn() {
        let gate = Gate::new(1, 8);
        let running = enter(&gate, "a").await.unwrap();
        let mut a1 = Box::pin(enter(&gate, "a"));
        let mut a2 = Box::pin(enter(&gate, "a"));
        let mut b1 = Box::pin(enter(&gate, "b"));
        for waiting in [&mut a1, &mut a2, &mut b1] {
            assert!(poll_briefly(waiting).await.is_none());
        }
        drop(running);
        let first = poll_briefly(&mut a1).await.unwrap().unwrap();
        drop(first);
        // `b` had its turn before `a`'s second request.
        let second = poll_briefly(&mut b1).await.unwrap().unwrap();
        assert!(poll_briefly(&mut a2).await.is_none());
        drop(second);
        assert!(poll_briefly(&mut a2).await.is_some());
    }

    #[tokio::test]
    async fn a_full_queue_pushes_out_the_longest_lane() {
        let gate = Gate::new(1, 3);
        let _running = enter(&gate, "busy").await.unwrap();
        let mut flood: Vec<_> = (0..3).map(|_| Box::pin(enter(&gate, "flood"))).collect();
        for waiting in &mut flood {
            assert!(poll_briefly(waiting).await.is_none());
        }
        let mut other = Box::pin(enter(&gate, "other"));
        assert!(
            poll_briefly(&mut other).await.is_none(),
            "queued, not refused"
        );
        let newest = poll_briefly(&mut flood[2]).await.expect("pushed out");
        assert!(matches!(newest, Err(Overloaded::PushedOut { .. })));
        assert_eq!(gate.queued(), 3);
    }

    #[tokio::test]
    async fn a_request_past_its_deadline_is_not_evaluated() {
        let gate = Gate::new(1, 8);
        let _running = enter(&gate, "a").await.unwrap();
        let arrived = Instant::now();
        let result = gate
            .enter(
                Lane::new("b", 10),
                arrived,
                arrived + Duration::from_millis(30),
            )
            .await;
        assert!(matches!(result, Err(Overloaded::Deadline { .. })));
        assert_eq!(gate.queued(), 0, "the waiter left the queue");
    }

    #[tokio::test]
    async fn a_cancelled_waiter_frees_its_place_and_any_worker_granted_to_it() {
        let gate = Gate::new(1, 8);
        let running = enter(&gate, "a").await.unwrap();
        let mut cancelled = Box::pin(enter(&gate, "a"));
        assert!(poll_briefly(&mut cancelled).await.is_none());
        drop(running); // the worker is granted to `cancelled`...
        drop(cancelled); // ...which goes away before taking it.
        assert!(enter(&gate, "b").await.is_ok(), "the worker was given on");
    }

    #[tokio::test]
    async fn a_parked_evaluation_lends_its_worker_and_takes_one_back() {
        let gate = Gate::new(1, 8);
        let waiting = enter(&gate, "lookup").await.unwrap();
        let mut other = Box::pin(enter(&gate, "plain"));
        assert!(
            poll_briefly(&mut other).await.is_none(),
            "the only worker is held"
        );
        waiting.park();
        assert_eq!(gate.parked(), 1);
        let other = poll_briefly(&mut other)
            .await
            .expect("the parked evaluation's worker was lent")
            .unwrap();
        // The wait ends while the worker is busy: it runs anyway, owed...
        waiting.unpark();
        assert_eq!(gate.parked(), 0);
        let mut third = Box::pin(enter(&gate, "third"));
        drop(other);
        // ...and the first evaluation to finish pays the debt, not a waiter.
        assert!(poll_briefly(&mut third).await.is_none());
        drop(waiting);
        assert!(poll_briefly(&mut third).await.is_some());
    }

    #[tokio::test]
    async fn parking_is_bounded_and_a_dropped_parked_permit_frees_nothing_twice() {
        let gate = Gate::new(1, 64);
        let mut permits = Vec::new();
        for _ in 0..Gate::max_parked(1) {
            let permit = enter(&gate, "lookup").await.unwrap();
            permit.park();
            permits.push(permit);
        }
        assert_eq!(gate.parked(), Gate::max_parked(1));
        let last = enter(&gate, "lookup").await.unwrap();
        last.park();
        assert_eq!(
            gate.parked(),
            Gate::max_parked(1),
            "past the bound: not parked"
        );
        assert!(
            poll_briefly(&mut Box::pin(enter(&gate, "other")))
                .await
                .is_none(),
            "the last one kept its worker"
        );
        drop(permits);
        drop(last);
        assert_eq!(gate.parked(), 0);
        let _one = enter(&gate, "other").await.unwrap();
        assert!(
            poll_briefly(&mut Box::pin(enter(&gate, "other")))
                .await
                .is_none(),
            "still exactly one worker"
        );
    }
}
