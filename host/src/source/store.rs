//! The download store: fetched modules on disk, keyed by digest, so a module
//! named by several policies (or several spellings) is stored once, and a
//! restart finds what an earlier run fetched.
//!
//! ```text
//! <dir>/blobs/sha256/<hex>.wasm        module bytes, named by their sha256
//! <dir>/manifests/<alg>/<hex>.json     OCI manifests as pulled, named by their digest
//! <dir>/refs/<sha256 of the URI>.json  what a URI resolved to: {uri, manifest?, digest}
//! <dir>/tmp/                           downloads being written
//! ```
//!
//! Every file is written aside (in `tmp/`), synced, then renamed into place:
//! a reader sees a whole file or none, even with several processes sharing
//! the directory, and an interrupted download leaves nothing under a final
//! name. Everything read back is checked against the digest it is named by,
//! so a damaged file is fetched again rather than used.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::component::Digest;

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
        let (algorithm, hex) = digest.split_once(':')?;
        let valid = matches!(algorithm, "sha256" | "sha512")
            && !hex.is_empty()
            && hex.bytes().all(|b| b.is_ascii_hexdigit());
        valid.then(|| {
            self.dir
                .join("manifests")
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
