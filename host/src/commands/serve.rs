//! `portcullis serve`: load the policies, serve the webhook until SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use portcullis::server::{ServerConfig, TlsFiles};
use portcullis::{Engine, Limits};

use crate::cli::ServeArgs;

pub fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    cap_malloc_arenas();
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let specs = super::policies(&args.source)?;
    let limits = Limits {
        timeout: Duration::from_secs(args.policy_timeout.max(1)),
        // Every worker's instance plus headroom for loading; the gate, not the
        // pool, is what bounds concurrency.
        max_instances: u32::try_from(workers * 2 + 16).unwrap_or(u32::MAX),
        memory_bytes: args.policy_memory_limit,
        stack_bytes: args.policy_stack_size,
        table_elements: args.policy_table_elements,
        instances: args.policy_max_instances,
        response_bytes: args.max_policy_response,
        log_bytes: args.max_policy_log,
        keep_resident_bytes: args.keep_resident_bytes,
    };
    let config = ServerConfig {
        api_addr: SocketAddr::new(args.addr, args.port),
        readiness_addr: SocketAddr::new(args.addr, args.readiness_probe_port),
        workers,
        queue_capacity: args.queue_size.unwrap_or(workers * 64),
        body_limit: args.max_request_body,
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
    };
    let cache = super::cache(&args.cache);
    // HTTP threads scale with the CPUs, not with the evaluation workers
    // (which get a runtime of their own): memory stays flat in --workers.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    super::runtime(Some(workers.min(cpus)))?.block_on(async move {
        let specs = super::fetch_remote(specs, &args.source, &args.cache).await?;
        let engine = Engine::new(limits)?;
        let mut server = portcullis::server::start(config, engine, specs, cache).await?;
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

/// glibc gives each thread that allocates an arena of its own, which keeps
/// freed memory for reuse: with one evaluation thread per worker, RSS grew by
/// ~0.8 MB per worker. Two arenas keep it flat in `--workers` (BENCHMARKS.md,
/// memory vs workers). Must run before any thread is started; an explicit
/// `MALLOC_ARENA_MAX` in the environment wins.
fn cap_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only changes allocator tuning; called before the
        // runtimes start, so no other thread is allocating concurrently.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    }
}
