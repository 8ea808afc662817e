//! Reading what a registry or web server sends, with every limit enforced
//! while it arrives: a small answer (a manifest, a token, an error) read
//! into memory up to a cap, a module streamed into the download store up to
//! [`MAX_MODULE_BYTES`]. Nothing is read whole before it is measured, so a
//! server that sends without end costs a bounded buffer, not memory.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::MAX_MODULE_BYTES;
use super::error::{self, FetchError};
use super::store::{DownloadStore, PartialBlob};

/// How far one fetch has come: what the start-up's waiting log and a
/// deadline error report. Shared between the fetch and its observers.
#[derive(Debug, Default)]
pub struct Progress {
    started: OnceLock<Instant>,
    stage: AtomicU8,
    received: AtomicU64,
}

/// What a fetch is reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Stage {
    /// Waiting for its turn (at most [`PARALLEL_FETCHES`](super::PARALLEL_FETCHES) run at once).
    Queued,
    /// Asking for the manifest (or the module's URL), or for a token.
    Connecting,
    /// Reading the manifest.
    Manifest,
    /// Reading the module.
    Module,
}

impl Stage {
    /// How logs and errors name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Connecting => "waiting for an answer",
            Self::Manifest => "reading the manifest",
            Self::Module => "reading the module",
        }
    }
}

impl Progress {
    /// Marks the fetch as started (its deadline runs from here).
    pub(super) fn start(&self) {
        let _ = self.started.set(Instant::now());
        self.enter(Stage::Connecting);
    }

    /// How long it has been running, if it has started.
    pub fn running_for(&self) -> Option<Duration> {
        self.started.get().map(Instant::elapsed)
    }

    /// What it is reading now.
    pub fn stage(&self) -> Stage {
        match self.stage.load(Ordering::Relaxed) {
            1 => Stage::Connecting,
            2 => Stage::Manifest,
            3 => Stage::Module,
            _ => Stage::Queued,
        }
    }

    /// Bytes received in the current stage.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    pub(super) fn enter(&self, stage: Stage) {
        self.stage.store(stage as u8, Ordering::Relaxed);
        self.received.store(0, Ordering::Relaxed);
    }

    fn add(&self, bytes: usize) {
        self.received.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

/// Why a body could not be read whole.
#[derive(Debug)]
pub(super) enum BodyError {
    /// More than the cap was announced or sent.
    TooLarge,
    /// The transfer failed.
    Transport(reqwest::Error),
}

/// Reads `response`'s body into memory, refusing more than `limit` bytes:
/// a `Content-Length` over it fails at once, a body without one as soon as
/// it passes it.
pub(super) async fn read_capped(
    response: &mut reqwest::Response,
    limit: usize,
    progress: &Progress,
) -> Result<Vec<u8>, BodyError> {
    if response
        .content_length()
        .is_some_and(|length| length > limit as u64)
    {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(BodyError::TooLarge);
                }
                body.extend_from_slice(&chunk);
                progress.add(chunk.len());
            }
            Ok(None) => return Ok(body),
            Err(error) => return Err(BodyError::Transport(error)),
        }
    }
}

/// The body of an answer that is an error, for its message: at most this
/// much is read (an OCI error envelope is a few hundred bytes).
pub(super) const ERROR_BODY_BYTES: usize = 64 << 10;

/// Reads an error answer's body, at most [`ERROR_BODY_BYTES`]; whatever
/// goes wrong reading it, the status says enough.
pub(super) async fn error_body(response: &mut reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = ERROR_BODY_BYTES - body.len();
        body.extend_from_slice(&chunk[..room.min(chunk.len())]);
        if body.len() == ERROR_BODY_BYTES {
            break;
        }
    }
    body
}

/// Streams a module's body into the download store: at most
/// [`MAX_MODULE_BYTES`] (and at most `expected`, the size the manifest
/// gives, if any), refused as soon as it is more or announces more, and
/// refused at its first bytes if they are not WebAssembly. The caller checks the digest
/// and [persists](PartialBlob::persist) it; any error drops the partial
/// file.
pub(super) async fn module_to_store(
    response: &mut reqwest::Response,
    store: &DownloadStore,
    expected: Option<u64>,
    progress: &Progress,
) -> Result<PartialBlob, FetchError> {
    let too_large = || FetchError::TooLarge {
        limit: MAX_MODULE_BYTES,
    };
    // Read before the body: reqwest's length shrinks as the body is read.
    let announced = expected.or(response.content_length());
    if announced.is_some_and(|length| length > MAX_MODULE_BYTES)
        || response
            .content_length()
            .is_some_and(|length| length > MAX_MODULE_BYTES)
    {
        return Err(too_large());
    }
    let store_error = |source| FetchError::Store {
        dir: store.dir().to_owned(),
        source,
    };
    let mut blob = store.begin_blob().await.map_err(store_error)?;
    let mut checked = false;
    loop {
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => {
                return Err(FetchError::Interrupted {
                    received: blob.size(),
                    expected: announced.map_or_else(
                        || "an unknown number of".to_owned(),
                        |length| length.to_string(),
                    ),
                    detail: error::chain(&e),
                });
            }
        };
        let size = blob.size() + chunk.len() as u64;
        if size > MAX_MODULE_BYTES {
            return Err(too_large());
        }
        if let Some(declared) = expected.filter(|&declared| size > declared) {
            return Err(FetchError::Protocol(format!(
                "the server sent more than the {declared} bytes the manifest gives for the \
                 module; nothing was stored"
            )));
        }
        blob.write(&chunk).await.map_err(store_error)?;
        progress.add(chunk.len());
        if !checked && blob.head().len() == PartialBlob::HEAD_BYTES {
            check_wasm(blob.head())?;
            checked = true;
        }
    }
    if !checked {
        check_wasm(blob.head())?;
    }
    Ok(blob)
}

/// A module starts with the `\0asm` magic (and a version): anything else
/// is refused before more of it is read.
fn check_wasm(head: &[u8]) -> Result<(), FetchError> {
    match super::artifact::kind_of(head) {
        Ok(_) => Ok(()),
        Err(_) => Err(FetchError::NotWasm {
            start: error::start_of(head),
        }),
    }
}
