//! Attacks that multiplex on one HTTP/2 connection, and the API server's
//! own pattern (TLS, HTTP/2, one request at a time) that must not stall.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{BODY_TIMEOUT, MARGIN, Options, WEBHOOK_TIMEOUT, privileged_review, start};

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
            let opened = Instant::now();
            answers.spawn(async move {
                let status = match response.await {
                    Ok(response) => response.status().as_u16(),
                    Err(_) => 0, // reset
                };
                drop(body);
                (status, opened.elapsed())
            });
        }
        let mut ended = Vec::new();
        while let Some(stream) = answers.join_next().await {
            ended.push(stream.unwrap());
        }
        ended
    };
    let started = Instant::now();
    let (ended, peak) = target.during("100 unfinished HTTP/2 streams", attack).await;
    let statuses: Vec<u16> = ended.iter().map(|(status, _)| *status).collect();
    let count = |code| statuses.iter().filter(|s| **s == code).count();
    let slowest = ended.iter().map(|(_, took)| *took).max().unwrap();
    eprintln!(
        "HTTP/2 unfinished bodies: 503 x{}, 408 x{}, peak RSS {peak} MiB, \
         slowest stream ended {slowest:?} after it opened, all in {:?}",
        count(503),
        count(408),
        started.elapsed()
    );
    assert_eq!(count(503) + count(408), 100, "{statuses:?}");
    assert!(
        count(408) <= 3,
        "at most the connection budget is read: {statuses:?}"
    );
    // Each stream the server read from is ended at the body timeout.
    assert!(
        slowest <= BODY_TIMEOUT + MARGIN,
        "a stream stayed open {slowest:?} (body timeout {BODY_TIMEOUT:?})"
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

/// A small AdmissionReview (~300 bytes) for the 2-second `sleepy` policy:
/// 200 of them fit the connection's initial flow-control window, so a
/// client can send them all without waiting for the server.
fn small_review(uid: u32) -> String {
    format!(
        r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"{uid}","kind":{{"group":"","version":"v1","kind":"Pod"}},"resource":{{"group":"","version":"v1","resource":"pods"}},"operation":"CREATE","userInfo":{{"username":"rogue"}},"object":{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"p"}}}}}}}}"#
    )
}

/// One HTTP/2 frame: 9-byte header and payload (RFC 9113 §4.1).
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).unwrap();
    let mut out = length.to_be_bytes()[1..].to_vec();
    out.extend([kind, flags]);
    out.extend(stream.to_be_bytes());
    out.extend(payload);
    out
}

/// A request header block in HPACK's plainest form: every field a literal
/// without indexing, names and values not Huffman-coded (RFC 7541 §6.2.2).
fn header_block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0);
        for text in [name, value] {
            out.push(u8::try_from(text.len()).unwrap());
            out.extend(text.as_bytes());
        }
    }
    out
}

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;

/// Reads one frame: (type, flags, stream, payload).
async fn read_frame(socket: &mut TcpStream) -> std::io::Result<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    socket.read_exact(&mut head).await?;
    let length = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0; length];
    socket.read_exact(&mut payload).await?;
    Ok((head[3], head[4], stream, payload))
}

/// Row "one HTTP/2 connection with 200 streams", by a client that does not
/// keep to the server's stream limit: it reads the server's SETTINGS, then
/// opens 200 streams at once to a 2-second policy. The server evaluates at
/// most its limit (32) and refuses the rest unprocessed, and a normal
/// review on a fresh connection is answered within 1 s throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_ignoring_the_stream_limit_gets_the_rest_refused() {
    let target = start(Options::default());
    let attack = async {
        let mut socket = TcpStream::connect(target.api()).await.unwrap();
        socket.set_nodelay(true).unwrap();
        socket
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        socket.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
        let mut limit = None;
        while limit.is_none() {
            let (kind, flags, _, payload) = read_frame(&mut socket).await.unwrap();
            if kind == SETTINGS && flags & ACK == 0 {
                // SETTINGS_MAX_CONCURRENT_STREAMS (0x3), six bytes a setting.
                limit = payload
                    .chunks(6)
                    .find(|s| s[..2] == [0, 3])
                    .map(|s| u32::from_be_bytes([s[2], s[3], s[4], s[5]]));
                assert!(limit.is_some(), "the server announces a stream limit");
                socket
                    .write_all(&frame(SETTINGS, ACK, 0, &[]))
                    .await
                    .unwrap();
            }
        }
        let mut blast = Vec::new();
        for n in 0..200u32 {
            let stream = 2 * n + 1;
            let body = small_review(n);
            let length = body.len().to_string();
            let fields = [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", "/validate/sleepy"),
                (":authority", "portcullis"),
                ("content-type", "application/json"),
                ("content-length", &length),
            ];
            blast.extend(frame(HEADERS, END_HEADERS, stream, &header_block(&fields)));
            blast.extend(frame(DATA, END_STREAM, stream, body.as_bytes()));
        }
        socket.write_all(&blast).await.unwrap();
        // Every stream ends with an answer (HEADERS) or a reset; a GOAWAY
        // ends them all. Bounded: the policy's 2 s, the webhook timeout.
        let mut answered = std::collections::BTreeSet::new();
        let mut refused = std::collections::BTreeSet::new();
        let mut goaway = None;
        let give_up = Instant::now() + WEBHOOK_TIMEOUT * 2 + MARGIN;
        while answered.len() + refused.len() < 200 && goaway.is_none() {
            let next = tokio::time::timeout_at(give_up.into(), read_frame(&mut socket)).await;
            let Ok(Ok((kind, _, stream, payload))) = next else {
                break;
            };
            match kind {
                HEADERS => {
                    answered.insert(stream);
                }
                RST_STREAM if !answered.contains(&stream) => {
                    refused.insert(stream);
                }
                GOAWAY => goaway = Some(payload),
                _ => {}
            }
        }
        (limit.unwrap(), answered.len(), refused.len(), goaway)
    };
    let ((limit, answered, refused, goaway), peak) = target
        .during("200 streams past the stream limit", attack)
        .await;
    eprintln!(
        "200 streams past a limit of {limit}: {answered} answered, {refused} refused, \
         GOAWAY {goaway:?}, peak RSS {peak} MiB"
    );
    assert_eq!(limit, 32);
    assert!(
        answered <= limit as usize,
        "{answered} streams evaluated past a limit of {limit}"
    );
    assert!(
        goaway.is_some() || answered + refused == 200,
        "every stream answered or refused: {answered} + {refused}"
    );
    target.settles("200 streams past the stream limit").await;
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
