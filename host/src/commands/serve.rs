//! `portcullis serve`: load the policies, serve the webhook until SIGTERM/SIGINT;
//! reload the configuration on SIGHUP (and file changes with `--watch`).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use portcullis::server::{
    BodyLimits, Gate, ListenerLimits, MetricsListener, ServerConfig, TlsFiles,
};
use portcullis::{Engine, Limits};

use super::reload::{AbortOnDrop, Triggers};
use crate::cli::{CacheArgs, ClusterArgs, PolicySource};

/// Arguments of `portcullis serve`; names follow Kubewarden's policy-server.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub source: PolicySource,
    /// Reload the configuration whenever the policies file or sources.yml
    /// changes (SIGHUP always reloads it).
    #[arg(long, env = "PORTCULLIS_WATCH")]
    pub watch: bool,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Address both listeners bind to.
    #[arg(long, env = "PORTCULLIS_ADDR", default_value = "0.0.0.0")]
    pub addr: IpAddr,
    /// Port of the webhook API.
    #[arg(long, env = "PORTCULLIS_PORT", default_value_t = 3000)]
    pub port: u16,
    /// Port of /readiness, /livez and /metrics (plain HTTP).
    #[arg(long, env = "PORTCULLIS_READINESS_PROBE_PORT", default_value_t = 8081)]
    pub readiness_probe_port: u16,
    /// Where /metrics is served: the probe port (plain HTTP), or the API port (behind its TLS
    /// and, with --client-ca-file, mTLS).
    #[arg(long, env = "PORTCULLIS_METRICS_LISTENER", value_enum, default_value_t = MetricsOn::Probes)]
    pub metrics_listener: MetricsOn,
    /// Evaluation threads: evaluations computing at once; up to 32 per worker may be under way,
    /// sleeping or waiting on the API server [default: number of CPUs].
    #[arg(long, env = "PORTCULLIS_WORKERS")]
    pub workers: Option<usize>,
    /// Bytes of dirtied pages per policy memory restored in place and kept
    /// resident between evaluations instead of released: faster evaluations
    /// (no madvise, no page faults) for memory that grows a little with the
    /// workers (~0.8 MB each for the 13 example policies); 0 keeps memory flat.
    #[arg(long, env = "PORTCULLIS_KEEP_RESIDENT_BYTES", default_value_t = 64 << 10)]
    pub keep_resident_bytes: usize,
    /// Requests that may wait for a place among the evaluations under way; beyond, requests get
    /// 503 at once [default: 64 per worker].
    #[arg(long, env = "PORTCULLIS_QUEUE_SIZE")]
    pub queue_size: Option<usize>,
    /// Default evaluation timeout, in seconds (a policy's `timeoutEvalSeconds` overrides it).
    #[arg(long, env = "PORTCULLIS_POLICY_TIMEOUT", default_value_t = 2)]
    pub policy_timeout: u64,
    /// Largest linear memory a policy instance may grow to, in bytes (a policy's
    /// `memoryLimitBytes` may lower it).
    #[arg(long, env = "PORTCULLIS_POLICY_MEMORY_LIMIT", default_value_t = 256 << 20)]
    pub policy_memory_limit: usize,
    /// Native stack a policy's wasm code may use, in bytes; deeper recursion traps.
    #[arg(long, env = "PORTCULLIS_POLICY_STACK_SIZE", default_value_t = 1 << 20)]
    pub policy_stack_size: usize,
    /// Largest table a policy instance may grow to, in elements (a policy's
    /// `tableElements` may lower it).
    #[arg(
        long,
        env = "PORTCULLIS_POLICY_TABLE_ELEMENTS",
        default_value_t = 100_000
    )]
    pub policy_table_elements: usize,
    /// Core instances one evaluation may create (a policy's `maxInstances` may lower it).
    #[arg(long, env = "PORTCULLIS_POLICY_MAX_INSTANCES", default_value_t = 32)]
    pub policy_max_instances: usize,
    /// Largest response a policy may return (message, warnings, annotations and
    /// mutated object), in bytes; more answers the request with an error.
    #[arg(long, env = "PORTCULLIS_MAX_POLICY_RESPONSE", default_value_t = 8 << 20)]
    pub max_policy_response: usize,
    /// Bytes of a policy's stderr/stdout kept per evaluation for the log.
    #[arg(long, env = "PORTCULLIS_MAX_POLICY_LOG", default_value_t = 64 << 10)]
    pub max_policy_log: usize,
    /// Lines of a policy's stderr/stdout (and log calls) kept per evaluation for the log.
    #[arg(long, env = "PORTCULLIS_MAX_POLICY_LOG_LINES", default_value_t = 100)]
    pub max_policy_log_lines: usize,
    /// Largest accepted request body, in bytes; larger bodies get 413.
    #[arg(long, env = "PORTCULLIS_MAX_REQUEST_BODY", default_value_t = 8 << 20)]
    pub max_request_body: usize,
    /// Seconds a request may wait for a worker, counted from its arrival; later it is answered
    /// 503 instead of evaluated (the API server's webhook timeout: 10 s unless set per webhook).
    #[arg(long, env = "PORTCULLIS_WEBHOOK_TIMEOUT", default_value_t = 10)]
    pub webhook_timeout: u64,
    /// Seconds from a request's head to the end of its body; slower bodies get 408.
    #[arg(long, env = "PORTCULLIS_REQUEST_BODY_TIMEOUT", default_value_t = 10)]
    pub request_body_timeout: u64,
    /// Bytes that all requests in flight may hold (bodies being read, the requests parsed from
    /// them, answers not yet written); beyond, stalled requests make room or 503 before more is
    /// read.
    #[arg(long, env = "PORTCULLIS_REQUEST_BODY_BUDGET", default_value_t = 64 << 20)]
    pub request_body_budget: usize,
    /// Part of --request-body-budget that only requests of at most 256 KiB (reviews) may use:
    /// large bodies, however many, cannot take it all.
    #[arg(long, env = "PORTCULLIS_REQUEST_BODY_RESERVE", default_value_t = 16 << 20)]
    pub request_body_reserve: usize,
    /// Bytes that the requests of one connection may hold (HTTP/2 multiplexes many requests on
    /// one); beyond, 503 for that connection's new requests.
    #[arg(long, env = "PORTCULLIS_CONNECTION_BODY_BUDGET", default_value_t = 16 << 20)]
    pub connection_body_budget: usize,
    /// Seconds after which a request body or an answer that has moved less than 16 KiB is
    /// stalled: stalled requests make room, longest stalled first, when the connection cap or the
    /// byte budget is reached.
    #[arg(long, env = "PORTCULLIS_STALLED_AFTER", default_value_t = 1)]
    pub stalled_after: u64,
    /// Seconds an answer may wait for the client to take it (an HTTP/2 window kept shut, a socket
    /// not read); then its connection is closed.
    #[arg(long, env = "PORTCULLIS_RESPONSE_SEND_TIMEOUT", default_value_t = 10)]
    pub response_send_timeout: u64,
    /// Connections the API port keeps open; at the cap the most stalled one, else the longest
    /// idle, is closed to make room; while the server works for every one, new ones are refused.
    #[arg(long, env = "PORTCULLIS_MAX_CONNECTIONS", default_value_t = 512)]
    pub max_connections: usize,
    /// Connections the probe port keeps open (same rule).
    #[arg(long, env = "PORTCULLIS_PROBE_MAX_CONNECTIONS", default_value_t = 32)]
    pub probe_max_connections: usize,
    /// Seconds a client has to complete the TLS handshake.
    #[arg(long, env = "PORTCULLIS_TLS_HANDSHAKE_TIMEOUT", default_value_t = 10)]
    pub tls_handshake_timeout: u64,
    /// Seconds a client has to send its first request head (from the connection's start), and an
    /// HTTP/1 client each later one (from the previous response): silent, trickling and idle
    /// HTTP/1 connections are closed after it.
    #[arg(long, env = "PORTCULLIS_REQUEST_HEADER_TIMEOUT", default_value_t = 10)]
    pub request_header_timeout: u64,
    /// Seconds a connection may stay open without a request in flight (HTTP/2: then GOAWAY).
    #[arg(long, env = "PORTCULLIS_IDLE_TIMEOUT", default_value_t = 60)]
    pub idle_timeout: u64,
    /// Largest request head, in bytes (HTTP/1 headers, HTTP/2 header list); larger get 431.
    #[arg(long, env = "PORTCULLIS_MAX_REQUEST_HEADER_BYTES", default_value_t = 32 << 10)]
    pub max_request_header_bytes: usize,
    /// Streams one HTTP/2 connection may have open at once.
    #[arg(
        long,
        env = "PORTCULLIS_HTTP2_MAX_CONCURRENT_STREAMS",
        default_value_t = 32
    )]
    pub http2_max_concurrent_streams: u32,
    /// Seconds between HTTP/2 keep-alive pings (0: none).
    #[arg(
        long,
        env = "PORTCULLIS_HTTP2_KEEPALIVE_INTERVAL",
        default_value_t = 20
    )]
    pub http2_keepalive_interval: u64,
    /// Seconds a ping's answer may take before the connection is closed as dead.
    #[arg(long, env = "PORTCULLIS_HTTP2_KEEPALIVE_TIMEOUT", default_value_t = 10)]
    pub http2_keepalive_timeout: u64,
    /// TLS certificate chain (PEM); with --key-file, the API is served over HTTPS.
    #[arg(long, env = "PORTCULLIS_CERT_FILE", requires = "key_file")]
    pub cert_file: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "PORTCULLIS_KEY_FILE", requires = "cert_file")]
    pub key_file: Option<PathBuf>,
    /// CA bundle (PEM); when given, clients must present a certificate it signed (mTLS).
    #[arg(long, env = "PORTCULLIS_CLIENT_CA_FILE", requires = "cert_file")]
    pub client_ca_file: Option<PathBuf>,
    /// Admit every request in this namespace without evaluating it (the webhook's own namespace).
    #[arg(long, env = "PORTCULLIS_ALWAYS_ACCEPT_ADMISSION_REVIEWS_ON_NAMESPACE")]
    pub always_accept_admission_reviews_on_namespace: Option<String>,
    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT.
    #[arg(long, env = "PORTCULLIS_SHUTDOWN_GRACE", default_value_t = 30)]
    pub shutdown_grace: u64,
    #[command(flatten)]
    pub cache: CacheArgs,
}

/// Which listener serves /metrics.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum MetricsOn {
    /// The probe port (plain HTTP).
    Probes,
    /// The API port (its TLS and mTLS).
    Api,
}

pub fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    tune_allocator();
    let open_files = raise_open_file_limit();
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let specs = super::policies(&args.source)?;
    let limits = Limits {
        timeout: Duration::from_secs(args.policy_timeout.max(1)),
        // Every live evaluation's instance, plus headroom for loading; the
        // gate, not the pool, is what bounds concurrency.
        max_instances: u32::try_from(Gate::max_live(workers) + workers * 2 + 16)
            .unwrap_or(u32::MAX),
        memory_bytes: args.policy_memory_limit,
        stack_bytes: args.policy_stack_size,
        table_elements: args.policy_table_elements,
        instances: args.policy_max_instances,
        response_bytes: args.max_policy_response,
        log_bytes: args.max_policy_log,
        log_lines: args.max_policy_log_lines,
        keep_resident_bytes: args.keep_resident_bytes,
    };
    let seconds = |s: u64| Duration::from_secs(s.max(1));
    let mut api_limits = ListenerLimits {
        max_connections: args.max_connections.max(1),
        tls_handshake_timeout: seconds(args.tls_handshake_timeout),
        header_read_timeout: seconds(args.request_header_timeout),
        idle_timeout: seconds(args.idle_timeout),
        max_header_bytes: args.max_request_header_bytes,
        http2_max_concurrent_streams: args.http2_max_concurrent_streams.max(1),
        http2_keepalive_interval: (args.http2_keepalive_interval > 0)
            .then(|| Duration::from_secs(args.http2_keepalive_interval)),
        http2_keepalive_timeout: seconds(args.http2_keepalive_timeout),
        close_grace: seconds(args.webhook_timeout),
        send_timeout: seconds(args.response_send_timeout),
        stalled_after: seconds(args.stalled_after),
    };
    fit_connections_to(open_files, &mut api_limits, args.probe_max_connections);
    let config = ServerConfig {
        api_addr: SocketAddr::new(args.addr, args.port),
        readiness_addr: SocketAddr::new(args.addr, args.readiness_probe_port),
        workers,
        queue_capacity: args.queue_size.unwrap_or(workers * 64),
        webhook_timeout: seconds(args.webhook_timeout),
        body: BodyLimits {
            max_bytes: args.max_request_body,
            timeout: seconds(args.request_body_timeout),
            server_budget: args.request_body_budget,
            small_reserve: args.request_body_reserve,
            connection_budget: args.connection_body_budget,
        },
        probe_limits: ListenerLimits::probes(&api_limits, args.probe_max_connections.max(1)),
        api_limits,
        tls: match (&args.cert_file, &args.key_file) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: args.client_ca_file.clone(),
            }),
            _ => None,
        },
        always_accept_namespace: args.always_accept_admission_reviews_on_namespace.clone(),
        shutdown_grace: Duration::from_secs(args.shutdown_grace),
        metrics_listener: match args.metrics_listener {
            MetricsOn::Probes => MetricsListener::Probes,
            MetricsOn::Api => MetricsListener::Api,
        },
    };
    let cache = super::cache(&args.cache);
    // HTTP threads scale with the CPUs, not with the evaluation workers
    // (which get a runtime of their own): memory stays flat in --workers.
    // One HTTP thread per two busy workers: a request costs the HTTP side
    // less CPU than its evaluation, and every extra thread adds hand-offs
    // (BENCHMARKS.md §3: 3.7 context switches a request with one HTTP
    // thread per worker, 2.2 with half as many).
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    super::runtime(Some(workers.min(cpus).div_ceil(2)))?.block_on(async move {
        let mut triggers = Triggers::new(&args.source, args.watch)?;
        // Pulls and cache syncs can take long: the probes answer meanwhile.
        // A reload trigger meanwhile (SIGHUP, a file change) starts again
        // with what the files hold now, as a reload would: a fetch that
        // never ends cannot keep a corrected configuration out.
        let prepare = async {
            let mut specs = specs;
            loop {
                let attempt = async {
                    let specs =
                        super::fetch_remote(specs.clone(), &args.source, &args.cache).await?;
                    let capabilities = super::capabilities(&args.cluster, &specs).await?;
                    let engine = Engine::with_capabilities(limits.clone(), capabilities)?;
                    anyhow::Ok((engine, specs))
                };
                tokio::select! {
                    prepared = attempt => return prepared,
                    cause = triggers.next() => {
                        tracing::warn!(
                            cause,
                            "the configuration changed while starting: starting again with the \
                             new one (the fetches under way are cancelled)"
                        );
                        specs = super::policies(&args.source)?;
                    }
                }
            }
        };
        let mut server = portcullis::server::start_after(config, cache, prepare).await?;
        let reloads = triggers.run(server.reloader(), args.source.clone(), args.cache.clone());
        // Dropped at shutdown: no reload starts once it has begun.
        let _reloading = AbortOnDrop(tokio::spawn(reloads));
        tokio::select! {
            result = server.wait() => result.context("server stopped")?,
            signal = shutdown_signal() => {
                tracing::info!("{signal}: finishing in-flight requests");
                server.shutdown().await?;
                tracing::info!("stopped");
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Tunes glibc's allocator for a server whose memory must come back after
/// a burst (BENCHMARKS.md, memory vs workers; docs/reliability.md, abuse).
/// Must run before any thread is started; `MALLOC_*` variables in the
/// environment win.
///
/// - Two arenas: glibc gives each thread that allocates an arena of its own,
///   which keeps freed memory for reuse; with one evaluation thread per
///   worker, RSS grew by ~0.8 MB per worker. Two keep it flat in `--workers`.
/// - A fixed mmap threshold of 256 KiB: request bodies and the objects
///   parsed from them (up to MBs each) get mappings of their own, unmapped
///   when freed. glibc's default threshold adapts upwards after such a free,
///   after which MB-sized buffers come from the heap and stay there.
/// - A trim every few seconds: what small allocations of a burst freed
///   (connection buffers, HTTP/2 state) is handed back to the kernel instead
///   of staying resident in the arenas' free lists.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator tuning; called before the
        // runtimes start, so no other thread is allocating concurrently.
        unsafe {
            if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
                libc::mallopt(libc::M_ARENA_MAX, 2);
            }
            if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
            }
        }
        std::thread::Builder::new()
            .name("portcullis-trim".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(TRIM_EVERY);
                    // SAFETY: malloc_trim is thread-safe; it takes the
                    // arenas' locks like any allocation.
                    unsafe {
                        libc::malloc_trim(0);
                    }
                }
            })
            .expect("spawning the allocator trim thread");
    }
}

/// How often freed heap memory is handed back (see [`tune_allocator`]).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_EVERY: Duration = Duration::from_secs(2);

/// Resolves at SIGTERM or SIGINT. (SIGHUP reloads: see `reload`.)
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    }
}

/// Raises the soft limit of open files to the hard limit (the connection
/// caps, not the kernel's default soft limit of 1,024, should be what bounds
/// connections) and returns it.
fn raise_open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    Some(limit.rlim_cur)
}

/// Lowers the API's connection cap if both listeners' caps would not fit
/// in the open-file limit (with room for the process's own files), so that
/// the caps, not `accept` failing, bound connections.
fn fit_connections_to(open_files: Option<u64>, api: &mut ListenerLimits, probes: usize) {
    /// Descriptors for everything but connections: listeners, the policy
    /// and cache files, the runtime's own.
    const RESERVED: u64 = 64;
    let Some(open_files) = open_files else { return };
    // A listener may exceed its cap by an eighth while the connections it
    // asked to close are going (server/connections.rs).
    let with_slack = |cap: usize| cap + cap / 8 + 1;
    let room = open_files.saturating_sub(RESERVED + with_slack(probes) as u64) as usize;
    let room = room.saturating_sub(1) * 8 / 9;
    if api.max_connections > room {
        tracing::warn!(
            open_files,
            max_connections = api.max_connections,
            lowered_to = room.max(1),
            "--max-connections does not fit the open-file limit; lowered"
        );
        api.max_connections = room.max(1);
    }
}
