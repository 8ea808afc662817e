//! A real `portcullis serve` process on 127.0.0.1, for the tests that
//! drive it from outside: its flags, its logs, its signals, its sockets.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::components_dir;

/// A `portcullis serve` child process, killed when dropped.
pub struct Served {
    /// The process.
    pub child: Child,
    /// Where its API listens.
    pub api: SocketAddr,
    /// Where its probes listen.
    pub probes: SocketAddr,
    /// The log lines after "serving".
    pub logs: mpsc::Receiver<String>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `portcullis serve` on loopback ephemeral ports, JSON logs, no cache.
pub fn portcullis() -> Command {
    let mut command = serve_command();
    command.args(["--log-fmt", "json", "--no-cache"]);
    command
}

/// `portcullis serve` on loopback ephemeral ports, its stderr piped (for
/// [`serve`]); the log format and the cache are the caller's choice.
pub fn serve_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    command
        .arg("serve")
        .args([
            "--addr",
            "127.0.0.1",
            "--port",
            "0",
            "--readiness-probe-port",
            "0",
        ])
        .arg("--components-dir")
        .arg(components_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// Starts the server and waits (2 minutes at most) for its "serving" log
/// line (JSON or text), which carries the bound addresses.
pub fn serve(mut command: Command) -> Served {
    let unbound = SocketAddr::from(([0, 0, 0, 0], 0));
    // Owned by `Served` from the start, so a failed start is killed and reaped.
    let mut child = command.spawn().expect("starting portcullis serve");
    let logs = log_lines(&mut child);
    let mut served = Served {
        child,
        api: unbound,
        probes: unbound,
        logs,
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while served.api == unbound {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match served.logs.recv_timeout(left) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("portcullis serve did not start in time")
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!("portcullis serve exited before serving")
            }
        };
        if let Some((api, probes)) = serving_addresses(&line) {
            served.api = api;
            served.probes = probes;
        }
    }
    served
}

/// The lines `child` writes to its (piped) stderr, read on a thread of
/// their own so that it never blocks on a full pipe.
pub fn log_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stderr = child.stderr.take().expect("stderr is piped");
    let (sender, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

/// The API and probe addresses in a "serving" log line, JSON or text.
fn serving_addresses(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    if let Ok(event) = serde_json::from_str::<serde_json::Value>(line) {
        let fields = &event["fields"];
        if fields["message"] != "serving" {
            return None;
        }
        let addr = |key: &str| fields[key].as_str()?.parse().ok();
        return Some((addr("api_addr")?, addr("readiness_addr")?));
    }
    // `... INFO portcullis::server: serving api_addr=A readiness_addr=P tls=false`
    let fields = line.split_once(": serving ")?.1;
    let addr = |key: &str| {
        let value = fields.split(' ').find_map(|f| f.strip_prefix(key))?;
        value.parse().ok()
    };
    Some((addr("api_addr=")?, addr("readiness_addr=")?))
}

/// One HTTP/1.1 exchange; returns the status code and the body.
pub fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}
