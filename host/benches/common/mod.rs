//! What both per-evaluation benches share: timed runs of an evaluation, on
//! the benchmark thread's CPU clock, and their median.

/// Timed runs per measurement.
pub const RUNS: usize = 7;
/// Each run lasts about this long; the iteration count adapts to the policy.
pub const RUN_SECONDS: f64 = 0.4;

/// Runs `evaluate` repeatedly: one warm-up run that also sizes the
/// iteration count, then `RUNS` timed runs; µs per evaluation for each.
pub async fn runs<F, Fut>(mut evaluate: F) -> anyhow::Result<Vec<f64>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let started = thread_cpu_seconds();
    let mut warm_up = 0usize;
    while thread_cpu_seconds() - started < RUN_SECONDS / 2.0 || warm_up < 10 {
        evaluate().await?;
        warm_up += 1;
    }
    let per_eval = (thread_cpu_seconds() - started) / warm_up as f64;
    let iterations = ((RUN_SECONDS / per_eval) as usize).max(10);
    let mut results = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let started = thread_cpu_seconds();
        for _ in 0..iterations {
            evaluate().await?;
        }
        results.push((thread_cpu_seconds() - started) * 1e6 / iterations as f64);
    }
    Ok(results)
}

/// CPU time (user + system) of the calling thread, in seconds.
pub fn thread_cpu_seconds() -> f64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec to write to.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    assert_eq!(status, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    now.tv_sec as f64 + now.tv_nsec as f64 * 1e-9
}

pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}
