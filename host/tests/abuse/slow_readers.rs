//! Clients that ask for large answers and never take them (issue 20,
//! finding 2): over HTTP/2 by keeping the flow-control window shut, over
//! HTTP/1 by not reading the socket. The answers count against the byte
//! budget until written, and a connection whose answer waits past the send
//! timeout is closed.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

use crate::harness::{MARGIN, Options, SEND_TIMEOUT, Target, privileged_review, start};

/// A review whose uid is `bytes` long: the answer echoes it.
fn review_with_uid(bytes: usize) -> String {
    let mut review: serde_json::Value = serde_json::from_str(&privileged_review()).unwrap();
    review["request"]["uid"] = "u".repeat(bytes).into();
    review.to_string()
}

/// The RSS the server may reach during these attacks: its resting RSS, the
/// byte budget (64 MiB), and 64 MiB for everything else.
fn bound(target: &Target) -> u64 {
    target.baseline_mib + 64 + 64
}

/// HTTP/2 connections that announce a receive window of 0 and post, one
/// after another, reviews whose uid is 7 MB. Before, each answer was built,
/// its budget released, and the answer then held in the server for a window
/// that never opened: 1.3 GB for 6 connections × 32 streams. Now the answers
/// stay counted (a connection's budget holds two of them, the server's six;
/// the rest are refused), and every connection is closed at the send
/// timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_behind_a_shut_http2_window_are_counted_and_reset() {
    // Longer than the suite's: the answers must still be waiting when the
    // last of them has been counted, however slowly a busy machine uploads.
    const SEND_TIMEOUT: Duration = Duration::from_secs(5);
    let target = start(Options {
        args: vec!["--response-send-timeout".into(), "5".into()],
        ..Options::default()
    });
    let review = Bytes::from(review_with_uid(7_000_000));
    let attack = async {
        let mut connections = tokio::task::JoinSet::new();
        for _ in 0..3 {
            let api = target.api();
            let review = review.clone();
            connections.spawn(async move {
                let socket = TcpStream::connect(api).await.unwrap();
                let (mut client, connection) = h2::client::Builder::new()
                    .initial_window_size(0)
                    .handshake::<_, Bytes>(socket)
                    .await
                    .unwrap();
                let connection = tokio::spawn(connection);
                let mut statuses = Vec::new();
                let mut waiting = Vec::new();
                for _ in 0..16 {
                    let Ok(ready) = client.ready().await else {
                        break;
                    };
                    client = ready;
                    let request = http::Request::post("http://portcullis/validate/privileged")
                        .header("content-type", "application/json")
                        .header("content-length", review.len())
                        .body(())
                        .unwrap();
                    let Ok((answer, mut body)) = client.send_request(request, false) else {
                        break;
                    };
                    let _ = body.send_data(review.clone(), true);
                    let status = answer.await.map_or(0, |a| a.status().as_u16());
                    statuses.push(status);
                    if status == 200 {
                        // Its answer waits for a window that never opens.
                        waiting.push(body);
                    } else {
                        // Refused: no need to upload the rest.
                        body.send_reset(h2::Reason::CANCEL);
                    }
                }
                (statuses, connection, waiting)
            });
        }
        let mut ended = Vec::new();
        while let Some(connection) = connections.join_next().await {
            ended.push(connection.unwrap());
        }
        // Every request is answered: what the server holds now is answers.
        let held = target.metric("portcullis_buffered_body_bytes").await;
        let answered = Instant::now();
        let mut statuses = Vec::new();
        for (answers, connection, waiting) in ended {
            statuses.extend(answers);
            // Nothing more is read: the connection ends when the server
            // closes it.
            let _ = tokio::time::timeout(SEND_TIMEOUT * 4 + MARGIN * 2, connection).await;
            drop(waiting);
        }
        (held, statuses, answered.elapsed())
    };
    let ((held, statuses, waited), peak) =
        target.during("answers behind a shut window", attack).await;
    let timed_out = target
        .metric(r#"portcullis_shed_requests_total{reason="send_timeout"}"#)
        .await;
    eprintln!(
        "HTTP/2, window 0, 7 MB answers: statuses {statuses:?}; {held} bytes held by the \
         answers; every connection closed {waited:?} after the last answer's head at most; \
         {timed_out} closed at the send timeout; peak RSS {peak} MiB (bound {})",
        bound(&target)
    );
    let answered = statuses.iter().filter(|s| **s == 200).count();
    assert!((1..=6).contains(&answered), "{statuses:?}");
    assert!(
        held >= 7_000_000.0,
        "answers waiting for a window are counted: {held}"
    );
    assert!(
        waited <= SEND_TIMEOUT + MARGIN,
        "a connection stayed open {waited:?} after its answers"
    );
    assert!(timed_out >= 3.0, "{timed_out}");
    assert!(peak <= bound(&target), "peak RSS {peak} MiB");
    target.settles("answers behind a shut window").await;
}

/// HTTP/1 clients that post the same reviews and never read: the answer
/// waits in the socket's buffers, then in the server, counted, until the
/// send timeout closes the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_nobody_reads_are_dropped_at_the_send_timeout() {
    let target = start(Options::default());
    let review = review_with_uid(7_000_000);
    let request = format!(
        "POST /validate/privileged HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{review}",
        review.len()
    );
    let attack = async {
        let mut sockets = Vec::new();
        for _ in 0..8 {
            let socket = TcpSocket::new_v4().unwrap();
            // A small receive buffer: the kernel takes little of the answer.
            socket.set_recv_buffer_size(16 << 10).unwrap();
            let mut socket = socket.connect(target.api()).await.unwrap();
            let _ =
                tokio::time::timeout(Duration::from_secs(5), socket.write_all(request.as_bytes()))
                    .await;
            sockets.push(socket);
        }
        let sent = Instant::now();
        let open = "portcullis_open_connections{listener=\"API\"}";
        // The probes' own connections to the API come and go: at most one.
        while target.metric(open).await > 1.0 && sent.elapsed() < SEND_TIMEOUT * 4 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let closed_after = sent.elapsed();
        drop(sockets);
        closed_after
    };
    let (closed_after, peak) = target.during("answers nobody reads", attack).await;
    let timed_out = target
        .metric(r#"portcullis_shed_requests_total{reason="send_timeout"}"#)
        .await;
    eprintln!(
        "HTTP/1, 7 MB answers never read: every connection closed {closed_after:?} after the \
         last request; {timed_out} at the send timeout; peak RSS {peak} MiB"
    );
    assert!(
        closed_after <= SEND_TIMEOUT + MARGIN,
        "connections still open {closed_after:?} after their requests"
    );
    assert!(timed_out >= 1.0, "{timed_out}");
    assert!(peak <= bound(&target), "peak RSS {peak} MiB");
    target.settles("answers nobody reads").await;
}
