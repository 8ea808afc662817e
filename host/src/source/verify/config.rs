//! Kubewarden's verification config (`--verification-path`), the same file
//! policy-server and `kwctl verify` read:
//!
//! ```yaml
//! apiVersion: v1
//! allOf:                      # every one must hold
//!   - kind: pubKey
//!     owner: alice            # optional, for messages
//!     key: |
//!       -----BEGIN PUBLIC KEY-----
//!       …
//!     annotations: {env: prod}  # optional: the signature must carry them
//! anyOf:                      # at least minimumMatches must hold
//!   minimumMatches: 1         # default 1
//!   signatures: [ … ]         # pubKey, genericIssuer, githubAction
//! ```
//!
//! Unknown keys are refused, and every error names the line it is on.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::cosign::PublicKey;

/// The only `apiVersion` there is.
pub const API_VERSION: &str = "v1";

/// A verification config, parsed and checked: keys decoded, counts sound.
#[derive(Debug, Clone)]
pub struct VerificationConfig {
    /// Requirements that must all hold.
    pub all_of: Vec<Requirement>,
    /// Requirements of which at least `minimum_matches` must hold.
    pub any_of: Option<AnyOf>,
    /// The file it was read from, for messages.
    pub origin: String,
}

/// `anyOf`.
#[derive(Debug, Clone)]
pub struct AnyOf {
    /// How many must hold (at least 1).
    pub minimum_matches: usize,
    /// The candidates.
    pub signatures: Vec<Requirement>,
}

/// One signature requirement.
#[derive(Debug, Clone)]
pub struct Requirement {
    /// Where it is: `allOf[0]`, `anyOf.signatures[2]`.
    pub at: String,
    /// What it asks for.
    pub kind: RequirementKind,
    /// Annotations the signature must carry (in its payload's `optional`).
    pub annotations: BTreeMap<String, String>,
}

/// What a requirement asks for.
#[derive(Debug, Clone)]
pub enum RequirementKind {
    /// A signature by this key.
    PubKey {
        /// Who holds the key, for messages.
        owner: Option<String>,
        /// The key.
        key: PublicKey,
    },
    /// A keyless signature whose certificate was issued by `issuer` to `subject`.
    GenericIssuer {
        /// The OIDC issuer.
        issuer: String,
        /// The certificate's subject.
        subject: Subject,
    },
    /// A keyless signature made in a GitHub Actions workflow of `owner`
    /// (and `repo`).
    GithubAction {
        /// The GitHub user or organisation.
        owner: String,
        /// The repository, if any.
        repo: Option<String>,
    },
}

/// How a keyless subject is matched.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Subject {
    /// Exactly this subject.
    Equal(String),
    /// A subject under this URL (a `/` is appended, so `…/bob` does not
    /// match `…/bobby`).
    UrlPrefix(String),
}

impl RequirementKind {
    /// Whether it needs a keyless (certificate) signature.
    pub fn is_keyless(&self) -> bool {
        !matches!(self, Self::PubKey { .. })
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            RequirementKind::PubKey { owner, key } => {
                write!(f, "{} (pubKey {}", self.at, key.fingerprint())?;
                if let Some(owner) = owner {
                    write!(f, " of `{owner}`")?;
                }
                f.write_str(")")
            }
            RequirementKind::GenericIssuer { issuer, .. } => {
                write!(f, "{} (genericIssuer {issuer})", self.at)
            }
            RequirementKind::GithubAction { owner, repo } => {
                write!(f, "{} (githubAction {owner}", self.at)?;
                if let Some(repo) = repo {
                    write!(f, "/{repo}")?;
                }
                f.write_str(")")
            }
        }
    }
}

/// Why a verification config is refused.
#[derive(Debug, thiserror::Error)]
#[error("verification config {origin}: {message}")]
pub struct ConfigError {
    /// The file.
    pub origin: String,
    /// What is wrong, and on which line.
    pub message: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawConfig {
    api_version: Spanned<String>,
    #[serde(default)]
    all_of: Option<Vec<Spanned<RawRequirement>>>,
    #[serde(default)]
    any_of: Option<RawAnyOf>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawAnyOf {
    #[serde(default)]
    minimum_matches: Option<Spanned<usize>>,
    signatures: Vec<Spanned<RawRequirement>>,
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase", deny_unknown_fields)]
enum RawRequirement {
    PubKey {
        #[serde(default)]
        owner: Option<String>,
        key: String,
        #[serde(default)]
        annotations: BTreeMap<String, String>,
    },
    GenericIssuer {
        issuer: String,
        subject: Subject,
        #[serde(default)]
        annotations: BTreeMap<String, String>,
    },
    GithubAction {
        owner: String,
        #[serde(default)]
        repo: Option<String>,
        #[serde(default)]
        annotations: BTreeMap<String, String>,
    },
}

impl VerificationConfig {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            origin: origin.clone(),
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, &origin)
    }

    /// Parses and checks the text of a verification config read from `origin`.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let fail = |message: String| ConfigError {
            origin: origin.to_owned(),
            message,
        };
        let raw: Option<RawConfig> = serde_saphyr::from_str(text).map_err(|e| {
            // The first line says where and what; a source snippet follows.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default();
            fail(first.strip_prefix("error: ").unwrap_or(first).to_owned())
        })?;
        let raw = raw.ok_or_else(|| fail("the file is empty".into()))?;
        if raw.api_version.value != API_VERSION {
            return Err(fail(format!(
                "line {}: apiVersion `{}` is not supported (only `{API_VERSION}`)",
                raw.api_version.referenced.line(),
                raw.api_version.value
            )));
        }
        let all_of = requirements(raw.all_of.unwrap_or_default(), "allOf").map_err(fail)?;
        let any_of = match raw.any_of {
            None => None,
            Some(any_of) => {
                let signatures =
                    requirements(any_of.signatures, "anyOf.signatures").map_err(fail)?;
                let minimum_matches = match any_of.minimum_matches {
                    None => 1,
                    Some(Spanned {
                        value, referenced, ..
                    }) => {
                        if value == 0 || value > signatures.len() {
                            return Err(fail(format!(
                                "line {}: anyOf.minimumMatches is {value}; it must be between 1 \
                                 and the {} signatures listed",
                                referenced.line(),
                                signatures.len()
                            )));
                        }
                        value
                    }
                };
                if signatures.is_empty() {
                    return Err(fail("anyOf.signatures lists no signature".into()));
                }
                Some(AnyOf {
                    minimum_matches,
                    signatures,
                })
            }
        };
        if all_of.is_empty() && any_of.is_none() {
            return Err(fail(
                "neither allOf nor anyOf lists a signature: nothing would be verified".into(),
            ));
        }
        Ok(Self {
            all_of,
            any_of,
            origin: origin.to_owned(),
        })
    }
}

impl VerificationConfig {
    /// A config that asks for a signature by every one of `keys` (`allOf`),
    /// each carrying `annotations`: what `verify-signature --key` checks.
    pub fn all_of_keys(
        keys: Vec<(String, PublicKey)>,
        annotations: &BTreeMap<String, String>,
    ) -> Self {
        let all_of = keys
            .into_iter()
            .map(|(owner, key)| Requirement {
                at: format!("--key {owner}"),
                kind: RequirementKind::PubKey { owner: None, key },
                annotations: annotations.clone(),
            })
            .collect();
        Self {
            all_of,
            any_of: None,
            origin: "--key".into(),
        }
    }
}

fn requirements(
    raw: Vec<Spanned<RawRequirement>>,
    section: &str,
) -> Result<Vec<Requirement>, String> {
    raw.into_iter()
        .enumerate()
        .map(|(index, raw)| {
            let at = format!("{section}[{index}]");
            // Fields inside a `kind`-tagged entry have no location of their
            // own (serde buffers them): errors name the entry's line.
            let line = raw.referenced.line();
            let (kind, annotations) = match raw.value {
                RawRequirement::PubKey {
                    owner,
                    key,
                    annotations,
                } => {
                    let parsed = PublicKey::from_pem(&key)
                        .map_err(|e| format!("line {line}: {at}.key: {e}"))?;
                    let kind = RequirementKind::PubKey { owner, key: parsed };
                    (kind, annotations)
                }
                RawRequirement::GenericIssuer {
                    issuer,
                    subject,
                    annotations,
                } => (
                    RequirementKind::GenericIssuer { issuer, subject },
                    annotations,
                ),
                RawRequirement::GithubAction {
                    owner,
                    repo,
                    annotations,
                } => (RequirementKind::GithubAction { owner, repo }, annotations),
            };
            Ok(Requirement {
                at,
                kind,
                annotations,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "-----BEGIN PUBLIC KEY-----
      MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEe8jr7SXnyEzBI0rHKRk/lwgZN3Ub
      9KFX0cDnvqdHTbxhTIoaVqd1Sco3bxotyB/PYmDU7xJmUV3jX949EsCt1g==
      -----END PUBLIC KEY-----";

    fn parse(text: &str) -> Result<VerificationConfig, String> {
        VerificationConfig::parse(text, "v.yml").map_err(|e| e.to_string())
    }

    #[test]
    fn kubewarden_s_example_parses() {
        let text = format!(
            "apiVersion: v1\nallOf:\n  - kind: githubAction\n    owner: kubewarden\n    repo: \
             policy-server\n    annotations:\n      env: prod\nanyOf:\n  minimumMatches: 2\n  \
             signatures:\n  - kind: pubKey\n    owner: alice\n    key: |\n      {KEY}\n    \
             annotations:\n      env: prod\n  - kind: genericIssuer\n    issuer: \
             https://github.com/login/oauth\n    subject:\n      equal: alice@example.com\n  - \
             kind: genericIssuer\n    issuer: https://token.actions.githubusercontent.com\n    \
             subject:\n      urlPrefix: https://github.com/bob\n"
        );
        let config = parse(&text).unwrap();
        assert_eq!(config.all_of.len(), 1);
        assert!(matches!(
            &config.all_of[0].kind,
            RequirementKind::GithubAction { owner, repo: Some(repo) } if owner == "kubewarden" && repo == "policy-server"
        ));
        let any_of = config.any_of.unwrap();
        assert_eq!(any_of.minimum_matches, 2);
        assert_eq!(any_of.signatures.len(), 3);
        assert_eq!(any_of.signatures[0].annotations["env"], "prod");
        assert!(
            any_of.signatures[0]
                .to_string()
                .starts_with("anyOf.signatures[0] (pubKey sha256:")
        );
        assert!(any_of.signatures[0].to_string().ends_with(" of `alice`)"));
        assert!(matches!(
            &any_of.signatures[2].kind,
            RequirementKind::GenericIssuer { subject: Subject::UrlPrefix(p), .. } if p == "https://github.com/bob"
        ));
    }

    #[test]
    fn malformed_configs_are_refused_with_their_line() {
        let key_block = format!("    key: |\n      {KEY}\n");
        let cases = [
            (
                "apiVersion: v1\nallOf:\n  - kind: pubKey\n    kye: x\n".to_owned(),
                "line 3",
                "kye",
            ),
            (
                format!("apiVersion: v1\nallOf:\n  - kind: pubkey\n{key_block}"),
                "line 3",
                "pubkey",
            ),
            (
                "apiVersion: v1\nallOf:\n  - kind: pubKey\n    key: |\n      not a key\n".into(),
                "line 3",
                "allOf[0].key: not a PEM",
            ),
            (
                format!("apiVersion: v2\nallOf:\n  - kind: pubKey\n{key_block}"),
                "line 1",
                "apiVersion `v2`",
            ),
            (
                format!(
                    "apiVersion: v1\nanyOf:\n  minimumMatches: 3\n  signatures:\n  - kind: \
                     pubKey\n{key_block}"
                ),
                "line 3",
                "minimumMatches is 3",
            ),
            ("apiVersion: v1\nallOff: []\n".into(), "line 2", "allOff"),
        ];
        for (text, line, what) in cases {
            let error = parse(&text).expect_err(&text);
            assert!(error.starts_with("verification config v.yml: "), "{error}");
            assert!(error.contains(line), "{line} not in {error:?} for\n{text}");
            assert!(error.contains(what), "{what} not in {error:?}");
        }
        let nothing = parse("apiVersion: v1\n").unwrap_err();
        assert!(nothing.contains("neither allOf nor anyOf"), "{nothing}");
        assert!(parse("").unwrap_err().contains("empty"));
    }
}
