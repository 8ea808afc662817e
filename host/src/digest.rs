//! The identity of a policy's code: the sha256 digest of its bytes.
//!
//! A leaf: everything that names code by its content — the compiled cache,
//! the download store, the environment's deduplication, the runtimes —
//! shares this one type, and it imports nothing of the crate.

use std::fmt;
use std::io::Read;
use std::path::Path;

use sha2::{Digest as _, Sha256};

/// The sha256 digest of a policy's bytes: its identity.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// The digest of the file at `path`, and its size, read in chunks: no
    /// copy of the whole file is made (a Python policy is ~18 MB), and on a
    /// warm start the bytes are needed for nothing else.
    pub fn of_file(path: &Path) -> std::io::Result<(Self, usize)> {
        let mut file = std::fs::File::open(path)?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0; 256 << 10];
        let mut size = 0;
        loop {
            match file.read(&mut buffer)? {
                0 => return Ok((Self(hasher.finalize().into()), size)),
                n => {
                    hasher.update(&buffer[..n]);
                    size += n;
                }
            }
        }
    }

    /// Lower-case hex, as `sha256sum` prints it.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl std::str::FromStr for Digest {
    type Err = String;

    /// Parses `sha256:<64 hex digits>`, as [`Display`](fmt::Display) prints it.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let hex = text
            .strip_prefix("sha256:")
            .ok_or_else(|| format!("`{text}` is not a sha256 digest"))?;
        let mut bytes = [0; 32];
        hex::decode_to_slice(hex, &mut bytes).map_err(|e| format!("`{text}`: {e}"))?;
        Ok(Self(bytes))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
