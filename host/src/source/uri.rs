//! Every spelling of "where a policy's module is" that `policies.yml` and the
//! CLI accept, parsed once into a [`Location`].
//!
//! | written | location |
//! |---|---|
//! | `registry://HOST[:PORT]/REPO:TAG`, `…@sha256:…`, `…:TAG@sha256:…` | an OCI registry |
//! | `HOST[:PORT]/REPO:TAG` (no scheme, first segment a host) | the same, as Kubewarden reads it |
//! | `https://…`, `http://…` | a plain GET of the `.wasm` |
//! | `file:///abs/p.wasm`, `/abs/p.wasm`, `rel/p.wasm` | a local file |
//!
//! Kubewarden reads every string without a scheme as a registry reference;
//! Portcullis has always read them as paths. Both hold where they can: a
//! string that starts with `/` or `.`, ends with `.wasm`, or whose first
//! segment is no host name (has no `.` or `:` and is not `localhost`) is a
//! path; anything else without a scheme is a registry reference.

use std::fmt;
use std::path::{Path, PathBuf};

use oci_client::Reference;

/// A module's location, as written (for messages) and as understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    written: String,
    location: Location,
}

/// Where a module is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A file on this machine, used in place.
    File(PathBuf),
    /// An artifact in an OCI registry.
    Registry(Reference),
    /// A `.wasm` served over HTTP(S).
    Http(reqwest::Url),
}

/// A location that cannot be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{written}`: {reason}")]
pub struct UriError {
    written: String,
    reason: String,
}

impl Source {
    /// Parses `written`; relative paths resolve against `base_dir`.
    pub fn parse(written: &str, base_dir: &Path) -> Result<Self, UriError> {
        let fail = |reason: String| UriError {
            written: written.to_owned(),
            reason,
        };
        if written.trim().is_empty() {
            return Err(fail("must not be empty".into()));
        }
        let location = match written.split_once("://") {
            Some(("registry", reference)) => {
                Location::Registry(reference_of(reference).map_err(fail)?)
            }
            Some(("http" | "https", _)) => {
                let url = reqwest::Url::parse(written).map_err(|e| fail(e.to_string()))?;
                if url.host_str().is_none_or(str::is_empty) {
                    return Err(fail("the URL has no host".into()));
                }
                Location::Http(url)
            }
            Some(("file", path)) if !path.is_empty() => Location::File(base_dir.join(path)),
            Some(("file", _)) => return Err(fail("the file:// URL has no path".into())),
            Some((scheme, _)) if is_scheme(scheme) => {
                return Err(fail(format!(
                    "unknown scheme {scheme}://; use registry://, https://, http:// or file:// \
                     (or a path)"
                )));
            }
            _ if looks_like_reference(written) => {
                Location::Registry(reference_of(written).map_err(fail)?)
            }
            _ => Location::File(base_dir.join(written)),
        };
        Ok(Self {
            written: written.to_owned(),
            location,
        })
    }

    /// A local file, as `PolicySpec::new` names one.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        Self {
            written: path.display().to_string(),
            location: Location::File(path),
        }
    }

    /// The location, as written.
    pub fn written(&self) -> &str {
        &self.written
    }

    /// What it means.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Whether the module must be fetched (it is not a local file).
    pub fn is_remote(&self) -> bool {
        !matches!(self.location, Location::File(_))
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.written)
    }
}

impl Location {
    /// One spelling per location (a bare reference and its `registry://`
    /// form are the same): what fetches are deduplicated by.
    pub fn canonical(&self) -> String {
        match self {
            Location::File(path) => format!("file://{}", path.display()),
            Location::Registry(reference) => format!("registry://{}", reference.whole()),
            Location::Http(url) => url.to_string(),
        }
    }
}

/// Parses an OCI reference, with the digest's algorithm checked.
fn reference_of(text: &str) -> Result<Reference, String> {
    let reference: Reference = text
        .parse()
        .map_err(|e| format!("not an OCI reference ({e})"))?;
    if let Some(digest) = reference.digest()
        && !digest.starts_with("sha256:")
        && !digest.starts_with("sha512:")
    {
        return Err("only sha256 and sha512 digests are supported".into());
    }
    Ok(reference)
}

/// RFC 3986's scheme: a letter, then letters, digits, `+`, `-`, `.`.
fn is_scheme(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// A string without a scheme names a registry when it cannot be a path we
/// would have read before, and its first segment is a host (Docker's rule for
/// telling a registry from a Docker Hub namespace).
fn looks_like_reference(text: &str) -> bool {
    if text.starts_with(['/', '.', '~']) || text.ends_with(".wasm") {
        return false;
    }
    let Some((first, _)) = text.split_once('/') else {
        return false;
    };
    first == "localhost" || first.contains('.') || first.contains(':')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(text: &str) -> Location {
        Source::parse(text, Path::new("/etc/portcullis"))
            .unwrap()
            .location
    }

    fn error(text: &str) -> String {
        Source::parse(text, Path::new("/base"))
            .unwrap_err()
            .to_string()
    }

    fn registry(text: &str) -> Reference {
        match location(text) {
            Location::Registry(reference) => reference,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn registry_references_in_every_spelling() {
        let r = registry("registry://ghcr.io/kubewarden/policies/pod-privileged:v1.0.3");
        assert_eq!(r.registry(), "ghcr.io");
        assert_eq!(r.repository(), "kubewarden/policies/pod-privileged");
        assert_eq!(r.tag(), Some("v1.0.3"));
        assert_eq!(r.digest(), None);

        let digest = format!("sha256:{}", "ab".repeat(32));
        let r = registry(&format!("registry://127.0.0.1:5000/p@{digest}"));
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest(), Some(digest.as_str()));

        let r = registry(&format!("registry://localhost:5000/a/b:v2@{digest}"));
        assert_eq!((r.tag(), r.digest()), (Some("v2"), Some(digest.as_str())));

        // No tag: `latest`, as everywhere else.
        assert_eq!(registry("registry://ghcr.io/x/y").tag(), Some("latest"));

        // Without a scheme, as Kubewarden reads it.
        let bare = registry("ghcr.io/kubewarden/policies/pod-privileged:v1.0.3");
        assert_eq!(
            bare,
            registry("registry://ghcr.io/kubewarden/policies/pod-privileged:v1.0.3")
        );
        assert_eq!(registry("127.0.0.1:5000/x:v1").registry(), "127.0.0.1:5000");
        assert_eq!(registry("localhost/x:v1").registry(), "localhost");
    }

    #[test]
    fn bare_and_registry_spellings_deduplicate() {
        assert_eq!(
            location("ghcr.io/x/y:v1").canonical(),
            location("registry://ghcr.io/x/y:v1").canonical()
        );
    }

    #[test]
    fn urls() {
        match location("https://example.com/policies/p.wasm") {
            Location::Http(url) => assert_eq!(url.as_str(), "https://example.com/policies/p.wasm"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            location("http://127.0.0.1:8080/p.wasm"),
            Location::Http(_)
        ));
    }

    #[test]
    fn paths_stay_paths() {
        for (text, path) in [
            ("pod_privileged.wasm", "/etc/portcullis/pod_privileged.wasm"),
            ("policies/pod", "/etc/portcullis/policies/pod"),
            ("sub.dir/p.wasm", "/etc/portcullis/sub.dir/p.wasm"),
            ("./ghcr.io/x", "/etc/portcullis/./ghcr.io/x"),
            ("/opt/p.wasm", "/opt/p.wasm"),
            ("file:///opt/p.wasm", "/opt/p.wasm"),
            ("file://rel/p.wasm", "/etc/portcullis/rel/p.wasm"),
        ] {
            assert_eq!(
                location(text),
                Location::File(PathBuf::from(path)),
                "{text}"
            );
        }
    }

    #[test]
    fn bad_locations_say_why() {
        assert_eq!(error(""), "``: must not be empty");
        assert!(error("ftp://h/p.wasm").contains("unknown scheme ftp://"));
        assert!(
            error("registry://ghcr.io/X/Y:v1").contains("not an OCI reference"),
            "{}",
            error("registry://ghcr.io/X/Y:v1")
        );
        assert!(error("registry://h/x@sha256:abc").contains("not an OCI reference"));
        assert!(error("https://").contains("`https://`"));
        assert_eq!(error("file://"), "`file://`: the file:// URL has no path");
    }
}
