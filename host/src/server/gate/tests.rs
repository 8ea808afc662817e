use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::cpu::Cpu;
use super::*;

fn far() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

async fn enter(gate: &Arc<Gate>, policy: &str) -> Result<Permit, Overloaded> {
    gate.enter(Lane::new(policy, 1000), Instant::now(), far())
        .await
}

/// Polls `future` briefly: `None` if it is still waiting.
async fn poll_briefly<F: Future + Unpin>(future: &mut F) -> Option<F::Output> {
    tokio::time::timeout(Duration::from_millis(20), future)
        .await
        .ok()
}

/// What an evaluation that mostly sleeps reports.
fn sleeper() -> Usage {
    Usage {
        cpu: Duration::from_micros(100),
        blocked: Duration::from_millis(100),
        memory: 1 << 20,
    }
}

#[tokio::test]
async fn refuses_past_live_evaluations_plus_queue() {
    let gate = Gate::with_live(1, 1, 1);
    let running = enter(&gate, "a").await.unwrap();
    let mut queued = Box::pin(enter(&gate, "a"));
    assert!(poll_briefly(&mut queued).await.is_none());
    let refused = enter(&gate, "a").await.unwrap_err();
    assert!(
        matches!(refused, Overloaded::QueueFull { live: 1, queued: 1 }),
        "{refused}"
    );
    drop(running);
    assert!(queued.await.is_ok());
    assert!(enter(&gate, "a").await.is_ok());
}

#[tokio::test]
async fn a_policy_that_computes_throughout_has_at_most_one_evaluation_per_worker() {
    let gate = Gate::with_live(2, 16, 8);
    enter(&gate, "busy").await.unwrap().finished(Usage {
        cpu: Duration::from_micros(300),
        blocked: Duration::ZERO,
        memory: 1 << 20,
    });
    let _first = enter(&gate, "busy").await.unwrap();
    let _second = enter(&gate, "busy").await.unwrap();
    // A third would only wait for a worker, holding an instance meanwhile.
    let mut third = Box::pin(enter(&gate, "busy"));
    assert!(poll_briefly(&mut third).await.is_none());
    // Another policy gets in at once.
    let _other = enter(&gate, "other").await.unwrap();
}

#[tokio::test]
async fn a_policy_not_measured_yet_counts_as_computing_long() {
    let gate = Gate::with_live(2, 16, 8);
    let _first = enter(&gate, "new").await.unwrap();
    assert!(
        poll_briefly(&mut Box::pin(enter(&gate, "new")))
            .await
            .is_none(),
        "one at a time until one has ended"
    );
}

#[tokio::test]
async fn a_policy_that_mostly_waits_may_have_many_evaluations() {
    let gate = Gate::with_live(2, 16, 8);
    enter(&gate, "sleepy").await.unwrap().finished(sleeper());
    let sleeping: Vec<_> = admit_up_to(&gate, "sleepy", 8).await;
    assert_eq!(sleeping.len(), 8, "more than the workers");
}

async fn admit_up_to(gate: &Arc<Gate>, policy: &str, n: usize) -> Vec<Permit> {
    let mut permits = Vec::new();
    for _ in 0..n {
        match poll_briefly(&mut Box::pin(enter(gate, policy))).await {
            Some(Ok(permit)) => permits.push(permit),
            _ => break,
        }
    }
    permits
}

#[tokio::test]
async fn a_reserve_of_places_stays_for_policies_with_nothing_under_way() {
    // 16 places, 4 of them reserved.
    let gate = Gate::with_live(2, 16, 64);
    enter(&gate, "sleepy").await.unwrap().finished(sleeper());
    let sleeping = admit_up_to(&gate, "sleepy", 16).await;
    assert_eq!(sleeping.len(), 12, "all but the reserve");
    // Four other policies get one each...
    let mut others = Vec::new();
    for policy in ["a", "b", "c", "d"] {
        others.push(enter(&gate, policy).await.unwrap());
    }
    // ...and then a fifth waits, as does a second request of theirs.
    assert!(
        poll_briefly(&mut Box::pin(enter(&gate, "e")))
            .await
            .is_none()
    );
    drop(others.pop());
    assert!(
        poll_briefly(&mut Box::pin(enter(&gate, "a")))
            .await
            .is_none()
    );
    assert!(
        poll_briefly(&mut Box::pin(enter(&gate, "e")))
            .await
            .is_some()
    );
}

#[tokio::test]
async fn policies_that_mostly_wait_share_the_places_past_the_reserve() {
    let gate = Gate::with_live(2, 16, 64);
    for policy in ["x", "y"] {
        enter(&gate, policy).await.unwrap().finished(sleeper());
    }
    let mut x = admit_up_to(&gate, "x", 16).await;
    assert_eq!(x.len(), 12, "alone, a policy may take all but the reserve");
    // While `x` holds them, `y` gets a reserved place; as `x`'s end, the
    // places go to `y` until both hold half of the twelve.
    let mut y_waiting: Vec<_> = (0..8).map(|_| Some(Box::pin(enter(&gate, "y")))).collect();
    let mut y = Vec::new();
    let mut admit_y = async |y: &mut Vec<Permit>| {
        for slot in &mut y_waiting {
            let Some(waiting) = slot else { continue };
            if let Some(permit) = poll_briefly(waiting).await {
                y.push(permit.unwrap());
                *slot = None;
            }
        }
    };
    admit_y(&mut y).await;
    assert_eq!(y.len(), 1, "a place of the reserve");
    for _ in 0..6 {
        drop(x.pop());
    }
    admit_y(&mut y).await;
    assert_eq!((x.len(), y.len()), (6, 6));
}

#[tokio::test]
async fn large_requests_wait_apart_from_small_ones() {
    let gate = Gate::with_live(1, 4, 8);
    let huge = || gate.enter(Lane::new("a", LARGE + 1), Instant::now(), far());
    let _large = huge().await.unwrap();
    let mut large_again = Box::pin(huge());
    assert!(poll_briefly(&mut large_again).await.is_none());
    // The same policy, a small request: a lane of its own.
    assert!(
        poll_briefly(&mut Box::pin(enter(&gate, "a")))
            .await
            .is_some()
    );
}

#[tokio::test]
async fn freed_places_go_to_policies_in_turn() {
    let gate = Gate::with_live(1, 1, 8);
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
    let gate = Gate::with_live(1, 1, 3);
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
    let gate = Gate::with_live(1, 1, 8);
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
async fn a_cancelled_waiter_frees_its_place_and_any_place_granted_to_it() {
    let gate = Gate::with_live(1, 1, 8);
    let running = enter(&gate, "a").await.unwrap();
    let mut cancelled = Box::pin(enter(&gate, "a"));
    assert!(poll_briefly(&mut cancelled).await.is_none());
    drop(running); // the place is granted to `cancelled`...
    drop(cancelled); // ...which goes away before taking it.
    assert!(enter(&gate, "b").await.is_ok(), "the place was given on");
}

// --- CPU slots -------------------------------------------------------------------------------

/// An evaluation that computes for `slice` at each poll, `slices` times,
/// returning to the executor in between as wasm does at an epoch tick;
/// counts its polls in `polls`.
struct Spin {
    slice: Duration,
    slices: usize,
    polls: Arc<AtomicUsize>,
}

impl Future for Spin {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        let until = Instant::now() + self.slice;
        while Instant::now() < until {
            std::hint::spin_loop();
        }
        self.slices -= 1;
        if self.slices == 0 {
            return Poll::Ready(());
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

fn spin(slices: usize, polls: &Arc<AtomicUsize>) -> Spin {
    Spin {
        slice: Duration::from_millis(2),
        slices,
        polls: Arc::clone(polls),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_fresh_evaluation_goes_before_every_long_one() {
    let gate = Gate::with_live(1, 16, 8);
    let spins = Arc::new(AtomicUsize::new(0));
    let mut long = Vec::new();
    for policy in ["spin-1", "spin-2", "spin-3"] {
        let permit = enter(&gate, policy).await.unwrap();
        long.push(tokio::spawn(
            permit.run(Duration::from_secs(60), spin(1000, &spins)),
        ));
    }
    // Let each of them compute a little first.
    while spins.load(Ordering::SeqCst) < 6 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let before = Arc::new(AtomicUsize::new(0));
    let (spins_then, before_then) = (Arc::clone(&spins), Arc::clone(&before));
    let permit = enter(&gate, "fast").await.unwrap();
    before.store(spins.load(Ordering::SeqCst), Ordering::SeqCst);
    let fresh = permit.run(Duration::from_secs(60), async move {
        spins_then.load(Ordering::SeqCst) - before_then.load(Ordering::SeqCst)
    });
    let slices_in_between = tokio::spawn(fresh).await.unwrap();
    // The slice under way when it arrived, and none after: round robin
    // would have run each of the three first.
    assert!(
        slices_in_between <= 1,
        "{slices_in_between} slices of the long evaluations ran first"
    );
    for task in long {
        task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_sleeping_evaluation_holds_no_slot() {
    let gate = Gate::with_live(1, 16, 8);
    let sleeping = enter(&gate, "sleepy").await.unwrap().run(
        Duration::from_secs(60),
        tokio::time::sleep(Duration::from_secs(60)),
    );
    let sleeping = tokio::spawn(sleeping);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(gate.cpu.free(), 1, "the only slot is free while it sleeps");
    let polls = Arc::new(AtomicUsize::new(0));
    let other = enter(&gate, "other").await.unwrap();
    let done = tokio::spawn(other.run(Duration::from_secs(60), spin(3, &polls)));
    tokio::time::timeout(Duration::from_secs(30), done)
        .await
        .expect("ran beside the sleeping one")
        .unwrap();
    sleeping.abort();
}

/// An evaluation that holds its thread for `hold` in one poll, like a host
/// call that blocks.
async fn hog(hold: Duration) {
    std::thread::sleep(hold);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evaluation_past_its_deadline_ends_without_waiting_for_a_slot() {
    let gate = Gate::with_live(1, 16, 8);
    // Its deadline 50 ms from its start, it waits on a timer (as an
    // evaluation's own timeout does, from when it starts).
    let timed = enter(&gate, "timed")
        .await
        .unwrap()
        .run(Duration::from_millis(50), async {
            let sleep = tokio::time::sleep(Duration::from_secs(60));
            tokio::time::timeout(Duration::from_millis(50), sleep).await
        });
    let timed = tokio::spawn(timed);
    tokio::time::sleep(Duration::from_millis(10)).await;
    // The only slot is held for 3 s by an evaluation that never yields.
    let hogging = enter(&gate, "hog").await.unwrap();
    let hogging = tokio::spawn(hogging.run(Duration::from_secs(60), hog(Duration::from_secs(3))));
    let ended = tokio::time::timeout(Duration::from_secs(2), timed).await;
    assert!(
        matches!(ended, Ok(Ok(Err(_)))),
        "it ended at its deadline, without the slot: {ended:?}"
    );
    hogging.await.unwrap();
}

#[test]
fn a_slot_granted_to_an_evaluation_that_goes_away_is_handed_on() {
    let gate = Gate::with_live(1, 16, 8);
    let permit = || {
        let memory = gate.lock().start(&Lane::new("p", 1));
        gate.permit(Lane::new("p", 1), memory)
    };
    let holding = permit().run(Duration::from_secs(1), async {});
    let queued = permit().run(Duration::from_secs(1), async {});
    assert_eq!(gate.cpu.free(), 0);
    drop(holding); // the slot goes to `queued`...
    drop(queued); // ...which goes away without taking it
    assert_eq!(gate.cpu.free(), 1);
    assert_eq!(gate.lock().free, 16, "and both places are back");
}

#[test]
fn cpu_slots_are_at_least_one() {
    assert_eq!(Cpu::new(0).free(), 1);
}

#[tokio::test]
async fn memory_hungry_evaluations_start_while_they_fit_the_budget() {
    let gate = Gate::with_live(2, 16, 8);
    gate.limit_memory(512 << 20);
    enter(&gate, "hungry").await.unwrap().finished(Usage {
        memory: 256 << 20,
        ..sleeper()
    });
    let hungry = admit_up_to(&gate, "hungry", 8).await;
    assert_eq!(
        hungry.len(),
        2,
        "two of 256 MiB in 512 MiB, though they mostly sleep"
    );
    // A policy with nothing under way starts one regardless.
    let _other = enter(&gate, "other").await.unwrap();
}

#[tokio::test]
async fn a_policy_whose_evaluations_compute_long_has_one_fewer_than_the_workers() {
    let gate = Gate::with_live(2, 16, 8);
    enter(&gate, "long").await.unwrap().finished(Usage {
        cpu: Duration::from_millis(200),
        blocked: Duration::ZERO,
        memory: 1 << 20,
    });
    assert_eq!(admit_up_to(&gate, "long", 4).await.len(), 1);
}

/// The profile its lane learned from `evaluation`, run alone.
async fn profile_of(evaluation: impl Future<Output = ()> + Send + 'static) -> Profile {
    let gate = Gate::with_live(1, 16, 8);
    let permit = enter(&gate, "measured").await.unwrap();
    tokio::spawn(permit.run(Duration::from_secs(60), evaluation))
        .await
        .unwrap();
    let state = gate.lock();
    state.lanes[&Lane::new("measured", 1000)].profile.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn time_spent_yielding_is_computing_and_time_asleep_is_not() {
    let polls = Arc::new(AtomicUsize::new(0));
    let yielding = profile_of(spin(20, &polls)).await;
    assert!(yielding.cpu >= Duration::from_millis(40), "{yielding:?}");
    assert_eq!(yielding.computing, 1.0, "{yielding:?}");
    let sleeping = profile_of(tokio::time::sleep(Duration::from_millis(100))).await;
    assert!(sleeping.computing < 0.5, "{sleeping:?}");
}
