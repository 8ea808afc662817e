//! Attacks with valid requests: floods that the worker pool, its queue and
//! the body budget must absorb without starving anyone else.

use std::time::{Duration, Instant};

use crate::harness::{Options, WEBHOOK_TIMEOUT, exchange, post, privileged_review, start};

/// Row "256 concurrent requests to a slow policy": the slow policy never
/// holds every worker, so other policies stay fast; its own requests are
/// answered by the webhook timeout at the latest (evaluated, or 503), never
/// evaluated after the API server gave up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_for_a_slow_policy_does_not_delay_the_others() {
    let target = start(Options::default());
    let review = post("/validate/sleepy", &privileged_review());
    let attack = async {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..256 {
            let api = target.api();
            let review = review.clone();
            tasks.spawn(async move {
                let started = Instant::now();
                let answer = exchange(api, None, &review).await;
                (answer.map(|(status, _, _)| status), started.elapsed())
            });
        }
        let mut answers = Vec::new();
        while let Some(answer) = tasks.join_next().await {
            answers.push(answer.unwrap());
        }
        answers
    };
    let (answers, _) = target.during("256 requests to a slow policy", attack).await;
    let slowest = answers.iter().map(|(_, took)| *took).max().unwrap();
    let statuses: Vec<_> = answers.iter().map(|(s, _)| s.as_ref().ok()).collect();
    assert!(
        statuses.iter().all(|s| matches!(s, Some(200 | 503))),
        "{statuses:?}"
    );
    // The webhook timeout, plus one evaluation that started just before it.
    assert!(
        slowest <= WEBHOOK_TIMEOUT + Duration::from_secs(3),
        "a request was answered after {slowest:?}"
    );
    target.settles("256 requests to a slow policy").await;
}

/// Row "100 concurrent valid 7.3 MB reviews": the body budget admits what
/// it holds and refuses the rest before reading it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_large_reviews_is_bounded_by_the_body_budget() {
    let target = start(Options::default());
    let review = large_review(7_300_000);
    let request = post("/validate/privileged", &review);
    let attack = async {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..100 {
            let api = target.api();
            let request = request.clone();
            tasks.spawn(async move { exchange(api, None, &request).await.map(|(s, _, _)| s) });
        }
        let mut statuses = Vec::new();
        while let Some(status) = tasks.join_next().await {
            statuses.push(status.unwrap().ok());
        }
        statuses
    };
    let (statuses, peak) = target.during("100 large reviews", attack).await;
    let evaluated = statuses.iter().filter(|s| **s == Some(200)).count();
    eprintln!("100 large reviews: {evaluated} evaluated, peak RSS {peak} MiB");
    // 64 MiB less the 16 MiB kept for small bodies: 6 at a time.
    assert!(
        evaluated >= 6,
        "the budget admits 6 at a time: {statuses:?}"
    );
    // The others were refused before their bodies were read: a 503, or,
    // when the client was still writing as the server closed, a reset that
    // lost it. The server counted each.
    let metrics = exchange(target.probes(), None, &crate::harness::get("/metrics"))
        .await
        .unwrap()
        .1;
    let refused = format!(
        "portcullis_overload_rejections_total{{reason=\"body_budget\"}} {}",
        100 - evaluated
    );
    assert!(metrics.contains(&refused), "{refused} in {metrics}");
    target.settles("100 large reviews").await;
}

/// Row "raw documents with 580k keys": checking a raw document costs one
/// pass and no allocation per key, so other requests stay fast.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_raw_documents_do_not_slow_down_other_requests() {
    let target = start(Options::default());
    let document = many_keys(8_000_000);
    let request = post("/validate_raw/privileged", &document);
    let attack = async {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let api = target.api();
            let request = request.clone();
            tasks.spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(4);
                let mut sent = 0;
                while Instant::now() < deadline {
                    let (status, body, _) = exchange(api, None, &request).await.unwrap();
                    assert!(matches!(status, 200 | 503), "{status} {body}");
                    sent += 1;
                }
                sent
            });
        }
        let mut sent = 0;
        while let Some(count) = tasks.join_next().await {
            sent += count.unwrap();
        }
        sent
    };
    let (sent, peak) = target.during("raw documents with many keys", attack).await;
    eprintln!("raw documents: {sent} sent, peak RSS {peak} MiB");
    target.settles("raw documents").await;
}

/// A pod review whose object carries `bytes` of annotations.
fn large_review(bytes: usize) -> String {
    let mut review: serde_json::Value = serde_json::from_str(&privileged_review()).unwrap();
    let annotations: serde_json::Map<_, _> = (0..bytes / 1000)
        .map(|i| (format!("example.com/a{i}"), "x".repeat(980).into()))
        .collect();
    review["request"]["object"]["metadata"]["annotations"] = annotations.into();
    review.to_string()
}

/// A JSON object of about `bytes` made of short keys (`{"k0":0,...}`).
fn many_keys(bytes: usize) -> String {
    let mut document = String::with_capacity(bytes + 16);
    document.push_str("{\"uid\":\"raw\"");
    let mut i = 0;
    while document.len() < bytes {
        document.push_str(&format!(",\"k{i}\":{i}"));
        i += 1;
    }
    document.push('}');
    document
}
