//! The server under attack and the checks every attack makes of it.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::served::{Served, serve, serve_command};
use crate::common::{components_dir, repo};
use crate::pki::{Ca, Leaf};

/// The server's RSS may not exceed this during any attack. The shipped
/// manifest (deploy/deployment.yaml) limits the container to 768 MiB; this
/// leaves two thirds of it as headroom. What bounds it: the request-body
/// budget (64 MiB of bodies, each held with its parsed copy), the
/// connection caps and header limits, and the policies' own pool slots.
pub const RSS_BUDGET_MIB: u64 = 256;

/// After an attack, RSS must come back within this of its baseline.
pub const SETTLED_MIB: u64 = 48;

/// A normal request must be answered within this, during every attack: the
/// issue's bar (issue 20: "each within 1 s"). A locked-out or stalled server
/// misses it by seconds; a tighter bar only measures how busy the machine
/// is (100 ms failed 1 run in 5 beside two CPU hogs, on a server without
/// fault). The latencies themselves are `bench/abuse.py`'s to record.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(1);

/// Edge timeouts of the suite's server, short so that attacks end in
/// seconds: what the tests assert is that they hold, not their defaults.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// See [`HEADER_TIMEOUT`].
pub const BODY_TIMEOUT: Duration = Duration::from_secs(3);
/// See [`HEADER_TIMEOUT`]. Longer than it, so that a connection closed
/// before it was closed by the head timeout.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// See [`HEADER_TIMEOUT`].
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(3);
/// See [`HEADER_TIMEOUT`]: how long an answer may wait for its client.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(2);

/// Slack on top of a timeout for the server to act and the client to see it.
pub const MARGIN: Duration = Duration::from_secs(2);

/// The policies every attack is aimed at.
pub fn policies_yml() -> String {
    let privileged = module("pod_privileged.wasm");
    let sleeping = module("sleeping.wasm");
    format!(
        "privileged: {{ module: {privileged} }}\n\
         privileged-monitor: {{ module: {privileged}, policyMode: monitor }}\n\
         sleepy:\n  module: {sleeping}\n  timeoutEvalSeconds: 3\n  \
         settings: {{ sleepMilliseconds: 2000 }}\n"
    )
}

/// The attacks measure one server's memory and latency: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Holds the suite's turn, for a test that starts its server itself.
pub fn alone() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// How to start the server for an attack.
#[derive(Default)]
pub struct Options {
    /// Serve the API over TLS and require client certificates (mTLS).
    pub mtls: bool,
    /// Hard limit of open files for the server process.
    pub open_files: Option<u64>,
    /// Text logs instead of JSON.
    pub text_logs: bool,
    /// More flags.
    pub args: Vec<String>,
    /// More policies (`policies.yml` lines; [`module`] names a component).
    pub policies: String,
}

/// The path of the test component `name` (e.g. `sleeping.wasm`).
pub fn module(name: &str) -> String {
    components_dir().join(name).display().to_string()
}

/// A `portcullis serve` process under attack.
pub struct Target {
    /// The process.
    pub served: Served,
    /// Its RSS before the attack, in MiB.
    pub baseline_mib: u64,
    /// TLS material when the API speaks mTLS.
    pub tls: Option<Arc<TlsClient>>,
    _dir: tempfile::TempDir,
    _alone: MutexGuard<'static, ()>,
}

/// What a client needs to talk to an mTLS API.
pub struct TlsClient {
    /// A client configuration with the suite's CA and client certificate.
    pub config: Arc<rustls::ClientConfig>,
    /// The same without a client certificate.
    pub anonymous: Arc<rustls::ClientConfig>,
}

/// Starts the server with the suite's policies and timeouts.
pub fn start(options: Options) -> Target {
    let alone = alone();
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies.yml");
    std::fs::write(&policies, policies_yml() + &options.policies).unwrap();
    let mut command = serve_command();
    let secs = |d: Duration| d.as_secs().to_string();
    command
        .arg("--policies")
        .arg(&policies)
        .args(["--log-fmt", if options.text_logs { "text" } else { "json" }])
        .arg("--cache-dir")
        .arg(cache_dir())
        .args(["--workers", "2"])
        .args(["--request-header-timeout", &secs(HEADER_TIMEOUT)])
        .args(["--request-body-timeout", &secs(BODY_TIMEOUT)])
        .args(["--idle-timeout", &secs(IDLE_TIMEOUT)])
        .args(["--tls-handshake-timeout", &secs(HEADER_TIMEOUT)])
        .args(["--webhook-timeout", &secs(WEBHOOK_TIMEOUT)])
        .args(&options.args);
    if !options.args.iter().any(|a| a == "--response-send-timeout") {
        command.args(["--response-send-timeout", &secs(SEND_TIMEOUT)]);
    }
    let tls = options.mtls.then(|| {
        let ca = Ca::new("abuse CA");
        let (cert, key) = ca.server("portcullis").write(dir.path(), "server");
        let ca_file = dir.path().join("ca.crt");
        std::fs::write(&ca_file, ca.cert_pem()).unwrap();
        command
            .arg("--cert-file")
            .arg(cert)
            .arg("--key-file")
            .arg(key)
            .arg("--client-ca-file")
            .arg(&ca_file);
        Arc::new(TlsClient {
            config: client_config(&ca, Some(&ca.client("kube-apiserver"))),
            anonymous: client_config(&ca, None),
        })
    });
    if let Some(limit) = options.open_files {
        // SAFETY: only setrlimit, async-signal-safe, between fork and exec.
        unsafe {
            command.pre_exec(move || {
                let rlimit = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let served = serve(command);
    let mut target = Target {
        served,
        baseline_mib: 0,
        tls,
        _dir: dir,
        _alone: alone,
    };
    target.baseline_mib = target.rss_mib();
    target
}

fn cache_dir() -> PathBuf {
    components_dir()
        .parent()
        .and_then(|p| p.parent())
        .expect("components are in TARGET/wasm32-wasip2/policy")
        .join("portcullis-test-cache")
}

fn client_config(ca: &Ca, identity: Option<&Leaf>) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(identity) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(identity.cert_pem.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A privileged pod's AdmissionReview, which `privileged` rejects.
pub fn privileged_review() -> String {
    std::fs::read_to_string(
        repo().join("examples/pod-privileged/test_data/privileged_pod_review.json"),
    )
    .unwrap()
}

/// One HTTP/1.1 request on a fresh connection to `addr` (over `tls` when
/// given): status, body, and how long it took from connecting.
pub async fn exchange(
    addr: SocketAddr,
    tls: Option<&TlsClient>,
    request: &[u8],
) -> std::io::Result<(u16, String, Duration)> {
    let started = Instant::now();
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let response = match tls {
        None => round_trip(stream, request).await?,
        Some(tls) => {
            let mut config = (*tls.config).clone();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            round_trip(connector.connect(name, stream).await?, request).await?
        }
    };
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_default();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body, started.elapsed()))
}

async fn round_trip<S>(mut stream: S, request: &[u8]) -> std::io::Result<Vec<u8>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    stream.write_all(request).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    Ok(response)
}

/// An HTTP/1.1 POST of `body` to `path`, closing the connection after.
pub fn post(path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: portcullis\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// An HTTP/1.1 GET of `path`, closing the connection after.
pub fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: portcullis\r\nConnection: close\r\n\r\n").into_bytes()
}

impl Target {
    /// Where the API listens.
    pub fn api(&self) -> SocketAddr {
        self.served.api
    }

    /// Where the probes listen.
    pub fn probes(&self) -> SocketAddr {
        self.served.probes
    }

    /// The policies file it serves (and reloads on SIGHUP).
    pub fn policies_file(&self) -> PathBuf {
        self._dir.path().join("policies.yml")
    }

    /// The server's resident memory now, in MiB.
    pub fn rss_mib(&self) -> u64 {
        rss_kib(self.served.child.id()) / 1024
    }

    /// Asserts that the server is alive and within its memory budget, and
    /// that a normal review on a fresh connection, and `/livez` and
    /// `/readiness` on the probe port, are each answered correctly within
    /// [`ANSWER_WITHIN`].
    pub async fn check_serves(&self, during: &str) {
        assert!(
            self.served_alive(),
            "{during}: the server died: {:?}",
            self.exit_status()
        );
        let rss = self.rss_mib();
        assert!(
            rss <= RSS_BUDGET_MIB,
            "{during}: RSS {rss} MiB is over the budget of {RSS_BUDGET_MIB} MiB"
        );
        let review = post("/validate/privileged", &privileged_review());
        let (status, body, took) = exchange(self.api(), self.tls.as_deref(), &review)
            .await
            .unwrap_or_else(|e| panic!("{during}: the API refused a normal request: {e}"));
        assert_eq!(status, 200, "{during}: {body}");
        let answer: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{during}: not JSON ({e}): {body}"));
        assert_eq!(answer["response"]["allowed"], false, "{during}: {body}");
        assert_eq!(
            answer["response"]["status"]["message"], "Privileged container is not allowed",
            "{during}: {body}"
        );
        assert!(
            took <= ANSWER_WITHIN,
            "{during}: a normal review took {took:?}"
        );
        for path in ["/livez", "/readiness"] {
            let (status, body, took) = probe(self.probes(), path)
                .await
                .unwrap_or_else(|e| panic!("{during}: {path} refused: {e}"));
            assert_eq!(status, 200, "{during}: {path}: {body}");
            assert!(took <= ANSWER_WITHIN, "{during}: {path} took {took:?}");
        }
    }

    /// Checks serving several times while `attack` runs, and returns its
    /// output and the highest RSS seen.
    ///
    /// The first check starts as soon as the attack is under way and runs
    /// beside it; a server that ends an attack faster than one check takes
    /// (heads cut at the size limit, say) still gets that check finished.
    pub async fn during<F: std::future::Future>(&self, name: &str, attack: F) -> (F::Output, u64) {
        let mut attack = std::pin::pin!(attack);
        let mut peak = self.rss_mib();
        let mut pause = Duration::from_millis(100);
        loop {
            let wait = pause;
            let check = async move {
                tokio::time::sleep(wait).await;
                let rss = self.rss_mib();
                self.check_serves(name).await;
                rss
            };
            let mut check = std::pin::pin!(check);
            tokio::select! {
                output = &mut attack => {
                    // The check under way began while the attack ran.
                    peak = peak.max(check.await);
                    return (output, peak.max(self.rss_mib()));
                }
                rss = &mut check => {
                    peak = peak.max(rss);
                    pause = Duration::from_millis(250);
                }
            }
        }
    }

    /// Waits (up to 10 s) for RSS to come back within [`SETTLED_MIB`] of
    /// the baseline, and asserts that it did.
    pub async fn settles(&self, after: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let rss = self.rss_mib();
            if rss <= self.baseline_mib + SETTLED_MIB {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "after {after}: RSS {rss} MiB did not return near the baseline of {} MiB",
                self.baseline_mib
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn served_alive(&self) -> bool {
        std::fs::metadata(format!("/proc/{}", self.served.child.id())).is_ok()
            && self.exit_status().is_none()
    }

    fn exit_status(&self) -> Option<String> {
        let status = std::fs::read_to_string(format!("/proc/{}/stat", self.served.child.id()))
            .ok()?
            .split(' ')
            .nth(2)?
            .to_owned();
        (status == "Z").then_some(status)
    }

    /// The value of `series` (name and labels) on the server's `/metrics`;
    /// 0 when it has none yet.
    pub async fn metric(&self, series: &str) -> f64 {
        let (_, metrics, _) = exchange(self.probes(), None, &get("/metrics"))
            .await
            .unwrap();
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// The server's log lines so far.
    pub fn logs(&self) -> Vec<String> {
        self.served.logs.try_iter().collect()
    }
}

/// The resident set of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Raises this test process's own open-file limit, for attacks with many
/// sockets.
pub fn raise_own_open_files() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: reads and writes the struct passed, nothing else.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
}

/// Waits until every one of `sockets` is closed by the server (reads EOF or
/// an error), or `within` passes; returns how many were still open.
pub async fn still_open_after(sockets: Vec<TcpStream>, within: Duration) -> usize {
    let deadline = tokio::time::Instant::now() + within;
    let mut waiting = tokio::task::JoinSet::new();
    for mut socket in sockets {
        waiting.spawn(async move {
            let mut sink = vec![0; 64 << 10];
            loop {
                match tokio::time::timeout_at(deadline, socket.read(&mut sink)).await {
                    Ok(Ok(0) | Err(_)) => return true,
                    Ok(Ok(_)) => continue,
                    Err(_) => return false,
                }
            }
        });
    }
    let mut open = 0;
    while let Some(closed) = waiting.join_next().await {
        if !closed.unwrap() {
            open += 1;
        }
    }
    open
}

/// How many times a probe is tried before it counts as failed: the kubelet
/// tolerates a failed probe (`failureThreshold` is 3 by default), and a
/// connection refused in the first milliseconds of a burst against the
/// probe port itself, while its small connection cap is full, is one. What
/// must not happen is that probes keep failing.
const PROBE_ATTEMPTS: usize = 3;

/// `GET path` on the probe port, as the kubelet would: a connection that is
/// refused, reset or closed before answering is tried again (up to [`PROBE_ATTEMPTS`], 50 ms apart);
/// the time returned is that of the attempt that answered.
async fn probe(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String, Duration)> {
    let mut attempt = 1;
    loop {
        let failed = match exchange(addr, None, &get(path)).await {
            Err(error) => error.to_string(),
            // Closed before a status line: a failed probe to the kubelet too.
            Ok((0, _, _)) => "closed without an answer".to_owned(),
            answered => return answered,
        };
        if attempt == PROBE_ATTEMPTS {
            return Err(std::io::Error::other(format!("{failed}, {attempt} times")));
        }
        eprintln!("{path}: attempt {attempt} failed ({failed}), trying again");
        attempt += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
