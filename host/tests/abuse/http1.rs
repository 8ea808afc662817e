//! Attacks over plain HTTP/1.1: bodies and heads that never end, idle and
//! trickling connections, oversized declarations.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{
    BODY_TIMEOUT, HEADER_TIMEOUT, MARGIN, Options, exchange, raise_own_open_files, start,
    still_open_after,
};

/// Row 1: connections that send most of a large body and stop. Only what
/// fits the body budget (less the reserve for small bodies) is read; the
/// rest is refused before its body; what was read is dropped at the body
/// timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_bodies_take_no_more_than_the_body_budget() {
    // Stalled bodies would make room for the last client's: that is
    // `lockout::hoarded_bodies_make_room`. Here they hold on.
    let target = start(Options {
        args: vec!["--stalled-after".into(), "60".into()],
        ..Options::default()
    });
    let declared = 8_300_000;
    let sent = vec![b' '; 8_000_000];
    let attack = async {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..40 {
            let api = target.api();
            let sent = sent.clone();
            tasks.spawn(async move {
                let mut socket = TcpStream::connect(api).await.unwrap();
                let head = format!(
                    "POST /validate/privileged HTTP/1.1\r\nHost: x\r\n\
                     Content-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
                );
                socket.write_all(head.as_bytes()).await.unwrap();
                // Refused connections stop reading: the write then fails.
                let _ = socket.write_all(&sent).await;
                socket
            });
        }
        let mut sockets = Vec::new();
        while let Some(socket) = tasks.join_next().await {
            sockets.push(socket.unwrap());
        }
        let started = Instant::now();
        // The budget is taken: a client that waits before sending its body
        // reads the refusal, a JSON 503, instead of a reset.
        let waiting = format!(
            "POST /validate/privileged HTTP/1.1\r\nHost: x\r\n\
             Content-Type: application/json\r\nContent-Length: {declared}\r\n\
             Expect: 100-continue\r\n\r\n"
        );
        let refusal = exchange(target.api(), None, waiting.as_bytes()).await;
        let open = still_open_after(sockets, BODY_TIMEOUT + MARGIN).await;
        (open, started.elapsed(), refusal)
    };
    let ((open, took, refusal), peak) = target.during("unfinished bodies", attack).await;
    assert_eq!(open, 0, "connections still open {took:?} after the attack");
    let (status, body, _) = refusal.unwrap();
    assert_eq!(status, 503, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).expect("a JSON error");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .starts_with("server overloaded: requests being read, evaluated or answered"),
        "{body}"
    );
    eprintln!("unfinished bodies: peak RSS {peak} MiB, all closed after {took:?}");
    target.settles("unfinished bodies").await;
}

/// Row 3: request heads that grow without end. The head buffer stops at
/// `--max-request-header-bytes` (431), and the cap bounds the connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_heads_are_cut_at_the_header_limit() {
    raise_own_open_files();
    let target = start(Options::default());
    let attack = unfinished_heads(target.api(), 600, 400 << 10);
    let (open, peak) = target.during("unfinished heads", attack).await;
    assert_eq!(open, 0, "heads over the limit must end their connections");
    eprintln!("unfinished heads: peak RSS {peak} MiB");
    target.settles("unfinished heads").await;
}

/// Row 4: the same on the probe port of an mTLS server, which is plain
/// HTTP: its own small caps keep it from starving the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_port_of_an_mtls_server_holds_too() {
    raise_own_open_files();
    let target = start(Options {
        mtls: true,
        ..Options::default()
    });
    let attack = async {
        let mut open = 0;
        for _ in 0..3 {
            open += unfinished_heads(target.probes(), 300, 400 << 10).await;
        }
        open
    };
    let (open, peak) = target
        .during("unfinished heads on the probe port", attack)
        .await;
    assert_eq!(open, 0);
    eprintln!("probe port: peak RSS {peak} MiB");
    target.settles("unfinished heads on the probe port").await;
}

/// Opens `connections` connections to `addr`, each writing up to `bytes` of
/// a request head that never ends; returns how many the server had not
/// closed by the header timeout (plus margin) after the last one opened.
async fn unfinished_heads(addr: std::net::SocketAddr, connections: usize, bytes: usize) -> usize {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..connections {
        tasks.spawn(async move {
            let mut socket = TcpStream::connect(addr).await.ok()?;
            let mut head = format!("POST /validate/privileged HTTP/1.1\r\nHost: x{i}\r\n");
            while head.len() < bytes {
                head.push_str("X-Padding: ");
                head.push_str(&"a".repeat(1000));
                head.push_str("\r\n");
            }
            // The server stops reading at its limit: the write then fails.
            let _ = tokio::time::timeout(HEADER_TIMEOUT, socket.write_all(head.as_bytes())).await;
            Some(socket)
        });
    }
    let mut sockets = Vec::new();
    while let Some(socket) = tasks.join_next().await {
        // Refused at once, or reset: closed already.
        if let Some(socket) = socket.unwrap() {
            sockets.push(socket);
        }
    }
    still_open_after(sockets, HEADER_TIMEOUT + MARGIN).await
}

/// Row 5: more idle connections than the process has file descriptors
/// for. The cap keeps descriptors for the API and probes; at the cap the
/// longest idle connection makes room for a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_past_the_file_limit_do_not_lock_anyone_out() {
    raise_own_open_files();
    let target = start(Options {
        open_files: Some(1024),
        ..Options::default()
    });
    let attack = async {
        let mut sockets = Vec::new();
        for _ in 0..1100 {
            if let Ok(socket) = TcpStream::connect(target.api()).await {
                sockets.push(socket);
            }
        }
        for _ in 0..60 {
            if let Ok(socket) = TcpStream::connect(target.probes()).await {
                sockets.push(socket);
            }
        }
        // Connections that never send a request are held to the head
        // timeout, not the (longer) idle timeout.
        still_open_after(sockets, HEADER_TIMEOUT + MARGIN).await
    };
    let (open, _) = target.during("idle connections", attack).await;
    assert_eq!(
        open, 0,
        "silent connections must be closed by the head timeout"
    );
    let logs = target.logs();
    for listener in ["API", "probes"] {
        let bursts = logs
            .iter()
            .filter(|l| l.contains("connection limit reached"))
            .filter(|l| l.contains(&format!(r#""listener":"{listener}""#)))
            .count();
        assert_eq!(bursts, 1, "{listener}: logged once per burst: {logs:#?}");
    }
    target.settles("idle connections").await;
}

/// Row 6: slowloris, one byte of head every 500 ms: closed at the header
/// timeout whatever the pace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_cut_at_the_header_timeout() {
    raise_own_open_files();
    let target = start(Options::default());
    let attack = async {
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..500 {
            let api = target.api();
            tasks.spawn(async move {
                let Ok(mut socket) = TcpStream::connect(api).await else {
                    return Duration::ZERO;
                };
                let opened = Instant::now();
                for byte in b"POST /validate/privileged HTTP/1.1\r\nHost: slow\r\n"
                    .iter()
                    .cycle()
                {
                    if socket.write_all(&[*byte]).await.is_err() {
                        break;
                    }
                    let mut probe = [0; 1024];
                    let pause = Duration::from_millis(500);
                    if let Ok(Ok(0) | Err(_)) =
                        tokio::time::timeout(pause, socket.read(&mut probe)).await
                    {
                        break;
                    }
                    if opened.elapsed() > HEADER_TIMEOUT + MARGIN * 2 {
                        break;
                    }
                }
                opened.elapsed()
            });
        }
        let mut longest = Duration::ZERO;
        while let Some(lived) = tasks.join_next().await {
            longest = longest.max(lived.unwrap());
        }
        (longest, started.elapsed())
    };
    let ((longest, _), _) = target.during("slowloris", attack).await;
    assert!(
        longest <= HEADER_TIMEOUT + MARGIN,
        "a trickling connection lived {longest:?}"
    );
    target.settles("slowloris").await;
}

/// `Expect: 100-continue` with a body far over the limit: 413 at once, never
/// `100 Continue`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_expect_continue_is_refused_before_the_body() {
    let target = start(Options::default());
    let request = b"POST /validate/privileged HTTP/1.1\r\nHost: x\r\n\
        Content-Type: application/json\r\nContent-Length: 10000000000\r\n\
        Expect: 100-continue\r\n\r\n";
    let (status, body, took) = exchange(target.api(), None, request).await.unwrap();
    assert_eq!(status, 413, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        answer["error"],
        "request body too large (limit: 8388608 bytes)"
    );
    assert!(took < Duration::from_secs(1), "{took:?}");
}

/// A policy id that is not UTF-8 gets a JSON error like every other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_policy_id_is_a_json_error() {
    let target = start(Options::default());
    let request = crate::harness::post("/validate/%FF%FE", "{}");
    let (status, body, _) = exchange(target.api(), None, &request).await.unwrap();
    assert_eq!(status, 400, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).expect("a JSON error");
    let message = answer["error"].as_str().unwrap();
    assert!(
        message.starts_with("invalid policy id in the path: "),
        "{message}"
    );
}
