//! What a client can do without any load: signal the process (as someone
//! with access to the pod might), and put control characters in the strings
//! the server logs.

use std::process::Command;
use std::time::Duration;

use crate::harness::{Options, exchange, post, privileged_review, start};

/// Row "SIGHUP": its default action kills the process with every request in
/// flight. The server reloads its configuration instead, and the requests in
/// flight finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_with_requests_in_flight() {
    let target = start(Options::default());
    let review = post("/validate/sleepy", &privileged_review());
    let mut in_flight = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let api = target.api();
        let review = review.clone();
        in_flight.spawn(async move { exchange(api, None, &review).await });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = target.served.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    while let Some(answer) = in_flight.join_next().await {
        let (status, body, _) = answer
            .unwrap()
            .expect("an answer, not a dropped connection");
        assert!(matches!(status, 200 | 503), "{status}: {body}");
    }
    target.check_serves("after SIGHUP").await;
    let logs = target.logs().join("\n");
    assert!(
        logs.contains("reloading the configuration") && logs.contains("SIGHUP"),
        "{logs}"
    );
}

/// Row "uid with a newline and an ESC byte": text logs escape them, so no
/// forged line and no raw escape reaches the operator's terminal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_strings_cannot_forge_log_lines() {
    let target = start(Options {
        text_logs: true,
        ..Options::default()
    });
    let forged = "x\n2026-01-01T00:00:00.000000Z  INFO portcullis: forged\u{1b}[2J";
    let mut review: serde_json::Value = serde_json::from_str(&privileged_review()).unwrap();
    review["request"]["uid"] = forged.into();
    // Monitor mode logs the uid of every rejection it does not enforce.
    let request = post("/validate/privileged-monitor", &review.to_string());
    let (status, body, _) = exchange(target.api(), None, &request).await.unwrap();
    assert_eq!(status, 200, "{body}");
    let line = wait_for_log(&target, "monitor mode: verdict not enforced").await;
    assert!(line.contains(r"uid=x\n2026-01-01"), "{line}");
    assert!(line.contains(r"\u{1b}[2J"), "{line}");
    let logs = target.logs();
    assert!(
        logs.iter()
            .all(|l| !l.starts_with("2026-01-01T00:00:00.000000Z") && !l.contains('\u{1b}')),
        "{logs:?}"
    );
}

async fn wait_for_log(target: &crate::harness::Target, needle: &str) -> String {
    for _ in 0..100 {
        if let Ok(line) = target.served.logs.recv_timeout(Duration::from_millis(50))
            && line.contains(needle)
        {
            return line;
        }
        tokio::task::yield_now().await;
    }
    panic!("no log line with `{needle}`");
}
