//! Slow policies beside a fast one (issue 20, finding 3): evaluations that
//! sleep or spin until their deadline hold no worker the others need.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::harness::{
    MARGIN, Options, RSS_BUDGET_MIB, exchange, get, module, post, privileged_review, start,
};

/// Slow policies of each kind, each with a request in flight throughout:
/// twice the workers each, four times together (before, two were enough
/// to take both workers).
const SLOW: usize = 4;

/// The slow policies' deadline; longer than the suite's webhook timeout, so
/// that a request queued behind them would be answered 503.
const DEADLINE: Duration = Duration::from_secs(4);

/// What every normal review must be answered within while they run. Before,
/// it waited for a slow evaluation to end (seconds); now it waits at most a
/// tick (1 ms) for the CPU, so this holds on a loaded machine by far.
const WITHIN: Duration = Duration::from_secs(1);

fn slow_policies() -> String {
    let (sleeping, hostile) = (module("sleeping.wasm"), module("hostile_policy.wasm"));
    let seconds = DEADLINE.as_secs();
    (1..=SLOW)
        .map(|i| {
            format!(
                "sleeping-{i}: {{ module: {sleeping}, timeoutEvalSeconds: {seconds}, \
                 settings: {{ sleepMilliseconds: 600000 }} }}\n\
                 spinning-{i}: {{ module: {hostile}, timeoutEvalSeconds: {seconds}, \
                 settings: {{ attack: loop }} }}\n"
            )
        })
        .collect()
}

/// Row "K slow policies, one request each in flight": with four sleeping
/// and four spinning policies running until their deadline, a normal
/// review, `/livez` and `/readiness` are each answered within a second,
/// every time; and the slow policies' own requests are each answered at
/// their deadline (all of them evaluated at once, none queued behind
/// another).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_policies_leave_a_fast_one_fast() {
    let target = start(Options {
        policies: slow_policies(),
        ..Options::default()
    });
    let review = privileged_review();
    let stop = Arc::new(AtomicBool::new(false));
    let mut slow = tokio::task::JoinSet::new();
    for kind in ["sleeping", "spinning"] {
        for i in 1..=SLOW {
            let (api, stop) = (target.api(), Arc::clone(&stop));
            let request = post(&format!("/validate/{kind}-{i}"), &review);
            slow.spawn(async move {
                let mut answers = Vec::new();
                while !stop.load(Ordering::SeqCst) && answers.len() < 20 {
                    answers.push(exchange(api, None, &request).await.unwrap());
                }
                answers
            });
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let normal = post("/validate/privileged", &review);
    let mut slowest = Duration::ZERO;
    for _ in 0..40 {
        let (status, body, took) = exchange(target.api(), None, &normal).await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(
            body.contains("Privileged container is not allowed"),
            "{body}"
        );
        for path in ["/livez", "/readiness"] {
            let (status, body, took) = exchange(target.probes(), None, &get(path)).await.unwrap();
            assert_eq!(status, 200, "{path}: {body}");
            assert!(took <= WITHIN, "{path} took {took:?}");
        }
        slowest = slowest.max(took);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "beside {} slow policies: the slowest normal review took {slowest:?}",
        2 * SLOW
    );
    assert!(
        slowest <= WITHIN,
        "a normal review took {slowest:?} beside the slow policies"
    );
    let rss = target.rss_mib();
    assert!(rss <= RSS_BUDGET_MIB, "RSS {rss} MiB");
    stop.store(true, Ordering::SeqCst);
    while let Some(answers) = slow.join_next().await {
        for (status, body, took) in answers.unwrap() {
            assert_eq!(status, 200, "evaluated, not refused: {body}");
            assert!(body.contains("timed out"), "{body}");
            assert!(
                took <= DEADLINE + MARGIN,
                "a slow policy was answered after {took:?}, its deadline {DEADLINE:?}"
            );
        }
    }
    target.settles("slow policies").await;
}
