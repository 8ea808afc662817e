//! Why a module could not be obtained, in terms a user can act on: which
//! host, what it answered, which credentials were used, what to change.

use std::fmt;
use std::path::PathBuf;

use super::Source;

/// Why one module could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// No connection could be made.
    #[error("{host} is unreachable: {detail}")]
    Unreachable {
        /// `host[:port]`.
        host: String,
        /// The connection error.
        detail: String,
    },
    /// The TLS handshake failed (typically: a certificate from a CA this
    /// machine does not trust).
    #[error(
        "TLS with {host} failed: {detail}. If {host} uses a private CA, list the CA under \
         `source_authorities` for \"{host}\" in sources.yml ({sources})"
    )]
    Tls {
        /// `host[:port]`.
        host: String,
        /// What rustls said.
        detail: String,
        /// The sources file in force, or how to give one.
        sources: String,
    },
    /// The server answered a TLS hello with something else: plain HTTP.
    #[error(
        "{host} does not speak TLS. If it is a plain-HTTP registry, list \"{host}\" under \
         `insecure_sources` in sources.yml ({sources})"
    )]
    NotTls {
        /// `host[:port]`.
        host: String,
        /// The sources file in force, or how to give one.
        sources: String,
    },
    /// 401/403: the registry refused the credentials (or their absence).
    #[error("{status} from {host}: access to {what} refused; authenticated {login}")]
    Denied {
        /// `401 Unauthorized` or `403 Forbidden`.
        status: &'static str,
        /// `host[:port]`.
        host: String,
        /// The repository or URL.
        what: String,
        /// Which credentials were sent, and from where.
        login: String,
    },
    /// 404: the tag, digest, repository or file does not exist.
    #[error("404 Not Found: {what}")]
    NotFound {
        /// What is missing, and what is there instead when known.
        what: String,
    },
    /// The artifact holds no wasm layer.
    #[error(
        "not a wasm artifact: {found}; a policy is one layer of `application/wasm` (CNCF Wasm \
         OCI artifact) or `application/vnd.wasm.content.layer.v1+wasm` (Kubewarden)"
    )]
    NotWasmArtifact {
        /// The media types found.
        found: String,
    },
    /// The bytes are not WebAssembly.
    #[error("the downloaded bytes are not WebAssembly (they start with {start:?})")]
    NotWasm {
        /// The first bytes, escaped.
        start: String,
    },
    /// The bytes (or the manifest) do not hash to the digest that names them.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}; nothing was stored")]
    DigestMismatch {
        /// The manifest or the layer.
        what: &'static str,
        /// The digest asked for.
        expected: String,
        /// The digest of what arrived.
        actual: String,
    },
    /// The transfer stopped before the end.
    #[error(
        "download interrupted after {received} of {expected} bytes: {detail}; nothing was stored"
    )]
    Interrupted {
        /// Bytes received.
        received: u64,
        /// Bytes announced.
        expected: String,
        /// Why it stopped.
        detail: String,
    },
    /// The fetch did not finish within its deadline (a server that sends
    /// slowly but never stops trips no per-read timeout).
    #[error(
        "the fetch did not finish within its deadline of {} s (--fetch-timeout): cancelled while \
         {stage}, {received} bytes received; nothing was stored",
        deadline.as_secs()
    )]
    TimedOut {
        /// The deadline in force.
        deadline: std::time::Duration,
        /// What the fetch was doing (`reading the manifest`, …).
        stage: &'static str,
        /// Bytes received in that stage.
        received: u64,
    },
    /// The module is larger than Portcullis accepts.
    #[error("the module is larger than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The manifest's signatures do not satisfy the verification config.
    #[error("signature verification failed for manifest {digest} against {config}: {reason}")]
    Unverified {
        /// The manifest digest the reference resolved to.
        digest: String,
        /// The verification config (its file).
        config: String,
        /// Each requirement that failed, and why.
        reason: String,
    },
    /// A verification config is in force and the module is not from a
    /// registry, so it carries no signature.
    #[error(
        "a verification config ({config}) is in force, and only registry modules carry \
         signatures: push the module to a registry and sign it, or use a local file"
    )]
    NotVerifiable {
        /// The verification config (its file).
        config: String,
    },
    /// Any other answer from the server.
    #[error("{0}")]
    Protocol(String),
    /// The download store could not be written.
    #[error("cannot write the download store {}: {source}", dir.display())]
    Store {
        /// The store's directory.
        dir: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A local file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// One policy whose module could not be fetched.
#[derive(Debug)]
pub struct PolicyFetchError {
    /// The policy's id.
    pub policy: String,
    /// Where its module was to come from.
    pub source: Source,
    /// Why it could not be.
    pub error: std::sync::Arc<FetchError>,
}

impl fmt::Display for PolicyFetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "policy `{}` ({}): {}",
            self.policy, self.source, self.error
        )?;
        // A scheme-less string read as a registry reference may have been
        // meant as a path.
        if !self.source.written().contains("://")
            && matches!(
                *self.error,
                FetchError::Unreachable { .. } | FetchError::NotFound { .. }
            )
        {
            write!(
                f,
                " (read as a registry reference; for a file write `./{}` or `file://…`)",
                self.source.written()
            )?;
        }
        Ok(())
    }
}

/// Every policy whose module could not be fetched: start-up reports them all
/// at once, not one per attempt.
#[derive(Debug)]
pub struct FetchErrors(pub Vec<PolicyFetchError>);

impl fmt::Display for FetchErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [one] => write!(f, "cannot obtain a policy's module: {one}"),
            all => {
                write!(f, "cannot obtain the modules of {} policies:", all.len())?;
                for error in all {
                    write!(f, "\n  {error}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for FetchErrors {}

/// Classifies a transport error from reqwest (directly, or inside
/// oci-client): connection refused, TLS, or other.
pub(crate) fn transport(host: &str, error: &reqwest::Error, sources: &str) -> FetchError {
    if let Some(tls) = tls_error(error) {
        if tls.contains("InvalidContentType") {
            // What a plain-HTTP server answers to a TLS hello.
            return FetchError::NotTls {
                host: host.to_owned(),
                sources: sources.to_owned(),
            };
        }
        return FetchError::Tls {
            host: host.to_owned(),
            detail: tls,
            sources: sources.to_owned(),
        };
    }
    if error.is_connect() || error.is_timeout() {
        return FetchError::Unreachable {
            host: host.to_owned(),
            detail: chain(error),
        };
    }
    FetchError::Protocol(chain(error))
}

/// What rustls said, if the failure was TLS. reqwest boxes the connector's
/// errors more than once, and a box's `source()` skips the error it holds,
/// so the rustls error cannot always be reached by downcasting: its message
/// is recognised instead.
fn tls_error(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    const RUSTLS: &[&str] = &[
        "invalid peer certificate",
        "received corrupt message",
        "peer is incompatible",
        "peer misbehaved",
        "received fatal alert",
        "peer sent no certificates",
    ];
    let text = chain(error);
    RUSTLS
        .iter()
        .filter_map(|marker| text.find(marker))
        .min()
        .map(|at| text[at..].to_owned())
}

/// `error` and its causes on one line, without repeats.
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        next = cause.source();
    }
    text
}

/// The first bytes of a file, for "this is not wasm" messages.
pub(crate) fn start_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(16)]).into_owned()
}
