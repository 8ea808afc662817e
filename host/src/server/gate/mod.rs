//! Scheduling evaluations: which requests are evaluated, and which of the
//! evaluations under way computes at each moment.
//!
//! Two bounds, held apart:
//!
//! - **Live evaluations** (this module). An admitted evaluation holds a
//!   [`Permit`] from before its instance exists until it ends: at most
//!   [`Gate::max_live`] at once (each holds an instance and its memory; the
//!   pool is sized for them), with a bounded queue in front.
//! - **CPU slots** ([`cpu`]), one per worker (evaluation thread), held only
//!   while an evaluation's future is being polled ([`Scheduled`]). Running
//!   wasm returns to the executor at every epoch tick (1 ms), and an
//!   evaluation whose guest sleeps or whose host call waits on the network
//!   returns `Pending`: each time it gives its slot back and queues for one
//!   again. A freed slot goes to the evaluation that has used the least CPU
//!   so far, so a fresh request goes before every long evaluation; long
//!   evaluations (over 10 ms of CPU) hold all slots but one, so that it
//!   usually starts at once. A sleeping or waiting evaluation holds no
//!   worker; long ones share what short ones leave.
//!
//! Admission, lane by lane:
//!
//! - **Round robin between lanes.** Requests wait in lanes, one per policy
//!   and size class (requests over [`LARGE`] bytes apart); a freed place
//!   goes to the next lane in turn, so a burst for one policy, or of huge
//!   reviews, does not stand in front of everyone else's requests.
//! - **No policy holds more than its share.** A lane with nothing under way
//!   may take any free place. A lane with evaluations under way may take
//!   another only while a reserve of places ([`Gate::max_live`] / 4) stays
//!   free for lanes with none, and only up to its share, the least of:
//!   the places past the reserve divided among the lanes with requests;
//!   what its evaluations can use — the workers they may use divided by the
//!   fraction of their time they compute (Little's law: a policy that
//!   computes throughout gains nothing from more evaluations than workers,
//!   only memory and latency; one that mostly sleeps or waits on the
//!   network may have many); and what fits the memory budget
//!   ([`Gate::limit_memory`]) given what its evaluations held before. Each
//!   evaluation is measured as it runs; a policy not measured yet counts as
//!   computing long, with one evaluation per worker but one.
//! - **The longest lane gives way.** When the queue is full, a request of a
//!   policy with a shorter lane pushes out the newest request of the longest
//!   one, instead of being refused.
//! - **Nobody is evaluated for nobody.** A request that has waited past its
//!   deadline (the API server's webhook timeout) is answered at once instead
//!   of being evaluated after the API server gave up on it; an evaluation
//!   past its own deadline is polled without waiting for a slot, and ends.
//!
//! Every refusal is immediate: an overloaded webhook that answers fast lets
//! the API server apply its failure policy, one that queues without limit
//! only times out later and holds memory meanwhile.
//!
//! Why slots per poll rather than a worker held for an evaluation's whole
//! life: with workers held, two slow policies with one request each in
//! flight took both workers of a 2-worker server and another policy waited
//! seconds (p50 0.2 ms → 640 ms; 6.5 s with eight); keeping the last worker
//! for other policies helps only while fewer slow policies run than there
//! are workers. Measured alternatives (`bench/abuse.py --only 20.3`, K = 1–8
//! spinning policies, docs/reliability.md): least attained service alone,
//! with 5 ms ticks, kept another policy's p50 at 3–5 ms (a fresh request
//! waits for the slice under way); 1 ms ticks brought it to ~1 ms; keeping
//! one slot from long evaluations, to 0.2 ms, with p99 under 10 ms on a
//! loaded machine.

mod cpu;
mod scheduled;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use self::cpu::{Cpu, LONG};
pub use self::scheduled::Scheduled;
use self::scheduled::Usage;

/// Requests with bodies larger than this wait in a lane of their own: an
/// evaluation costs about in proportion to its input, and a pod's review is
/// a few KiB while the largest are MiBs.
pub const LARGE: usize = 256 << 10;

/// Live evaluations per worker.
const LIVE_PER_WORKER: usize = 32;

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

/// The admission gate of evaluations, and the CPU slots they compute in.
#[derive(Debug)]
pub struct Gate {
    state: Mutex<State>,
    cpu: Arc<Cpu>,
    queue_capacity: usize,
}

/// Why a request is not evaluated.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Overloaded {
    /// Every place is taken and the queue is full.
    #[error("server overloaded: {live} evaluations under way and {queued} queued; retry later")]
    QueueFull {
        /// Evaluations under way.
        live: usize,
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

/// The fixed sizes admission works with.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    workers: usize,
    live: usize,
    /// Places only a lane with nothing under way may take.
    reserve: usize,
}

#[derive(Debug)]
struct State {
    bounds: Bounds,
    /// Places free among the live evaluations.
    free: usize,
    /// Bytes of linear memory the live evaluations are expected to hold
    /// (what their policies' evaluations held before), and the most that
    /// lanes with evaluations under way may add to.
    memory: usize,
    memory_budget: usize,
    queued: usize,
    /// Lanes with evaluations under way or requests waiting.
    active: usize,
    lanes: HashMap<Lane, LaneState>,
    /// Lanes with waiting requests, in the order their turn comes.
    turns: VecDeque<Lane>,
    next_waiter: u64,
}

#[derive(Debug, Default)]
struct LaneState {
    live: usize,
    waiting: VecDeque<Waiter>,
    /// What its evaluations used, once one has ended.
    profile: Option<Profile>,
}

/// What a lane's recent evaluations used (moving averages).
#[derive(Debug, Clone, Copy)]
struct Profile {
    /// CPU time per evaluation.
    cpu: Duration,
    /// Fraction of their time spent computing (the rest: sleeping, waiting
    /// on the network), not counting time waiting for the CPU.
    computing: f64,
    /// Linear memory per evaluation, in bytes (rising at once, falling
    /// slowly).
    memory: usize,
}

impl Profile {
    fn learn(recent: Option<Self>, usage: Usage) -> Self {
        let busy = (usage.cpu + usage.blocked).as_secs_f64();
        let computing = if busy > 0.0 {
            usage.cpu.as_secs_f64() / busy
        } else {
            1.0
        };
        let Some(recent) = recent else {
            return Self {
                cpu: usage.cpu,
                computing,
                memory: usage.memory,
            };
        };
        Self {
            cpu: (recent.cpu * 3 + usage.cpu) / 4,
            computing: (recent.computing * 3.0 + computing) / 4.0,
            memory: usage.memory.max((recent.memory / 4) * 3 + usage.memory / 4),
        }
    }
}

impl LaneState {
    fn is_active(&self) -> bool {
        self.live > 0 || !self.waiting.is_empty()
    }
}

#[derive(Debug)]
struct Waiter {
    id: u64,
    /// Sent the memory its evaluation is expected to hold.
    grant: oneshot::Sender<usize>,
}

impl Gate {
    /// `workers` evaluations computing at once, [`Gate::max_live`] under
    /// way, and at most `queue_capacity` waiting.
    pub fn new(workers: usize, queue_capacity: usize) -> Arc<Self> {
        Self::with_live(workers, Self::max_live(workers), queue_capacity)
    }

    fn with_live(workers: usize, live: usize, queue_capacity: usize) -> Arc<Self> {
        let workers = workers.max(1);
        let live = live.max(1);
        Arc::new(Self {
            state: Mutex::new(State {
                bounds: Bounds {
                    workers,
                    live,
                    reserve: live / 4,
                },
                free: live,
                memory: 0,
                memory_budget: usize::MAX,
                queued: 0,
                active: 0,
                lanes: HashMap::new(),
                turns: VecDeque::new(),
                next_waiter: 0,
            }),
            cpu: Arc::new(Cpu::new(workers)),
            queue_capacity,
        })
    }

    /// How many evaluations may be under way at once with `workers`: each
    /// holds an instance (the pool is sized for them) and its memory.
    pub fn max_live(workers: usize) -> usize {
        workers.max(1) * LIVE_PER_WORKER
    }

    /// Bounds the linear memory of the live evaluations, as far as their
    /// policies' past evaluations tell, to `bytes`: a policy with
    /// evaluations under way starts another only if it fits (a policy with
    /// none always may start one). Unbounded until set.
    pub fn limit_memory(&self, bytes: usize) {
        self.lock().memory_budget = bytes;
    }

    /// Waits for a place for an evaluation in `lane`, until `deadline`.
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
            let idle_lane = state.lanes.get(&lane).is_none_or(|l| l.waiting.is_empty());
            if idle_lane && state.may_start(&lane) {
                let memory = state.start(&lane);
                return Ok(self.permit(lane, memory));
            }
            if state.queued >= self.queue_capacity {
                self.push_out_for(&mut state, &lane)?;
            }
            let id = state.next_waiter;
            state.next_waiter += 1;
            let (grant, receiver) = oneshot::channel();
            let waiting = state.update(&lane, |lane| {
                lane.waiting.push_back(Waiter { id, grant });
                lane.waiting.len()
            });
            if waiting == 1 {
                state.turns.push_back(lane.clone());
            }
            state.queued += 1;
            // A place may be free that no other lane could take.
            state.dispatch();
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
            Ok(Ok(memory)) => {
                waiting.receiver = None;
                drop(waiting);
                Ok(self.permit(lane, memory))
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
                live: state.bounds.live - state.free,
                queued: state.queued,
            });
        };
        // Dropping the sender tells the waiter it was pushed out.
        let emptied = state.update(&longest, |lane| {
            drop(lane.waiting.pop_back());
            lane.waiting.is_empty()
        });
        if emptied {
            state.turns.retain(|id| *id != longest);
        }
        state.queued -= 1;
        Ok(())
    }

    fn permit(self: &Arc<Self>, lane: Lane, memory: usize) -> Permit {
        Permit {
            gate: Arc::clone(self),
            lane,
            memory,
            usage: None,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    /// Changes `lane` with `change`, keeping the count of active lanes.
    fn update<R>(&mut self, lane: &Lane, change: impl FnOnce(&mut LaneState) -> R) -> R {
        let state = self.lanes.entry(lane.clone()).or_default();
        let was_active = state.is_active();
        let result = change(state);
        match (was_active, state.is_active()) {
            (false, true) => self.active += 1,
            (true, false) => self.active -= 1,
            _ => {}
        }
        result
    }

    /// Whether `lane` may take a free place now.
    fn may_start(&self, lane: &Lane) -> bool {
        if self.free == 0 {
            return false;
        }
        let Some(state) = self.lanes.get(lane) else {
            return true;
        };
        let memory = state.profile.map_or(0, |p| p.memory);
        state.live == 0
            || (self.free > self.bounds.reserve
                && state.live < self.share(state)
                && self.memory.saturating_add(memory) <= self.memory_budget)
    }

    /// How many evaluations a lane with some under way may have.
    fn share(&self, lane: &LaneState) -> usize {
        let Bounds {
            workers,
            live,
            reserve,
        } = self.bounds;
        let fair = (live - reserve) / self.active.max(1);
        // Enough to keep busy the workers its evaluations may use (long
        // ones, all but one: gate::cpu), given how much of their time they
        // compute.
        // Until one has ended, its evaluations count as long ones.
        let long = lane.profile.is_none_or(|p| p.cpu >= LONG);
        let slots = if long && workers > 1 {
            workers - 1
        } else {
            workers
        };
        let Some(profile) = lane.profile else {
            return slots.min(fair).max(1);
        };
        let useful = (slots as f64 / profile.computing.max(1.0 / live as f64)).ceil() as usize;
        useful.max(slots).min(fair).max(1)
    }

    /// Starts an evaluation in `lane`; returns the memory it is expected
    /// to hold (counted until it finishes).
    fn start(&mut self, lane: &Lane) -> usize {
        self.free -= 1;
        let memory = self.update(lane, |lane| {
            lane.live += 1;
            lane.profile.map_or(0, |p| p.memory)
        });
        self.memory += memory;
        memory
    }

    fn finish(&mut self, lane: &Lane, memory: usize, usage: Option<Usage>) {
        self.free += 1;
        self.memory -= memory;
        self.update(lane, |lane| {
            lane.live -= 1;
            if let Some(usage) = usage {
                lane.profile = Some(Profile::learn(lane.profile, usage));
            }
        });
    }

    /// Hands free places to waiting requests, one lane at a time in turn.
    fn dispatch(&mut self) {
        while self.free > 0 {
            let Some(turn) = (0..self.turns.len()).find(|&i| self.may_start(&self.turns[i])) else {
                return;
            };
            let lane = self.turns.remove(turn).expect("index found above");
            let (waiter, more) = self.update(&lane, |state| {
                let waiter = state
                    .waiting
                    .pop_front()
                    .expect("a lane in turn has a waiter");
                (waiter, !state.waiting.is_empty())
            });
            if more {
                self.turns.push_back(lane.clone());
            }
            self.queued -= 1;
            let memory = self.start(&lane);
            if waiter.grant.send(memory).is_err() {
                // Its request is gone (the client hung up): next one.
                self.finish(&lane, memory, None);
            }
        }
    }

    /// Removes a waiter that gave up; false if it is no longer queued.
    fn remove(&mut self, lane: &Lane, id: u64) -> bool {
        let Some(at) = self
            .lanes
            .get(lane)
            .and_then(|state| state.waiting.iter().position(|w| w.id == id))
        else {
            return false;
        };
        let emptied = self.update(lane, |state| {
            state.waiting.remove(at);
            state.waiting.is_empty()
        });
        if emptied {
            self.turns.retain(|l| l != lane);
        }
        self.queued -= 1;
        true
    }
}

/// A request waiting for a place; cleans up if it stops waiting.
struct Waiting<'a> {
    gate: &'a Arc<Gate>,
    lane: &'a Lane,
    id: u64,
    receiver: Option<oneshot::Receiver<usize>>,
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
        // Dispatched already: a place may be granted to nobody. Give it on.
        receiver.close();
        if let Ok(memory) = receiver.try_recv() {
            state.finish(self.lane, memory, None);
            state.dispatch();
        }
    }
}

/// A place among the live evaluations, held for one evaluation.
#[derive(Debug)]
pub struct Permit {
    gate: Arc<Gate>,
    lane: Lane,
    /// The memory its evaluation is expected to hold.
    memory: usize,
    usage: Option<Usage>,
}

impl Permit {
    /// Runs `evaluation`, whose deadline is `timeout` after it starts, under
    /// this permit: it computes only while holding a CPU slot, and the
    /// permit goes when it ends or is dropped. It is queued for its first
    /// slot now, before it reaches the runtime.
    pub fn run<F: Future>(self, timeout: Duration, evaluation: F) -> Scheduled<F> {
        let cpu = Arc::clone(&self.gate.cpu);
        Scheduled::new(self, cpu, timeout, evaluation)
    }

    /// The evaluation ended having used `usage`: its lane learns from it.
    fn finished(mut self, usage: Usage) {
        self.usage = Some(usage);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut state = self.gate.lock();
        state.finish(&self.lane, self.memory, self.usage);
        state.dispatch();
    }
}
