//! Telling whoever admitted an evaluation that it is waiting on the network,
//! not computing: so the worker it holds can run other evaluations meanwhile.
//!
//! The server admits evaluations through a gate that bounds how many run at
//! once (one per worker thread). A host call that waits for the API server
//! has suspended its evaluation and freed the thread, but would still count
//! against that bound: 64 lookups waiting on a stalled API server would keep
//! every other policy out. The evaluation's runner therefore puts a
//! [`Parking`] in scope ([`scope`]); a capability about to wait calls
//! [`park`], and the guard it gets back takes the worker back when the wait
//! ends. A task-local (rather than a parameter through every layer) because
//! the waiting happens deep inside wasmtime's call of the host function,
//! on the very task that runs the evaluation; outside a scope (the CLI's
//! `run`, load-time calls) parking does nothing.

use std::future::Future;
use std::sync::Arc;

/// What an evaluation's runner does when the evaluation waits.
pub trait Parking: Send + Sync {
    /// The evaluation starts waiting: its worker may serve others.
    fn park(&self);
    /// The wait is over: it runs again.
    fn unpark(&self);
}

tokio::task_local! {
    static PARKING: Arc<dyn Parking>;
}

/// Runs `future` (an evaluation) with `parking` told of its waits.
pub async fn scope<F: Future>(parking: Arc<dyn Parking>, future: F) -> F::Output {
    PARKING.scope(parking, future).await
}

/// Marks the current evaluation as waiting until the guard is dropped.
pub fn park() -> Parked {
    let parking = PARKING.try_with(Arc::clone).ok();
    if let Some(parking) = &parking {
        parking.park();
    }
    Parked(parking)
}

/// An evaluation waiting; dropping it (the wait ended, or the evaluation
/// was dropped at its deadline) makes it run again.
#[must_use = "the evaluation is parked only while the guard lives"]
pub struct Parked(Option<Arc<dyn Parking>>);

impl Drop for Parked {
    fn drop(&mut self) {
        if let Some(parking) = self.0.take() {
            parking.unpark();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicIsize, Ordering};

    struct Count(AtomicIsize);

    impl Parking for Count {
        fn park(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        fn unpark(&self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn parks_inside_a_scope_only() {
        let count = Arc::new(Count(AtomicIsize::new(0)));
        drop(park());
        scope(count.clone(), async {
            let parked = park();
            assert_eq!(count.0.load(Ordering::SeqCst), 1);
            drop(parked);
        })
        .await;
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
    }
}
