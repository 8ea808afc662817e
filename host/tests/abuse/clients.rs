//! Normal clients beside an attack, doing what the API server does: a
//! review on a fresh connection now and then, and reviews one after another
//! on a keep-alive connection opened before the attack.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::harness::{exchange, post, privileged_review};

/// How long a normal review may take before it counts as not answered.
const GIVE_UP: Duration = Duration::from_secs(10);

/// One normal review: whether it was answered with the right verdict, how
/// long it took, and what went wrong if it was not.
pub struct Sample {
    /// 200 with the policy's verdict.
    pub ok: bool,
    /// From sending (or connecting) to the whole answer.
    pub took: Duration,
    /// The status and body, or the error, when not ok.
    pub failure: Option<String>,
}

/// Whether `body` is the privileged review's verdict.
pub fn verdict_ok(status: u16, body: &str) -> bool {
    let Ok(answer) = serde_json::from_str::<serde_json::Value>(body) else {
        return false;
    };
    status == 200
        && answer["response"]["allowed"] == false
        && answer["response"]["status"]["message"] == "Privileged container is not allowed"
}

/// A review on a fresh connection every `every` until `until`.
pub async fn fresh_reviews(addr: SocketAddr, every: Duration, until: Instant) -> Vec<Sample> {
    let request = post("/validate/privileged", &privileged_review());
    let mut samples = Vec::new();
    while Instant::now() < until {
        let started = Instant::now();
        let answer = tokio::time::timeout(GIVE_UP, exchange(addr, None, &request)).await;
        let took = started.elapsed();
        samples.push(match answer {
            Ok(Ok((status, body, _))) if verdict_ok(status, &body) => Sample {
                ok: true,
                took,
                failure: None,
            },
            Ok(Ok((status, body, _))) => failed(took, format!("{status}: {body:.200}")),
            Ok(Err(error)) => failed(took, error.to_string()),
            Err(_) => failed(took, "no answer".into()),
        });
        tokio::time::sleep(every.saturating_sub(took)).await;
    }
    samples
}

/// Reviews on one keep-alive connection, opened at once, one every `every`
/// until `until`. A connection the server closed is opened again; the
/// review that found it closed counts as failed (the API server's client
/// would retry it, but it is what a shed keep-alive connection costs).
pub async fn keep_alive_reviews(addr: SocketAddr, every: Duration, until: Instant) -> Vec<Sample> {
    let review = privileged_review();
    let request = format!(
        "POST /validate/privileged HTTP/1.1\r\nHost: portcullis\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{review}",
        review.len()
    );
    let mut connection: Option<BufReader<TcpStream>> = None;
    let mut samples = Vec::new();
    while Instant::now() < until {
        let started = Instant::now();
        let answer = tokio::time::timeout(GIVE_UP, async {
            if connection.is_none() {
                let socket = TcpStream::connect(addr).await?;
                socket.set_nodelay(true)?;
                connection = Some(BufReader::new(socket));
            }
            let socket = connection.as_mut().expect("connected above");
            socket.get_mut().write_all(request.as_bytes()).await?;
            read_answer(socket).await
        })
        .await;
        let took = started.elapsed();
        samples.push(match answer {
            Ok(Ok((status, body))) if verdict_ok(status, &body) => Sample {
                ok: true,
                took,
                failure: None,
            },
            Ok(Ok((status, body))) => failed(took, format!("{status}: {body:.200}")),
            Ok(Err(error)) => {
                connection = None;
                failed(took, error.to_string())
            }
            Err(_) => {
                connection = None;
                failed(took, "no answer".into())
            }
        });
        tokio::time::sleep(every.saturating_sub(took)).await;
    }
    samples
}

fn failed(took: Duration, failure: String) -> Sample {
    Sample {
        ok: false,
        took,
        failure: Some(failure),
    }
}

/// Reads one HTTP/1.1 answer with a `Content-Length`: status and body.
async fn read_answer(socket: &mut BufReader<TcpStream>) -> std::io::Result<(u16, String)> {
    let mut status = 0;
    let mut length = 0;
    loop {
        let mut line = String::new();
        if socket.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some(code) = line.strip_prefix("HTTP/1.1 ") {
            status = code.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
        } else if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    socket.read_exact(&mut body).await?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Asserts that every sample was answered correctly within `within`.
pub fn assert_all_answered(what: &str, samples: &[Sample], within: Duration) {
    assert!(!samples.is_empty(), "{what}: no review was sent");
    let failed: Vec<_> = samples
        .iter()
        .filter_map(|s| s.failure.as_deref())
        .collect();
    assert!(
        failed.is_empty(),
        "{what}: {} of {} reviews not answered correctly: {:?}",
        failed.len(),
        samples.len(),
        &failed[..failed.len().min(5)]
    );
    let slowest = samples.iter().map(|s| s.took).max().unwrap_or_default();
    assert!(
        slowest <= within,
        "{what}: a review took {slowest:?} (of {})",
        samples.len()
    );
}

/// "n answered, slowest" for the test's log.
pub fn describe(samples: &[Sample]) -> String {
    let ok = samples.iter().filter(|s| s.ok).count();
    let slowest = samples.iter().map(|s| s.took).max().unwrap_or_default();
    format!("{ok} of {} answered, slowest {slowest:?}", samples.len())
}
