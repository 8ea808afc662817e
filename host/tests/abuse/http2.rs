//! Attacks that multiplex on one HTTP/2 connection, and the API server's
//! own pattern (TLS, HTTP/2, one request at a time) that must not stall.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::TcpStream;

use crate::harness::{BODY_TIMEOUT, Options, privileged_review, start};

/// Opens an HTTP/2 (prior knowledge) connection to `addr` and makes one
/// exchange on it: the client then knows the server's stream limit and
/// keeps to it. (Streams opened before the server's SETTINGS arrive, past
/// its limit, are refused unprocessed; too many of those get a GOAWAY.)
async fn h2_client(addr: std::net::SocketAddr) -> h2::client::SendRequest<Bytes> {
    let socket = TcpStream::connect(addr).await.unwrap();
    socket.set_nodelay(true).unwrap();
    let (mut client, connection) = h2::client::handshake(socket).await.unwrap();
    tokio::spawn(connection);
    let probe = http::Request::get("http://portcullis/").body(()).unwrap();
    let (response, _) = client.send_request(probe, true).unwrap();
    assert_eq!(response.await.unwrap().status(), 404);
    client
}

fn request(path: &str, length: usize) -> http::Request<()> {
    http::Request::post(format!("http://portcullis{path}"))
        .header("content-type", "application/json")
        .header("content-length", length)
        .body(())
        .unwrap()
}

/// Row 2: one connection, 100 streams of 7.5 MB bodies that never finish.
/// The connection's body budget takes two of them; the rest are refused
/// before their bodies; the two are dropped at the body timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_cannot_take_the_body_budget() {
    let target = start(Options::default());
    let attack = async {
        let mut client = h2_client(target.api()).await;
        let chunk = Bytes::from(vec![b' '; 7_500_000]);
        let mut answers = tokio::task::JoinSet::new();
        for _ in 0..100 {
            client = client.ready().await.unwrap();
            let (response, mut body) = client
                .send_request(request("/validate/privileged", 7_600_000), false)
                .unwrap();
            let _ = body.send_data(chunk.clone(), false);
            answers.spawn(async move {
                let status = match response.await {
                    Ok(response) => response.status().as_u16(),
                    Err(_) => 0, // reset
                };
                drop(body);
                status
            });
        }
        let mut statuses = Vec::new();
        while let Some(status) = answers.join_next().await {
            statuses.push(status.unwrap());
        }
        statuses
    };
    let started = Instant::now();
    let (statuses, peak) = target.during("100 unfinished HTTP/2 streams", attack).await;
    let count = |code| statuses.iter().filter(|s| **s == code).count();
    eprintln!(
        "HTTP/2 unfinished bodies: 503 x{}, 408 x{}, peak RSS {peak} MiB, {:?}",
        count(503),
        count(408),
        started.elapsed()
    );
    assert_eq!(count(503) + count(408), 100, "{statuses:?}");
    assert!(
        count(408) <= 3,
        "at most the connection budget is read: {statuses:?}"
    );
    assert!(
        started.elapsed() < BODY_TIMEOUT * 3,
        "{:?}",
        started.elapsed()
    );
    target.settles("unfinished HTTP/2 streams").await;
}

/// Row "one HTTP/2 connection with 200 streams beside a sequential client":
/// one connection sends 2,000 reviews as fast as it may open streams,
/// beside a client sending reviews one at a time. The stream limit keeps
/// one connection from filling the queue: both are answered, none refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multiplexing_client_does_not_crowd_out_a_sequential_one() {
    let target = start(Options::default());
    let review = Bytes::from(privileged_review());
    let attack = async {
        let mut client = h2_client(target.api()).await;
        let mut answers = tokio::task::JoinSet::new();
        for _ in 0..2000 {
            client = client.ready().await.unwrap();
            let (response, mut body) = client
                .send_request(request("/validate/privileged", review.len()), false)
                .unwrap();
            body.send_data(review.clone(), true).unwrap();
            answers.spawn(async move {
                match response.await {
                    Ok(response) => Ok(response.status().as_u16()),
                    Err(error) => Err(error.to_string()),
                }
            });
        }
        let mut statuses = Vec::new();
        while let Some(status) = answers.join_next().await {
            statuses.push(status.unwrap());
        }
        statuses
    };
    // `during` is the client beside it, sending one review at a time.
    let (statuses, _) = target
        .during("2,000 reviews on one HTTP/2 connection", attack)
        .await;
    let others: Vec<_> = statuses
        .iter()
        .filter(|s| **s != Ok(200))
        .take(10)
        .collect();
    assert!(others.is_empty(), "not answered: {others:?}...");
    target
        .settles("2,000 reviews on one HTTP/2 connection")
        .await;
}

/// The API server's own pattern: TLS 1.3, HTTP/2, one review at a time on
/// one connection. With Nagle's algorithm on, some answers waited for the
/// client's delayed ACK (~40 ms); with `TCP_NODELAY` none does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_http2_one_request_at_a_time_does_not_stall() {
    let target = start(Options {
        mtls: true,
        ..Options::default()
    });
    let tls = target.tls.clone().unwrap();
    let socket = TcpStream::connect(target.api()).await.unwrap();
    socket.set_nodelay(true).unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::clone(&tls.config));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let socket = connector.connect(name, socket).await.unwrap();
    assert_eq!(socket.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut client, connection) = h2::client::handshake(socket).await.unwrap();
    tokio::spawn(connection);
    let review = Bytes::from(privileged_review());
    let mut times = Vec::new();
    for _ in 0..500 {
        let started = Instant::now();
        client = client.ready().await.unwrap();
        let (response, mut body) = client
            .send_request(request("/validate/privileged", review.len()), false)
            .unwrap();
        body.send_data(review.clone(), true).unwrap();
        let response = response.await.unwrap();
        assert_eq!(response.status(), 200);
        let mut answer = response.into_body();
        while let Some(chunk) = answer.data().await {
            let chunk = chunk.unwrap();
            answer.flow_control().release_capacity(chunk.len()).unwrap();
        }
        times.push(started.elapsed());
    }
    times.sort();
    let p50 = times[times.len() / 2];
    let max = *times.last().unwrap();
    eprintln!("TLS + HTTP/2, 500 sequential reviews: p50 {p50:?}, max {max:?}");
    // A delayed-ACK stall is 40 ms; a slow CI machine does not make a
    // request on an idle 2-core server take 35.
    let stalled = times
        .iter()
        .filter(|t| **t >= Duration::from_millis(35))
        .count();
    assert_eq!(
        stalled, 0,
        "requests of 35 ms or more: p50 {p50:?}, max {max:?}"
    );
}
