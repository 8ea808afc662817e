//! Bounds concurrent evaluations (`--workers`) and the queue in front of them.
//!
//! Past the queue, a request is refused at once: an overloaded webhook that
//! answers fast lets the API server apply its failure policy, one that queues
//! without limit only times out later and holds memory meanwhile.

use std::sync::atomic::{AtomicUsize, Ordering};

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The admission gate of evaluations.
#[derive(Debug)]
pub struct Gate {
    workers: Arc<Semaphore>,
    worker_count: usize,
    queue_capacity: usize,
    queued: AtomicUsize,
}

/// The gate is full: every worker is busy and the queue is at capacity.
#[derive(Debug, thiserror::Error)]
#[error("server overloaded: {workers} evaluations running and {queued} queued; retry later")]
pub struct Overloaded {
    workers: usize,
    queued: usize,
}

impl Gate {
    /// `workers` evaluations at once, and at most `queue_capacity` waiting.
    pub fn new(workers: usize, queue_capacity: usize) -> Self {
        Self {
            workers: Arc::new(Semaphore::new(workers)),
            worker_count: workers,
            queue_capacity,
            queued: AtomicUsize::new(0),
        }
    }

    /// Waits for a worker, or fails at once when the queue is full. The
    /// permit is owned, so it can travel with the evaluation it admits.
    pub async fn enter(&self) -> Result<OwnedSemaphorePermit, Overloaded> {
        if let Ok(permit) = self.workers.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let queued = self.queued.fetch_add(1, Ordering::AcqRel);
        // Decrements on every exit path, including a cancelled request.
        let _slot = QueueSlot(&self.queued);
        if queued >= self.queue_capacity {
            return Err(Overloaded {
                workers: self.worker_count,
                queued,
            });
        }
        Ok(self
            .workers
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed"))
    }
}

struct QueueSlot<'a>(&'a AtomicUsize);

impl Drop for QueueSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_past_workers_plus_queue() {
        let gate = Gate::new(1, 1);
        let running = gate.enter().await.unwrap();
        let gate_ref = &gate;
        let queued = async move { gate_ref.enter().await.map(|_| ()) };
        tokio::pin!(queued);
        // The second caller waits in the queue...
        assert!(futures_poll_once(&mut queued).await.is_none());
        // ...so a third is refused at once.
        assert!(gate.enter().await.is_err());
        drop(running);
        assert!(queued.await.is_ok());
        assert!(gate.enter().await.is_ok());
    }

    async fn futures_poll_once<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
        tokio::time::timeout(std::time::Duration::from_millis(20), f)
            .await
            .ok()
    }
}
