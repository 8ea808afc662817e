//! A content-addressed on-disk cache of compiled components.
//!
//! An entry is keyed by the component's sha256 digest *and* a hash of the
//! engine's compatibility (wasmtime version and every setting that changes
//! generated code), so a new wasmtime or a different config never reads an
//! old entry. Each entry carries a sha256 of its payload: a truncated or
//! corrupted file is detected before wasmtime sees it, and recompiled.

use std::fs;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use wasmtime::component::Component;

use crate::component::Digest;

const MAGIC: &[u8; 8] = b"PCWASM01";
const HEADER_LEN: usize = MAGIC.len() + 32;

/// A directory of compiled components.
#[derive(Debug, Clone)]
pub struct CompiledCache {
    dir: PathBuf,
}

/// Why a cache entry could not be used. Never fatal: the caller recompiles.
#[derive(Debug, thiserror::Error)]
pub enum CacheMiss {
    /// No entry for this key.
    #[error("no entry")]
    Absent,
    /// The entry exists but is damaged (truncated, corrupted, foreign).
    #[error("damaged entry {path}: {reason}")]
    Damaged {
        /// The entry's file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

impl CompiledCache {
    /// A cache rooted at `dir`, created on first store.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The conventional location: `$XDG_CACHE_HOME/portcullis` or
    /// `$HOME/.cache/portcullis`.
    pub fn default_dir() -> Option<PathBuf> {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache")))?;
        Some(base.join("portcullis"))
    }

    /// The directory this cache lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file an entry for `digest` compiled by `engine` lives in.
    pub fn entry_path(&self, engine: &wasmtime::Engine, digest: &Digest) -> PathBuf {
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        self.dir
            .join(format!("{}-{:016x}.cwasm", digest.hex(), hasher.finish()))
    }

    /// Loads the compiled form of `digest`, if a sound entry exists.
    pub fn load(&self, engine: &wasmtime::Engine, digest: &Digest) -> Result<Component, CacheMiss> {
        let path = self.entry_path(engine, digest);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(CacheMiss::Absent),
            Err(e) => return Err(damaged(&path, e)),
        };
        if bytes.len() < HEADER_LEN || &bytes[..MAGIC.len()] != MAGIC {
            return Err(damaged(&path, "not a portcullis cache entry"));
        }
        let (checksum, payload) = bytes[MAGIC.len()..].split_at(32);
        if Sha256::digest(payload).as_slice() != checksum {
            return Err(damaged(&path, "checksum mismatch (truncated or corrupted)"));
        }
        // SAFETY: the payload is byte-for-byte what `Component::serialize`
        // produced for this engine configuration (checked by the checksum
        // above and the engine-compatibility hash in the file name), written by
        // this process or an earlier one into a directory the operator controls.
        unsafe { Component::deserialize(engine, payload) }.map_err(|e| damaged(&path, e))
    }

    /// Stores the compiled form of `digest`, atomically (write, then rename).
    pub fn store(
        &self,
        engine: &wasmtime::Engine,
        digest: &Digest,
        component: &Component,
    ) -> anyhow::Result<PathBuf> {
        let payload = component.serialize()?;
        let path = self.entry_path(engine, digest);
        fs::create_dir_all(&self.dir)?;
        // Write beside the final name, then rename: a reader sees either no
        // entry or a whole one, even with several processes sharing the dir.
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        tmp.write_all(MAGIC)?;
        tmp.write_all(&Sha256::digest(&payload))?;
        tmp.write_all(&payload)?;
        tmp.as_file().sync_all()?;
        tmp.persist(&path)?;
        Ok(path)
    }
}

fn damaged(path: &Path, reason: impl ToString) -> CacheMiss {
    CacheMiss::Damaged {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}
