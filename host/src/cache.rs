//! A content-addressed on-disk cache of compiled policies, of every kind.
//!
//! An entry is keyed by the policy's sha256 digest *and* a hash of the
//! engine's compatibility (wasmtime version and every setting that changes
//! generated code), so a new wasmtime or a different config never reads an
//! old entry, and tagged with the kind of policy that stored it, so a warm
//! start knows the kind without reading the policy:
//! `<digest>-<engine>-<crc32>.<tag>.cwasm` (`.module.cwasm` for a Kubewarden
//! module), or `<digest>-<engine>-<crc32>.cwasm` for a component, whose
//! entries predate tags. The cache knows no kind: tags are the runtimes'.
//!
//! The file holds exactly what `Component::serialize` (or
//! `Module::serialize`; wasmtime tells which from the bytes) produced (so stock tools can load it too, e.g.
//! `wasmtime run --allow-precompiled`). The
//! CRC-32 of the file, in its name, catches a truncated or corrupted file
//! before wasmtime sees it; the entry is then recompiled. A checksum that
//! catches accidents is enough: whoever can write the cache directory can
//! write a matching checksum too.
//!
//! wasmtime gets its own copy of an entry (`Component::deserialize`), not a
//! mapping of the file (`Component::deserialize_file`): a mapped file
//! truncated in place while the server runs — by an operator, a clean-up job
//! — would kill the process with SIGBUS at the next evaluation that touches
//! the lost pages. The file is mapped only while it is checked and copied,
//! which spares reading 35 MB (a Python policy's entry) into a buffer first;
//! this module's own writes never truncate an entry in place.

use std::fs;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use wasmtime::component::Component;
use wasmtime::{Module, Precompiled};

use crate::digest::Digest;

/// A compiled policy, as stored in and loaded from the cache: what wasmtime
/// compiled, of either of its two forms.
#[derive(Clone)]
pub enum Compiled {
    /// A component.
    Component(Component),
    /// A core module.
    Module(Module),
}

impl Compiled {
    fn serialize(&self) -> wasmtime::Result<Vec<u8>> {
        match self {
            Compiled::Component(component) => component.serialize(),
            Compiled::Module(module) => module.serialize(),
        }
    }
}

/// What every entry's name ends with.
const SUFFIX: &str = ".cwasm";

/// An entry read from the cache.
pub struct Entry {
    /// The tag its kind stored it with (empty for a component).
    pub tag: String,
    /// What it holds.
    pub compiled: Compiled,
}

/// A directory of compiled policies.
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

    /// The start of the file name of the entry for `digest` compiled by
    /// `engine`; the entry's checksum follows it.
    fn entry_prefix(engine: &wasmtime::Engine, digest: &Digest) -> String {
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        format!("{}-{:016x}-", digest.hex(), hasher.finish())
    }

    /// The file holding the entry for `digest` compiled by `engine`, if any.
    pub fn entry_path(&self, engine: &wasmtime::Engine, digest: &Digest) -> Option<PathBuf> {
        self.find(&Self::entry_prefix(engine, digest))
            .map(|found| found.path)
    }

    fn find(&self, prefix: &str) -> Option<Found> {
        self.find_all(prefix).next()
    }

    /// Every entry whose name starts with `prefix`.
    fn find_all(&self, prefix: &str) -> impl Iterator<Item = Found> {
        let entries = fs::read_dir(&self.dir).into_iter().flatten().flatten();
        entries.filter_map(move |entry| {
            let name = entry.file_name();
            let rest = name.to_str()?.strip_prefix(prefix)?.strip_suffix(SUFFIX)?;
            let (checksum, tag) = rest.split_once('.').unwrap_or((rest, ""));
            Some(Found {
                checksum: u32::from_str_radix(checksum, 16).ok()?,
                tag: tag.to_owned(),
                path: entry.path(),
            })
        })
    }

    /// Loads the compiled form of `digest`, if a sound entry exists.
    pub fn load(&self, engine: &wasmtime::Engine, digest: &Digest) -> Result<Entry, CacheMiss> {
        let Some(Found {
            path,
            checksum: expected,
            tag,
        }) = self.find(&Self::entry_prefix(engine, digest))
        else {
            return Err(CacheMiss::Absent);
        };
        let file = fs::File::open(&path).map_err(|e| damaged(&path, e))?;
        // SAFETY: the mapping lives until the end of this function; entries
        // are replaced by rename, never rewritten in place (module docs).
        let bytes = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| damaged(&path, e))?;
        if crc32fast::hash(&bytes) != expected {
            return Err(damaged(&path, "checksum mismatch (truncated or corrupted)"));
        }
        // SAFETY: the bytes are what `Component::serialize` (or
        // `Module::serialize`, as wasmtime's header says) produced for this
        // engine configuration (checked by the checksum above and the
        // engine-compatibility hash in the file name), written by this
        // process or an earlier one into a directory the operator controls.
        let compiled = match wasmtime::Engine::detect_precompiled(&bytes) {
            Some(Precompiled::Component) => {
                unsafe { Component::deserialize(engine, &bytes[..]) }.map(Compiled::Component)
            }
            Some(Precompiled::Module) => {
                unsafe { Module::deserialize(engine, &bytes[..]) }.map(Compiled::Module)
            }
            None => return Err(damaged(&path, "not a compiled wasmtime artifact")),
        };
        let compiled = compiled.map_err(|e| damaged(&path, e))?;
        Ok(Entry { tag, compiled })
    }

    /// Stores the compiled form of `digest`, tagged with `tag` (its kind's
    /// word, `[a-z0-9-]`, or empty), atomically (write, then rename),
    /// replacing any other entry for the same key.
    pub fn store(
        &self,
        engine: &wasmtime::Engine,
        digest: &Digest,
        tag: &str,
        compiled: &Compiled,
    ) -> anyhow::Result<PathBuf> {
        anyhow::ensure!(
            tag.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "invalid cache tag `{tag}`"
        );
        let payload = compiled.serialize()?;
        let prefix = Self::entry_prefix(engine, digest);
        let tag = if tag.is_empty() {
            String::new()
        } else {
            format!(".{tag}")
        };
        let path = self.dir.join(format!(
            "{prefix}{:08x}{tag}{SUFFIX}",
            crc32fast::hash(&payload),
        ));
        fs::create_dir_all(&self.dir)?;
        // Write beside the final name, then rename: a reader sees either no
        // entry or a whole one, even with several processes sharing the dir.
        let mut tmp = tempfile::Builder::new()
            .suffix(".tmp")
            .tempfile_in(&self.dir)?;
        tmp.write_all(&payload)?;
        tmp.as_file().sync_all()?;
        tmp.persist(&path)?;
        // A damaged entry under another checksum would be found first next time.
        for other in self.find_all(&prefix).filter(|other| other.path != path) {
            fs::remove_file(other.path)?;
        }
        Ok(path)
    }
}

/// An entry's file, and what its name records.
struct Found {
    path: PathBuf,
    checksum: u32,
    tag: String,
}

fn damaged(path: &Path, reason: impl ToString) -> CacheMiss {
    CacheMiss::Damaged {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest core module and component: a header each.
    const EMPTY_MODULE: &[u8] = b"\0asm\x01\0\0\0";
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    fn names(cache: &CompiledCache) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(cache.dir())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn an_entry_carries_its_kinds_tag_and_gives_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompiledCache::new(dir.path());
        let engine = wasmtime::Engine::default();
        let component = Compiled::Component(Component::new(&engine, EMPTY_COMPONENT).unwrap());
        let module = Compiled::Module(Module::new(&engine, EMPTY_MODULE).unwrap());
        let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));

        // Components' entries keep the name they had before kinds had tags.
        let path = cache.store(&engine, &a, "", &component).unwrap();
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with(&a.hex()), "{name}");
        let checksum = name
            .strip_suffix(".cwasm")
            .unwrap()
            .rsplit('-')
            .next()
            .unwrap();
        assert_eq!(checksum.len(), 8, "{name}");
        let entry = cache.load(&engine, &a).unwrap();
        assert_eq!(entry.tag, "");
        assert!(matches!(entry.compiled, Compiled::Component(_)));

        let path = cache.store(&engine, &b, "module", &module).unwrap();
        assert!(
            path.to_str().unwrap().ends_with(".module.cwasm"),
            "{path:?}"
        );
        let entry = cache.load(&engine, &b).unwrap();
        assert_eq!(entry.tag, "module");
        assert!(matches!(entry.compiled, Compiled::Module(_)));

        // Another kind's entry for the same digest replaces it, tag and all.
        cache.store(&engine, &b, "rego-1a2b", &component).unwrap();
        let entry = cache.load(&engine, &b).unwrap();
        assert_eq!(entry.tag, "rego-1a2b");
        assert!(matches!(entry.compiled, Compiled::Component(_)));
        assert_eq!(names(&cache).len(), 2, "{:?}", names(&cache));

        // A tag could not be read back out of the name.
        let error = cache.store(&engine, &a, "two.words", &module).unwrap_err();
        assert_eq!(error.to_string(), "invalid cache tag `two.words`");
        assert!(matches!(cache.load(&engine, &a), Ok(Entry { tag, .. }) if tag.is_empty()));
    }
}
