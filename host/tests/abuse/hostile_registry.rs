//! A stand-in for a hostile OCI registry: plain HTTP/1.1 on 127.0.0.1, one
//! answer per connection. A real registry (docker-registry) cannot be made
//! to drip bytes or to send without end, which is what this one does. The
//! repository's first path segment says how it answers:
//!
//! - `drip-manifest/…`: a manifest's head (`Content-Length: 4096`), then one
//!   byte of it every `drip`;
//! - `drip-blob/…`: a sound manifest, then the module one byte every `drip`;
//! - `huge-manifest/…`: a chunked manifest without end;
//! - `endless-blob/…`: a sound manifest giving the module the largest size
//!   accepted, then a chunked module without end.
//!
//! It counts the answers under way (at most how many at once), and notices
//! a client that leaves at once. Every answer is bounded (in bytes, and a
//! drip in time), and dropping the registry stops every answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The largest module Portcullis accepts (`portcullis::source::MAX_MODULE_BYTES`).
pub const MAX_MODULE_BYTES: u64 = 256 << 20;

/// An endless answer stops after this much (the client should leave long before).
const ENDLESS_BYTES: u64 = 2 * MAX_MODULE_BYTES;

/// A drip stops after this long.
const DRIP_FOR: Duration = Duration::from_secs(600);

/// A running stand-in; dropping it stops it and every answer under way.
pub struct HostileRegistry {
    /// `127.0.0.1:PORT`.
    pub host: String,
    stats: Arc<Stats>,
    accepting: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Stats {
    open: AtomicUsize,
    most_open: AtomicUsize,
}

impl HostileRegistry {
    /// Starts one that drips a byte every `drip`.
    pub async fn start(drip: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let stats = Arc::new(Stats::default());
        let counted = stats.clone();
        let accepting = tokio::spawn(async move {
            // Aborted with the accept loop: no answer outlives the registry.
            let mut answers = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((socket, _)) = accepted else { continue };
                        answers.spawn(answer(socket, drip, counted.clone()));
                    }
                    Some(_) = answers.join_next() => {}
                }
            }
        });
        Self {
            host,
            stats,
            accepting,
        }
    }

    /// `registry://HOST/KIND/NAME:v1`.
    pub fn uri(&self, kind: &str, name: &str) -> String {
        format!("registry://{}/{kind}/{name}:v1", self.host)
    }

    /// A `sources.yml` that lists it as insecure (plain HTTP).
    pub fn sources_yml(&self) -> String {
        format!("insecure_sources: [\"{}\"]\n", self.host)
    }

    /// Manifests and modules being sent now.
    pub fn open(&self) -> usize {
        self.stats.open.load(Ordering::SeqCst)
    }

    /// The most sent at once.
    pub fn most_open(&self) -> usize {
        self.stats.most_open.load(Ordering::SeqCst)
    }
}

impl Drop for HostileRegistry {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

/// Counts one answer under way while it lives.
struct Sending(Arc<Stats>);

impl Sending {
    fn new(stats: &Arc<Stats>) -> Self {
        let open = stats.open.fetch_add(1, Ordering::SeqCst) + 1;
        stats.most_open.fetch_max(open, Ordering::SeqCst);
        Self(stats.clone())
    }
}

impl Drop for Sending {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn answer(mut socket: TcpStream, drip: Duration, stats: Arc<Stats>) {
    let Some(path) = request_path(&mut socket).await else {
        return;
    };
    let Some(rest) = path.strip_prefix("/v2/") else {
        return;
    };
    if rest.is_empty() {
        let _ = respond(&mut socket, "application/json", b"{}").await;
        return;
    }
    let kind = rest.split('/').next().unwrap_or_default();
    let is_manifest = rest.contains("/manifests/");
    match (kind, is_manifest) {
        ("drip-manifest", true) => {
            let _sending = Sending::new(&stats);
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\n\
                        Content-Length: 4096\r\nConnection: close\r\n\r\n";
            drip_out(socket, head, b"{", drip).await;
        }
        ("drip-blob", true) => {
            let _ = respond(&mut socket, OCI_MANIFEST, &manifest(rest, 1 << 20)).await;
        }
        ("drip-blob", false) => {
            let _sending = Sending::new(&stats);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                1 << 20
            );
            drip_out(socket, &head, b"\0asm\x0d\0\x01\0", drip).await;
        }
        ("huge-manifest", true) => {
            let _sending = Sending::new(&stats);
            endless(socket, OCI_MANIFEST, b"{\"schemaVersion\":2,", b' ').await;
        }
        ("endless-blob", true) => {
            let _ = respond(&mut socket, OCI_MANIFEST, &manifest(rest, MAX_MODULE_BYTES)).await;
        }
        ("endless-blob", false) => {
            let _sending = Sending::new(&stats);
            endless(socket, "application/octet-stream", b"\0asm\x0d\0\x01\0", 0).await;
        }
        _ => {
            let _ = socket
                .write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await;
        }
    }
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// The request's path, or `None` for what is not an HTTP request (the TLS
/// hello an insecure source is tried with first).
async fn request_path(socket: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut buffer = [0; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = socket.read(&mut buffer).await.ok()?;
        if n == 0 || head.len() > 16 << 10 {
            return None;
        }
        head.extend_from_slice(&buffer[..n]);
        if !head[0].is_ascii_uppercase() {
            return None;
        }
    }
    let line = head.split(|&b| b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    let _method = parts.next()?;
    Some(parts.next()?.split('?').next()?.to_owned())
}

async fn respond(socket: &mut TcpStream, content_type: &str, body: &[u8]) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    socket.write_all(head.as_bytes()).await?;
    socket.write_all(body).await
}

/// A manifest of one wasm layer of `size` bytes, its digest made from the
/// repository (so each repository's module is a distinct download).
fn manifest(repository: &str, size: u64) -> Vec<u8> {
    use sha2::Digest as _;
    let name = repository.split("/manifests/").next().unwrap_or_default();
    let digest = hex::encode(sha2::Sha256::digest(name.as_bytes()));
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.wasm.config.v0+json",
            "digest": format!("sha256:{}", "0".repeat(64)),
            "size": 2
        },
        "layers": [{
            "mediaType": "application/wasm",
            "digest": format!("sha256:{digest}"),
            "size": size
        }]
    })
    .to_string()
    .into_bytes()
}

/// Sends `head`, then `body` and zeros one byte every `drip`, until the
/// client leaves (noticed at once: it reads EOF) or [`DRIP_FOR`] passes.
async fn drip_out(socket: TcpStream, head: &str, body: &[u8], drip: Duration) {
    let (mut reader, mut writer) = socket.into_split();
    if writer.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let started = tokio::time::Instant::now();
    let mut sent = 0;
    let mut gone = [0; 64];
    while started.elapsed() < DRIP_FOR {
        tokio::select! {
            _ = tokio::time::sleep(drip) => {
                let byte = body.get(sent).copied().unwrap_or(0);
                if writer.write_all(&[byte]).await.is_err() {
                    return;
                }
                sent += 1;
            }
            read = reader.read(&mut gone) => {
                if !matches!(read, Ok(n) if n > 0) {
                    return;
                }
            }
        }
    }
}

/// Sends a chunked body that starts with `start` and goes on with `fill`
/// as fast as the client reads, until it leaves or [`ENDLESS_BYTES`].
async fn endless(mut socket: TcpStream, content_type: &str, start: &[u8], fill: u8) {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\
         Connection: close\r\n\r\n"
    );
    if socket.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let mut block = vec![fill; 64 << 10];
    block[..start.len()].copy_from_slice(start);
    let mut chunk = format!("{:x}\r\n", block.len()).into_bytes();
    chunk.extend_from_slice(&block);
    chunk.extend_from_slice(b"\r\n");
    let mut sent = 0;
    while sent < ENDLESS_BYTES {
        if socket.write_all(&chunk).await.is_err() {
            return;
        }
        if sent == 0 {
            // Only the first block starts the document.
            block[..start.len()].fill(fill);
            chunk.truncate(0);
            chunk.extend_from_slice(format!("{:x}\r\n", block.len()).as_bytes());
            chunk.extend_from_slice(&block);
            chunk.extend_from_slice(b"\r\n");
        }
        sent += block.len() as u64;
    }
}
