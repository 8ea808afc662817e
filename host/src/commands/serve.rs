//! `portcullis serve`: load the policies, serve the webhook until SIGTERM/SIGINT;
//! reload the configuration on SIGHUP (and file changes with `--watch`).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use portcullis::server::{
    BodyLimits, Gate, ListenerLimits, MetricsListener, ServerConfig, TlsFiles,
};
use portcullis::{Engine, Limits};

use super::reload::{AbortOnDrop, Triggers};
use crate::cli::{MetricsOn, ServeArgs};

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
