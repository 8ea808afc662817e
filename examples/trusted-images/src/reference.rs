//! Container image references (`registry.example.com:5000/team/app:1.2@sha256:…`),
//! parsed and validated as Docker and containerd do.
//!
//! The grammar is the one of the Docker/OCI distribution project
//! (`github.com/distribution/reference`), including its normalisation of
//! "familiar" names, so that the policy sees the registry an image is really
//! pulled from:
//!
//! ```text
//! reference        := name [ ":" tag ] [ "@" digest ]
//! name             := [ registry "/" ] path
//! registry         := host [ ":" port ]
//! host             := domain-name | "[" ipv6-address "]"
//! domain-name      := domain-component ( "." domain-component )*
//! domain-component := [A-Za-z0-9] | [A-Za-z0-9] [A-Za-z0-9-]* [A-Za-z0-9]
//! ipv6-address     := [A-Fa-f0-9:]+
//! port             := [0-9]+
//! path             := path-component ( "/" path-component )*
//! path-component   := [a-z0-9]+ ( separator [a-z0-9]+ )*
//! separator        := "." | "_" | "__" | "-"+
//! tag              := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
//! digest           := algorithm ":" hex
//! algorithm        := "sha256" | "sha384" | "sha512"
//! hex              := 64, 96 or 128 (for each algorithm) of [0-9a-f]
//! ```
//!
//! The first `/`-separated component of a name is the registry when it
//! contains a `.` or a `:`, is `localhost`, or has upper-case letters (which a
//! path cannot); otherwise the image comes from Docker Hub, `docker.io`, and a
//! single-component Docker Hub path is in the `library/` namespace:
//! `nginx` is `docker.io/library/nginx`. `index.docker.io` is an old name of
//! `docker.io`. The name (registry, `/` and path) is at most 255 characters.
//!
//! As in Docker, the only digest algorithms are the ones it implements:
//! sha256, sha384 and sha512, with exactly 64, 96 and 128 lowercase
//! hexadecimal digits. A well-formed digest of another algorithm is reported
//! as unsupported rather than as malformed.

use std::fmt;
use std::str::FromStr;

/// The registry of images named without one (`nginx`, `bitnami/redis`).
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// An old name of [`DEFAULT_REGISTRY`], normalised to it.
pub const LEGACY_DEFAULT_REGISTRY: &str = "index.docker.io";
/// The Docker Hub namespace of single-component names (`nginx`).
const OFFICIAL_NAMESPACE: &str = "library/";
/// The maximum length of a name: registry, `/` and path.
pub const NAME_MAX_LENGTH: usize = 255;
/// The maximum length of a tag.
pub const TAG_MAX_LENGTH: usize = 128;

/// A parsed, valid image reference.
///
/// Its [`Display`](fmt::Display) form is canonical:
/// `docker.io/library/nginx:1.27` for `nginx:1.27`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

/// A content digest, `algorithm:hex`, e.g. `sha256:` and 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Digest {
    algorithm: String,
    encoded: String,
}

/// Why a string is not a valid image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReferenceError {
    /// The reference is empty.
    Empty,
    /// The reference is 64 hexadecimal digits: an image ID, which Docker
    /// refuses as a repository name because it is ambiguous.
    ImageId,
    /// The registry is not a host name, IPv4 address or bracketed IPv6
    /// address with an optional numeric port.
    InvalidRegistry(String),
    /// The path (the name without the registry) is empty.
    EmptyPath,
    /// The path has upper-case letters.
    UppercasePath(String),
    /// A component of the path is not lowercase letters and digits with
    /// single separators.
    InvalidPathComponent(String),
    /// The name is longer than [`NAME_MAX_LENGTH`].
    NameTooLong(usize),
    /// The tag has forbidden characters or is too long.
    InvalidTag(String),
    /// The digest is not `algorithm:hex`.
    InvalidDigest(String),
    /// The digest's algorithm is well-formed but not one a registry verifies.
    UnsupportedDigestAlgorithm(String),
    /// The digest's hex part has the wrong length or is not lowercase hex.
    InvalidDigestHex {
        /// The algorithm: `sha256`, `sha384` or `sha512`.
        algorithm: &'static str,
        /// The number of hex digits the algorithm produces.
        length: usize,
        /// The hex part found.
        found: String,
    },
}

impl fmt::Display for ReferenceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReferenceError::Empty => f.write_str("the reference is empty"),
            ReferenceError::ImageId => {
                f.write_str("64 hexadecimal digits are an image ID, not a repository name")
            }
            ReferenceError::InvalidRegistry(registry) => write!(
                f,
                "invalid registry {}: expected a host name, an IPv4 address or a bracketed \
                 IPv6 address, optionally followed by `:` and a port number",
                quote(registry)
            ),
            ReferenceError::EmptyPath => f.write_str("the repository name is empty"),
            ReferenceError::UppercasePath(path) => {
                write!(f, "repository name {} must be lowercase", quote(path))
            }
            ReferenceError::InvalidPathComponent(component) => write!(
                f,
                "invalid repository name component {}: components are lowercase letters and \
                 digits, separated by `.`, `_`, `__` or dashes, and start and end with a \
                 letter or digit",
                quote(component)
            ),
            ReferenceError::NameTooLong(length) => write!(
                f,
                "the repository name is {length} characters long, more than the maximum of \
                 {NAME_MAX_LENGTH}"
            ),
            ReferenceError::InvalidTag(tag) => write!(
                f,
                "invalid tag {}: a tag is 1 to {TAG_MAX_LENGTH} letters, digits, `_`, `.` and \
                 `-`, and does not start with `.` or `-`",
                quote(tag)
            ),
            ReferenceError::InvalidDigest(digest) => write!(
                f,
                "invalid digest {}: expected an algorithm, `:` and at least 32 hexadecimal \
                 digits, e.g. `sha256:` and 64 digits",
                quote(digest)
            ),
            ReferenceError::UnsupportedDigestAlgorithm(algorithm) => write!(
                f,
                "unsupported digest algorithm {} (supported: sha256, sha384, sha512)",
                quote(algorithm)
            ),
            ReferenceError::InvalidDigestHex {
                algorithm,
                length,
                found,
            } => write!(
                f,
                "invalid {algorithm} digest {}: expected {length} lowercase hexadecimal digits",
                quote(found)
            ),
        }
    }
}

impl std::error::Error for ReferenceError {}

impl Reference {
    /// Parses and validates an image reference.
    pub fn parse(reference: &str) -> Result<Reference, ReferenceError> {
        if reference.is_empty() {
            return Err(ReferenceError::Empty);
        }
        if reference.len() == 64 && is_lower_hex(reference) {
            return Err(ReferenceError::ImageId);
        }

        // Neither a name nor a tag contains `@`: everything after the first
        // one is the digest.
        let (name_and_tag, digest) = match reference.split_once('@') {
            Some((name_and_tag, digest)) => (name_and_tag, Some(Digest::parse(digest)?)),
            None => (reference, None),
        };

        let (registry, rest) = split_registry(name_and_tag);
        if let Some(registry) = registry {
            validate_registry(registry)?;
        }
        // Once the registry (the only place a port can be) is off, a `:`
        // can only start the tag.
        let (path, tag) = match rest.split_once(':') {
            Some((path, tag)) => (path, Some(tag)),
            None => (rest, None),
        };

        if path.is_empty() {
            return Err(ReferenceError::EmptyPath);
        }
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(ReferenceError::UppercasePath(path.to_owned()));
        }
        if let Some(component) = path.split('/').find(|c| !is_path_component(c)) {
            return Err(ReferenceError::InvalidPathComponent(component.to_owned()));
        }
        if let Some(tag) = tag
            && !is_tag(tag)
        {
            return Err(ReferenceError::InvalidTag(tag.to_owned()));
        }

        let registry = match registry {
            None | Some(LEGACY_DEFAULT_REGISTRY) => DEFAULT_REGISTRY,
            Some(registry) => registry,
        };
        let path = if registry == DEFAULT_REGISTRY && !path.contains('/') {
            format!("{OFFICIAL_NAMESPACE}{path}")
        } else {
            path.to_owned()
        };
        let name_length = registry.len() + 1 + path.len();
        if name_length > NAME_MAX_LENGTH {
            return Err(ReferenceError::NameTooLong(name_length));
        }

        Ok(Reference {
            registry: registry.to_owned(),
            path,
            tag: tag.map(str::to_owned),
            digest,
        })
    }

    /// The registry host (and port) the image is pulled from, e.g.
    /// `docker.io`, `registry.example.com:5000`, `[::1]:5000`; as written,
    /// except that a missing registry and `index.docker.io` are `docker.io`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path in the registry, e.g. `library/nginx`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The tag, e.g. `1.27`, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if any: then the image is pinned to exact content.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(reference: &str) -> Result<Self, Self::Err> {
        Reference::parse(reference)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.path)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl Digest {
    /// Parses and validates `algorithm:hex`.
    pub fn parse(digest: &str) -> Result<Digest, ReferenceError> {
        let invalid = || ReferenceError::InvalidDigest(digest.to_owned());
        let (algorithm, encoded) = digest.split_once(':').ok_or_else(invalid)?;
        let (algorithm, length) = match algorithm {
            "sha256" => ("sha256", 64),
            "sha384" => ("sha384", 96),
            "sha512" => ("sha512", 128),
            other => {
                // Distinguish a well-formed digest of an algorithm no
                // registry verifies from garbage.
                return Err(
                    if is_digest_algorithm(other)
                        && encoded.len() >= 32
                        && encoded.bytes().all(|b| b.is_ascii_hexdigit())
                    {
                        ReferenceError::UnsupportedDigestAlgorithm(other.to_owned())
                    } else {
                        invalid()
                    },
                );
            }
        };
        if encoded.len() != length || !is_lower_hex(encoded) {
            return Err(ReferenceError::InvalidDigestHex {
                algorithm,
                length,
                found: encoded.to_owned(),
            });
        }
        Ok(Digest {
            algorithm: algorithm.to_owned(),
            encoded: encoded.to_owned(),
        })
    }

    /// The algorithm: `sha256`, `sha384` or `sha512`.
    pub fn algorithm(&self) -> &str {
        &self.algorithm
    }

    /// The hex digits.
    pub fn encoded(&self) -> &str {
        &self.encoded
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.encoded)
    }
}

/// Splits a name (with its tag, without its digest) into the registry, when
/// its first component is one, and the rest.
fn split_registry(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        // A single component (`nginx`, `nginx:1.27`, even `localhost:5000`)
        // is always a Docker Hub name: the `:` starts a tag, not a port.
        None => (None, name),
        Some((first, rest)) => {
            let is_registry = first == "localhost"
                || first.contains(['.', ':'])
                || first.bytes().any(|b| b.is_ascii_uppercase());
            if is_registry {
                (Some(first), rest)
            } else {
                (None, name)
            }
        }
    }
}

/// Checks a registry: a host name, an IPv4 address or a bracketed IPv6
/// address, optionally with `:` and a port number.
pub fn validate_registry(registry: &str) -> Result<(), ReferenceError> {
    let invalid = || ReferenceError::InvalidRegistry(registry.to_owned());
    let port = if let Some(bracketed) = registry.strip_prefix('[') {
        let (address, after) = bracketed.split_once(']').ok_or_else(invalid)?;
        let is_ipv6 =
            !address.is_empty() && address.bytes().all(|b| b.is_ascii_hexdigit() || b == b':');
        if !is_ipv6 {
            return Err(invalid());
        }
        match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or_else(invalid)?),
        }
    } else {
        let (host, port) = match registry.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (registry, None),
        };
        if !host.split('.').all(is_domain_component) {
            return Err(invalid());
        }
        port
    };
    match port {
        Some(port) if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) => {
            Err(invalid())
        }
        _ => Ok(()),
    }
}

/// `[A-Za-z0-9]` or `[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9]`.
fn is_domain_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        }
        _ => false,
    }
}

/// `[a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*`.
fn is_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let is_alphanumeric = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    loop {
        // A run of letters and digits, which must not be empty ...
        let start = i;
        while i < bytes.len() && is_alphanumeric(bytes[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == bytes.len() {
            return true;
        }
        // ... then a separator, which the next run must follow.
        match bytes[i] {
            b'.' => i += 1,
            b'_' if bytes.get(i + 1) == Some(&b'_') => i += 2,
            b'_' => i += 1,
            b'-' => {
                while bytes.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn is_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    let is_word = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_';
    match bytes.first() {
        Some(first) => {
            bytes.len() <= TAG_MAX_LENGTH
                && is_word(first)
                && bytes.iter().all(|b| is_word(b) || matches!(b, b'.' | b'-'))
        }
        None => false,
    }
}

/// `[A-Za-z][A-Za-z0-9]*`, components separated by one of `-`, `_`, `+`, `.`.
fn is_digest_algorithm(algorithm: &str) -> bool {
    algorithm.split(['-', '_', '+', '.']).all(|component| {
        let bytes = component.as_bytes();
        bytes.first().is_some_and(u8::is_ascii_alphabetic)
            && bytes.iter().all(u8::is_ascii_alphanumeric)
    })
}

fn is_lower_hex(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A string as a JSON string literal, so that odd characters in a reference
/// cannot garble a message.
pub(crate) fn quote(text: &str) -> String {
    portcullis_sdk::serde_json::Value::from(text).to_string()
}

#[cfg(test)]
mod tests;
