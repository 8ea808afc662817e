//! `sources.yml`, in Kubewarden's format: which hosts are reached without
//! TLS verification, and which extra CAs a host's certificate may chain to.
//!
//! ```yaml
//! insecure_sources:
//!   - "localhost:5000"           # HTTPS without verification, then plain HTTP
//! source_authorities:
//!   "registry.internal:5500":    # host[:port], as in the policy's reference or URL
//!     - type: Path
//!       path: /etc/ssl/internal-ca.pem   # PEM or DER
//!     - type: Data
//!       data: |
//!         -----BEGIN CERTIFICATE-----
//!         ...
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The parsed file: per host, whether it is insecure and the CAs it adds.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    insecure: BTreeSet<String>,
    authorities: BTreeMap<String, Vec<Certificate>>,
    origin: Option<PathBuf>,
}

/// A CA certificate, as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Certificate {
    /// PEM text (one or more certificates).
    Pem(Vec<u8>),
    /// One DER certificate.
    Der(Vec<u8>),
}

/// A `sources.yml` that cannot be used; names the file and the entry.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct SourcesError {
    path: PathBuf,
    message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
#[derive(Default)]
struct RawSources {
    insecure_sources: Vec<String>,
    source_authorities: BTreeMap<String, Vec<RawAuthority>>,
}

/// `{type: Path, path}` or `{type: Data, data}`; `type` may be left out, as
/// Kubewarden's reader allows.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuthority {
    #[serde(rename = "type")]
    kind: Option<AuthorityKind>,
    path: Option<PathBuf>,
    data: Option<String>,
}

#[derive(Deserialize, PartialEq, Eq, Clone, Copy)]
enum AuthorityKind {
    Path,
    Data,
}

impl Sources {
    /// Reads `path` (YAML or JSON); relative certificate paths resolve
    /// against its directory.
    pub fn load(path: &Path) -> Result<Self, SourcesError> {
        let fail = |message: String| SourcesError {
            path: path.to_owned(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read: {e}")))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut sources = Self::parse(&text, base).map_err(fail)?;
        sources.origin = Some(path.to_owned());
        Ok(sources)
    }

    /// Parses the text of a sources file.
    pub fn parse(text: &str, base_dir: &Path) -> Result<Self, String> {
        let raw: Option<RawSources> =
            serde_saphyr::from_str(text).map_err(|e| format!("not a valid sources file: {e}"))?;
        let raw = raw.unwrap_or_default();
        let mut authorities = BTreeMap::new();
        for (host, entries) in raw.source_authorities {
            let mut certificates = Vec::with_capacity(entries.len());
            for (index, entry) in entries.into_iter().enumerate() {
                let at = format!("source_authorities.\"{host}\"[{index}]");
                certificates.push(
                    entry
                        .certificate(base_dir)
                        .map_err(|m| format!("{at}: {m}"))?,
                );
            }
            authorities.insert(host, certificates);
        }
        Ok(Self {
            insecure: raw.insecure_sources.into_iter().collect(),
            authorities,
            origin: None,
        })
    }

    /// Whether `host` (`host` or `host:port`) is listed in `insecure_sources`.
    pub fn is_insecure(&self, host: &str) -> bool {
        self.insecure.contains(host) || self.insecure.contains(without_port(host))
    }

    /// The extra CAs for `host` (`host:port` first, then `host` alone).
    pub fn authorities(&self, host: &str) -> &[Certificate] {
        self.authorities
            .get(host)
            .or_else(|| self.authorities.get(without_port(host)))
            .map_or(&[], Vec::as_slice)
    }

    /// The file these came from, if any (for messages).
    pub fn origin(&self) -> Option<&Path> {
        self.origin.as_deref()
    }
}

impl Certificate {
    /// reqwest's certificates for this entry (a PEM file may hold several).
    pub fn to_reqwest(&self) -> Result<Vec<reqwest::Certificate>, reqwest::Error> {
        match self {
            Certificate::Pem(pem) => reqwest::Certificate::from_pem_bundle(pem),
            Certificate::Der(der) => Ok(vec![reqwest::Certificate::from_der(der)?]),
        }
    }

    /// oci-client's form of it.
    pub fn to_oci(&self) -> oci_client::client::Certificate {
        use oci_client::client::CertificateEncoding;
        let (encoding, data) = match self {
            Certificate::Pem(pem) => (CertificateEncoding::Pem, pem.clone()),
            Certificate::Der(der) => (CertificateEncoding::Der, der.clone()),
        };
        oci_client::client::Certificate { encoding, data }
    }
}

impl RawAuthority {
    fn certificate(self, base_dir: &Path) -> Result<Certificate, String> {
        let bytes = match (self.kind, self.path, self.data) {
            (Some(AuthorityKind::Path) | None, Some(path), None) => {
                let path = base_dir.join(path);
                std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?
            }
            (Some(AuthorityKind::Data) | None, None, Some(data)) => data.into_bytes(),
            (Some(AuthorityKind::Path), _, _) => return Err("`type: Path` needs `path`".into()),
            (Some(AuthorityKind::Data), _, _) => return Err("`type: Data` needs `data`".into()),
            (None, _, _) => return Err("give either `path` or `data`".into()),
        };
        if bytes.starts_with(b"-----BEGIN") || bytes.windows(10).any(|w| w == b"-----BEGIN") {
            let certificate = Certificate::Pem(bytes);
            match certificate.to_reqwest() {
                Ok(list) if !list.is_empty() => Ok(certificate),
                _ => Err("no usable PEM certificate in it".into()),
            }
        } else if is_der_sequence(&bytes) {
            Ok(Certificate::Der(bytes))
        } else {
            Err("neither a PEM nor a DER certificate".into())
        }
    }
}

/// Whether `bytes` are one DER SEQUENCE filling them exactly, as an X.509
/// certificate is (reqwest takes any bytes as DER and fails only later, at
/// the handshake).
fn is_der_sequence(bytes: &[u8]) -> bool {
    let [0x30, first, rest @ ..] = bytes else {
        return false;
    };
    let (length, header) = if *first < 0x80 {
        (usize::from(*first), 2)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return false;
        }
        let length = rest[..count]
            .iter()
            .fold(0usize, |n, &b| (n << 8) | usize::from(b));
        (length, 2 + count)
    };
    header + length == bytes.len()
}

/// `host:port` → `host` (IPv6 literals keep their brackets).
fn without_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port)) if !name.is_empty() && port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["registry.internal".into()]).unwrap();
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn kubewarden_format() {
        let dir = tempfile::tempdir().unwrap();
        let pem = pem();
        std::fs::write(dir.path().join("ca.pem"), &pem).unwrap();
        let text = format!(
            "insecure_sources: [\"localhost:5000\", \"dev.internal\"]\n\
             source_authorities:\n  \"registry.internal:5500\":\n    - type: Path\n      path: ca.pem\n\
             \x20   - type: Data\n      data: |\n{}",
            pem.lines()
                .map(|l| format!("        {l}\n"))
                .collect::<String>()
        );
        let sources = Sources::parse(&text, dir.path()).unwrap();
        assert!(sources.is_insecure("localhost:5000"));
        assert!(sources.is_insecure("dev.internal:443"));
        assert!(!sources.is_insecure("localhost:5001"));
        assert_eq!(sources.authorities("registry.internal:5500").len(), 2);
        assert!(sources.authorities("registry.internal:5501").is_empty());
        assert!(sources.authorities("other").is_empty());
    }

    #[test]
    fn a_der_file_is_read_as_der() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["h".into()]).unwrap();
        let der = params.self_signed(&key).unwrap().der().to_vec();
        std::fs::write(dir.path().join("ca.der"), &der).unwrap();
        let sources = Sources::parse(
            "source_authorities:\n  h:\n    - path: ca.der\n",
            dir.path(),
        )
        .unwrap();
        assert_eq!(sources.authorities("h"), [Certificate::Der(der.clone())]);
        // Cut short, it is no certificate.
        std::fs::write(dir.path().join("ca.der"), &der[..der.len() - 1]).unwrap();
        let error = Sources::parse(
            "source_authorities:\n  h:\n    - path: ca.der\n",
            dir.path(),
        )
        .unwrap_err();
        assert!(error.contains("neither a PEM nor a DER"), "{error}");
    }

    #[test]
    fn empty_file_is_no_sources() {
        let sources = Sources::parse("", Path::new("/")).unwrap();
        assert!(!sources.is_insecure("x"));
    }

    #[test]
    fn bad_entries_are_named() {
        let error = Sources::parse(
            "source_authorities:\n  h:\n    - type: Path\n      path: /nonexistent/ca.pem\n",
            Path::new("/"),
        )
        .unwrap_err();
        assert!(
            error.starts_with("source_authorities.\"h\"[0]: cannot read /nonexistent/ca.pem"),
            "{error}"
        );
        let error = Sources::parse(
            "source_authorities:\n  h:\n    - data: not a certificate\n",
            Path::new("/"),
        )
        .unwrap_err();
        assert!(error.contains("neither a PEM nor a DER"), "{error}");
        let error = Sources::parse("proxies: {}\n", Path::new("/")).unwrap_err();
        assert!(error.contains("proxies"), "{error}");
    }
}
