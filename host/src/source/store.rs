//! The download store: fetched modules on disk, keyed by digest, so a module
//! named by several policies (or several spellings) is stored once, and a
//! restart finds what an earlier run fetched.
//!
//! ```text
//! <dir>/blobs/sha256/<hex>.wasm        module bytes, named by their sha256
//! <dir>/manifests/<alg>/<hex>.json     OCI manifests as pulled, named by their digest
//! <dir>/refs/<sha256 of the URI>.json  what a URI resolved to: {uri, manifest?, digest}
//! <dir>/signatures/<alg>/<hex>.json    the cosign signatures found for a manifest
//!                                      (verified again each time they are used)
//! <dir>/tmp/                           downloads being written
//! ```
//!
//! Every file is written aside (in `tmp/`), synced, then renamed into place:
//! a reader sees a whole file or none, even with several processes sharing
//! the directory, and an interrupted download leaves nothing under a final
//! name. A module is streamed there as it arrives ([`PartialBlob`]), hashed
//! on the way, so no download is ever held in memory whole. Everything read
//! back is checked against the digest it is named by, so a damaged file is
//! fetched again rather than used.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use tokio::io::AsyncWriteExt;

use crate::digest::Digest;

/// A directory of downloaded modules.
#[derive(Debug, Clone)]
pub struct DownloadStore {
    dir: PathBuf,
}

/// What a URI resolved to when it was last fetched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedRef {
    /// The URI, canonical (for people reading the store).
    pub uri: String,
    /// The OCI manifest's digest (`sha256:…`), for registry references.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
    /// The module's sha256 (`sha256:…`).
    pub digest: String,
}

impl DownloadStore {
    /// A store rooted at `dir`, created on first write.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The default location inside a compiled-cache directory: `<cache>/downloads`.
    pub fn default_dir(cache_dir: &Path) -> PathBuf {
        cache_dir.join("downloads")
    }

    /// The directory this store lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the module with `digest` is (or would be) stored.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir
            .join("blobs/sha256")
            .join(format!("{}.wasm", digest.hex()))
    }

    /// The stored module with `digest`, if a sound copy is there. A damaged
    /// one (its bytes no longer hash to its name) is removed.
    pub fn blob(&self, digest: &Digest) -> Option<(PathBuf, usize)> {
        let path = self.blob_path(digest);
        let (actual, size) = Digest::of_file(&path).ok()?;
        if actual == *digest {
            return Some((path, size));
        }
        tracing::warn!(%digest, %actual, path = %path.display(), "download store: damaged module removed");
        let _ = fs::remove_file(&path);
        None
    }

    /// Stores `bytes` under their digest.
    pub fn put_blob(&self, bytes: &[u8]) -> std::io::Result<(PathBuf, Digest)> {
        let digest = Digest::of(bytes);
        let path = self.blob_path(&digest);
        self.write(&path, bytes)?;
        Ok((path, digest))
    }

    /// Starts writing a module aside in `tmp/`; see [`PartialBlob`].
    pub async fn begin_blob(&self) -> std::io::Result<PartialBlob> {
        let store = self.clone();
        let (file, path) = tokio::task::spawn_blocking(move || {
            let tmp_dir = store.dir.join("tmp");
            fs::create_dir_all(&tmp_dir)?;
            let tmp = tempfile::Builder::new().tempfile_in(&tmp_dir)?;
            std::io::Result::Ok(tmp.into_parts())
        })
        .await
        .expect("creating a file does not panic")?;
        Ok(PartialBlob {
            store: self.clone(),
            file: tokio::fs::File::from_std(file),
            path,
            hasher: sha2::Sha256::new(),
            size: 0,
            head: Vec::new(),
        })
    }

    /// The stored manifest whose digest is `digest` (`alg:hex`), if its bytes
    /// still hash to it.
    pub fn manifest(&self, digest: &str) -> Option<Vec<u8>> {
        let path = self.manifest_path(digest)?;
        let bytes = fs::read(&path).ok()?;
        if digest_matches(&bytes, digest) {
            Some(bytes)
        } else {
            tracing::warn!(digest, path = %path.display(), "download store: damaged manifest removed");
            let _ = fs::remove_file(&path);
            None
        }
    }

    /// Stores a manifest whose bytes hash to `digest`.
    pub fn put_manifest(&self, digest: &str, bytes: &[u8]) -> std::io::Result<()> {
        let Some(path) = self.manifest_path(digest) else {
            return Err(std::io::Error::other(format!(
                "unsupported digest `{digest}`"
            )));
        };
        self.write(&path, bytes)
    }

    /// The signatures recorded for the manifest `digest` (as
    /// [`put_signatures`](Self::put_signatures) wrote them), if any. Not
    /// trusted: whoever uses them verifies them again.
    pub fn signatures(&self, digest: &str) -> Option<Vec<u8>> {
        fs::read(self.signatures_path(digest)?).ok()
    }

    /// Records the signatures found for the manifest `digest`.
    pub fn put_signatures(&self, digest: &str, bytes: &[u8]) -> std::io::Result<()> {
        let Some(path) = self.signatures_path(digest) else {
            return Err(std::io::Error::other(format!(
                "unsupported digest `{digest}`"
            )));
        };
        self.write(&path, bytes)
    }

    /// What `uri` (canonical) resolved to last time, if recorded.
    pub fn resolved(&self, uri: &str) -> Option<ResolvedRef> {
        let text = fs::read(self.ref_path(uri)).ok()?;
        let resolved: ResolvedRef = serde_json::from_slice(&text).ok()?;
        (resolved.uri == uri).then_some(resolved)
    }

    /// Records what a URI resolved to.
    pub fn put_resolved(&self, resolved: &ResolvedRef) -> std::io::Result<()> {
        let text = serde_json::to_vec_pretty(resolved).map_err(std::io::Error::other)?;
        self.write(&self.ref_path(&resolved.uri), &text)
    }

    /// Removes what interrupted runs left in `tmp/` (files older than an
    /// hour: a younger one may be another process's download in progress).
    pub fn clean_tmp(&self) {
        let Ok(entries) = fs::read_dir(self.dir.join("tmp")) else {
            return;
        };
        let cutoff = SystemTime::now() - Duration::from_secs(3600);
        for entry in entries.flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|modified| modified < cutoff);
            if old {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// Files in `tmp/` now (for tests of interrupted downloads).
    pub fn tmp_files(&self) -> Vec<PathBuf> {
        fs::read_dir(self.dir.join("tmp"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect()
    }

    fn manifest_path(&self, digest: &str) -> Option<PathBuf> {
        self.by_digest("manifests", digest)
    }

    fn signatures_path(&self, digest: &str) -> Option<PathBuf> {
        self.by_digest("signatures", digest)
    }

    /// `<dir>/<kind>/<alg>/<hex>.json` for a sha256 or sha512 `digest`.
    fn by_digest(&self, kind: &str, digest: &str) -> Option<PathBuf> {
        let (algorithm, hex) = digest.split_once(':')?;
        let valid = matches!(algorithm, "sha256" | "sha512")
            && !hex.is_empty()
            && hex.bytes().all(|b| b.is_ascii_hexdigit());
        valid.then(|| {
            self.dir
                .join(kind)
                .join(algorithm)
                .join(format!("{hex}.json"))
        })
    }

    fn ref_path(&self, uri: &str) -> PathBuf {
        // Hashed: a URI can hold anything a file name cannot.
        let name = hex::encode(sha2::Sha256::digest(uri.as_bytes()));
        self.dir.join("refs").join(format!("{name}.json"))
    }

    /// Writes `bytes` to `path` atomically: aside in `tmp/`, synced, renamed.
    fn write(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        let tmp_dir = self.dir.join("tmp");
        fs::create_dir_all(&tmp_dir)?;
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let mut tmp = tempfile::Builder::new().tempfile_in(&tmp_dir)?;
        tmp.write_all(bytes)?;
        tmp.as_file().sync_all()?;
        tmp.persist(path)?;
        Ok(())
    }
}

/// A module being downloaded: written to a file in `tmp/` as it arrives and
/// hashed on the way. [`persist`](Self::persist) syncs it and moves it under
/// its digest; dropped before that (an error, a deadline, a cancelled
/// reload), the file is removed at once.
pub struct PartialBlob {
    store: DownloadStore,
    /// Writes go through tokio's file, which hands them to the blocking pool
    /// a bounded buffer at a time: the download waits for the disk rather
    /// than piling up in memory.
    file: tokio::fs::File,
    /// Removes the file when dropped.
    path: tempfile::TempPath,
    hasher: sha2::Sha256,
    size: u64,
    /// The first bytes, for "this is not wasm" checks and messages.
    head: Vec<u8>,
}

impl PartialBlob {
    /// How many bytes of the file the head keeps.
    pub const HEAD_BYTES: usize = 16;

    /// Appends `bytes`.
    pub async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all(bytes).await?;
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
        let wanted = Self::HEAD_BYTES.saturating_sub(self.head.len());
        self.head
            .extend_from_slice(&bytes[..wanted.min(bytes.len())]);
        Ok(())
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The first [`HEAD_BYTES`](Self::HEAD_BYTES) bytes written (fewer while
    /// fewer have arrived).
    pub fn head(&self) -> &[u8] {
        &self.head
    }

    /// The digest of what was written so far.
    pub fn digest(&self) -> Digest {
        let hex = hex::encode(self.hasher.clone().finalize());
        format!("sha256:{hex}")
            .parse()
            .expect("a sha256 digest parses")
    }

    /// Syncs the file and moves it under its digest; returns its path,
    /// digest and size.
    pub async fn persist(mut self) -> std::io::Result<(PathBuf, Digest, usize)> {
        self.file.flush().await?;
        self.file.sync_all().await?;
        let digest = self.digest();
        let target = self.store.blob_path(&digest);
        let Self { file, path, .. } = self;
        // Every write has completed (flushed); the descriptor is closed here.
        drop(file.into_std().await);
        let moved = target.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(parent) = moved.parent() {
                fs::create_dir_all(parent)?;
            }
            path.persist(&moved).map_err(|e| e.error)
        })
        .await
        .expect("renaming a file does not panic")?;
        let size = usize::try_from(self.size).map_err(std::io::Error::other)?;
        Ok((target, digest, size))
    }
}

/// Whether `bytes` hash to `digest` (`sha256:…` or `sha512:…`).
pub fn digest_matches(bytes: &[u8], digest: &str) -> bool {
    match digest.split_once(':') {
        Some(("sha256", hex)) => hex::encode(sha2::Sha256::digest(bytes)) == hex,
        Some(("sha512", hex)) => hex::encode(sha2::Sha512::digest(bytes)) == hex,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_keyed_by_digest_and_checked_on_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = DownloadStore::new(dir.path());
        let (path, digest) = store.put_blob(b"\0asm\x0d\0\x01\0").unwrap();
        assert_eq!(path, store.blob_path(&digest));
        assert_eq!(store.blob(&digest), Some((path.clone(), 8)));
        assert!(store.tmp_files().is_empty());

        // Damaged in place: not used, and removed.
        fs::write(&path, b"\0asm\x0d\0\x01\x01").unwrap();
        assert_eq!(store.blob(&digest), None);
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn a_streamed_blob_is_stored_under_its_digest_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let store = DownloadStore::new(dir.path());
        let module = b"\0asm\x0d\0\x01\0 and the rest of a component";
        let mut blob = store.begin_blob().await.unwrap();
        for part in module.chunks(5) {
            blob.write(part).await.unwrap();
        }
        assert_eq!(blob.size(), module.len() as u64);
        assert_eq!(blob.head(), &module[..PartialBlob::HEAD_BYTES]);
        assert_eq!(store.tmp_files().len(), 1);
        let (path, digest, size) = blob.persist().await.unwrap();
        assert_eq!(digest, Digest::of(module));
        assert_eq!(
            (path.clone(), size),
            (store.blob_path(&digest), module.len())
        );
        assert_eq!(fs::read(&path).unwrap(), module);
        assert!(store.tmp_files().is_empty());

        // Abandoned half-way: nothing stays, under any name.
        let mut blob = store.begin_blob().await.unwrap();
        blob.write(&module[..10]).await.unwrap();
        drop(blob);
        assert!(store.tmp_files().is_empty());
    }

    #[test]
    fn manifests_are_checked_against_their_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = DownloadStore::new(dir.path());
        let bytes = br#"{"schemaVersion":2}"#;
        let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)));
        store.put_manifest(&digest, bytes).unwrap();
        assert_eq!(store.manifest(&digest).as_deref(), Some(&bytes[..]));
        let other = format!("sha256:{}", "0".repeat(64));
        assert_eq!(store.manifest(&other), None);
        assert!(store.put_manifest("md5:00", bytes).is_err());
        assert!(store.manifest("sha256:../../x").is_none());
    }

    #[test]
    fn resolved_refs_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = DownloadStore::new(dir.path());
        let resolved = ResolvedRef {
            uri: "registry://127.0.0.1:5000/p:v1".into(),
            manifest: Some(format!("sha256:{}", "1".repeat(64))),
            digest: format!("sha256:{}", "2".repeat(64)),
        };
        assert_eq!(store.resolved(&resolved.uri), None);
        store.put_resolved(&resolved).unwrap();
        assert_eq!(store.resolved(&resolved.uri), Some(resolved));
        assert_eq!(store.resolved("registry://127.0.0.1:5000/p:v2"), None);
    }
}
