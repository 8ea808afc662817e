//! What a client can do without any load: signal the process (as someone
//! with access to the pod might), put control characters in the strings the
//! server logs, read the metrics, make a policy flood the log, and speak
//! HTTP/1 after negotiating HTTP/2.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{Options, exchange, get, post, privileged_review, start};

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

/// Lower finding of issue 20: under mTLS the probe port is plain HTTP, and
/// whoever reaches it reads `/metrics` (policy names, verdict counts). With
/// `--metrics-listener api` the metrics are served on the API port only,
/// behind its mTLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_be_served_behind_the_api_ports_mtls() {
    let target = start(Options {
        mtls: true,
        args: vec!["--metrics-listener".into(), "api".into()],
        ..Options::default()
    });
    let tls = target.tls.clone().unwrap();
    let (status, _, _) = exchange(target.probes(), None, &get("/metrics"))
        .await
        .unwrap();
    assert_eq!(status, 404, "no metrics on the plain probe port");
    let (status, body, _) = exchange(target.api(), Some(&tls), &get("/metrics"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("# TYPE portcullis_open_connections gauge"),
        "{body}"
    );
    // Without a client certificate, no TLS session, hence no metrics.
    let anonymous = crate::harness::TlsClient {
        config: Arc::clone(&tls.anonymous),
        anonymous: Arc::clone(&tls.anonymous),
    };
    let refused = exchange(target.api(), Some(&anonymous), &get("/metrics")).await;
    assert!(
        !matches!(&refused, Ok((200, ..))),
        "metrics served without a client certificate: {refused:?}"
    );
    target.check_serves("with metrics on the API port").await;
}

/// Lower finding of issue 20: a policy spamming stderr turned one request
/// into 1,132 log lines (the capture was bounded by bytes only). Now by
/// lines too: `--max-policy-log-lines` (100), then one "truncated" warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_spamming_stderr_costs_a_bounded_number_of_log_lines() {
    let hostile = crate::common::components_dir().join("hostile_policy.wasm");
    let target = start(Options {
        policies: format!(
            "spam:\n  module: {}\n  timeoutEvalSeconds: 1\n  settings: {{ attack: spam-stderr }}\n",
            hostile.display()
        ),
        ..Options::default()
    });
    let request = post("/validate/spam", &privileged_review());
    let (status, body, _) = exchange(target.api(), None, &request).await.unwrap();
    assert_eq!(status, 200, "{body}");
    // The lines are logged after the evaluation, the warning last.
    let mut spam = 0;
    let mut truncated = false;
    while !truncated {
        let line = target
            .served
            .logs
            .recv_timeout(Duration::from_secs(10))
            .expect("a \"guest output truncated\" warning");
        spam += usize::from(line.contains("this line is written forever"));
        truncated = line.contains("guest output truncated");
    }
    assert!(
        (1..=100).contains(&spam),
        "{spam} lines of guest output logged for one request"
    );
}

/// Lower finding of issue 20: a connection that negotiated `h2` by ALPN and
/// then spoke HTTP/1 was served as HTTP/1. ALPN `h2` means HTTP/2 only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_h2_means_http2_only() {
    let target = start(Options {
        mtls: true,
        ..Options::default()
    });
    let tls = target.tls.clone().unwrap();
    let speak_http1 = async |alpn: &[u8]| {
        let mut config = (*tls.config).clone();
        config.alpn_protocols = vec![alpn.to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let socket = tokio::net::TcpStream::connect(target.api()).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut socket = connector.connect(name, socket).await.unwrap();
        assert_eq!(socket.get_ref().1.alpn_protocol(), Some(alpn));
        socket.write_all(&get("/livez")).await.unwrap();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut answer));
        let _ = read.await.expect("the server ends the connection");
        answer
    };
    let answer = speak_http1(b"http/1.1").await;
    assert!(answer.starts_with(b"HTTP/1.1 404"), "{answer:?}");
    let answer = speak_http1(b"h2").await;
    assert!(
        !answer.windows(5).any(|w| w == b"HTTP/"),
        "HTTP/1 served after ALPN h2: {}",
        String::from_utf8_lossy(&answer)
    );
}
